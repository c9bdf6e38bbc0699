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
/// changes nothing it emits. Returns every instance's output, rendered, so
/// a test can also check it is not trivially empty.
pub(crate) fn assert_round_trip(
    factory: &dyn OperatorFactory,
    steps: &[Vec<Step>],
    cut: usize,
) -> Vec<Vec<String>> {
    let parallelism = steps.len();
    let mut outputs = Vec::new();
    for (instance, steps) in steps.iter().enumerate() {
        let cut = cut.min(steps.len());
        let mut op = factory.create(instance, parallelism).unwrap();
        let whole = run(op.as_mut(), steps, true);

        let mut first = factory.create(instance, parallelism).unwrap();
        let mut interrupted = run(first.as_mut(), &steps[..cut], false);
        let snapshot: Snapshot = first.snapshot().unwrap();
        drop(first);
        let mut restored = factory.restore(instance, parallelism, &snapshot).unwrap();
        interrupted.extend(run(restored.as_mut(), &steps[cut..], true));

        assert_eq!(
            interrupted, whole,
            "instance {instance} of {parallelism}: the run cut after step {cut} differs"
        );
        outputs.push(whole);
    }
    outputs
}

fn run(op: &mut dyn Operator, steps: &[Step], end: bool) -> Vec<String> {
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
    render(out.take_messages())
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
