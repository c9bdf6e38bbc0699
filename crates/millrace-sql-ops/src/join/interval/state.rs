//! An interval join's snapshot and its restore (the state contract of
//! `millrace_core::state`).
//!
//! Five tables:
//! * `left`, `right`: the rows each input has buffered (its user columns):
//!   the rows that may still meet a later row of the other input, batch
//!   after batch in arrival order, in batch order within one. Late rows and
//!   rows with a null key are never buffered, so they are not there.
//! * `left_state`, `right_state`: one row per row of `left` (`right`), in
//!   the same order: `batch`, the ordinal of the input batch it came in
//!   (non-decreasing; a restore buffers the rows of one ordinal as one
//!   batch again, so they are freed together as before), and `matched`:
//!   whether it found a partner that passed the filter (tracked for the
//!   left rows of a LEFT join, which are padded at expiry unless matched;
//!   false elsewhere).
//! * `progress`: `watermark` (the largest received) and `max_entered`
//!   (the largest entered time of an input row, given to the unmatched
//!   rows padded at end of input).
//!
//! Event times and keys are computed again from the rows. Buffering the
//! batches again in arrival order rebuilds what decides the output: each
//! key's rows in time order with equal times in arrival order (the order
//! of a probe's pairs), and the arrival order of batches (which breaks
//! ties among unmatched rows of equal time).
//!
//! A rescale (`rescale.rs`) reads the same tables as [`SavedBatch`]es, and
//! writes those each new instance owns with [`write_state`].

use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use millrace_core::state::scalars;
use millrace_core::{Error, Result, Snapshot};

use super::{Buffered, IntervalJoinOperator};
use crate::snapshot::{Columns, Reader};

pub(super) const PROGRESS: &str = "progress";
/// Per input (0 = left, 1 = right): its rows table and its state table.
const SIDES: [(&str, &str); 2] = [("left", "left_state"), ("right", "right_state")];

/// The buffered rows of one input batch, as a snapshot holds them.
pub(super) struct SavedBatch {
    pub rows: RecordBatch,
    /// Per row, whether it found a partner that passed the filter.
    pub matched: Vec<bool>,
}

/// The tables of the module doc: per input (user columns `schemas`), its
/// batches in arrival order; and `progress`.
pub(super) fn write_state(
    schemas: [&SchemaRef; 2],
    sides: &[Vec<SavedBatch>; 2],
    progress: RecordBatch,
) -> Result<Snapshot> {
    let mut snapshot = Snapshot::none();
    for (input, (rows_name, state_name)) in SIDES.into_iter().enumerate() {
        let batches = &sides[input];
        let mut ordinals = Vec::new();
        let mut matched = Vec::new();
        for (ordinal, batch) in batches.iter().enumerate() {
            ordinals.extend(std::iter::repeat_n(ordinal as i64, batch.rows.num_rows()));
            matched.extend(&batch.matched);
        }
        let state = Columns::new()
            .int64("batch", ordinals)
            .bool("matched", matched)
            .finish()?;
        snapshot = snapshot
            .with_chunks(rows_name, schemas[input], batches.iter().map(|b| &b.rows))?
            .with(state_name, state);
    }
    Ok(snapshot.with(PROGRESS, progress))
}

/// Each input's batches of a snapshot of [`write_state`], in arrival
/// order; an error names what does not fit.
pub(super) fn read_sides(
    state: &Snapshot,
    schemas: [&SchemaRef; 2],
) -> Result<[Vec<SavedBatch>; 2]> {
    let reader = Reader::new("interval join", state);
    let side = |input: usize| -> Result<Vec<SavedBatch>> {
        let (rows_name, state_name) = SIDES[input];
        let rows = reader.rows(rows_name, schemas[input])?;
        let table = reader.table(state_name)?;
        table.check_aligned(&rows)?;
        let ordinals = table.int64s("batch")?;
        let matched = table.bools("matched")?;
        if !ordinals.is_sorted() {
            return Err(table.corrupt("batch ordinals decrease".into()));
        }
        // Runs of equal ordinals: the batches, in arrival order.
        let counts: Vec<i64> = ordinals
            .chunk_by(|a, b| a == b)
            .map(|run| run.len() as i64)
            .collect();
        let mut first = 0;
        let mut batches = Vec::with_capacity(counts.len());
        for rows in table.split(&rows, &counts)? {
            let n = rows.num_rows();
            batches.push(SavedBatch {
                rows,
                matched: matched[first..first + n].to_vec(),
            });
            first += n;
        }
        Ok(batches)
    };
    Ok([side(0)?, side(1)?])
}

