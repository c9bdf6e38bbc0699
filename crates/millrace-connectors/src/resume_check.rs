//! The test harness of the position contract, shared by every source's tests:
//! cut a reader's output at a position, resume a fresh reader there, and
//! compare what follows.
//!
//! The contract (`SourceReader::position` and `SourceReader::seek`): the
//! fresh reader returns exactly the rows the original returned after the
//! cut, in the same order, with the same values. Only the entered column may
//! differ, so rows are compared without it.

use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use millrace_core::batch::strip_entered;
use millrace_core::{Snapshot, SourceFactory, SourcePoll, SourceReader, SourceStats};

/// Polls allowed before a reader that never ends fails the test.
const MAX_POLLS: usize = 100_000;

/// The batches `reader` returns until it is exhausted (or fails). A reader
/// under test never waits: `Pending` fails the test.
pub(crate) fn drain_reader(
    reader: &mut dyn SourceReader,
    max_rows: usize,
) -> millrace_core::Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for _ in 0..MAX_POLLS {
        match reader.poll_batch(max_rows)? {
            SourcePoll::Batch(b) => batches.push(b),
            SourcePoll::Exhausted => return Ok(batches),
            SourcePoll::Pending { .. } => panic!("a reader under test returned Pending"),
        }
    }
    panic!("reader did not finish in {MAX_POLLS} polls");
}

/// Each row of `batches` as `cell|cell|…`, without the entered column and
/// the columns named in `ignore` (values that legitimately differ, such as
/// a wall-clock stamp).
pub(crate) fn row_strings(batches: &[RecordBatch], ignore: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        let batch = strip_entered(batch);
        let schema = batch.schema();
        let kept: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| !ignore.contains(&schema.field(i).name().as_str()))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = kept
                .iter()
                .map(|&i| array_value_to_string(batch.column(i), row).expect("printable"))
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// One cut of a reader's output and the resumed reader's output.
pub(crate) struct Resumed {
    /// The position taken at the cut.
    pub position: Snapshot,
    /// Whether the original reader had returned `Exhausted` before the cut.
    pub exhausted_at_cut: bool,
    /// Rows the original reader returned after the cut.
    pub original: Vec<RecordBatch>,
    /// Rows the fresh reader returned after its seek.
    pub resumed: Vec<RecordBatch>,
    /// Final counters of the original and of the resumed reader.
    pub original_stats: SourceStats,
    pub resumed_stats: SourceStats,
}

/// Reads `cut` polls of instance `instance` of `parallelism` (fewer if the
/// reader is exhausted first), takes the position, and reads the rest; then
/// a fresh reader of the same instance seeks there and reads to the end.
pub(crate) fn cut_and_resume(
    factory: &dyn SourceFactory,
    instance: usize,
    parallelism: usize,
    max_rows: usize,
    cut: usize,
) -> Resumed {
    let mut original = factory.create(instance, parallelism).expect("create");
    let mut exhausted_at_cut = false;
    for _ in 0..cut {
        if let SourcePoll::Exhausted = original.poll_batch(max_rows).expect("poll before cut") {
            exhausted_at_cut = true;
            break;
        }
    }
    let position = original
        .position()
        .expect("position")
        .expect("the source has positions");
    let after_cut = drain_reader(original.as_mut(), max_rows).expect("rest of the original");

    let mut fresh = factory.create(instance, parallelism).expect("create");
    fresh.seek(&position).expect("seek");
    let resumed = drain_reader(fresh.as_mut(), max_rows).expect("resumed reader");
    Resumed {
        position,
        exhausted_at_cut,
        original: after_cut,
        resumed,
        original_stats: original.stats(),
        resumed_stats: fresh.stats(),
    }
}

/// Checks the contract at every cut in `cuts` for every instance of each
/// parallelism in `parallelisms`: the resumed reader returns the original's
/// rows after the cut, and ends with the same bad-record counters. Returns
/// every cut's outcome, for checks of the positions themselves.
pub(crate) fn check_resume_everywhere(
    factory: &dyn SourceFactory,
    parallelisms: &[usize],
    max_rows: usize,
    cuts: &[usize],
    ignore: &[&str],
) -> Vec<Resumed> {
    let mut outcomes = Vec::new();
    for &parallelism in parallelisms {
        for instance in 0..parallelism {
            for &cut in cuts {
                let r = cut_and_resume(factory, instance, parallelism, max_rows, cut);
                let what = format!(
                    "{}: instance {instance} of {parallelism}, cut after {cut} polls",
                    factory.name()
                );
                assert_eq!(
                    row_strings(&r.resumed, ignore),
                    row_strings(&r.original, ignore),
                    "{what}"
                );
                assert_eq!(r.resumed_stats, r.original_stats, "{what}");
                if r.exhausted_at_cut {
                    assert!(r.resumed.is_empty(), "{what}: exhausted, yet rows followed");
                }
                outcomes.push(r);
            }
        }
    }
    outcomes
}
