//! Checkpoints and recovery through the runtime: a run that fails resumes
//! from its last checkpoint and the committed output equals a failure-free
//! computation; a changed plan and a corrupt checkpoint are refused.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use arrow::array::{AsArray, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use millrace_core::batch::attach_entered_now;
use millrace_core::state::{scalar, scalars};
use millrace_core::time::now_ns;
use millrace_core::{
    Epoch, Error, EventTime, Result, SinkCommitter, SinkFactory, SinkWriter, Snapshot,
    SourceFactory, SourcePoll, SourceReader,
};
use millrace_runtime::checkpoint::{
    Announce, CheckpointConfig, CheckpointStore, RestartStrategy, StartFrom,
};
use millrace_runtime::{ChannelCapacity, Pipeline, PipelineConfig, RunSummary};
use millrace_sql::api::{StreamExt, Window, agg};

/// Rows `0..rows`, instance `i` of `p` taking those with `row % p == i`:
/// key `row % 5`, event time `row * 10` ms, except that from row 1000 on
/// every `late_every`-th row (when not 0) is 50 s behind: late beyond
/// doubt, whatever the batches (instances are kept within 5 s of each
/// other). Its position is the next row.
#[derive(Clone)]
struct Sequence {
    rows: i64,
    late_every: i64,
    /// Each batch is followed by a pause this long, so a run spans many
    /// checkpoints.
    pause_ns: i64,
}

fn sequence(late_every: i64) -> Sequence {
    Sequence {
        rows: ROWS,
        late_every,
        pause_ns: 200_000,
    }
}

/// Whether `row` of a [`Sequence`] with `late_every` is late.
fn is_late(row: i64, late_every: i64) -> bool {
    late_every > 0 && row >= 1000 && row % late_every == late_every - 1
}

struct SequenceReader {
    /// Halfway through, the reader waits until it has been asked for its
    /// position (at a barrier) this many times: a run always spans
    /// several checkpoints, however slow the machine.
    hold_for_barriers: u64,
    barriers: std::cell::Cell<u64>,
    pause_ns: i64,
    pause_until: i64,
    late_every: i64,
    next: i64,
    step: i64,
    rows: i64,
    schema: SchemaRef,
}

fn sequence_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("k", DataType::Int64, false),
    ]))
}

impl SourceFactory for Sequence {
    fn name(&self) -> String {
        "sequence".into()
    }
    fn schema(&self) -> SchemaRef {
        sequence_schema()
    }
    fn event_time(&self) -> Option<EventTime> {
        Some(EventTime::new("ts", 0))
    }
    fn create(&self, instance: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(SequenceReader {
            hold_for_barriers: 4,
            barriers: std::cell::Cell::new(0),
            pause_ns: self.pause_ns,
            pause_until: 0,
            late_every: self.late_every,
            next: instance as i64,
            step: parallelism as i64,
            rows: self.rows,
            schema: self.schema(),
        }))
    }
}

impl SourceReader for SequenceReader {
    fn poll_batch(&mut self, max_rows: usize) -> Result<SourcePoll> {
        let now = now_ns();
        if self.next >= self.rows / 2 && self.barriers.get() < self.hold_for_barriers {
            return Ok(SourcePoll::Pending {
                wake_at_ns: Some(now + 1_000_000),
            });
        }
        if now < self.pause_until {
            return Ok(SourcePoll::Pending {
                wake_at_ns: Some(self.pause_until),
            });
        }
        self.pause_until = now + self.pause_ns;
        let rows: Vec<i64> = (self.next..self.rows)
            .step_by(self.step as usize)
            .take(max_rows.min(97))
            .collect();
        let Some(&last) = rows.last() else {
            return Ok(SourcePoll::Exhausted);
        };
        self.next = last + self.step;
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(TimestampMillisecondArray::from(
                    rows.iter()
                        .map(|&r| {
                            r * 10
                                - if is_late(r, self.late_every) {
                                    50_000
                                } else {
                                    0
                                }
                        })
                        .collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r % 5).collect::<Vec<_>>(),
                )),
            ],
        )?;
        Ok(SourcePoll::Batch(attach_entered_now(&batch, now_ns())?))
    }

    fn position(&self) -> Result<Option<Snapshot>> {
        self.barriers.set(self.barriers.get() + 1);
        Ok(Some(
            Snapshot::none().with("next", scalars(&[("row", Some(self.next))])),
        ))
    }

    fn seek(&mut self, position: &Snapshot) -> Result<()> {
        self.next = scalar(position.table("next")?, "row")?
            .ok_or_else(|| Error::Other("null position".into()))?;
        Ok(())
    }
}

