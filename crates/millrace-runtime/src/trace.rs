//! Per-stage latency: where a row's time between entering and reaching a
//! sink went.
//!
//! Every source instance marks one batch it reads per sampling interval
//! (`PipelineConfig::latency_breakdown`) with a [`Trace`]: the row it
//! follows (the batch's oldest, whose latency is the batch's largest) and
//! a stamp each time the batch, or what the stages make of it, passes a
//! stage. It also marks the batch whose watermark closes a window
//! (`DataflowTask::trace_closing_watermark`) and the end of its input.
//! The stages, in path order:
//!
//! * **source**: from the row's entered time to the end of the read that
//!   batched it (waiting to be read, and the read);
//! * **operator** / **sink**: from the previous stamp to the end of its
//!   call (a sink: to when it took the rows, when latency is recorded);
//! * **exchange**: from the end of the sending stage to the moment the
//!   channel accepted the message (the task's later fused stages, which
//!   run before it sends, then a coalescing exchange's linger, or a full
//!   channel holding it back);
//! * **channel**: from then until the receiving task took it.
//!
//! The stamps are consecutive, so a finished trace's parts add up to its
//! total exactly, and that total is the latency of the row it follows (see
//! [`Trace::origin_for`] for which row that is after filters and merges).
//! Traces ride beside the messages (channels, exchanges and input gates
//! carry a [`Traced`] with each), never inside the batches; operators do
//! not see them. What a stage emits while handling a traced message
//! carries that message's trace. A watermark's trace follows the row that
//! advanced it (its `entered_ns`), so the results it makes final are
//! explained from the same row their latency counts from: "waiting for
//! the watermark" is the path of the closing row's watermark.
//!
//! Sinks hand finished traces to the run's [`TraceLog`]; [`explain`] takes
//! a latency apart by the traces nearest it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use millrace_core::{Message, entered_column};

use crate::metrics::{ThinnedSample, cut, fmt_ns};

/// A stage's index in the run's [`TraceStages`]: graph nodes first (by
/// node index), then two per plan edge (exchange, channel).
pub type StageId = u32;

/// What kind of place a stage is (see the module docs for what each
/// measures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Source,
    Operator,
    Sink,
    Exchange,
    Channel,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Source => "source",
            StageKind::Operator => "operator",
            StageKind::Sink => "sink",
            StageKind::Exchange => "exchange",
            StageKind::Channel => "channel",
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStage {
    pub name: String,
    pub kind: StageKind,
}

/// Every stage of a run, by [`StageId`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceStages(pub Vec<TraceStage>);

impl TraceStages {
    pub fn get(&self, id: StageId) -> Option<&TraceStage> {
        self.0.get(id as usize)
    }
}

/// One sampled message's path so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// When the row it follows entered (`time::now_ns`).
    origin_ns: i64,
    /// Each stage passed and when it was left, in order.
    stamps: Vec<(StageId, i64)>,
}

/// The trace a message carries, if it is sampled.
pub type Traced = Option<Box<Trace>>;

/// Room for a path of a few hops without growing.
const STAMPS: usize = 12;

impl Trace {
    /// A trace of the row that entered at `origin_ns`, read by source
    /// stage `stage` by `read_ns`.
    pub fn start(origin_ns: i64, stage: StageId, read_ns: i64) -> Box<Trace> {
        let mut stamps = Vec::with_capacity(STAMPS);
        stamps.push((stage, read_ns));
        Box::new(Trace { origin_ns, stamps })
    }

    /// Stage `stage` was left at `at_ns`.
    pub fn stamp(&mut self, stage: StageId, at_ns: i64) {
        self.stamps.push((stage, at_ns));
    }

    /// This trace with `stage` left at `at_ns` added.
    pub fn stamped(&self, stage: StageId, at_ns: i64) -> Box<Trace> {
        let mut stamps = Vec::with_capacity(STAMPS.max(self.stamps.len() + 1));
        stamps.extend_from_slice(&self.stamps);
        stamps.push((stage, at_ns));
        Box::new(Trace {
            origin_ns: self.origin_ns,
            stamps,
        })
    }