impl Buffered {
    /// The rows still buffered, batch by batch in arrival order.
    fn live_rows(&self) -> Result<Vec<SavedBatch>> {
        let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); self.slots.len()];
        for r in self.by_key.values().flatten() {
            rows_of[r.slot as usize].push(r.row);
        }
        let mut held: Vec<(u64, &super::Slot, Vec<u32>)> = Vec::new();
        for (id, rows) in rows_of.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let slot = self.slots[id].as_ref().ok_or_else(|| {
                Error::Other("interval join state refers to a released batch".into())
            })?;
            held.push((slot.arrival, slot, rows));
        }
        held.sort_unstable_by_key(|(arrival, _, _)| *arrival);
        held.into_iter()
            .map(|(_, slot, mut rows)| {
                rows.sort_unstable();
                let matched = rows
                    .iter()
                    .map(|&r| slot.matched.get(r as usize) == Some(&true))
                    .collect();
                let rows = if rows.len() == slot.batch.num_rows() {
                    slot.batch.clone()
                } else {
                    take_record_batch(&slot.batch, &UInt32Array::from(rows))?
                };
                Ok(SavedBatch { rows, matched })
            })
            .collect()
    }
}

impl IntervalJoinOperator {
    /// The tables of the module doc; the operator is left as it was.
    pub(super) fn state_snapshot(&self) -> Result<Snapshot> {
        let sides = [self.sides[0].live_rows()?, self.sides[1].live_rows()?];
        let progress = scalars(&[
            ("watermark", Some(self.watermark)),
            ("max_entered", self.max_entered),
        ]);
        write_state(self.schemas(), &sides, progress)
    }

    /// Fills a fresh operator with the state of a snapshot of
    /// [`Self::state_snapshot`].
    pub(super) fn restore_state(&mut self, state: &Snapshot) -> Result<()> {
        let sides = read_sides(state, self.schemas())?;
        let reader = Reader::new("interval join", state);
        for (input, batches) in sides.into_iter().enumerate() {
            for batch in batches {
                self.buffer_restored(input, batch.rows, &batch.matched)
                    .map_err(|e| {
                        Error::Other(format!(
                            "interval join snapshot does not fit this plan: table '{}': {e}",
                            SIDES[input].1
                        ))
                    })?;
            }
        }
        let progress = reader.table(PROGRESS)?;
        self.watermark = progress.scalar("watermark")?.unwrap_or(i64::MIN);
        self.max_entered = progress.scalar("max_entered")?;
        Ok(())
    }

    /// The user columns of the left and the right input.
    fn schemas(&self) -> [&SchemaRef; 2] {
        [self.input_schema(0), self.input_schema(1)]
    }

    /// Buffers every row of `batch`, one input batch of a snapshot, with
    /// its match flags, as its arrival did.
    fn buffer_restored(
        &mut self,
        input: usize,
        batch: RecordBatch,
        matched: &[bool],
    ) -> Result<()> {
        let times = self.event_times(input, &batch)?;
        let keys = self.keys.encode(input, &batch)?;
        let mut rows = Vec::with_capacity(batch.num_rows());
        for (row, &time) in times.iter().enumerate() {
            let key = keys
                .get(row)
                .ok_or_else(|| Error::Other("a buffered row has a null key".into()))?;
            rows.push((row as u32, time, key));
        }
        let matched = if input == 0 && self.tracks_left_matches() {
            matched.to_vec()
        } else {
            Vec::new()
        };
        self.sides[input].insert(batch, &rows, matched);
        Ok(())
    }
}