/// Output kept in memory across runs, as a durable store would keep it:
/// staged parts by (instance, epoch), and the committed parts in order.
#[derive(Default)]
struct Store {
    staged: HashMap<(i64, i64), Vec<RecordBatch>>,
    committed: Vec<((i64, i64), Vec<RecordBatch>)>,
}

/// An exactly-once sink into a [`Store`]. Its writers fail once, on the
/// first write after barrier `fail_after` once that checkpoint is complete
/// in `dir`, so the failure always comes after a checkpoint to resume from.
#[derive(Clone, Default)]
struct MemorySink {
    store: Arc<Mutex<Store>>,
    fail: Arc<Mutex<Option<(Epoch, std::path::PathBuf)>>>,
    failures: Arc<AtomicU64>,
    /// Each write does pointless work first: far slower than its input.
    slow: bool,
}

struct MemoryWriter {
    instance: i64,
    rows: Vec<RecordBatch>,
    last_epoch: Epoch,
    sink: MemorySink,
}

impl SinkFactory for MemorySink {
    fn name(&self) -> String {
        "memory".into()
    }
    fn create(&self, _: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Err(Error::Other("this sink only runs exactly-once".into()))
    }
    fn committer(&self) -> Option<Arc<dyn SinkCommitter>> {
        Some(Arc::new(self.clone()))
    }
}

impl SinkWriter for MemoryWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.sink.slow {
            let mut x = 0u64;
            for i in 0..200_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
            std::hint::black_box(x);
        }
        let fail = self.sink.fail.lock().unwrap().clone();
        if let Some((after, dir)) = fail
            && self.last_epoch >= after
        {
            // Wait for the checkpoint to be written (this writer's part of
            // it was acknowledged at the barrier), then fail.
            let store = CheckpointStore::open(&dir)?;
            while !store.complete()?.iter().any(|e| *e >= after) {
                std::thread::park_timeout(Duration::from_millis(1));
            }
            // One failure per plan, whichever instance comes first.
            if self.sink.fail.lock().unwrap().take().is_some() {
                self.sink.failures.fetch_add(1, Ordering::SeqCst);
                return Err(Error::Other("injected sink failure".into()));
            }
        }
        self.rows.push(batch.clone());
        Ok(())
    }

    fn pre_commit(&mut self, epoch: Epoch) -> Result<Snapshot> {
        self.last_epoch = epoch;
        let rows = std::mem::take(&mut self.rows);
        self.sink
            .store
            .lock()
            .unwrap()
            .staged
            .insert((self.instance, epoch as i64), rows);
        Ok(Snapshot::none().with(
            "part",
            scalars(&[
                ("instance", Some(self.instance)),
                ("epoch", Some(epoch as i64)),
            ]),
        ))
    }
}