    /// The copy `msg` carries when it leaves with this trace: data,
    /// watermarks and the end only (barriers and idleness make nothing
    /// final), each following the row [`Self::origin_for`] names.
    pub fn for_message(&self, msg: &Message) -> Traced {
        let origin_ns = self.origin_for(msg)?;
        Some(Box::new(Trace {
            origin_ns,
            stamps: self.stamps.clone(),
        }))
    }

    /// The row a copy of this trace on `msg` follows. A watermark: the
    /// row that advanced it. Rows: the oldest of them, unless that entered
    /// before the row this trace follows (rows merged with older ones
    /// that took another path). So results a watermark made final follow
    /// the row that closed them, like their latency, and rows that lost
    /// the traced row to a filter follow the oldest that is left. The
    /// end: the row it was traced from (`SourceHead::end`).
    pub fn origin_for(&self, msg: &Message) -> Option<i64> {
        match msg {
            Message::Data(batch) => Some(self.origin_for_rows(batch)),
            Message::Watermark(wm) => Some(wm.entered_ns),
            Message::End => Some(self.origin_ns),
            Message::Barrier(_) | Message::Idle => None,
        }
    }

    /// [`Self::origin_for`] rows.
    pub fn origin_for_rows(&self, batch: &RecordBatch) -> i64 {
        oldest_entered(batch).map_or(self.origin_ns, |o| o.max(self.origin_ns))
    }

    pub fn origin_ns(&self) -> i64 {
        self.origin_ns
    }

    /// Each stage passed so far and when it was left.
    pub fn stamps(&self) -> &[(StageId, i64)] {
        &self.stamps
    }

    /// The path of the row that entered at `origin_ns` (`origin_for_rows`
    /// of the rows arriving) as it reached sink stage `sink` at `at_ns`:
    /// each stage's share, from the previous stamp (the first from the
    /// origin). A stamp earlier than the one before (clocks read in
    /// another order than the work was done) counts as no time, so the
    /// parts always add up to the total.
    pub fn finish(&self, origin_ns: i64, sink: StageId, at_ns: i64) -> FinishedTrace {
        let mut parts = Vec::with_capacity(self.stamps.len() + 1);
        let mut last = origin_ns;
        let mut total = 0;
        for &(stage, at) in self.stamps.iter().chain(std::iter::once(&(sink, at_ns))) {
            let part = (at - last).max(0) as u64;
            total += part;
            parts.push((stage, part));
            last = last.max(at);
        }
        FinishedTrace {
            at_ns,
            total_ns: total,
            parts,
        }
    }
}

/// When the oldest row of `batch` entered (`None` without rows or an
/// entered column).
pub fn oldest_entered(batch: &RecordBatch) -> Option<i64> {
    entered_column(batch).and_then(|c| c.values().iter().copied().min())
}

/// A trace that reached a sink: its row's latency, stage by stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedTrace {
    /// When it reached the sink.
    pub at_ns: i64,
    /// The row's latency: the parts added up.
    pub total_ns: u64,
    /// Each stage on its path with its share, in path order.
    pub parts: Vec<(StageId, u64)>,
}

/// How many recent traces the live endpoint can look back over: the last
/// 10 s at the default sampling for 16 source instances (more instances,
/// or a shorter interval, shorten how far back it reaches).
const RECENT: usize = 16_384;

/// How many traces of the whole run are kept for its summary (at most
/// twice this; thinned evenly over the run as it grows).
const WHOLE_RUN: usize = 4096;

/// The finished traces of one run attempt: the latest ones and an even
/// sample of the whole run. Sinks add a few per sampling interval each;
/// readers take shared pointers, so a sink never waits for a copy.
pub struct TraceLog {
    pub stages: TraceStages,
    inner: Mutex<LogInner>,
}

struct LogInner {
    recent: VecDeque<Arc<FinishedTrace>>,
    run: ThinnedSample<Arc<FinishedTrace>>,
    finished: u64,
}

