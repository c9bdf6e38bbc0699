//! Counters and latency histograms, and the summary a run ends with.
//!
//! Tasks own their hot counters and publish them through relaxed atomics, so
//! a reader (the end-of-run summary, the live endpoint: `live.rs`) never
//! stops a task. Latency is recorded per row in HDR histograms (nanoseconds,
//! 3 significant digits), published every `LATENCY_PUBLISH_NS`, and only ever
//! reported as percentiles, never averages.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use millrace_core::{SourceStats, StateSize};

use crate::channel::ChannelStats;
use crate::trace::{LatencyBreakdown, TraceLog};

/// Time accounting of one task instance: busy in polls that did work,
/// backpressured while output waited for room, idle the rest of its life.
#[derive(Default)]
pub struct TaskTimes {
    pub started_ns: AtomicI64,
    pub ended_ns: AtomicI64,
    pub busy_ns: AtomicU64,
    pub backpressured_ns: AtomicU64,
    /// Time some of its inputs were held back aligning barriers (the rest
    /// may have been read meanwhile: this overlaps busy and idle time).
    pub aligning_ns: AtomicU64,
}

impl TaskTimes {
    /// Its life so far: from its start to its end, or to now while it runs
    /// (0 before it starts).
    pub fn wall_ns(&self) -> u64 {
        let start = self.started_ns.load(Relaxed);
        if start == 0 {
            return 0;
        }
        let end = match self.ended_ns.load(Relaxed) {
            0 => millrace_core::time::now_ns(),
            end => end,
        };
        (end - start).max(0) as u64
    }
}

/// Counters of one operator instance (sources and sinks included).
pub struct OperatorMetrics {
    /// Index of the logical operator in the pipeline graph.
    pub node: usize,
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    /// Time spent inside this operator's calls.
    pub busy_ns: AtomicU64,
    pub late_rows: AtomicU64,
    /// Sources: bad input not turned into rows (the reader's own counts,
    /// published every step).
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Sources with event time: the watermark sent and the largest event
    /// time read, ms since 1970 (`i64::MIN`: none yet), published every step.
    pub watermark_ms: AtomicI64,
    pub max_event_time_ms: AtomicI64,
    pub task: Arc<TaskTimes>,
    /// Peak state of the instance, published when it finishes.
    pub state: Mutex<Option<StateSize>>,
}

impl OperatorMetrics {
    pub fn new(node: usize, task: Arc<TaskTimes>) -> Self {
        OperatorMetrics {
            node,
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            watermark_ms: AtomicI64::new(i64::MIN),
            max_event_time_ms: AtomicI64::new(i64::MIN),
            task,
            state: Mutex::new(None),
        }
    }
}

/// Largest latency a histogram tracks (one hour); larger values are clamped.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A sink adds the latencies it recorded to its node's histogram at least
/// this often (and when it ends), so live readers lag by at most this much.
pub const LATENCY_PUBLISH_NS: i64 = 200_000_000;

pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static histogram bounds are valid")
}

/// End-to-end latency of every row the sinks among `nodes` published.
pub fn sinks_latency(nodes: &[Arc<NodeMetrics>]) -> Histogram<u64> {
    let mut all = new_latency_histogram();
    for n in nodes.iter().filter(|n| n.kind == NodeKind::Sink) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = all.add(&*n.latency.lock().unwrap_or_else(|e| e.into_inner()));
    }
    all
}

/// Everything shared about one logical node across its instances.
pub struct NodeMetrics {
    pub name: String,
    pub kind: NodeKind,
    pub parallelism: usize,
    pub instances: Mutex<Vec<Arc<OperatorMetrics>>>,
    /// Sinks: end-to-end latency of every row written (as published).
    pub latency: Mutex<Histogram<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Source,
    Operator,
    Sink,
}

