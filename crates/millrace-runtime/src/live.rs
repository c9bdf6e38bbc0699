//! The run as it happens, readable from other threads: the live endpoint
//! and its samplers (`millrace::monitor`) read the same counters the
//! end-of-run summary does, while the workers write them. A reader never
//! makes a worker wait: the counters are atomics, and the few locks it
//! takes (a channel's, a sink's published latency) are held only to copy.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use millrace_core::time::now_ns;

use crate::channel::{Channel, ChannelStats};
use crate::checkpoint::CheckpointStats;
use crate::metrics::{NodeKind, NodeMetrics, RunSummary, sinks_latency};
use crate::trace::TraceLog;

/// A handle on a pipeline's current run (`Pipeline::live`); cheap to clone,
/// empty until the run's tasks start. After the run it keeps the last
/// attempt's final counts.
#[derive(Clone, Default)]
pub struct LiveRun {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    attempt: Mutex<Option<Arc<LiveAttempt>>>,
    restarts: AtomicU32,
}

/// One attempt at running the pipeline (a restart begins another, with
/// fresh counters).
pub struct LiveAttempt {
    /// When its tasks started (`time::now_ns`).
    pub started_ns: i64,
    pub workers: usize,
    /// The graph's nodes, in graph order; `inputs[i]` are node `i`'s.
    pub nodes: Vec<Arc<NodeMetrics>>,
    pub inputs: Vec<Vec<usize>>,
    pub checkpoints: Option<Arc<CheckpointStats>>,
    /// The traces of rows that reached a sink, when the run traces.
    pub traces: Option<Arc<TraceLog>>,
    channels: Vec<Arc<Channel>>,
    /// When its workers ended (`time::now_ns`; 0 while they run).
    ended_ns: AtomicI64,
}

impl LiveRun {
    /// The attempt running now (or the last one), once its tasks started.
    pub fn attempt(&self) -> Option<Arc<LiveAttempt>> {
        self.inner
            .attempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Times the pipeline was started again after a failure.
    pub fn restarts(&self) -> u32 {
        self.inner.restarts.load(Relaxed)
    }

    pub(crate) fn begin(&self, attempt: LiveAttempt) {
        *self.inner.attempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(attempt));
    }

    pub(crate) fn restarted(&self) {
        self.inner.restarts.fetch_add(1, Relaxed);
    }

    /// The current attempt's workers have ended: its clock stops.
    pub(crate) fn end_attempt(&self) {
        if let Some(a) = self.attempt() {
            a.ended_ns.store(now_ns(), Relaxed);
        }
    }
}

impl LiveAttempt {
    pub(crate) fn new(
        workers: usize,
        nodes: Vec<Arc<NodeMetrics>>,
        inputs: Vec<Vec<usize>>,
        channels: Vec<Arc<Channel>>,
        checkpoints: Option<Arc<CheckpointStats>>,
        traces: Option<Arc<TraceLog>>,
    ) -> Self {
        LiveAttempt {
            started_ns: now_ns(),
            workers,
            nodes,
            inputs,
            checkpoints,
            traces,
            channels,
            ended_ns: AtomicI64::new(0),
        }
    }

    /// Its workers have ended (it counts nothing more).
    pub fn has_ended(&self) -> bool {
        self.ended_ns.load(Relaxed) != 0
    }

    /// Now on its clock (`time::now_ns`), which stops when it ends.
    pub fn now_ns(&self) -> i64 {
        match self.ended_ns.load(Relaxed) {
            0 => now_ns(),
            end => end,
        }
    }

    /// Its age: from its start to now, or to its end once it ended.
    pub fn elapsed_ns(&self) -> u64 {
        (self.now_ns() - self.started_ns).max(0) as u64
    }

    /// Every channel's counters and what it holds now.
    pub fn channels(&self) -> Vec<ChannelStats> {
        self.channels.iter().map(|c| c.stats()).collect()
    }

    /// The summary the run would end with if it ended now, but for the
    /// latency breakdown (which reads every kept trace: readers that want
    /// one explain recent traces, `TraceLog::since`).
    pub fn summary(&self) -> RunSummary {
        let mut summary = RunSummary::collect(
            self.elapsed_ns(),
            self.workers,
            &self.nodes,
            self.channels(),
            None,
        );
        summary.checkpoints = self.checkpoints.clone();
        summary
    }

    /// The watermark of the source instance furthest behind, ms since
    /// 1970 (`None` before any has one; instances with nothing left to read
    /// are left out).
    pub fn slowest_watermark_ms(&self) -> Option<i64> {
        let mut slowest = None;
        for node in self.nodes.iter().filter(|n| n.kind == NodeKind::Source) {
            let instances = node.instances.lock().unwrap_or_else(|e| e.into_inner());
            for m in instances.iter() {
                let wm = m.watermark_ms.load(Relaxed);
                if wm != i64::MIN && wm != i64::MAX {
                    slowest = Some(slowest.map_or(wm, |s: i64| s.min(wm)));
                }
            }
        }
        slowest
    }

    /// End-to-end latency of every sink row published so far (sinks
    /// publish at least every `metrics::LATENCY_PUBLISH_NS`).
    pub fn latency(&self) -> Histogram<u64> {
        sinks_latency(&self.nodes)
    }
}
