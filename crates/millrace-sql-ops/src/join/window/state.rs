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

use millrace_core::state::scalars;
use millrace_core::{Result, Snapshot};

use super::{KeptKeys, WindowJoinOperator, WindowRows};
use crate::snapshot::{Columns, Reader, rows_table};

const WINDOWS: &str = "windows";
const PROGRESS: &str = "progress";
/// Per input (0 = left, 1 = right): its rows table and its count column.
const SIDES: [(&str, &str); 2] = [("left", "left_rows"), ("right", "right_rows")];

impl WindowJoinOperator {
    /// The tables of the module doc; the operator is left as it was.
    pub(super) fn state_snapshot(&self) -> Result<Snapshot> {
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut counts = [Vec::new(), Vec::new()];
        for (&(end, start), window) in &self.windows {
            starts.push(start);
            ends.push(end);
            for (side, count) in window.sides.iter().zip(&mut counts) {
                count.push(side.rows as i64);
            }
        }
        let [left_rows, right_rows] = counts;
        let windows = Columns::new()
            .int64("start", starts)
            .int64("end", ends)
            .int64(SIDES[0].1, left_rows)
            .int64(SIDES[1].1, right_rows)
            .finish()?;
        let mut snapshot = Snapshot::none().with(WINDOWS, windows);
        for (input, (name, _)) in SIDES.into_iter().enumerate() {
            let batches = self
                .windows
                .values()
                .flat_map(|window| &window.sides[input].batches)
                .map(|(batch, _)| batch);
            snapshot = snapshot.with(name, rows_table(self.input_schema(input), batches)?);
        }
        let progress = scalars(&[
            ("watermark", Some(self.watermark)),
            ("max_entered", self.max_entered),
        ]);
        Ok(snapshot.with(PROGRESS, progress))
    }

    /// Fills a fresh operator with the state of a snapshot of
    /// [`Self::state_snapshot`].
    pub(super) fn restore_state(&mut self, state: &Snapshot) -> Result<()> {
        let reader = Reader::new("window join", state);
        let windows = reader.table(WINDOWS)?;
        let (starts, ends) = (windows.int64s("start")?, windows.int64s("end")?);
        let mut per_side = Vec::with_capacity(SIDES.len());
        for (input, (name, count)) in SIDES.into_iter().enumerate() {
            let rows = reader.rows(name, self.input_schema(input))?;
            per_side.push(windows.split(&rows, &windows.int64s(count)?)?);
        }
        for (w, (&start, &end)) in starts.iter().zip(&ends).enumerate() {
            let mut window = WindowRows::default();
            for (input, parts) in per_side.iter().enumerate() {
                let rows = parts[w].clone();
                if rows.num_rows() > 0 {
                    let keys = KeptKeys::encode(&self.keys, input, &rows)?;
                    window.sides[input].push(rows, keys, &self.keys, input)?;
                }
            }
            if self.windows.insert((end, start), window).is_some() {
                return Err(windows.corrupt(format!("window [{start}, {end}) appears twice")));
            }
        }
        let progress = reader.table(PROGRESS)?;
        self.watermark = progress.scalar("watermark")?.unwrap_or(i64::MIN);
        self.max_entered = progress.scalar("max_entered")?;
        self.note_peak();
        Ok(())
    }
}
