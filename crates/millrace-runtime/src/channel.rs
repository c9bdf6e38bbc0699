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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

use millrace_core::Message;

use crate::batching::CostFit;
use crate::trace::{StageId, Traced};
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
    /// Each message with its bytes and its trace.
    queue: VecDeque<(Message, usize, Traced)>,
    rows: usize,
    bytes: usize,
    consumer_waiting: bool,
    producer_waiting: bool,
    // Counters (read live, at the end of a run and by tests).
    max_rows: usize,
    max_bytes: usize,
    refused_sends: u64,
    batches: u64,
    rows_sent: u64,
}

/// What a run reports of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    pub from: String,
    pub to: String,
    /// The graph edge this channel is one instance pair of (`a → b`).
    pub edge: String,
    pub capacity: ChannelCapacity,
    /// Rows and bytes queued when the stats were taken.
    pub queued_rows: usize,
    pub queued_bytes: usize,
    /// Highest number of rows ever queued at once.
    pub max_rows: usize,
    pub max_bytes: usize,
    /// Sends refused because the channel was full (backpressure events).
    pub refused_sends: u64,
    /// Data messages and the rows they carried: their ratio is how well
    /// batches held together across this hop.
    pub batches: u64,
    pub rows: u64,
}

pub struct Channel {
    state: Mutex<State>,
    capacity: ChannelCapacity,
    consumer: WorkerWaker,
    producer: WorkerWaker,
    from: String,
    to: String,
    edge: String,
    /// Window results (or what follows from them) were queued since the
    /// consumer last took this flag.
    urgent: AtomicBool,
    /// What the consumer spent on this channel's data messages.
    service: ServiceTimes,
    /// The smallest watermark that can change anything at the consumer
    /// (`Operator::watermark_interest`), as it last said.
    interest: AtomicI64,
    /// Channels, this one included, that feed the same input of the
    /// consumer (set by its gate).
    producers: AtomicUsize,
    /// Its edge's exchange stage: a traced message is stamped with it
    /// when accepted (`trace.rs`; the receiving gate stamps the channel
    /// stage, the next).
    exchange_stage: StageId,
}

/// Sums over the data messages a consumer took from one channel: count,
/// rows, ns spent on them, rows², rows·ns. The consumer adds to them and
/// the producer's exchange takes them (`coalesce.rs`), to learn what a
/// batch costs where it is received.
#[derive(Default)]
struct ServiceTimes([AtomicU64; 5]);

impl Channel {
    pub fn new(
        capacity: ChannelCapacity,
        producer: WorkerWaker,
        consumer: WorkerWaker,
        from: String,
        to: String,
        edge: String,
        exchange_stage: StageId,
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
                batches: 0,
                rows_sent: 0,
            }),
            capacity,
            consumer,
            producer,
            from,
            to,
            edge,
            urgent: AtomicBool::new(false),
            service: ServiceTimes::default(),
            interest: AtomicI64::new(i64::MIN),
            producers: AtomicUsize::new(1),
            exchange_stage,
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

    /// A channel of the default capacity between two workers that are
    /// never woken (for tests).
    #[cfg(test)]
    pub(crate) fn for_test() -> std::sync::Arc<Channel> {
        std::sync::Arc::new(Channel::new(
            ChannelCapacity::default(),
            WorkerWaker::default(),
            WorkerWaker::default(),
            "up".into(),
            "down".into(),
            "up → down".into(),
            0,
        ))
    }

    /// The consumer spent `ns` on a data message of `rows` rows from this
    /// channel (everything its task did with it).
    pub fn record_service(&self, rows: usize, ns: u64) {
        let rows = rows as u64;
        let sums = &self.service.0;
        for (sum, v) in sums
            .iter()
            .zip([1, rows, ns, rows * rows, rows.saturating_mul(ns)])
        {
            sum.fetch_add(v, Ordering::Relaxed);
        }
    }

    /// How many channels feed the same input of the consumer.
    pub fn producers(&self) -> usize {
        self.producers.load(Ordering::Relaxed)
    }

    pub fn set_producers(&self, n: usize) {
        self.producers.store(n.max(1), Ordering::Relaxed);
    }

    /// The consumer says which watermarks can change anything there.
    pub fn set_interest(&self, watermark_ms: i64) {
        self.interest.store(watermark_ms, Ordering::Relaxed);
    }

    /// The smallest watermark that can change anything at the consumer,
    /// as it last said (`i64::MIN` until it has: every one).
    pub fn interest(&self) -> i64 {
        self.interest.load(Ordering::Relaxed)
    }

    /// What the consumer recorded since the last call, as a cost fit.
    pub(crate) fn take_service(&self) -> CostFit {
        let [n, sx, sy, sxx, sxy] =
            std::array::from_fn(|i| self.service.0[i].swap(0, Ordering::Relaxed) as f64);
        let mut fit = CostFit::default();
        fit.add_sums(n, sx, sy, sxx, sxy);
        fit
    }

    pub fn capacity(&self) -> ChannelCapacity {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a task panicked while holding it; the panic is
        // reported by the worker, and the queue itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stage a traced message spends queued here (`trace.rs`).
    pub fn channel_stage(&self) -> StageId {
        self.exchange_stage + 1
    }

    /// Queues `msg` (with its trace, stamped as leaving the exchange at
    /// `now_ns`) if it fits, else hands both back (the producer keeps
    /// them and will be woken when the consumer frees room).
    pub fn try_send(
        &self,
        msg: Message,
        mut trace: Traced,
        now_ns: i64,
    ) -> Result<(), (Message, Traced)> {
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
                return Err((msg, trace));
            }
            if let Message::Data(_) = msg {
                s.batches += 1;
                s.rows_sent += rows as u64;
            }
            if let Some(t) = &mut trace {
                t.stamp(self.exchange_stage, now_ns);
            }
            s.queue.push_back((msg, bytes, trace));
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

    /// Takes the oldest message and its trace, or marks the consumer
    /// waiting.
    pub fn try_recv(&self) -> Option<(Message, Traced)> {
        let (msg, wake_producer) = {
            let mut s = self.lock();
            match s.queue.pop_front() {
                Some((msg, bytes, trace)) => {
                    s.rows -= msg.rows();
                    s.bytes -= bytes;
                    ((msg, trace), std::mem::take(&mut s.producer_waiting))
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
            edge: self.edge.clone(),
            capacity: self.capacity,
            queued_rows: s.rows,
            queued_bytes: s.bytes,
            max_rows: s.max_rows,
            max_bytes: s.max_bytes,
            refused_sends: s.refused_sends,
            batches: s.batches,
            rows: s.rows_sent,
        }
    }
}