impl SinkCommitter for MemorySink {
    fn create(&self, instance: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(MemoryWriter {
            instance: instance as i64,
            rows: Vec::new(),
            last_epoch: 0,
            sink: self.clone(),
        }))
    }

    /// The parts to append, after the `base` parts committed before.
    fn prepare(&self, _: Epoch, tokens: &[Snapshot]) -> Result<Snapshot> {
        let mut instances = Vec::new();
        let mut epochs = Vec::new();
        for t in tokens {
            let part = t.table("part")?;
            instances.push(scalar(part, "instance")?.unwrap());
            epochs.push(scalar(part, "epoch")?.unwrap());
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("instance", DataType::Int64, false),
            Field::new("epoch", DataType::Int64, false),
        ]));
        let parts = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(instances)),
                Arc::new(Int64Array::from(epochs)),
            ],
        )?;
        let base = self.store.lock().unwrap().committed.len() as i64;
        Ok(Snapshot::none()
            .with("parts", parts)
            .with("base", scalars(&[("parts", Some(base))])))
    }

    /// Appends the parts after `base`, unless they are there already.
    fn commit(&self, _: Epoch, prepared: &Snapshot) -> Result<()> {
        let (base, keys) = prepared_parts(prepared)?;
        let mut store = self.store.lock().unwrap();
        let done: Vec<(i64, i64)> = store.committed.iter().skip(base).map(|(k, _)| *k).collect();
        if done.len() >= keys.len() && done[..keys.len()] == keys[..] {
            return Ok(());
        }
        store.committed.truncate(base);
        for key in keys {
            let rows = store
                .staged
                .remove(&key)
                .ok_or_else(|| Error::Other(format!("part {key:?} was never staged")))?;
            store.committed.push((key, rows));
        }
        Ok(())
    }

    fn recover(&self, restored: Option<(Epoch, &Snapshot)>) -> Result<()> {
        let keep = match restored {
            Some((epoch, prepared)) => {
                self.commit(epoch, prepared)?;
                let (base, keys) = prepared_parts(prepared)?;
                base + keys.len()
            }
            None => 0,
        };
        let mut store = self.store.lock().unwrap();
        store.committed.truncate(keep);
        store.staged.clear();
        Ok(())
    }
}

/// The parts committed before a prepared commit, and its own.
fn prepared_parts(prepared: &Snapshot) -> Result<(usize, Vec<(i64, i64)>)> {
    let base = scalar(prepared.table("base")?, "parts")?.unwrap() as usize;
    let parts = prepared.table("parts")?;
    let instances = parts.column(0).as_primitive::<Int64Type>();
    let epochs = parts.column(1).as_primitive::<Int64Type>();
    let keys = (0..parts.num_rows())
        .map(|r| (instances.value(r), epochs.value(r)))
        .collect();
    Ok((base, keys))
}

const ROWS: i64 = 20_000;

/// Count per (key, 1 s window) of [`Sequence`]'s rows, computed directly.
fn expected_counts() -> BTreeMap<(i64, i64), i64> {
    expected_counts_without_late(0)
}

/// [`expected_counts`] of a [`Sequence`] whose late rows are left out.
fn expected_counts_without_late(late_every: i64) -> BTreeMap<(i64, i64), i64> {
    let mut counts = BTreeMap::new();
    for row in (0..ROWS).filter(|r| !is_late(*r, late_every)) {
        *counts.entry((row % 5, row * 10 / 1000)).or_insert(0) += 1;
    }
    counts
}

/// The committed window counts, each (key, window) once; a duplicate
/// fails the test.
fn committed_counts(sink: &MemorySink) -> BTreeMap<(i64, i64), i64> {
    let store = sink.store.lock().unwrap();
    let mut counts = BTreeMap::new();
    let batches: Vec<RecordBatch> = store
        .committed
        .iter()
        .flat_map(|(_, rows)| rows.iter().cloned())
        .collect();
    let keys = ints(&batches, "k");
    let n = ints(&batches, "n");
    let starts: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let w = b.column_by_name("window").unwrap().as_struct();
            let start = arrow::compute::cast(w.column(0), &DataType::Int64).unwrap();
            start.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect();
    for ((k, start), n) in keys.into_iter().zip(starts).zip(n) {
        let previous = counts.insert((k, start / 1000), n);
        assert!(previous.is_none(), "window ({k}, {start}) committed twice");
    }
    counts
}

