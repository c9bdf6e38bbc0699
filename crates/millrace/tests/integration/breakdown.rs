//! The per-stage latency breakdown (`millrace_runtime::trace`): traced rows
//! are stamped by every stage they pass, each stage's share is its own time
//! (an operator that sleeps shows the sleep), the shares add up to the
//! row's latency, and that latency is one the sink recorded, for plain rows
//! and for window results alike.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{ints, ts_and_key_schema};
use arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::SchemaRef;
use hdrhistogram::Histogram;
use millrace_core::batch::attach_entered;
use millrace_core::time::now_ns;
use millrace_core::{
    CollectSink, Emitter, EventTime, Operator, OperatorFactory, Result, Snapshot, SourceFactory,
    SourcePoll, SourceReader,
};
use millrace_runtime::trace::{FinishedTrace, StageKind};
use millrace_runtime::{LiveAttempt, Pipeline, PipelineConfig};
use millrace_sql::api::{StreamExt, Window, agg};

const BATCHES: i64 = 20;
const ROWS: i64 = 10;
/// What the slow operator sleeps per batch: its share can be no less.
const SLOW: Duration = Duration::from_millis(5);

/// `BATCHES` batches of `ROWS` rows, entered just before they are read,
/// with event times 100 ms apart from one batch to the next.
#[derive(Clone)]
struct Batches;

impl SourceFactory for Batches {
    fn name(&self) -> String {
        "batches".into()
    }
    fn schema(&self) -> SchemaRef {
        ts_and_key_schema()
    }
    fn event_time(&self) -> Option<EventTime> {
        Some(EventTime::new("ts", 0))
    }
    fn create(&self, _: usize, _: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(BatchReader(0)))
    }
}

struct BatchReader(i64);

impl SourceReader for BatchReader {
    fn poll_batch(&mut self, _: usize) -> Result<SourcePoll> {
        if self.0 == BATCHES {
            return Ok(SourcePoll::Exhausted);
        }
        let ts = vec![self.0 * 100; ROWS as usize];
        let keys: Vec<i64> = (0..ROWS).collect();
        self.0 += 1;
        let batch = RecordBatch::try_new(
            Batches.schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(ts)),
                Arc::new(Int64Array::from(keys)),
            ],
        )?;
        // Rows entered 1 µs apart, the last now: the oldest row and the
        // one that advances the watermark (the last) are different rows.
        let now = now_ns();
        let entered = Int64Array::from_iter_values((0..ROWS).map(|i| now - (ROWS - 1 - i) * 1000));
        Ok(SourcePoll::Batch(attach_entered(&batch, entered)?))
    }
}

/// Sleeps `SLOW` on every batch, then passes it on.
struct Slow;

impl OperatorFactory for Slow {
    fn name(&self) -> String {
        "slow".into()
    }
    fn output_schema(&self) -> SchemaRef {
        Batches.schema()
    }
    fn output_event_time(&self) -> Option<String> {
        Some("ts".into())
    }
    fn create(&self, _: usize, _: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Slow))
    }
}

impl Operator for Slow {
    fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(Snapshot::none())
    }
    fn on_data(&mut self, _: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        // The work being measured, not a wait for anything.
        std::thread::sleep(SLOW);
        out.data(batch);
        Ok(())
    }
}

fn config(trace_every: Duration) -> PipelineConfig {
    PipelineConfig {
        parallelism: 1,
        workers: 2,
        latency_breakdown: Some(trace_every),
        ..PipelineConfig::default()
    }
}

/// Every trace the attempt kept, and the latencies its sinks recorded.
fn traces_and_latency(attempt: &LiveAttempt) -> (Vec<Arc<FinishedTrace>>, Histogram<u64>) {
    let log = attempt.traces.as_ref().expect("the run traces");
    (log.whole_run(), attempt.latency())
}

/// Each trace's stages by name and kind.
fn path(attempt: &LiveAttempt, trace: &FinishedTrace) -> Vec<(String, StageKind)> {
    let stages = &attempt.traces.as_ref().unwrap().stages;
    (trace.parts.iter())
        .map(|(id, _)| {
            let s = stages.get(*id).unwrap();
            (s.name.clone(), s.kind)
        })
        .collect()
}

