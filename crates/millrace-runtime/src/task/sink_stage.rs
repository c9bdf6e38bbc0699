//! The sink at the end of a branch of a task: records each row's latency
//! (from when it entered at its source to when it reaches the sink), then
//! writes the batch without the entered column.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;

use hdrhistogram::Histogram;
use millrace_core::time::now_ns;
use millrace_core::{
    BarrierId, Message, Result, SinkWriter, Snapshot, entered_column, strip_entered,
};

use crate::metrics::{LATENCY_PUBLISH_NS, NodeMetrics, OperatorMetrics, new_latency_histogram};

/// The sink at the end of a chain: records latency, then writes.
pub struct SinkStage {
    pub name: String,
    pub writer: Box<dyn SinkWriter>,
    pub metrics: Arc<OperatorMetrics>,
    pub node: Arc<NodeMetrics>,
    /// Latencies recorded since they were last added to `node`'s.
    pub latency: Histogram<u64>,
    /// When `latency` was last added to `node`'s (`LATENCY_PUBLISH_NS`).
    pub published_ns: i64,
    /// Rows that entered before this time (the run's start plus its
    /// latency warm-up; set when the run starts) are written but not
    /// recorded in `latency`.
    pub record_from_ns: Arc<AtomicI64>,
    /// The writer stages its output for an exactly-once commit: it
    /// pre-commits at each barrier and, after `finish`, at the end.
    pub staging: bool,
    /// The last barrier seen (the restored epoch before the first).
    pub last_epoch: BarrierId,
    /// The epoch and token pre-committed in the current call, until the
    /// task sends it.
    pub taken: Option<(BarrierId, Snapshot, EnteredSample)>,
    /// Entered times of rows staged in the current epoch, for the latency
    /// to committed output.
    pub sample: EnteredSample,
}

/// Rows kept of an epoch's entered times, at most `2 * SAMPLE` of them: all
/// while there are few, then every `weight`-th row (the weight doubles each
/// time the sample fills), so memory stays bounded at any rate.
#[derive(Debug, Default)]
pub struct EnteredSample {
    pub entered: Vec<i64>,
    /// Rows each kept one stands for.
    pub weight: u64,
    /// Rows seen since the sample started.
    seen: u64,
}

const SAMPLE: usize = 2048;

impl EnteredSample {
    fn add(&mut self, entered: &[i64]) {
        if self.weight == 0 {
            self.weight = 1;
        }
        for &e in entered {
            if self.seen.is_multiple_of(self.weight) {
                self.entered.push(e);
                if self.entered.len() == 2 * SAMPLE {
                    // Keep every other one: those at multiples of the new weight.
                    let mut i = 0;
                    self.entered.retain(|_| {
                        i += 1;
                        i % 2 == 1
                    });
                    self.weight *= 2;
                }
            }
            self.seen += 1;
        }
    }
}

impl SinkStage {
    pub fn new(
        name: String,
        writer: Box<dyn SinkWriter>,
        metrics: Arc<OperatorMetrics>,
        node: Arc<NodeMetrics>,
        record_from_ns: Arc<AtomicI64>,
    ) -> Self {
        SinkStage {
            name,
            writer,
            metrics,
            node,
            latency: new_latency_histogram(),
            published_ns: now_ns(),
            record_from_ns,
            staging: false,
            last_epoch: 0,
            taken: None,
            sample: EnteredSample::default(),
        }
    }

    /// Adds the latencies recorded since the last time to the node's.
    pub(super) fn publish_latency(&mut self, now: i64) {
        if !self.latency.is_empty() {
            self.node.merge_latency(&self.latency);
            self.latency.reset();
        }
        self.published_ns = now;
    }

    /// Takes one message; `clock` is when it arrived (the time the step
    /// before ended) and moves to when this one ended.
    pub(super) fn deliver(&mut self, msg: Message, clock: &mut i64) -> Result<()> {
        let started = *clock;
        match msg {
            Message::Data(batch) => {
                let now = started;
                if let Some(entered) = entered_column(&batch) {
                    let from = self.record_from_ns.load(Relaxed);
                    for &e in entered.values().iter().filter(|e| **e >= from) {
                        self.latency.saturating_record((now - e).max(0) as u64);
                    }
                    if self.staging && entered.values().first().is_some_and(|e| *e >= from) {
                        self.sample.add(entered.values());
                    }
                    if now - self.published_ns >= LATENCY_PUBLISH_NS {
                        self.publish_latency(now);
                    }
                }
                self.metrics
                    .rows_in
                    .fetch_add(batch.num_rows() as u64, Relaxed);
                self.writer.write(&strip_entered(&batch))?;
            }
            Message::End => {
                self.writer.finish()?;
                if self.staging {
                    // What came after the last barrier: an epoch of its own.
                    let epoch = self.last_epoch + 1;
                    let token = self.writer.pre_commit(epoch)?;
                    self.taken = Some((epoch, token, std::mem::take(&mut self.sample)));
                }
            }
            Message::Barrier(id) if self.staging => {
                self.last_epoch = id;
                let token = self.writer.pre_commit(id)?;
                self.taken = Some((id, token, std::mem::take(&mut self.sample)));
            }
            Message::Barrier(id) => {
                self.last_epoch = id;
                return Ok(());
            }
            // Nothing to do: no clock read either (the next step's time
            // includes these few ns).
            Message::Watermark(_) | Message::Idle => return Ok(()),
        }
        *clock = now_ns();
        self.metrics
            .busy_ns
            .fetch_add((*clock - started) as u64, Relaxed);
        Ok(())
    }
}
