//! Bounded single-producer single-consumer channels: the one place where
//! backpressure happens.
//!
//! Every edge between two task instances is one `Channel`. It is bounded in
//! rows, bytes and messages; a send that does not fit is refused and the
//! message handed back, so the producing task keeps it and stops reading its
//! own input — backpressure travels upstream hop by hop until the source stops
//! polling its reader. Nothing in the engine queues without such a bound.
//!
//! The fit rule keeps the occupancy **at or below** the row capacity at all
//! times: producers split batches larger than the capacity before sending
//! (see `output.rs`). Only the byte bound has an escape: one batch larger
//! than the whole byte capacity is accepted into an *empty* channel, or it
//! could never move.
//!
//! Wake-ups: a consumer that found the channel empty, or a producer that found
//! it full, marks itself waiting; the other side wakes its worker when it
//! changes that. Both flags are read and written under the channel lock, so no
//! wake-up is lost.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use millrace_core::Message;

use crate::worker::WorkerWaker;

/// Capacity of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelCapacity {
    pub rows: usize,
    pub bytes: usize,
    /// Bounds control messages too (watermarks, barriers), which carry no rows.
    pub messages: usize,
}

impl Default for ChannelCapacity {
    fn default() -> Self {
        ChannelCapacity {
            rows: 16 * 1024,
            bytes: 16 << 20,
            messages: 256,
        }
    }
}

struct State {
    queue: VecDeque<(Message, usize)>,
    rows: usize,
    bytes: usize,
    consumer_waiting: bool,
    producer_waiting: bool,
    // Counters (read at the end of a run and by tests).
    max_rows: usize,
    max_bytes: usize,
    refused_sends: u64,
}

/// What a run reports of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    pub from: String,
    pub to: String,
    pub capacity: ChannelCapacity,
    /// Highest number of rows ever queued at once.
    pub max_rows: usize,
    pub max_bytes: usize,
    /// Sends refused because the channel was full (backpressure events).
    pub refused_sends: u64,
}

pub struct Channel {
    state: Mutex<State>,
    capacity: ChannelCapacity,
    consumer: WorkerWaker,
    producer: WorkerWaker,
    from: String,
    to: String,
    /// Window results (or what follows from them) were queued since the
    /// consumer last took this flag.
    urgent: AtomicBool,
}

impl Channel {
    pub fn new(
        capacity: ChannelCapacity,
        producer: WorkerWaker,
        consumer: WorkerWaker,
        from: String,
        to: String,
    ) -> Self {
        assert!(
            capacity.rows > 0 && capacity.messages > 0,
            "zero channel capacity"
        );
        Channel {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity.messages.min(64)),
                rows: 0,
                bytes: 0,
                consumer_waiting: false,
                producer_waiting: false,
                max_rows: 0,
                max_bytes: 0,
                refused_sends: 0,
            }),
            capacity,
            consumer,
            producer,
            from,
            to,
            urgent: AtomicBool::new(false),
        }
    }

    /// Flags what was just queued as urgent and asks the consumer's worker
    /// to poll it ahead of its round.
    pub fn mark_urgent(&self) {
        self.urgent.store(true, Ordering::Release);
        self.consumer.hurry();
    }

    /// Whether urgent messages were queued and not yet taken (a hint: the
    /// flag is cleared when the consumer takes it, not per message).
    pub fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::Relaxed)
    }

    /// Whether anything urgent was queued since the last call.
    pub fn take_urgent(&self) -> bool {
        self.is_urgent() && self.urgent.swap(false, Ordering::Acquire)
    }

    pub fn capacity(&self) -> ChannelCapacity {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a task panicked while holding it; the panic is
        // reported by the worker, and the queue itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg` if it fits, else hands it back (the producer keeps it and
    /// will be woken when the consumer frees room).
    pub fn try_send(&self, msg: Message) -> Result<(), Message> {
        let rows = msg.rows();
        let bytes = msg.bytes();
        let wake_consumer;
        {
            let mut s = self.lock();
            let fits = s.queue.len() < self.capacity.messages
                && s.rows + rows <= self.capacity.rows
                && (s.bytes + bytes <= self.capacity.bytes || s.queue.is_empty());
            if !fits {
                s.producer_waiting = true;
                s.refused_sends += 1;
                return Err(msg);
            }
            s.queue.push_back((msg, bytes));
            s.rows += rows;
            s.bytes += bytes;
            s.max_rows = s.max_rows.max(s.rows);
            s.max_bytes = s.max_bytes.max(s.bytes);
            wake_consumer = std::mem::take(&mut s.consumer_waiting);
        }
        if wake_consumer {
            self.consumer.wake();
        }
        Ok(())
    }

    /// Takes the oldest message, or marks the consumer waiting.
    pub fn try_recv(&self) -> Option<Message> {
        let (msg, wake_producer) = {
            let mut s = self.lock();
            match s.queue.pop_front() {
                Some((msg, bytes)) => {
                    s.rows -= msg.rows();
                    s.bytes -= bytes;
                    (msg, std::mem::take(&mut s.producer_waiting))
                }
                None => {
                    s.consumer_waiting = true;
                    return None;
                }
            }
        };
        if wake_producer {
            self.producer.wake();
        }
        Some(msg)
    }

    pub fn stats(&self) -> ChannelStats {
        let s = self.lock();
        ChannelStats {
            from: self.from.clone(),
            to: self.to.clone(),
            capacity: self.capacity,
            max_rows: s.max_rows,
            max_bytes: s.max_bytes,
            refused_sends: s.refused_sends,
        }
    }
}