/// With every batch traced, each reaches the sink with a stamp from every
/// stage on its path, in order; the slow operator's share holds its sleep;
/// the shares add up to the total, and the total is a latency the sink
/// recorded (its batch's oldest row's).
#[test]
fn every_stage_on_the_path_gets_its_own_time_and_the_shares_add_up_to_the_latency() {
    let pipeline = Pipeline::new(config(Duration::from_nanos(1)));
    let live = pipeline.live();
    let out = CollectSink::new();
    pipeline
        .source(Batches)
        .apply(Arc::new(Slow))
        .rebalance()
        .apply(Arc::new(Slow))
        .with_parallelism(2)
        .unwrap()
        .sink(out.clone())
        .unwrap();
    let summary = pipeline.run().unwrap();
    let attempt = live.attempt().unwrap();
    let (traces, latency) = traces_and_latency(&attempt);
    assert_eq!(out.rows() as i64, BATCHES * ROWS);
    assert_eq!(traces.len() as i64, BATCHES, "one trace per batch");
    let expected = [
        ("source batches", StageKind::Source),
        ("slow", StageKind::Operator),
        ("slow → slow (round-robin)", StageKind::Exchange),
        ("slow → slow (round-robin)", StageKind::Channel),
        ("slow", StageKind::Operator),
        ("sink collect", StageKind::Sink),
    ];
    for t in &traces {
        let names: Vec<(String, StageKind)> = path(&attempt, t);
        let want: Vec<(String, StageKind)> =
            expected.iter().map(|(n, k)| (n.to_string(), *k)).collect();
        assert_eq!(names, want);
        assert_eq!(t.parts.iter().map(|p| p.1).sum::<u64>(), t.total_ns);
        for at in [1, 4] {
            assert!(
                t.parts[at].1 >= SLOW.as_nanos() as u64,
                "the slow operator's share is at least its sleep: {t:?}"
            );
        }
        assert!(
            latency.count_at(t.total_ns) > 0,
            "{} ns is not a latency the sink recorded",
            t.total_ns
        );
    }
    let breakdown = summary.breakdown.as_ref().unwrap();
    assert_eq!(breakdown.traced, BATCHES as u64);
    let p50 = breakdown.p50.as_ref().unwrap();
    let slow: u64 = (p50.parts.iter())
        .filter(|(id, _)| breakdown.stages.get(*id).unwrap().name == "slow")
        .map(|p| p.1)
        .sum();
    assert!(slow >= 2 * SLOW.as_nanos() as u64, "{p50:?}");
    let text = summary.to_string();
    assert!(
        text.contains("breakdown    20 traced rows; nearest the p50: "),
        "{text}"
    );
    assert!(text.contains("slow → slow (round-robin)"), "{text}");
}

/// Window results count their latency from the row whose watermark made
/// them final (the newest row, for those the end of input made final), and
/// so do their traces: every window is traced (whatever the sampling
/// interval), through the window operator, and each trace's total is a
/// latency the sink recorded, whether the closing batch was sampled (its
/// trace follows its oldest row) or traced for closing a window.
#[test]
fn window_results_are_explained_from_the_row_that_closed_them() {
    // Every batch sampled; then none but those whose watermark closes one.
    for every in [Duration::from_nanos(1), Duration::from_secs(3600)] {
        windows_traced(every);
    }
}

fn windows_traced(every: Duration) {
    let pipeline = Pipeline::new(config(every));
    let live = pipeline.live();
    let out = CollectSink::new();
    pipeline
        .source(Batches)
        // Without keys, fused with the source: the task knows at once
        // which watermark closes a window (behind an exchange, the
        // consumer says so once it has run).
        .window(Window::tumbling_ms(500).agg(agg::count_all().alias("n")))
        .unwrap()
        .sink(out.clone())
        .unwrap();
    pipeline.run().unwrap();
    let attempt = live.attempt().unwrap();
    let (traces, latency) = traces_and_latency(&attempt);
    // Windows of 500 ms over event times 0..1900: [0, 500) … [1500, 2000),
    // three closed by the watermark, the last by the end of the input
    // (traced from the newest row read).
    let windows = traces
        .iter()
        .filter(|t| {
            (path(&attempt, t).iter())
                .any(|(name, kind)| name.starts_with("window") && *kind == StageKind::Operator)
        })
        .count();
    assert_eq!(windows, 4, "{traces:?}");
    for t in &traces {
        assert_eq!(path(&attempt, t)[0].1, StageKind::Source);
        assert_eq!(path(&attempt, t).last().unwrap().1, StageKind::Sink);
        assert!(
            latency.count_at(t.total_ns) > 0,
            "{} ns is not a latency the sink recorded",
            t.total_ns
        );
    }
    assert_eq!(ints(&out.batches(), "n"), [ROWS * 5; 4]);
}
