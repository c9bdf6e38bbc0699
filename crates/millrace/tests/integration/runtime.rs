//! Runtime behaviour end to end: bounded memory under a slow sink, barrier
//! alignment, idle sources, late rows, errors, and the plan's fusion.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use millrace_connectors::file::{FileSource, OnError};
use millrace_connectors::iot::{IotConfig, IotSource};
use millrace_connectors::nexmark::{NexmarkConfig, NexmarkSource};
use millrace_core::batch::attach_entered_now;
use millrace_core::time::now_ns;
use millrace_core::{
    BarrierId, CollectSink, Emitter, EventTime, Operator, OperatorFactory, Result, SinkFactory,
    SinkWriter, Snapshot, SourceFactory, SourcePoll, SourceReader,
};
use millrace_runtime::{ChannelCapacity, Pipeline, PipelineConfig};
use millrace_sql::api::{StreamExt, Window, agg, col, lit};

fn config(parallelism: usize) -> PipelineConfig {
    PipelineConfig {
        parallelism,
        workers: parallelism,
        ..PipelineConfig::default()
    }
}

// ── bounded memory ──────────────────────────────────────────────────────────

/// A sink that does a lot of pointless work per batch, so it is far slower
/// than the generator feeding it.
#[derive(Clone, Default)]
struct SlowSink {
    rows: Arc<AtomicU64>,
}

impl SinkFactory for SlowSink {
    fn name(&self) -> String {
        "slow".into()
    }
    fn create(&self, _: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter for SlowSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut x = 0u64;
        for i in 0..200_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        std::hint::black_box(x);
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn slow_sink_backpressures_and_channels_never_exceed_capacity() {
    let capacity = ChannelCapacity {
        rows: 300,
        bytes: 1 << 20,
        messages: 16,
    };
    let pipeline = Pipeline::new(PipelineConfig {
        channel: capacity,
        batch_size: 128,
        ..config(2)
    });
    let sink = SlowSink::default();
    pipeline
        .source(NexmarkSource::bids(NexmarkConfig {
            events: Some(60_000),
            ..NexmarkConfig::default()
        }))
        .key_by(["auction"])
        .unwrap()
        .apply(Arc::new(PassThrough))
        .rebalance()
        .sink(sink.clone())
        .unwrap();
    let summary = pipeline.run().unwrap();
    // Nothing lost…
    assert_eq!(sink.rows.load(Ordering::Relaxed), summary.events);
    assert_eq!(summary.sink_rows, summary.events);
    // …the sink held the pipeline back…
    assert!(
        summary.backpressure_events() > 0,
        "the slow sink never pushed back"
    );
    // …and no channel ever held more rows or messages than allowed.
    assert!(!summary.channels.is_empty());
    for c in &summary.channels {
        assert!(
            c.max_rows <= capacity.rows,
            "{} → {} held {} rows, capacity {}",
            c.from,
            c.to,
            c.max_rows,
            capacity.rows
        );
    }
    assert!(summary.channels.iter().any(|c| c.max_rows > 0));
}

/// An identity operator (forces an exchange and a separate task).
struct PassThrough;

impl OperatorFactory for PassThrough {
    fn name(&self) -> String {
        "pass".into()
    }
    fn output_schema(&self) -> SchemaRef {
        NexmarkSource::schema_of(millrace_connectors::nexmark::NexmarkKind::Bid)
    }
    fn output_event_time(&self) -> Option<String> {
        Some("date_time".into())
    }
    fn create(&self, _: usize, _: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(PassThrough))
    }
}

impl Operator for PassThrough {
    fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(Snapshot::none())
    }

    fn on_data(&mut self, _: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        out.data(batch);
        Ok(())
    }
}

// ── barrier alignment ───────────────────────────────────────────────────────

/// Two-input operator recording, at every aligned barrier, how many rows it
/// had received from each input.
#[derive(Clone, Default)]
struct BarrierProbe {
    seen: Arc<Mutex<Vec<(BarrierId, u64, u64)>>>,
    rows: [u64; 2],
}

impl OperatorFactory for BarrierProbe {
    fn name(&self) -> String {
        "probe".into()
    }
    fn output_schema(&self) -> SchemaRef {
        IotSource::schema()
    }
    fn output_event_time(&self) -> Option<String> {
        Some("ts".into())
    }
    fn create(&self, _: usize, _: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(self.clone()))
    }
}

