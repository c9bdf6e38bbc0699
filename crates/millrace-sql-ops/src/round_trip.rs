//! The round-trip check of the state contract, shared by the tests of every
//! stateful operator: run part of the input, snapshot, build a fresh
//! operator from the snapshot through the factory, run the rest; the output
//! must equal the uninterrupted run's, message for message.
//!
//! And its rescale check ([`assert_rescales`]): run part of the input
//! through instances of one parallelism, rescale their snapshots to
//! another, run the rest through the new instances; together they must emit
//! what one uninterrupted instance does.

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use millrace_core::key_groups::instances_of_rows;
use millrace_core::{
    Emitter, Message, Operator, OperatorFactory, Snapshot, Watermark, strip_entered,
};

/// One message into an operator instance.
#[derive(Clone)]
pub(crate) enum Step {
    Data { input: usize, batch: RecordBatch },
    Watermark(i64),
}

impl Step {
    pub(crate) fn data(input: usize, batch: RecordBatch) -> Self {
        Step::Data { input, batch }
    }
}

/// For each instance of `parallelism` (its steps in `steps[instance]`),
/// checks that cutting the run after `cut` steps — snapshot, drop, restore —
/// changes nothing it emits nor the rows it counts late, and that the
/// instance a snapshot was taken of goes on as if none had been. Returns
/// every instance's output, rendered, so a test can also check it is not
/// trivially empty.
pub(crate) fn assert_round_trip(
    factory: &dyn OperatorFactory,
    steps: &[Vec<Step>],
    cut: usize,
) -> Vec<Vec<String>> {
    let parallelism = steps.len();
    let mut outputs = Vec::new();
    for (instance, steps) in steps.iter().enumerate() {
        let cut = cut.min(steps.len());
        let context = format!("instance {instance} of {parallelism}, cut after step {cut}");
        let mut op = factory.create(instance, parallelism).unwrap();
        let whole = run(op.as_mut(), steps, true);

        let mut first = factory.create(instance, parallelism).unwrap();
        let before = run(first.as_mut(), &steps[..cut], false);
        let snapshot: Snapshot = first.snapshot().unwrap();
        let went_on = run(first.as_mut(), &steps[cut..], true);
        assert_eq!(
            before.then(went_on),
            whole,
            "{context}: the instance that took the snapshot went on differently"
        );
        drop(first);
        let mut restored = factory.restore(instance, parallelism, &snapshot).unwrap();
        let after = run(restored.as_mut(), &steps[cut..], true);
        assert_eq!(
            before.then(after),
            whole,
            "{context}: the restored instance differs"
        );
        outputs.push(whole.lines);
    }
    outputs
}

/// [`assert_round_trip`] at every cut, from before the first step to
/// after the last. Returns how many data rows the uninterrupted runs emit
/// and how many rows they count late (all instances together), so a test
/// can check that the input exercised the operator.
pub(crate) fn assert_round_trips_at_every_cut(
    factory: &dyn OperatorFactory,
    steps: &[Vec<Step>],
) -> (usize, u64) {
    let longest = steps.iter().map(Vec::len).max().unwrap_or(0);
    for cut in 0..=longest {
        assert_round_trip(factory, steps, cut);
    }
    let (mut rows, mut late_rows) = (0, 0);
    for (instance, instance_steps) in steps.iter().enumerate() {
        let mut op = factory.create(instance, steps.len()).unwrap();
        let whole = run(op.as_mut(), instance_steps, true);
        rows += whole
            .lines
            .iter()
            .filter(|l| !l.starts_with("watermark"))
            .count();
        late_rows += whole.late_rows;
    }
    (rows, late_rows)
}

/// What a run emitted: its messages rendered, and the rows it counted late.
#[derive(Clone, Debug, PartialEq)]
struct Run {
    lines: Vec<String>,
    late_rows: u64,
}

impl Run {
    /// This run, then `next`.
    fn then(&self, next: Run) -> Run {
        let mut lines = self.lines.clone();
        lines.extend(next.lines);
        Run {
            lines,
            late_rows: self.late_rows + next.late_rows,
        }
    }
}

fn run(op: &mut dyn Operator, steps: &[Step], end: bool) -> Run {
    let mut out = feed(op, steps, end);
    Run {
        late_rows: out.late_rows(),
        lines: render(out.take_messages()),
    }
}

/// Feeds `steps` to `op` (then the end of input, if `end`); returns what
/// it emitted.
fn feed(op: &mut dyn Operator, steps: &[Step], end: bool) -> Emitter {
    let mut out = Emitter::new();
    for step in steps {
        match step {
            Step::Data { input, batch } => op.on_data(*input, batch.clone(), &mut out).unwrap(),
            Step::Watermark(time_ms) => {
                let wm = Watermark {
                    time_ms: *time_ms,
                    entered_ns: *time_ms,
                };
                op.on_watermark(wm, &mut out).unwrap()
            }
        }
    }
    if end {
        op.on_end(&mut out).unwrap();
    }
    out
}