/// Runs the sequence through a keyed 1 s count into `sink`, checkpointing
/// into `dir`; returns the summary and the line the run announced.
fn run(
    dir: &Path,
    sink: &MemorySink,
    parallelism: usize,
    window_ms: i64,
    start_from: StartFrom,
) -> (Result<RunSummary>, String) {
    let (result, lines) = run_with(
        dir,
        sink,
        parallelism,
        window_ms,
        start_from,
        RestartStrategy::None,
        0,
    );
    (result, lines.last().cloned().unwrap_or_default())
}

/// [`run`] with a restart strategy; every line the runs announced.
fn run_with(
    dir: &Path,
    sink: &MemorySink,
    parallelism: usize,
    window_ms: i64,
    start_from: StartFrom,
    restart: RestartStrategy,
    late_every: i64,
) -> (Result<RunSummary>, Vec<String>) {
    let announced = Arc::new(Mutex::new(Vec::new()));
    let lines = announced.clone();
    let mut checkpoint = CheckpointConfig::new(Duration::from_millis(5), dir);
    checkpoint.start_from = start_from;
    checkpoint.restart = restart;
    checkpoint.announce = Some(Announce(Arc::new(move |l: &str| {
        lines.lock().unwrap().push(l.to_string())
    })));
    let pipeline = Pipeline::new(PipelineConfig {
        parallelism,
        workers: parallelism,
        batch_size: 64,
        checkpoint: Some(checkpoint),
        ..PipelineConfig::default()
    });
    let result = pipeline
        .source(sequence(late_every))
        .window(
            Window::tumbling_ms(window_ms)
                .keys(["k"])
                .agg(agg::count_all().alias("n")),
        )
        .and_then(|s| s.sink(sink.clone()))
        .and_then(|_| pipeline.run());
    let line = announced.lock().unwrap().clone();
    (result, line)
}

#[test]
fn a_failed_run_resumes_from_its_checkpoint_and_commits_each_window_once() {
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let sink = MemorySink::default();
        *sink.fail.lock().unwrap() = Some((3, dir.path().to_path_buf()));
        let (first, line) = run(dir.path(), &sink, parallelism, 1000, StartFrom::Latest);
        assert!(line.starts_with("no checkpoint restored"), "{line}");
        let err = first.unwrap_err().to_string();
        assert!(err.contains("injected sink failure"), "{err}");
        assert_eq!(sink.failures.load(Ordering::SeqCst), 1);

        let (second, line) = run(dir.path(), &sink, parallelism, 1000, StartFrom::Latest);
        let summary = second.unwrap();
        assert!(line.starts_with("restored checkpoint "), "{line}");
        let restored: u64 = line["restored checkpoint ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(restored >= 3, "{line}");
        // The restored run read only what followed the checkpoint.
        assert!(summary.events < ROWS as u64, "{}", summary.events);
        let stats = summary.checkpoints.as_ref().unwrap();
        assert!(stats.completed.load(Ordering::Relaxed) >= 1);
        assert_eq!(
            committed_counts(&sink),
            expected_counts(),
            "parallelism {parallelism}"
        );

        // The last checkpoint was taken at the end of the input: a run
        // from it reads nothing and commits nothing more.
        let (third, line) = run(dir.path(), &sink, parallelism, 1000, StartFrom::Latest);
        assert_eq!(third.unwrap().events, 0);
        assert!(line.contains("end of the input"), "{line}");
        assert_eq!(committed_counts(&sink), expected_counts());

        // `Fresh` starts over: the output too.
        let (fresh, line) = run(dir.path(), &sink, parallelism, 1000, StartFrom::Fresh);
        assert_eq!(fresh.unwrap().events, ROWS as u64);
        assert!(line.starts_with("no checkpoint restored"), "{line}");
        assert_eq!(committed_counts(&sink), expected_counts());
    }
}