impl Operator for BarrierProbe {
    fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(Snapshot::none())
    }

    fn on_data(&mut self, input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        self.rows[input] += batch.num_rows() as u64;
        out.data(batch);
        Ok(())
    }
    fn on_barrier(&mut self, id: BarrierId, out: &mut Emitter) -> Result<()> {
        self.seen
            .lock()
            .unwrap()
            .push((id, self.rows[0], self.rows[1]));
        out.barrier(id);
        Ok(())
    }
}

#[test]
fn barriers_from_two_sources_arrive_aligned_at_a_two_input_operator() {
    let pipeline = Pipeline::new(PipelineConfig {
        barrier_every_rows: Some(1000),
        batch_size: 100,
        ..config(1)
    });
    let iot = |events, seed| {
        IotSource::new(IotConfig {
            events: Some(events),
            seed,
            ..IotConfig::default()
        })
    };
    let a = pipeline.source(iot(10_000, 1));
    let b = pipeline.source(iot(5_500, 2));
    let probe = BarrierProbe::default();
    a.connect(&b, Arc::new(probe.clone()))
        .unwrap()
        .sink(CollectSink::new())
        .unwrap();
    pipeline.run().unwrap();
    let seen = probe.seen.lock().unwrap().clone();
    // Source a injects barriers 1..=10 (after every 1000 rows), source b 1..=5;
    // at barrier k the operator has exactly the rows before k from each input.
    let want: Vec<(BarrierId, u64, u64)> = (1..=10u64)
        .map(|k| (k, 1000 * k, (1000 * k).min(5_500)))
        .collect();
    assert_eq!(seen, want);
}

// ── idle sources ────────────────────────────────────────────────────────────

/// A source that never produces a row and stays open until `release` is set
/// (or, as a safety net so a broken build fails instead of hanging, after
/// many polls).
#[derive(Clone)]
struct SilentSource {
    release: Arc<AtomicBool>,
    released_by_flag: Arc<AtomicBool>,
}

struct SilentReader {
    source: SilentSource,
    polls: u64,
}

impl SourceFactory for SilentSource {
    fn name(&self) -> String {
        "silent".into()
    }
    fn schema(&self) -> SchemaRef {
        IotSource::schema()
    }
    fn event_time(&self) -> Option<EventTime> {
        Some(EventTime::new("ts", 0).with_idle_timeout(Some(Duration::from_millis(20))))
    }
    fn create(&self, _: usize, _: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(SilentReader {
            source: self.clone(),
            polls: 0,
        }))
    }
}

impl SourceReader for SilentReader {
    fn poll_batch(&mut self, _: usize) -> Result<SourcePoll> {
        self.polls += 1;
        if self.source.release.load(Ordering::SeqCst) {
            self.source.released_by_flag.store(true, Ordering::SeqCst);
            return Ok(SourcePoll::Exhausted);
        }
        if self.polls > 20_000 {
            return Ok(SourcePoll::Exhausted);
        }
        Ok(SourcePoll::Pending {
            wake_at_ns: Some(now_ns() + 1_000_000),
        })
    }
}

#[test]
fn an_idle_source_does_not_hold_back_the_watermark() {
    idle_beside_busy(50_000);
}

/// A busy source so short that it usually ends before the silent one goes
/// idle: the ended input must not hold the windows back either.
#[test]
fn a_finished_source_beside_an_idle_one_lets_windows_fire() {
    idle_beside_busy(100);
}

fn idle_beside_busy(events: u64) {
    silent_beside_busy(events, None, 1);
}