/// Messages as lines: one per row (every column, nulls as `null`), one per
/// watermark.
pub(crate) fn render(messages: Vec<Message>) -> Vec<String> {
    render_with(messages, render_rows)
}

/// Messages as lines, rows rendered by `rows`.
pub(crate) fn render_with(
    messages: Vec<Message>,
    rows: impl Fn(&RecordBatch) -> Vec<String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for m in messages {
        match m {
            Message::Data(b) => lines.extend(rows(&b)),
            Message::Watermark(wm) => lines.push(format!("watermark {}", wm.time_ms)),
            other => lines.push(format!("{other:?}")),
        }
    }
    lines
}

fn render_rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("null");
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    (0..batch.num_rows())
        .map(|r| {
            let row: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            row.join(" ")
        })
        .collect()
}

/// What a rescale check ran: data rows emitted, rows counted late, and the
/// rows of state the old instances handed over.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Rescaled {
    pub rows: usize,
    pub late_rows: u64,
    pub state_rows: usize,
}

/// The rescale check of `OperatorFactory::rescale`, at every cut of
/// `steps` (the whole input, as one instance reads it) and for every pair
/// of parallelisms of `pairs`: `from` instances run the steps before the
/// cut, each getting what the runtime would route to it (see [`route`];
/// `keys[input]` are the columns input `input` is hashed by, none: all to
/// one instance); their snapshots, through Arrow IPC, are rescaled to `to`
/// instances, which, restored from them (through IPC again), run the rest
/// of the steps routed for `to`. The data rows emitted before and after,
/// together, must equal those of one uninterrupted instance, as multisets
/// (the entered column aside: an end-of-input firing stamps rows with the
/// largest entered time its instance saw), and so must the rows counted
/// late. Returns what the checks ran, summed over every cut and pair.
pub(crate) fn assert_rescales(
    factory: &dyn OperatorFactory,
    steps: &[Step],
    keys: &[&[&str]],
    pairs: &[(usize, usize)],
) -> Rescaled {
    assert_rescales_merged(factory, steps, keys, pairs, |batches| rows_of(&batches))
}

/// State whose operator's input is not partitioned (one instance holds it
/// all) rescales only 1 → 1: `snapshot` alone gives one snapshot back, and
/// `from` snapshots of it to `to` instances are refused with a message
/// that contains `says`.
pub(crate) fn assert_rescales_only_one_to_one(
    factory: &dyn OperatorFactory,
    snapshot: &Snapshot,
    (from, to): (usize, usize),
    says: &str,
) {
    let same = factory.rescale(std::slice::from_ref(snapshot), 1).unwrap();
    assert_eq!(same.len(), 1);
    let err = factory
        .rescale(&vec![snapshot.clone(); from], to)
        .unwrap_err()
        .to_string();
    assert!(err.contains(says), "{err}");
}

/// [`assert_rescales`] for the partial phase of a two-phase operator: its
/// input is forwarded from wherever it is (split here by `keys`; any split
/// will do), and its rows are parts that `last`, its final phase, merges,
/// so a rescale may merge parts too. The rows of the partial phase before
/// and after the rescale, merged by one instance of `last` (fed them all,
/// then the end of input), must give what the uninterrupted partial
/// phase's rows give.
pub(crate) fn assert_partial_rescales(
    partial: &dyn OperatorFactory,
    last: &dyn OperatorFactory,
    steps: &[Step],
    keys: &[&[&str]],
    pairs: &[(usize, usize)],
) -> Rescaled {
    assert_rescales_merged(partial, steps, keys, pairs, |batches| {
        let merged: Vec<Step> = batches.into_iter().map(|b| Step::data(0, b)).collect();
        let mut op = last.create(0, 1).unwrap();
        rows_of(&emitted(feed(op.as_mut(), &merged, true)).0)
    })
}

/// The rescale check, comparing what `rows` makes of the emitted batches.
fn assert_rescales_merged(
    factory: &dyn OperatorFactory,
    steps: &[Step],
    keys: &[&[&str]],
    pairs: &[(usize, usize)],
    rows: impl Fn(Vec<RecordBatch>) -> Vec<String>,
) -> Rescaled {
    let mut whole_op = factory.create(0, 1).unwrap();
    let (whole, whole_late) = emitted(feed(whole_op.as_mut(), steps, true));
    let whole = sorted(rows(whole));
    let mut total = Rescaled::default();
    for &(from, to) in pairs {
        for cut in 0..=steps.len() {
            let what = format!("{from} -> {to} instances, cut after step {cut}");
            let (batches, late_rows, state_rows) =
                rescaled_run(factory, steps, keys, from, to, cut);
            let got = sorted(rows(batches));
            assert_eq!(got, whole, "{what}: rows differ");
            assert_eq!(late_rows, whole_late, "{what}: late rows differ");
            total.rows += got.len();
            total.late_rows += late_rows;
            total.state_rows += state_rows;
        }
    }
    total
}

