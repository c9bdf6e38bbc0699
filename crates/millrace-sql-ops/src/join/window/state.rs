//! A window join's snapshot and its restore (the state contract of
//! `millrace_core::state`).
//!
//! Four tables:
//! * `windows`: one row per open window, in firing order `(end, start)`:
//!   `start`, `end` (ms), and `left_rows`, `right_rows`: how many rows each
//!   input has buffered for it.
//! * `left`, `right`: the rows each input has buffered (its user columns),
//!   window after window as in `windows`, in arrival order within a window.
//!   A row of several (hopping) windows is there once per window.
//! * `progress`: `watermark` (the largest received) and `max_entered`
//!   (the largest entered time of an input row, which a firing at end of
//!   input gives its rows).
//!
//! Nothing else decides the output: a window's pairs are found, and its
//! unmatched rows padded, only when it fires, from its rows in arrival
//! order. A restore encodes the keys again and keeps each window's rows as
//! one batch; how the original grouped them into batches and runs changes
//! only the cost of a firing, never what it emits.
//!
//! A rescale (`rescale.rs`) reads the same tables as [`SavedWindow`]s, and
//! writes those each new instance owns with [`write_state`].

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use millrace_core::state::scalars;
use millrace_core::{Result, Snapshot};

use super::{KeptKeys, WindowJoinOperator, WindowRows};
use crate::snapshot::{Columns, Reader};

pub(super) const PROGRESS: &str = "progress";
const WINDOWS: &str = "windows";
/// Per input (0 = left, 1 = right): its rows table and its count column.
const SIDES: [(&str, &str); 2] = [("left", "left_rows"), ("right", "right_rows")];

/// One open window as a snapshot holds it.
pub(super) struct SavedWindow {
    pub start: i64,
    pub end: i64,
    /// Each input's buffered rows (0 = left, 1 = right), in arrival order.
    pub sides: [Vec<RecordBatch>; 2],
}

/// The tables of the module doc: `windows` (in firing order) with the
/// inputs' user columns `schemas`, and `progress`.
pub(super) fn write_state(
    schemas: [&SchemaRef; 2],
    windows: &[SavedWindow],
    progress: RecordBatch,
) -> Result<Snapshot> {
    let rows = |w: &SavedWindow, input: usize| -> i64 {
        w.sides[input].iter().map(|b| b.num_rows() as i64).sum()
    };
    let table = Columns::new()
        .int64("start", windows.iter().map(|w| w.start).collect())
        .int64("end", windows.iter().map(|w| w.end).collect())
        .int64(SIDES[0].1, windows.iter().map(|w| rows(w, 0)).collect())
        .int64(SIDES[1].1, windows.iter().map(|w| rows(w, 1)).collect())
        .finish()?;
    let mut snapshot = Snapshot::none().with(WINDOWS, table);
    for (input, (name, _)) in SIDES.into_iter().enumerate() {
        let batches = windows.iter().flat_map(|w| &w.sides[input]);
        snapshot = snapshot.with_chunks(name, schemas[input], batches)?;
    }
    Ok(snapshot.with(PROGRESS, progress))
}

/// The open windows of a snapshot of [`write_state`], each input's rows of
/// a window as one batch; an error names what does not fit.
pub(super) fn read_windows(state: &Snapshot, schemas: [&SchemaRef; 2]) -> Result<Vec<SavedWindow>> {
    let reader = Reader::new("window join", state);
    let windows = reader.table(WINDOWS)?;
    let (starts, ends) = (windows.int64s("start")?, windows.int64s("end")?);
    let side = |input: usize| -> Result<Vec<RecordBatch>> {
        let (name, count) = SIDES[input];
        let rows = reader.rows(name, schemas[input])?;
        windows.split(&rows, &windows.int64s(count)?)
    };
    // One part per row of `windows`, so the four lists are as long.
    let (left, right) = (side(0)?, side(1)?);
    Ok(starts
        .into_iter()
        .zip(ends)
        .zip(left.into_iter().zip(right))
        .map(|((start, end), (l, r))| SavedWindow {
            start,
            end,
            sides: [vec![l], vec![r]],
        })
        .collect())
}

impl WindowJoinOperator {
    /// The tables of the module doc; the operator is left as it was.
    pub(super) fn state_snapshot(&self) -> Result<Snapshot> {
        let windows: Vec<SavedWindow> = self
            .windows
            .iter()
            .map(|(&(end, start), window)| SavedWindow {
                start,
                end,
                sides: window
                    .sides
                    .each_ref()
                    .map(|side| side.batches.iter().map(|(b, _)| b.clone()).collect()),
            })
            .collect();
        let progress = scalars(&[
            ("watermark", Some(self.watermark)),
            ("max_entered", self.max_entered),
        ]);
        write_state(self.schemas(), &windows, progress)
    }

    /// Fills a fresh operator with the state of a snapshot of
    /// [`Self::state_snapshot`].
    pub(super) fn restore_state(&mut self, state: &Snapshot) -> Result<()> {
        let reader = Reader::new("window join", state);
        for saved in read_windows(state, self.schemas())? {
            let mut window = WindowRows::default();
            for (input, batches) in saved.sides.into_iter().enumerate() {
                for rows in batches.into_iter().filter(|b| b.num_rows() > 0) {
                    let keys = KeptKeys::encode(&self.keys, input, &rows)?;
                    window.sides[input].push(rows, keys, &self.keys, input)?;
                }
            }
            let (start, end) = (saved.start, saved.end);
            if self.windows.insert((end, start), window).is_some() {
                let windows = reader.table(WINDOWS)?;
                return Err(windows.corrupt(format!("window [{start}, {end}) appears twice")));
            }
        }
        let progress = reader.table(PROGRESS)?;
        self.watermark = progress.scalar("watermark")?.unwrap_or(i64::MIN);
        self.max_entered = progress.scalar("max_entered")?;
        self.note_peak();
        Ok(())
    }

    /// The user columns of the left and the right input.
    fn schemas(&self) -> [&SchemaRef; 2] {
        [self.input_schema(0), self.input_schema(1)]
    }
}