/// Unions a busy IoT source of `events` rows with a [`SilentSource`] into a
/// keyed window. The silent source stays open until the sink has received
/// window counts adding up to `release_at` rows; the test fails if that only
/// happened because the silent source gave up.
fn silent_beside_busy(events: u64, barrier_every_rows: Option<u64>, release_at: i64) {
    let pipeline = Pipeline::new(PipelineConfig {
        barrier_every_rows,
        ..config(1)
    });
    let release = Arc::new(AtomicBool::new(false));
    let silent = SilentSource {
        release: release.clone(),
        released_by_flag: Arc::new(AtomicBool::new(false)),
    };
    let busy = pipeline.source(IotSource::new(IotConfig {
        events: Some(events),
        event_rate: 10_000.0,
        devices: 10,
        ..IotConfig::default()
    }));
    let quiet = pipeline.source(silent.clone());
    let sink = CountFlagSink {
        flag: release,
        threshold: release_at,
        inner: CollectSink::new(),
    };
    busy.union(&quiet)
        .unwrap()
        .window(
            Window::tumbling_ms(1000)
                .keys(["device_id"])
                .agg(agg::count_all().alias("n")),
        )
        .unwrap()
        .sink(sink.clone())
        .unwrap();
    pipeline.run().unwrap();
    // Window results reached the sink while the silent source was still open.
    assert!(silent.released_by_flag.load(Ordering::SeqCst));
    assert_eq!(
        ints(&sink.inner.batches(), "n").iter().sum::<i64>(),
        events as i64
    );
}

// ── late rows ───────────────────────────────────────────────────────────────

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn readings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]))
}

#[test]
fn rows_behind_the_watermark_are_counted_and_routed_to_the_side_output() {
    let dir = tempfile::tempdir().unwrap();
    // Watermark bound 1000 ms. Batches of one row, so the watermark moves
    // after every line. Row 4 (ts 500) arrives after the watermark reached
    // 3000 (from ts 4000): it is late. Row 5 (ts 3500) is out of order but
    // not behind the watermark, so it counts.
    let path = write_file(
        &dir,
        "r.jsonl",
        r#"{"ts": 1000, "k": 1, "v": 10}
{"ts": 2500, "k": 1, "v": 20}
{"ts": 4000, "k": 2, "v": 5}
{"ts": 500, "k": 1, "v": 99}
{"ts": 3500, "k": 2, "v": 7}
{"ts": 9000, "k": 1, "v": 1}
"#,
    );
    let source =
        FileSource::json(&path, readings_schema()).with_event_time(EventTime::new("ts", 1000));
    let pipeline = Pipeline::new(PipelineConfig {
        batch_size: 1,
        ..config(1)
    });
    let late = CollectSink::new();
    let out = CollectSink::new();
    let windows = pipeline
        .source(source)
        .window(
            Window::tumbling_ms(2000)
                .keys(["k"])
                .agg(agg::sum(col("v")).alias("total")),
        )
        .unwrap();
    windows.sink(out.clone()).unwrap();
    windows.late_rows(0).unwrap().sink(late.clone()).unwrap();
    let summary = pipeline.run().unwrap();
    assert_eq!(summary.operator("window").unwrap().late_rows, 1);
    let late_rows = late.batches();
    assert_eq!(ints(&late_rows, "ts"), vec![500]);
    assert_eq!(ints(&late_rows, "v"), vec![99]);
    let b = out.batches();
    let mut got: Vec<(i64, i64, i64)> = ints(&b, "window.start")
        .into_iter()
        .zip(ints(&b, "k"))
        .zip(ints(&b, "total"))
        .map(|((w, k), t)| (w, k, t))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, 1, 10),
            (2000, 1, 20),
            (2000, 2, 7),
            (4000, 2, 5),
            (8000, 1, 1)
        ]
    );
}

// ── bad input through a pipeline ─────────────────────────────────────────────

const MIXED: &str = r#"{"ts": 1000, "k": 1, "v": 10}
{"ts": 1100, "k": 1, "v": "ten"}
{"ts": 1200, "k": 2, "v": 3}
this is not json
{"ts": 1300, "k": 2}
"#;

fn file_pipeline(path: &std::path::Path, policy: OnError) -> (Pipeline, CollectSink) {
    let pipeline = Pipeline::new(config(1));
    let out = CollectSink::new();
    pipeline
        .source(FileSource::json(path, readings_schema()).with_on_error(policy))
        .sink(out.clone())
        .unwrap();
    (pipeline, out)
}

#[test]
fn bad_line_under_fail_stops_the_pipeline_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, "in.jsonl", MIXED);
    let (pipeline, _) = file_pipeline(&path, OnError::Fail);
    let err = pipeline.run().unwrap_err().to_string();
    assert!(err.contains("source file:in.jsonl"), "{err}");
    assert!(err.contains("in.jsonl:2:"), "{err}");
}