#[test]
fn a_changed_plan_or_a_source_that_cannot_rescale_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::default();
    *sink.fail.lock().unwrap() = Some((2, dir.path().to_path_buf()));
    let (first, _) = run(dir.path(), &sink, 2, 1000, StartFrom::Latest);
    assert!(first.is_err());
    let (changed, _) = run(dir.path(), &sink, 2, 2000, StartFrom::Latest);
    let err = changed.unwrap_err().to_string();
    assert!(
        err.contains("the pipeline changed") && err.contains("window") && err.contains("--fresh"),
        "{err}"
    );
    let (rescaled, _) = run(dir.path(), &sink, 1, 1000, StartFrom::Latest);
    // The test source cannot split its positions between more or fewer
    // instances (each cursor strides by the parallelism): refused by name.
    let err = rescaled.unwrap_err().to_string();
    assert!(
        err.contains("sequence")
            && err.contains("cannot be restored at another parallelism")
            && err.contains("parallelism 2"),
        "{err}"
    );
    // Nothing was run by the refused plans: the checkpoint still resumes.
    let (resumed, line) = run(dir.path(), &sink, 2, 1000, StartFrom::Latest);
    resumed.unwrap();
    assert!(line.starts_with("restored checkpoint"), "{line}");
    assert_eq!(committed_counts(&sink), expected_counts());
}

#[test]
fn a_corrupt_checkpoint_is_an_error_naming_the_file_never_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::default();
    *sink.fail.lock().unwrap() = Some((2, dir.path().to_path_buf()));
    assert!(
        run(dir.path(), &sink, 1, 1000, StartFrom::Latest)
            .0
            .is_err()
    );
    let store = CheckpointStore::open(dir.path()).unwrap();
    let latest = *store.complete().unwrap().last().unwrap();
    let file = store.state_file(latest);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&file, &bytes).unwrap();
    let committed_before = sink.store.lock().unwrap().committed.len();
    assert!(committed_before > 0);
    let (second, _) = run(dir.path(), &sink, 1, 1000, StartFrom::Latest);
    let err = second.unwrap_err().to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert_eq!(sink.store.lock().unwrap().committed.len(), committed_before);
    // An older checkpoint can still be chosen by id.
    let older = store.complete().unwrap();
    if older.len() > 1 {
        let (from_older, line) = run(
            dir.path(),
            &sink,
            1,
            1000,
            StartFrom::Checkpoint(older[older.len() - 2]),
        );
        from_older.unwrap();
        assert!(line.starts_with("restored checkpoint"), "{line}");
        assert_eq!(committed_counts(&sink), expected_counts());
    }
}

#[test]
fn checkpoints_that_time_out_are_counted_and_their_output_committed_later() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::default();
    let mut checkpoint = CheckpointConfig::new(Duration::from_millis(1), dir.path());
    // Shorter than any checkpoint can take: every one in flight times out,
    // the pipeline goes on, and the final checkpoint commits everything.
    checkpoint.timeout = Duration::from_nanos(1);
    let pipeline = Pipeline::new(PipelineConfig {
        parallelism: 2,
        workers: 2,
        batch_size: 64,
        checkpoint: Some(checkpoint),
        ..PipelineConfig::default()
    });
    pipeline
        .source(sequence(0))
        .window(
            Window::tumbling_ms(1000)
                .keys(["k"])
                .agg(agg::count_all().alias("n")),
        )
        .unwrap()
        .sink(sink.clone())
        .unwrap();
    let summary = pipeline.run().unwrap();
    let stats = summary.checkpoints.as_ref().unwrap();
    assert!(stats.completed.load(Ordering::Relaxed) >= 1, "{stats}");
    assert!(stats.aborted.load(Ordering::Relaxed) >= 1, "{stats}");
    assert_eq!(committed_counts(&sink), expected_counts());
}

