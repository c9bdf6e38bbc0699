//! The round-trip check of the state contract, shared by the tests of every
//! stateful operator: run part of the input, snapshot, build a fresh
//! operator from the snapshot through the factory, run the rest; the output
//! must equal the uninterrupted run's, message for message.

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use millrace_core::{Emitter, Message, Operator, OperatorFactory, Snapshot, Watermark};

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
    Run {
        late_rows: out.late_rows(),
        lines: render(out.take_messages()),
    }
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