#[test]
fn bad_lines_under_skip_are_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, "in.jsonl", MIXED);
    let (pipeline, out) = file_pipeline(&path, OnError::Skip);
    let summary = pipeline.run().unwrap();
    let src = summary.operator("source").unwrap();
    assert_eq!(src.source_stats.skipped, 2);
    // The missing nullable `v` is not an error: three good rows.
    assert_eq!(ints(&out.batches(), "k"), vec![1, 2, 2]);
    assert_eq!(summary.events, 3);
}

#[test]
fn bad_lines_under_dead_letter_are_written_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, "in.jsonl", MIXED);
    let dead = dir.path().join("dead.jsonl");
    let (pipeline, out) = file_pipeline(&path, OnError::DeadLetter(dead.clone()));
    let summary = pipeline.run().unwrap();
    assert_eq!(
        summary
            .operator("source")
            .unwrap()
            .source_stats
            .dead_lettered,
        2
    );
    assert_eq!(ints(&out.batches(), "v").len(), 3);
    let letters: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<i64> = letters
        .iter()
        .map(|l| l["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 4]);
    assert_eq!(letters[1]["raw"], "this is not json");
    assert!(
        letters
            .iter()
            .all(|l| !l["reason"].as_str().unwrap().is_empty())
    );
}

// ── operator errors ─────────────────────────────────────────────────────────

#[test]
fn an_operator_error_stops_the_pipeline_naming_the_operator() {
    let pipeline = Pipeline::new(config(2));
    pipeline
        .source(NexmarkSource::bids(NexmarkConfig {
            events: Some(10_000),
            ..NexmarkConfig::default()
        }))
        .with_column("ratio", col("price") / (col("bidder") - col("bidder")))
        .unwrap()
        .sink(CollectSink::new())
        .unwrap();
    let err = pipeline.run().unwrap_err().to_string();
    assert!(err.contains("operator 'project["), "{err}");
    assert!(
        err.contains("ratio = price@2 / (bidder@1 - bidder@1)"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("divide by zero"), "{err}");
}

struct Panicky;

impl OperatorFactory for Panicky {
    fn name(&self) -> String {
        "panicky".into()
    }
    fn output_schema(&self) -> SchemaRef {
        IotSource::schema()
    }
    fn output_event_time(&self) -> Option<String> {
        None
    }
    fn create(&self, _: usize, _: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Panicky))
    }
}

impl Operator for Panicky {
    fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(Snapshot::none())
    }

    fn on_data(&mut self, _: usize, _: RecordBatch, _: &mut Emitter) -> Result<()> {
        panic!("bug in a user operator")
    }
}

#[test]
fn a_panicking_operator_is_reported_not_propagated() {
    let pipeline = Pipeline::new(config(2));
    pipeline
        .source(IotSource::new(IotConfig {
            events: Some(1000),
            ..IotConfig::default()
        }))
        .apply(Arc::new(Panicky))
        .sink(CollectSink::new())
        .unwrap();
    let err = pipeline.run().unwrap_err().to_string();
    assert_eq!(
        err,
        "operator 'panicky' failed: panic: bug in a user operator"
    );
}

// ── plan ────────────────────────────────────────────────────────────────────

#[test]
fn explain_shows_fused_chains_and_exchanges() {
    let pipeline = Pipeline::new(config(2));
    pipeline
        .source(NexmarkSource::bids(NexmarkConfig::default()))
        .filter(col("price").gt(lit(1000)))
        .unwrap()
        .with_column("cents", col("price") * lit(100))
        .unwrap()
        .window(
            Window::tumbling_ms(10_000)
                .keys(["auction"])
                .agg(agg::count_all().alias("n")),
        )
        .unwrap()
        .sink(CollectSink::new())
        .unwrap();
    let plan = pipeline.explain().unwrap();
    let want = "\
task 0 [parallelism 2]
    source nexmark-bids  →  filter[price@2 > 1000]  →  project[auction, bidder, price, channel, url, date_time, extra, cents = price@2 * 100]
    └─ hash(auction) ─▶ task 1 (input 0)
task 1 [parallelism 2]
    window(tumble 10s by [auction]: count(1) AS n)  →  sink collect
watermarks:
    source nexmark-bids: date_time − 4000 ms, idle timeout 1000 ms
";
    assert_eq!(plan, want);
}

