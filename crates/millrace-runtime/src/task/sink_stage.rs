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

use crate::metrics::{
    LATENCY_PUBLISH_NS, NodeMetrics, OperatorMetrics, ThinnedSample, new_latency_histogram,
};
use crate::trace::{StageId, Trace, TraceLog};

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
    /// Where traced rows' paths go when they arrive (`trace.rs`); `None`
    /// when the run samples none.
    pub traces: Option<Arc<TraceLog>>,
}

/// Rows kept of an epoch's entered times, evenly thinned so memory stays
/// bounded at any rate.
pub type EnteredSample = ThinnedSample<i64>;

/// The entered times an epoch's sample keeps (at most twice this).
const SAMPLE: usize = 2048;

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
            sample: EnteredSample::new(SAMPLE),
            traces: None,
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

    fn take_sample(&mut self) -> EnteredSample {
        std::mem::replace(&mut self.sample, EnteredSample::new(SAMPLE))
    }

    /// Takes one message, with the trace of the step that brought it;
    /// `clock` is when it arrived (the time the step before ended) and
    /// moves to when this one ended.
    pub(super) fn deliver(
        &mut self,
        msg: Message,
        trace: Option<&Trace>,
        clock: &mut i64,
    ) -> Result<()> {
        let started = *clock;
        match msg {
            Message::Data(batch) => {
                let now = started;
                if let Some(entered) = entered_column(&batch) {
                    let from = self.record_from_ns.load(Relaxed);
                    if let (Some(trace), Some(log)) = (trace, &self.traces) {
                        let origin = trace.origin_for_rows(&batch);
                        if origin >= from {
                            log.add(trace.finish(origin, self.metrics.node as StageId, now));
                        }
                    }
                    for &e in entered.values().iter().filter(|e| **e >= from) {
                        self.latency.saturating_record((now - e).max(0) as u64);
                    }
                    if self.staging && entered.values().first().is_some_and(|e| *e >= from) {
                        for &e in entered.values() {
                            self.sample.add(e);
                        }
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
                    self.taken = Some((epoch, token, self.take_sample()));
                }
            }
            Message::Barrier(id) if self.staging => {
                self.last_epoch = id;
                let token = self.writer.pre_commit(id)?;
                self.taken = Some((id, token, self.take_sample()));
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