impl NodeMetrics {
    pub fn new(name: String, kind: NodeKind, parallelism: usize) -> Self {
        NodeMetrics {
            name,
            kind,
            parallelism,
            instances: Mutex::new(Vec::new()),
            latency: Mutex::new(new_latency_histogram()),
        }
    }

    pub fn merge_latency(&self, hist: &Histogram<u64>) {
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        // Same bounds everywhere, so adding cannot fail.
        let _ = h.add(hist);
    }

    pub(crate) fn summary(&self) -> OperatorSummary {
        let instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = OperatorSummary {
            name: self.name.clone(),
            kind: self.kind,
            parallelism: self.parallelism,
            rows_in: 0,
            rows_out: 0,
            late_rows: 0,
            busy_ns: 0,
            task_busy_ns: 0,
            backpressured_ns: 0,
            aligning_ns: 0,
            wall_ns: 0,
            source_stats: SourceStats::default(),
            state: None,
        };
        for m in instances.iter() {
            s.rows_in += m.rows_in.load(Relaxed);
            s.rows_out += m.rows_out.load(Relaxed);
            s.late_rows += m.late_rows.load(Relaxed);
            s.busy_ns += m.busy_ns.load(Relaxed);
            s.task_busy_ns += m.task.busy_ns.load(Relaxed);
            s.backpressured_ns += m.task.backpressured_ns.load(Relaxed);
            s.aligning_ns += m.task.aligning_ns.load(Relaxed);
            s.source_stats.skipped += m.skipped.load(Relaxed);
            s.source_stats.dead_lettered += m.dead_lettered.load(Relaxed);
            s.wall_ns += m.task.wall_ns();
            if let Some(st) = *m.state.lock().unwrap_or_else(|e| e.into_inner()) {
                *s.state.get_or_insert_with(StateSize::default) += st;
            }
        }
        s
    }
}

/// An even sample of a stream of values that keeps at most `2 * cap` of
/// them: all while there are few, then every `weight`-th (the weight
/// doubles each time the sample fills, and every other kept value goes),
/// so memory stays bounded however many come.
#[derive(Debug, Clone)]
pub struct ThinnedSample<T> {
    pub kept: Vec<T>,
    /// Values each kept one stands for.
    pub weight: u64,
    cap: usize,
    /// Values seen since the sample started.
    seen: u64,
}

impl<T> ThinnedSample<T> {
    pub fn new(cap: usize) -> Self {
        ThinnedSample {
            kept: Vec::new(),
            weight: 1,
            cap: cap.max(1),
            seen: 0,
        }
    }