/// A stream read by several consumers at its own parallelism runs them in
/// its task, one after the other on each batch: every consumer sees every
/// row, whether it ends in a fused sink or behind an exchange.
#[test]
fn a_stream_read_by_three_consumers_fuses_them_and_feeds_each_every_row() {
    let nexmark = NexmarkConfig {
        events: Some(20_000),
        ..NexmarkConfig::default()
    };
    let pipeline = Pipeline::new(config(2));
    let (expensive, cents, counts) = (CollectSink::new(), CollectSink::new(), CollectSink::new());
    let bids = pipeline.source(NexmarkSource::bids(nexmark.clone()));
    bids.filter(col("price").gt(lit(1000)))
        .unwrap()
        .sink(expensive.clone())
        .unwrap();
    bids.with_column("cents", col("price") * lit(100))
        .unwrap()
        .sink(cents.clone())
        .unwrap();
    bids.window(
        Window::tumbling_ms(10_000)
            .keys(["auction"])
            .agg(agg::count_all().alias("n")),
    )
    .unwrap()
    .sink(counts.clone())
    .unwrap();
    let plan = pipeline.explain().unwrap();
    let want = "\
task 0 [parallelism 2]
    source nexmark-bids
    └─ filter[price@2 > 1000]  →  sink collect
    └─ project[auction, bidder, price, channel, url, date_time, extra, cents = price@2 * 100]  →  sink collect
    └─ hash(auction) ─▶ task 1 (input 0)
task 1 [parallelism 2]
    window(tumble 10s by [auction]: count(1) AS n)  →  sink collect
";
    assert!(plan.starts_with(want), "{plan}");
    pipeline.run().unwrap();

    let input = read_all(&NexmarkSource::bids(nexmark));
    let mut prices = ints(&input, "price");
    let mut want_expensive: Vec<i64> = prices.iter().copied().filter(|p| *p > 1000).collect();
    want_expensive.sort();
    let mut got_expensive = ints(&expensive.batches(), "price");
    got_expensive.sort();
    assert_eq!(got_expensive, want_expensive);

    let out = cents.batches();
    let mut pairs: Vec<(i64, i64)> = ints(&out, "price")
        .into_iter()
        .zip(ints(&out, "cents"))
        .collect();
    pairs.sort();
    prices.sort();
    let want_pairs: Vec<(i64, i64)> = prices.iter().map(|p| (*p, p * 100)).collect();
    assert_eq!(pairs, want_pairs);

    let counted: i64 = ints(&counts.batches(), "n").iter().sum();
    assert_eq!(
        counted,
        input.iter().map(|b| b.num_rows() as i64).sum::<i64>()
    );
}

#[test]
fn entered_time_survives_the_pipeline() {
    // Rows built by hand with a known entered time come out with latency
    // measured from it: the summary counts every row.
    let pipeline = Pipeline::new(config(1));
    pipeline
        .source(HandSource)
        .sink(CollectSink::new())
        .unwrap();
    let summary = pipeline.run().unwrap();
    assert_eq!(summary.latency.count, 3);
    assert!(summary.latency.max >= summary.latency.p50);
}

struct HandSource;

impl SourceFactory for HandSource {
    fn name(&self) -> String {
        "hand".into()
    }
    fn schema(&self) -> SchemaRef {
        ts_and_key_schema()
    }
    fn event_time(&self) -> Option<EventTime> {
        Some(EventTime::new("ts", 0))
    }
    fn create(&self, _: usize, _: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(HandReader(false)))
    }
}

struct HandReader(bool);

impl SourceReader for HandReader {
    fn poll_batch(&mut self, _: usize) -> Result<SourcePoll> {
        if std::mem::replace(&mut self.0, true) {
            return Ok(SourcePoll::Exhausted);
        }
        let batch = RecordBatch::try_new(
            HandSource.schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![1, 2, 3])),
                Arc::new(Int64Array::from(vec![7, 8, 9])),
            ],
        )?;
        Ok(SourcePoll::Batch(attach_entered_now(&batch, now_ns())?))
    }
}