/// One rescale check at `cut`: the batches emitted before and after, the
/// rows counted late, and the rows of state handed over at the cut.
fn rescaled_run(
    factory: &dyn OperatorFactory,
    steps: &[Step],
    keys: &[&[&str]],
    from: usize,
    to: usize,
    cut: usize,
) -> (Vec<RecordBatch>, u64, usize) {
    let (before, after) = steps.split_at(cut);
    let mut batches = Vec::new();
    let mut late_rows = 0;
    let mut old = Vec::with_capacity(from);
    for (instance, steps) in route(before, keys, from).iter().enumerate() {
        let mut op = factory.create(instance, from).unwrap();
        let (emitted, late) = emitted(feed(op.as_mut(), steps, false));
        batches.extend(emitted);
        late_rows += late;
        old.push(through_ipc(&op.snapshot().unwrap()));
    }
    let state_rows = old.iter().map(Snapshot::rows).sum();
    let new = factory.rescale(&old, to).unwrap();
    assert_eq!(new.len(), to, "one snapshot per new instance");
    for (instance, steps) in route(after, keys, to).iter().enumerate() {
        let state = through_ipc(&new[instance]);
        let mut op = factory.restore(instance, to, &state).unwrap();
        let (emitted, late) = emitted(feed(op.as_mut(), steps, true));
        batches.extend(emitted);
        late_rows += late;
    }
    (batches, late_rows, state_rows)
}

/// `steps` as the runtime delivers them to `parallelism` instances behind
/// a hash exchange: each batch's rows to the instance owning their key
/// group (by the columns `keys[input]`, with the runtime's hash), every
/// watermark to every instance.
pub(crate) fn route(steps: &[Step], keys: &[&[&str]], parallelism: usize) -> Vec<Vec<Step>> {
    let mut routed = vec![Vec::new(); parallelism];
    for step in steps {
        match step {
            Step::Data { input, batch } => {
                let columns: Vec<_> = keys[*input]
                    .iter()
                    .map(|k| batch.column_by_name(k).expect("key column"))
                    .collect();
                let owners = instances_of_rows(&columns, batch.num_rows(), parallelism).unwrap();
                for (instance, steps) in routed.iter_mut().enumerate() {
                    let rows: Vec<u32> = (0..owners.len() as u32)
                        .filter(|&r| owners[r as usize] == instance)
                        .collect();
                    if !rows.is_empty() {
                        let indices = arrow::array::UInt32Array::from(rows);
                        let part = arrow::compute::take_record_batch(batch, &indices).unwrap();
                        steps.push(Step::data(*input, part));
                    }
                }
            }
            Step::Watermark(_) => routed.iter_mut().for_each(|s| s.push(step.clone())),
        }
    }
    routed
}

/// `snapshot` written as a checkpoint stores it (each chunk of a table an
/// Arrow IPC stream of one batch) and read back.
pub(crate) fn through_ipc(snapshot: &Snapshot) -> Snapshot {
    let mut read = Snapshot::none();
    for (name, schema, chunks) in snapshot.tables() {
        let mut back = Vec::new();
        for chunk in chunks {
            let mut bytes = Vec::new();
            let mut writer = StreamWriter::try_new(&mut bytes, &chunk.schema()).unwrap();
            writer.write(chunk).unwrap();
            writer.finish().unwrap();
            drop(writer);
            let mut reader = StreamReader::try_new(bytes.as_slice(), None).unwrap();
            back.push(reader.next().expect("one batch").unwrap());
            assert!(reader.next().is_none(), "table '{name}': one batch");
        }
        read = read.with_chunks(name, schema, &back).unwrap();
    }
    read
}

/// The data batches of what an operator emitted, and the rows it counted
/// late.
fn emitted(mut out: Emitter) -> (Vec<RecordBatch>, u64) {
    let batches = out
        .take_messages()
        .into_iter()
        .filter_map(|m| match m {
            Message::Data(b) => Some(b),
            _ => None,
        })
        .collect();
    (batches, out.late_rows())
}

/// The rows of `batches`, rendered without the entered column.
fn rows_of(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| render_rows(&strip_entered(b)))
        .collect()
}

fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}