impl TraceLog {
    pub fn new(stages: TraceStages) -> Self {
        TraceLog {
            stages,
            inner: Mutex::new(LogInner {
                recent: VecDeque::with_capacity(RECENT),
                run: ThinnedSample::new(WHOLE_RUN),
                finished: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, trace: FinishedTrace) {
        let trace = Arc::new(trace);
        let mut log = self.lock();
        log.finished += 1;
        if log.recent.len() == RECENT {
            log.recent.pop_front();
        }
        log.recent.push_back(trace.clone());
        log.run.add(trace);
    }

    /// Traces finished so far.
    pub fn finished(&self) -> u64 {
        self.lock().finished
    }

    /// The kept traces that finished at or after `since_ns`. Sinks on
    /// different workers add them in nearly but not exactly the order
    /// they finished: all are looked at.
    pub fn since(&self, since_ns: i64) -> Vec<Arc<FinishedTrace>> {
        let log = self.lock();
        (log.recent.iter())
            .filter(|t| t.at_ns >= since_ns)
            .cloned()
            .collect()
    }

    /// An even sample of the run's traces.
    pub fn whole_run(&self) -> Vec<Arc<FinishedTrace>> {
        self.lock().run.kept.clone()
    }
}

/// How many traces nearest a latency explain it, at most.
pub const COHORT: usize = 16;

/// Traces further from the latency than this fraction of it do not
/// explain it (the nearest always does): with few traces, the rows near a
/// p99 are few too.
const COHORT_BAND: f64 = 0.25;

/// What the traces nearest one latency were made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    /// The latency explained (a percentile of all rows).
    pub latency_ns: u64,
    /// The traces nearest it that were used ([`COHORT`], fewer if there
    /// are fewer), and the range of their totals.
    pub traces: usize,
    pub min_ns: u64,
    pub max_ns: u64,
    /// Each stage's share, averaged over those traces (their totals'
    /// average is the sum), in path order.
    pub parts: Vec<(StageId, u64)>,
}

impl Breakdown {
    /// The stage with the largest share.
    pub fn largest(&self) -> Option<(StageId, u64)> {
        self.parts.iter().copied().max_by_key(|(_, ns)| *ns)
    }

    /// Total of the parts: the average latency of the traces used.
    pub fn total_ns(&self) -> u64 {
        self.parts.iter().map(|(_, ns)| ns).sum()
    }
}

/// Explains `latency_ns` by the [`COHORT`] traces of `traces` whose totals
/// are nearest it, within [`COHORT_BAND`] of it: each stage's share of
/// them, averaged. `None` without traces.
///
/// A percentile of the rows is one value, and each trace is one row's
/// path; averaging the few paths nearest that value says what a row at
/// that latency typically went through, and the shares add up to the
/// latency they explain (per-stage percentiles would not).
pub fn explain(traces: &[Arc<FinishedTrace>], latency_ns: u64) -> Option<Breakdown> {
    if traces.is_empty() {
        return None;
    }
    let mut order: Vec<&FinishedTrace> = traces.iter().map(|t| t.as_ref()).collect();
    order.sort_by_key(|t| t.total_ns.abs_diff(latency_ns));
    let band = (latency_ns as f64 * COHORT_BAND) as u64;
    let near = order
        .iter()
        .take(COHORT)
        .skip(1)
        .take_while(|t| t.total_ns.abs_diff(latency_ns) <= band)
        .count();
    order.truncate(1 + near);
    // In path order: as the stages first appear, nearest trace first.
    let mut sums: Vec<(StageId, u64)> = Vec::new();
    for t in &order {
        for &(stage, ns) in &t.parts {
            match sums.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, sum)) => *sum += ns,
                None => sums.push((stage, ns)),
            }
        }
    }
    let n = order.len() as u64;
    Some(Breakdown {
        latency_ns,
        traces: order.len(),
        min_ns: order.iter().map(|t| t.total_ns).min().unwrap_or(0),
        max_ns: order.iter().map(|t| t.total_ns).max().unwrap_or(0),
        parts: sums.into_iter().map(|(s, sum)| (s, sum / n)).collect(),
    })
}

/// What a run's traces say its p50 and p99 were made of (the run summary's
/// breakdown).
#[derive(Debug, Clone)]
pub struct LatencyBreakdown {
    pub stages: TraceStages,
    /// Traces that reached a sink.
    pub traced: u64,
    pub p50: Option<Breakdown>,
    pub p99: Option<Breakdown>,
}