// ── graceful stop ───────────────────────────────────────────────────────────

/// Stops the pipeline once `after` rows have arrived.
#[derive(Clone)]
struct StopAfter {
    stop: millrace_runtime::StopHandle,
    after: usize,
    inner: CollectSink,
}

impl SinkFactory for StopAfter {
    fn name(&self) -> String {
        "stop-after".into()
    }
    fn create(&self, _: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter for StopAfter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.inner.write(batch)?;
        if self.inner.rows() >= self.after {
            self.stop.stop();
        }
        Ok(())
    }
}

#[test]
fn stopping_an_unbounded_pipeline_drains_it_without_losing_rows() {
    let pipeline = Pipeline::new(config(2));
    let sink = StopAfter {
        stop: pipeline.stop_handle(),
        after: 1,
        inner: CollectSink::new(),
    };
    pipeline
        .source(IotSource::new(IotConfig {
            events: None,
            devices: 100,
            ..IotConfig::default()
        }))
        .window(
            Window::tumbling_ms(1000)
                .keys(["device_id"])
                .agg(agg::count_all().alias("n")),
        )
        .unwrap()
        .sink(sink.clone())
        .unwrap();
    let summary = pipeline.run().unwrap();
    // Every row the sources emitted before stopping is in a window result:
    // the stop ended the streams, and End fired the open windows.
    let counted: i64 = ints(&sink.inner.batches(), "n").iter().sum();
    assert!(summary.events > 0);
    assert_eq!(counted as u64, summary.events);
}

// ── exchanges ───────────────────────────────────────────────────────────────

/// Source at parallelism 1 → `exchange` → pass-through at parallelism 2 →
/// sink: returns the auction ids each pass-through instance saw.
fn through_exchange(
    exchange: impl FnOnce(millrace_runtime::Stream) -> millrace_runtime::Stream,
) -> (u64, Vec<i64>) {
    let pipeline = Pipeline::new(config(2));
    let out = CollectSink::new();
    let bids = pipeline
        .source(NexmarkSource::bids(NexmarkConfig {
            events: Some(20_000),
            ..NexmarkConfig::default()
        }))
        .with_parallelism(1)
        .unwrap();
    exchange(bids)
        .apply(Arc::new(PassThrough))
        .with_parallelism(2)
        .unwrap()
        .sink(out.clone())
        .unwrap();
    let summary = pipeline.run().unwrap();
    let mut auctions = ints(&out.batches(), "auction");
    auctions.sort();
    (summary.events, auctions)
}

#[test]
fn broadcast_delivers_every_row_to_every_instance() {
    let (events, got) = through_exchange(|s| s.broadcast());
    let (_, once) = through_exchange(|s| s.rebalance());
    assert_eq!(
        once.len() as u64,
        events,
        "round-robin delivers each row once"
    );
    let twice: Vec<i64> = once.iter().flat_map(|a| [*a, *a]).collect();
    assert_eq!(got, twice);
}

#[test]
fn a_window_without_keys_refuses_parallelism_above_one() {
    let pipeline = Pipeline::new(config(2));
    let err = pipeline
        .source(IotSource::new(IotConfig::default()))
        .window(Window::tumbling_ms(1000).agg(agg::count_all().alias("n")))
        .unwrap()
        .with_parallelism(2)
        .err()
        .expect("keyless window at parallelism 2 must be refused")
        .to_string();
    assert!(err.contains("parallelism at most 1"), "{err}");
}

/// Sets `flag` once the window counts it received add up to `threshold`.
#[derive(Clone)]
struct CountFlagSink {
    flag: Arc<AtomicBool>,
    threshold: i64,
    inner: CollectSink,
}