/// Behind a slow sink every channel fills and stays full: barriers wait
/// behind the queued rows, yet each checkpoint completes as the rows
/// before it drain, and the run ends with every row committed once.
#[test]
fn checkpoints_under_backpressure_complete() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink {
        slow: true,
        ..MemorySink::default()
    };
    let pipeline = Pipeline::new(PipelineConfig {
        parallelism: 2,
        workers: 2,
        batch_size: 64,
        checkpoint: Some(CheckpointConfig::new(Duration::from_millis(1), dir.path())),
        // Small channels: the input does not fit in them.
        channel: ChannelCapacity {
            rows: 256,
            ..ChannelCapacity::default()
        },
        ..PipelineConfig::default()
    });
    pipeline
        .source(Sequence {
            pause_ns: 0,
            ..sequence(0)
        })
        .key_by(["k"])
        .unwrap()
        .sink(sink.clone())
        .unwrap();
    let summary = pipeline.run().unwrap();
    assert!(summary.backpressure_events() > 0, "the sink kept up");
    let stats = summary.checkpoints.as_ref().unwrap();
    assert!(stats.completed.load(Ordering::Relaxed) >= 2, "{stats}");
    assert_eq!(stats.aborted.load(Ordering::Relaxed), 0, "{stats}");
    let store = sink.store.lock().unwrap();
    let batches: Vec<RecordBatch> = store
        .committed
        .iter()
        .flat_map(|(_, rows)| rows.iter().cloned())
        .collect();
    let mut keys: Vec<(i64, i64)> = ints(&batches, "ts")
        .into_iter()
        .zip(ints(&batches, "k"))
        .collect();
    keys.sort();
    let want: Vec<(i64, i64)> = (0..ROWS).map(|r| (r * 10, r % 5)).collect();
    assert_eq!(keys, want);
}

#[test]
fn a_sink_that_fails_once_is_restarted_from_the_checkpoint_in_process() {
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let sink = MemorySink::default();
        *sink.fail.lock().unwrap() = Some((2, dir.path().to_path_buf()));
        // Even a run told to start fresh restarts from where it got to.
        let (result, lines) = run_with(
            dir.path(),
            &sink,
            parallelism,
            1000,
            StartFrom::Fresh,
            RestartStrategy::FixedDelay {
                attempts: 2,
                delay: Duration::ZERO,
            },
            0,
        );
        let summary = result.unwrap();
        assert_eq!(summary.restarts, 1);
        assert_eq!(sink.failures.load(Ordering::SeqCst), 1);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("no checkpoint restored"), "{lines:?}");
        assert!(
            lines[1].starts_with("restart 1") && lines[1].contains("injected sink failure"),
            "{lines:?}"
        );
        assert!(lines[2].starts_with("restored checkpoint"), "{lines:?}");
        assert_eq!(committed_counts(&sink), expected_counts());
    }
}

#[test]
fn restarts_end_after_the_attempts_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::default();
    *sink.fail.lock().unwrap() = Some((2, dir.path().to_path_buf()));
    let (result, lines) = run_with(
        dir.path(),
        &sink,
        1,
        1000,
        StartFrom::Latest,
        RestartStrategy::FixedDelay {
            attempts: 0,
            delay: Duration::ZERO,
        },
        0,
    );
    let err = result.unwrap_err().to_string();
    assert!(err.contains("injected sink failure"), "{err}");
    assert_eq!(lines.len(), 1, "{lines:?}");
}

/// At parallelism 1 only: with several source instances, which rows are
/// late depends on when each instance's first watermark arrives (an
/// instance that has not produced yet holds nobody back), so a count is
/// not the same from run to run even without failures.
#[test]
fn late_row_counters_continue_from_the_checkpoint() {
    let late_every = 10;
    let parallelism = 1;
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::default();
    *sink.fail.lock().unwrap() = Some((2, dir.path().to_path_buf()));
    let run = |sink: &MemorySink| {
        run_with(
            dir.path(),
            sink,
            parallelism,
            1000,
            StartFrom::Latest,
            RestartStrategy::None,
            late_every,
        )
    };
    let (first, _) = run(&sink);
    assert!(first.is_err());
    let summary = run(&sink).0.unwrap();
    let window = summary
        .operators
        .iter()
        .find(|o| o.name.starts_with("window"))
        .unwrap();
    let late = (0..ROWS).filter(|r| is_late(*r, late_every)).count() as u64;
    assert_eq!(
        committed_counts(&sink),
        expected_counts_without_late(late_every)
    );
    assert_eq!(window.late_rows, late, "parallelism {parallelism}");
}