    pub fn add(&mut self, value: T) {
        if self.seen.is_multiple_of(self.weight) {
            self.kept.push(value);
            if self.kept.len() == 2 * self.cap {
                // Keep those at multiples of the new weight.
                let mut i = 0;
                self.kept.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.weight *= 2;
            }
        }
        self.seen += 1;
    }
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        LatencySummary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OperatorSummary {
    pub name: String,
    pub kind: NodeKind,
    pub parallelism: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    pub late_rows: u64,
    /// Time inside this operator's calls, summed over instances.
    pub busy_ns: u64,
    /// Time its task was busy at all (this operator, the rest of its fused
    /// chain, receiving and partitioning), summed over instances.
    pub task_busy_ns: u64,
    pub backpressured_ns: u64,
    /// Time inputs were held back aligning barriers, summed over instances.
    pub aligning_ns: u64,
    pub wall_ns: u64,
    pub source_stats: SourceStats,
    /// Peak state summed over instances (each instance's own peak), for
    /// operators that keep state.
    pub state: Option<StateSize>,
}

impl OperatorSummary {
    fn pct(&self, part: u64) -> f64 {
        if self.wall_ns == 0 {
            0.0
        } else {
            100.0 * part as f64 / self.wall_ns as f64
        }
    }
    pub fn busy_pct(&self) -> f64 {
        self.pct(self.busy_ns)
    }
    pub fn backpressured_pct(&self) -> f64 {
        self.pct(self.backpressured_ns)
    }
    pub fn aligning_pct(&self) -> f64 {
        self.pct(self.aligning_ns)
    }
    /// Share of its task's life with nothing to do: neither working (on
    /// this operator or anything else in its task) nor backpressured.
    pub fn idle_pct(&self) -> f64 {
        (100.0 - self.pct(self.task_busy_ns.max(self.busy_ns)) - self.backpressured_pct()).max(0.0)
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub elapsed_ns: u64,
    pub workers: usize,
    /// Rows produced by all sources.
    pub events: u64,
    /// Rows handed to all sinks.
    pub sink_rows: u64,
    /// End-to-end latency of every sink row.
    pub latency: LatencySummary,
    pub operators: Vec<OperatorSummary>,
    pub channels: Vec<ChannelStats>,
    /// The run's checkpoints, when it took them (of the last run, after
    /// restarts).
    pub checkpoints: Option<Arc<crate::checkpoint::CheckpointStats>>,
    /// Times the pipeline was started again after a failure.
    pub restarts: u32,
    /// The latency percentiles taken apart stage by stage, when the run
    /// traced (`trace.rs`).
    pub breakdown: Option<LatencyBreakdown>,
}

impl RunSummary {
    pub(crate) fn collect(
        elapsed_ns: u64,
        workers: usize,
        nodes: &[Arc<NodeMetrics>],
        channels: Vec<ChannelStats>,
        traces: Option<&TraceLog>,
    ) -> Self {
        let operators: Vec<OperatorSummary> = nodes.iter().map(|n| n.summary()).collect();
        let latency = LatencySummary::from_histogram(&sinks_latency(nodes));
        let breakdown = traces
            .map(|log| LatencyBreakdown::new(log, &log.whole_run(), latency.p50, latency.p99));
        RunSummary {
            elapsed_ns,
            workers,
            events: operators
                .iter()
                .filter(|o| o.kind == NodeKind::Source)
                .map(|o| o.rows_out)
                .sum(),
            sink_rows: operators
                .iter()
                .filter(|o| o.kind == NodeKind::Sink)
                .map(|o| o.rows_in)
                .sum(),
            latency,
            operators,
            channels,
            checkpoints: None,
            restarts: 0,
            breakdown,
        }
    }

    pub fn throughput(&self) -> f64 {
        if self.elapsed_ns == 0 {
            return 0.0;
        }
        self.events as f64 / (self.elapsed_ns as f64 / 1e9)
    }

    pub fn throughput_per_core(&self) -> f64 {
        self.throughput() / self.workers.max(1) as f64
    }

    /// Sends refused by full channels, over all channels.
    pub fn backpressure_events(&self) -> u64 {
        self.channels.iter().map(|c| c.refused_sends).sum()
    }

    /// The channels of each graph edge added up, in the order the edges
    /// were created.
    pub fn exchanges(&self) -> Vec<ExchangeSummary> {
        let mut out: Vec<ExchangeSummary> = Vec::new();
        for c in &self.channels {
            let at = match out.iter().position(|e| e.edge == c.edge) {
                Some(at) => at,
                None => {
                    out.push(ExchangeSummary {
                        edge: c.edge.clone(),
                        ..ExchangeSummary::default()
                    });
                    out.len() - 1
                }
            };
            let e = &mut out[at];
            e.channels += 1;
            e.batches += c.batches;
            e.rows += c.rows;
            e.refused_sends += c.refused_sends;
        }
        out
    }

    pub fn operator(&self, name_prefix: &str) -> Option<&OperatorSummary> {
        self.operators
            .iter()
            .find(|o| o.name.starts_with(name_prefix))
    }
}

/// What crossed one graph edge, over all its channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeSummary {
    pub edge: String,
    /// Channels of the edge: one per (sending, receiving) instance pair.
    pub channels: usize,
    pub batches: u64,
    pub rows: u64,
    pub refused_sends: u64,
}

impl ExchangeSummary {
    /// Rows per data batch (0 when none crossed).
    pub fn rows_per_batch(&self) -> f64 {
        self.rows as f64 / self.batches.max(1) as f64
    }
}

/// Formats nanoseconds with a unit a reader takes in at a glance.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// `text` in at most `max` characters, the last an ellipsis when cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    text.chars().take(max - 1).collect::<String>() + "…"
}