impl SinkFactory for CountFlagSink {
    fn name(&self) -> String {
        "count-flag".into()
    }
    fn create(&self, _: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter for CountFlagSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.inner.write(batch)?;
        if ints(&self.inner.batches(), "n").iter().sum::<i64>() >= self.threshold {
            self.flag.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[test]
fn a_silent_source_does_not_hold_barrier_alignment_hostage() {
    // Barriers every 1000 rows: the busy source's first barrier blocks its
    // input at the union until the silent source delivers barrier 1 too. A
    // silent source catches up with the barriers others injected, so the
    // busy source keeps flowing: most windows fire while the silent source
    // is still open.
    silent_beside_busy(50_000, Some(1000), 25_000);
}

// ── latency warm-up ─────────────────────────────────────────────────────────

#[test]
fn rows_of_the_latency_warmup_are_written_but_not_measured() {
    let run = |warmup: Duration| {
        let pipeline = Pipeline::new(PipelineConfig {
            latency_warmup: warmup,
            ..config(2)
        });
        let sink = CollectSink::new();
        pipeline
            .source(NexmarkSource::bids(NexmarkConfig {
                events: Some(10_000),
                ..NexmarkConfig::default()
            }))
            .sink(sink.clone())
            .unwrap();
        let summary = pipeline.run().unwrap();
        (summary.sink_rows, summary.latency.count, sink.rows())
    };
    // 10,000 events, 92% bids: every one written either way.
    assert_eq!(run(Duration::ZERO), (9200, 9200, 9200));
    // A warm-up longer than the run: nothing is measured.
    assert_eq!(run(Duration::from_secs(3600)), (9200, 0, 9200));
}

// ── watermark alignment ─────────────────────────────────────────────────────

/// Instance `i` of this source produces `rows` rows `(ts, k = i)`, 10 ms of
/// event time apart, starting at `i × offset_ms`: instance 1 is far ahead.
#[derive(Clone)]
struct SkewedSource {
    rows: i64,
    offset_ms: i64,
}

struct SkewedReader {
    instance: i64,
    next: i64,
    source: SkewedSource,
}

impl SourceFactory for SkewedSource {
    fn name(&self) -> String {
        "skewed".into()
    }
    fn schema(&self) -> SchemaRef {
        HandSource.schema()
    }
    fn event_time(&self) -> Option<EventTime> {
        Some(EventTime::new("ts", 0))
    }
    fn create(&self, instance: usize, _: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(SkewedReader {
            instance: instance as i64,
            next: 0,
            source: self.clone(),
        }))
    }
}

impl SourceReader for SkewedReader {
    fn poll_batch(&mut self, max_rows: usize) -> Result<SourcePoll> {
        let end = (self.next + max_rows as i64).min(self.source.rows);
        if self.next == end {
            return Ok(SourcePoll::Exhausted);
        }
        let start = self.instance * self.source.offset_ms;
        let ts: Vec<i64> = (self.next..end).map(|r| start + r * 10).collect();
        let k = vec![self.instance; ts.len()];
        self.next = end;
        let batch = RecordBatch::try_new(
            self.source.schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(ts)),
                Arc::new(Int64Array::from(k)),
            ],
        )?;
        Ok(SourcePoll::Batch(attach_entered_now(&batch, now_ns())?))
    }
}

/// Instance 1 starts 1000 s of event time ahead and must wait for instance
/// 0 to end. Barriers every 100 rows make the window's input gate align
/// them: the waiting instance keeps injecting barriers, or instance 0 would
/// block behind an alignment that never completes and the run would hang.
/// Every window then counts all of its rows (none late, none lost).
#[test]
fn a_source_instance_far_ahead_waits_without_stalling_barrier_alignment() {
    for alignment in [Some(Duration::from_secs(5)), None] {
        let pipeline = Pipeline::new(PipelineConfig {
            batch_size: 50,
            barrier_every_rows: Some(100),
            source_alignment: alignment,
            ..config(2)
        });
        let sink = CollectSink::new();
        pipeline
            .source(SkewedSource {
                rows: 20_000,
                offset_ms: 1_000_000,
            })
            .window(
                Window::tumbling_ms(1000)
                    .keys(["k"])
                    .agg(agg::count_all().alias("n")),
            )
            .unwrap()
            .sink(sink.clone())
            .unwrap();
        pipeline.run().unwrap();
        // 20 000 rows 10 ms apart per instance: 200 windows of 100 rows
        // each. (Instance 0 sends more messages than a channel holds, so a
        // barrier alignment left waiting would block it.)
        let n = ints(&sink.batches(), "n");
        assert_eq!(n.len(), 400, "alignment {alignment:?}");
        assert!(
            n.iter().all(|&c| c == 100),
            "alignment {alignment:?}: {n:?}"
        );
    }
}