impl LatencyBreakdown {
    /// Explains `p50` and `p99` by `traces` (traces of `log`).
    pub fn new(log: &TraceLog, traces: &[Arc<FinishedTrace>], p50: u64, p99: u64) -> Self {
        LatencyBreakdown {
            stages: log.stages.clone(),
            traced: log.finished(),
            p50: explain(traces, p50),
            p99: explain(traces, p99),
        }
    }

    /// Every stage either explanation names, in path order.
    pub fn rows(&self) -> Vec<StageId> {
        let mut rows: Vec<StageId> = Vec::new();
        for b in [&self.p99, &self.p50].into_iter().flatten() {
            for (stage, _) in &b.parts {
                if !rows.contains(stage) {
                    rows.push(*stage);
                }
            }
        }
        rows
    }
}

impl fmt::Display for LatencyBreakdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(p50), Some(p99)) = (&self.p50, &self.p99) else {
            return writeln!(f, "breakdown    no traced row reached a sink");
        };
        let cohort = |b: &Breakdown| match b.traces {
            1 => format!("1 at {}", fmt_ns(b.min_ns)),
            n => format!("{n} at {}–{}", fmt_ns(b.min_ns), fmt_ns(b.max_ns)),
        };
        writeln!(
            f,
            "breakdown    {} traced rows; nearest the p50: {}; nearest the p99: {}",
            self.traced,
            cohort(p50),
            cohort(p99)
        )?;
        writeln!(
            f,
            "  {:<50} {:<9} {:>15} {:>15}",
            "stage", "kind", "p50", "p99"
        )?;
        // A stage off the paths of the rows explaining a percentile: "–".
        let share = |b: &Breakdown, stage: StageId| match b.parts.iter().find(|(s, _)| *s == stage)
        {
            Some(&(_, ns)) => {
                let pct = 100.0 * ns as f64 / b.total_ns().max(1) as f64;
                format!("{} {:>3.0}%", fmt_ns(ns), pct)
            }
            None => "–".to_string(),
        };
        for stage in self.rows() {
            let (name, kind) = match self.stages.get(stage) {
                // An edge by both its ends, each cut short alike.
                Some(s) => match s.name.split_once(" → ") {
                    Some((from, to)) => (format!("{} → {}", cut(from, 23), cut(to, 24)), s.kind),
                    None => (cut(&s.name, 50), s.kind),
                },
                None => (format!("stage {stage}"), StageKind::Operator),
            };
            let kind = kind.as_str();
            writeln!(
                f,
                "  {:<50} {:<9} {:>15} {:>15}",
                name,
                kind,
                share(p50, stage),
                share(p99, stage)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use millrace_core::{Watermark, attach_entered};

    use super::*;

    #[test]
    fn parts_run_from_stamp_to_stamp_and_add_up_to_the_total() {
        let mut t = Trace::start(1_000, 0, 1_500);
        t.stamp(5, 1_600);
        t.stamp(6, 2_600);
        t.stamp(1, 2_700);
        let done = t.finish(t.origin_ns(), 2, 3_000);
        assert_eq!(
            done.parts,
            vec![(0, 500), (5, 100), (6, 1_000), (1, 100), (2, 300)]
        );
        assert_eq!(done.total_ns, 2_000);
        assert_eq!(done.at_ns, 3_000);
    }

    /// Two clocks read out of order never make a negative share, and the
    /// total is still the parts' sum.
    #[test]
    fn a_stamp_before_the_previous_one_counts_as_no_time() {
        let mut t = Trace::start(1_000, 0, 1_500);
        t.stamp(1, 1_400);
        let done = t.finish(t.origin_ns(), 2, 1_700);
        assert_eq!(done.parts, vec![(0, 500), (1, 0), (2, 200)]);
        assert_eq!(done.total_ns, 700);
    }

    #[test]
    fn a_watermark_follows_the_row_that_advanced_it_and_barriers_carry_nothing() {
        let t = Trace::start(1_000, 0, 1_500);
        let wm = Message::Watermark(Watermark {
            time_ms: 7,
            entered_ns: 1_200,
        });
        assert_eq!(t.for_message(&wm).unwrap().origin_ns(), 1_200);
        assert!(t.for_message(&Message::Barrier(3)).is_none());
        assert!(t.for_message(&Message::Idle).is_none());
        assert_eq!(t.for_message(&Message::End).unwrap().origin_ns(), 1_000);
    }

    fn rows_entered_at(entered: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("v", DataType::Int64, false)]);
        let v = Int64Array::from(vec![0; entered.len()]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(v)]).unwrap();
        attach_entered(&batch, Int64Array::from(entered.to_vec())).unwrap()
    }

    /// Rows follow their oldest, unless it is older than the traced row
    /// (merged with rows that took another path): results a watermark
    /// made final follow the row that closed them, as their latency does.
    #[test]
    fn rows_follow_their_oldest_row_but_never_an_older_one_than_traced() {
        let t = Trace::start(1_000, 0, 1_500);
        let filtered = Message::Data(rows_entered_at(&[1_300, 1_200]));
        assert_eq!(t.for_message(&filtered).unwrap().origin_ns(), 1_200);
        let merged = Message::Data(rows_entered_at(&[600, 1_000, 1_100]));
        assert_eq!(t.for_message(&merged).unwrap().origin_ns(), 1_000);
    }

    fn finished(total: u64, slow: u64) -> FinishedTrace {
        FinishedTrace {
            at_ns: total as i64,
            total_ns: total,
            parts: vec![(0, total - slow), (3, slow)],
        }
    }

    fn shared(traces: Vec<FinishedTrace>) -> Vec<Arc<FinishedTrace>> {
        traces.into_iter().map(Arc::new).collect()
    }

    /// The nearest traces to the latency asked about, not the largest or
    /// the first, explain it; their shares are averaged per stage.
    #[test]
    fn a_latency_is_explained_by_the_traces_nearest_it() {
        let mut traces: Vec<FinishedTrace> = (0..100).map(|i| finished(100 + i, 0)).collect();
        // Twenty traces near 10 µs, all but 1 µs of it in stage 3.
        traces.extend((0..20).map(|i| finished(9_990 + i, 9_000 + i)));
        traces.push(finished(1_000_000, 0));
        let traces = shared(traces);
        let b = explain(&traces, 10_000).unwrap();
        assert_eq!(b.traces, COHORT);
        assert!(b.min_ns >= 9_990 && b.max_ns <= 10_009, "{b:?}");
        assert_eq!(b.largest().unwrap().0, 3);
        let (_, slow) = b.largest().unwrap();
        assert_eq!(b.total_ns() - slow, b.parts[0].1);
        assert!((9_000..9_020).contains(&slow), "{b:?}");
        // Only the nearest, when no other is near.
        let far = explain(&traces, 900_000).unwrap();
        assert_eq!((far.traces, far.min_ns), (1, 1_000_000));
        let fast = explain(&traces, 150).unwrap();
        assert_eq!(fast.parts[1], (3, 0), "no time in stage 3 near 150 ns");
        assert!((142..=158).contains(&fast.parts[0].1), "{fast:?}");
        assert!(explain(&[], 5).is_none());
    }

    #[test]
    fn the_log_keeps_recent_traces_in_order_and_a_sample_of_the_run() {
        let log = TraceLog::new(TraceStages::default());
        for i in 0..(RECENT + 10) as u64 {
            log.add(finished(i + 1, 0));
        }
        assert_eq!(log.finished(), (RECENT + 10) as u64);
        let last = log.since((RECENT + 5) as i64);
        assert_eq!(
            last.iter().map(|t| t.at_ns).collect::<Vec<_>>(),
            ((RECENT + 5) as i64..=(RECENT + 10) as i64).collect::<Vec<_>>()
        );
        let run = log.whole_run();
        assert!(
            run.len() <= 2 * WHOLE_RUN && run.len() >= WHOLE_RUN,
            "{}",
            run.len()
        );
        // Evenly thinned: the first trace is kept, and so is one from the end.
        assert_eq!(run[0].at_ns, 1);
        assert!(run.last().unwrap().at_ns > (RECENT - 2 * (RECENT / WHOLE_RUN)) as i64);
    }
}
