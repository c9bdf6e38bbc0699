//! The sending side of a task: partitions its output over the downstream
//! channels and holds what does not fit yet.
//!
//! A task hands the output of one input message to [`OutputRouter::send`],
//! then calls [`OutputRouter::flush`] until everything is queued; while
//! anything is held back, the task reads no more input. So the memory held
//! here is at most the output of one input message per task — the only
//! buffer besides the bounded channels.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use millrace_core::{Message, Result};

use crate::channel::Channel;
use crate::exchange::{Partitioning, hash_partition};

pub struct OutputRouter {
    targets: Vec<Arc<Channel>>,
    /// Messages not yet accepted, per target, in order.
    held: Vec<VecDeque<Message>>,
    partitioning: Partitioning,
    key_indices: Vec<usize>,
    next_round_robin: usize,
}

impl OutputRouter {
    pub fn new(
        targets: Vec<Arc<Channel>>,
        partitioning: Partitioning,
        key_indices: Vec<usize>,
    ) -> Self {
        let held = targets.iter().map(|_| VecDeque::new()).collect();
        OutputRouter {
            targets,
            held,
            partitioning,
            key_indices,
            next_round_robin: 0,
        }
    }

    /// Routes one message (nothing is sent yet; call [`Self::flush`]).
    pub fn send(&mut self, msg: Message) -> Result<()> {
        match msg {
            Message::Data(batch) => self.route_batch(batch),
            control => {
                for held in &mut self.held {
                    held.push_back(control.clone());
                }
                Ok(())
            }
        }
    }

    fn route_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let n = self.targets.len();
        match &self.partitioning {
            _ if n == 1 => self.hold(0, batch),
            Partitioning::Forward | Partitioning::RoundRobin => {
                let t = self.next_round_robin % n;
                self.next_round_robin = self.next_round_robin.wrapping_add(1);
                self.hold(t, batch);
            }
            Partitioning::Broadcast => {
                for t in 0..n {
                    self.hold(t, batch.clone());
                }
            }
            Partitioning::Hash(_) => {
                for (t, part) in hash_partition(&batch, &self.key_indices, n)?
                    .into_iter()
                    .enumerate()
                {
                    if let Some(part) = part {
                        self.hold(t, part);
                    }
                }
            }
        }
        Ok(())
    }

    /// Holds `batch` for target `t`, cut into slices that each fit the
    /// channel's row capacity (zero-copy), so occupancy never exceeds it.
    fn hold(&mut self, t: usize, batch: RecordBatch) {
        let cap = self.targets[t].capacity().rows;
        let rows = batch.num_rows();
        if rows <= cap {
            self.held[t].push_back(Message::Data(batch));
            return;
        }
        let mut offset = 0;
        while offset < rows {
            let len = cap.min(rows - offset);
            self.held[t].push_back(Message::Data(batch.slice(offset, len)));
            offset += len;
        }
    }

    /// Queues as much as the channels accept; true when nothing is held.
    /// `urgent`: what is queued now carries window results or follows from
    /// them, so its consumers are polled ahead of their workers' rounds.
    pub fn flush(&mut self, urgent: bool) -> bool {
        let mut all = true;
        for (t, held) in self.held.iter_mut().enumerate() {
            let mut sent = false;
            while let Some(msg) = held.pop_front() {
                if let Err(back) = self.targets[t].try_send(msg) {
                    held.push_front(back);
                    all = false;
                    break;
                }
                sent = true;
            }
            if sent && urgent {
                self.targets[t].mark_urgent();
            }
        }
        all
    }

    pub fn is_empty(&self) -> bool {
        self.held.iter().all(|h| h.is_empty())
    }
}