/// A count with a unit that reads at a glance: `12.35 M`, `456.7 K`, `89`.
pub fn fmt_count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} K", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency;
        writeln!(
            f,
            "── run summary ──────────────────────────────────────────────"
        )?;
        writeln!(
            f,
            "events       {} in {} on {} worker(s)",
            self.events,
            fmt_ns(self.elapsed_ns),
            self.workers
        )?;
        writeln!(
            f,
            "throughput   {}events/s  ({}events/s per core)",
            fmt_count(self.throughput()),
            fmt_count(self.throughput_per_core())
        )?;
        writeln!(
            f,
            "latency      p50 {}  p95 {}  p99 {}  p99.9 {}  max {}  ({} rows)",
            fmt_ns(l.p50),
            fmt_ns(l.p95),
            fmt_ns(l.p99),
            fmt_ns(l.p999),
            fmt_ns(l.max),
            l.count
        )?;
        if let Some(b) = self.breakdown.as_ref().filter(|_| l.count > 0) {
            write!(f, "{b}")?;
        }
        writeln!(
            f,
            "backpressure {} refused sends",
            self.backpressure_events()
        )?;
        if let Some(c) = &self.checkpoints {
            writeln!(f, "checkpoints  {c}")?;
        }
        if self.restarts > 0 {
            writeln!(f, "restarts     {} after failures", self.restarts)?;
        }
        writeln!(
            f,
            "{:<44} {:>3} {:>12} {:>12} {:>6} {:>6} {:>6}  notes",
            "operator", "par", "rows in", "rows out", "busy", "idle", "bp"
        )?;
        for o in &self.operators {
            let mut notes = Vec::new();
            if o.late_rows > 0 {
                notes.push(format!("late rows {}", o.late_rows));
            }
            if o.aligning_ns > 0 {
                notes.push(format!("inputs held aligning {:.1}%", o.aligning_pct()));
            }
            if o.source_stats.skipped > 0 {
                notes.push(format!("skipped {}", o.source_stats.skipped));
            }
            if o.source_stats.dead_lettered > 0 {
                notes.push(format!("dead-lettered {}", o.source_stats.dead_lettered));
            }
            if let Some(st) = o.state.filter(|st| st.bytes > 0) {
                notes.push(format!(
                    "state peak {:.1} MB, {} entries ({:.0} B/entry beyond its key)",
                    st.bytes as f64 / 1e6,
                    st.keys,
                    st.bytes_per_key_beyond_key()
                ));
            }
            let name = cut(&o.name, 44);
            writeln!(
                f,
                "{:<44} {:>3} {:>12} {:>12} {:>5.1}% {:>5.1}% {:>5.1}%  {}",
                name,
                o.parallelism,
                o.rows_in,
                o.rows_out,
                o.busy_pct(),
                o.idle_pct(),
                o.backpressured_pct(),
                notes.join(", ")
            )?;
        }
        let exchanges = self.exchanges();
        if !exchanges.is_empty() {
            writeln!(
                f,
                "{:<60} {:>4} {:>12} {:>10} {:>9} {:>8}",
                "exchange", "ch", "rows", "batches", "rows/bat", "refused"
            )?;
        }
        for e in &exchanges {
            let edge = cut(&e.edge, 60);
            writeln!(
                f,
                "{:<60} {:>4} {:>12} {:>10} {:>9.1} {:>8}",
                edge,
                e.channels,
                e.rows,
                e.batches,
                e.rows_per_batch(),
                e.refused_sends
            )?;
        }
        Ok(())
    }
}
