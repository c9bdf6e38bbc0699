//! A window's rows for a top-N that the batch cut applies to (no PARTITION
//! BY keys, one ORDER BY expression): each batch's survivors of the cut,
//! held as they came and ranked once, when the window fires.
//!
//! The general path encodes every arriving row's sort and partition keys
//! and ranks it against the partition's candidates on arrival. For q5's
//! final top-N, which receives from each count instance only the counts at
//! its window's maximum, that work was most of the top-N's time on the path
//! of each result: encoding and ranking a window's first batch of one to
//! three rows took ~19 of its ~23 µs (temporary probes; cold code and first
//! allocations). Here a batch costs nothing more than its cut, and a firing
//! one sort of the held rows by arrow's comparator.
//!
//! State stays bounded: when a window holds more than [`COMPACT_AT`] rows
//! and twice what its last compaction kept, its rows are ranked and cut
//! back to those within the limit (in arrival order, so ties still break
//! by arrival).

use arrow::array::{Array, ArrayRef, RecordBatch, make_comparator};
use arrow::compute::{SortOptions, concat, interleave_record_batch};
use millrace_core::Result;

use super::Ranking;

/// A window is compacted only past this many held rows: ranking a few
/// hundred rows is cheap, and most windows never get there.
const COMPACT_AT: usize = 256;

/// One window's rows that may rank within the limit, in arrival order.
#[derive(Default)]
pub(super) struct HeldRows {
    batches: Vec<RecordBatch>,
    rows: usize,
    /// Rows the last compaction kept.
    kept: usize,
}

/// A held row: (batch, row in it), as `interleave_record_batch` takes it.
pub(super) type RowRef = (usize, usize);

impl HeldRows {
    /// Holds `batch` (rows already cut to those that may rank); compacts
    /// when the window holds too many. `order` evaluates the ORDER BY.
    pub(super) fn add(
        &mut self,
        batch: RecordBatch,
        order: impl Fn(&RecordBatch) -> Result<ArrayRef>,
        options: SortOptions,
        ranking: Ranking,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows();
        self.batches.push(batch);
        if self.rows > COMPACT_AT.max(2 * self.kept) {
            let mut rows: Vec<RowRef> = self
                .ranked(order, options, ranking)?
                .into_iter()
                .map(|(row, _)| row)
                .collect();
            // Back to arrival order, which breaks later ties.
            rows.sort_unstable();
            let kept = interleave_record_batch(&self.batches(), &rows)?;
            self.rows = kept.num_rows();
            self.kept = kept.num_rows();
            self.batches = vec![kept];
        }
        Ok(())
    }

    /// Holds `batches`, rows restored from a snapshot in arrival order, of
    /// which `kept` were kept by the last compaction.
    pub(super) fn restored(batches: Vec<RecordBatch>, kept: usize) -> Self {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        Self {
            rows: batches.iter().map(RecordBatch::num_rows).sum(),
            batches,
            kept,
        }
    }

    /// Rows the last compaction kept (it compacts again at twice as many).
    pub(super) fn kept(&self) -> usize {
        self.kept
    }

    /// Rows held.
    #[cfg(test)]
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// The held batches, which [`RowRef`]s index.
    pub(super) fn batches(&self) -> Vec<&RecordBatch> {
        self.batches.iter().collect()
    }

    /// In rank order, the held rows within the limit with their rank (or
    /// row number). Only the ORDER BY values are put together to rank them:
    /// the rows are gathered once, by the caller, from what this returns
    /// (concatenating a firing's one-row batches cost more than the rest).
    pub(super) fn ranked(
        &self,
        order: impl Fn(&RecordBatch) -> Result<ArrayRef>,
        options: SortOptions,
        ranking: Ranking,
    ) -> Result<Vec<(RowRef, u64)>> {
        let mut refs: Vec<RowRef> = Vec::with_capacity(self.rows);
        let mut parts: Vec<ArrayRef> = Vec::with_capacity(self.batches.len());
        for (b, batch) in self.batches.iter().enumerate() {
            refs.extend((0..batch.num_rows()).map(|r| (b, r)));
            parts.push(order(batch)?);
        }
        let values = match parts.as_slice() {
            [] => return Ok(Vec::new()),
            [one] => one.clone(),
            many => concat(&many.iter().map(|a| a.as_ref()).collect::<Vec<&dyn Array>>())?,
        };
        let compare = make_comparator(&values, &values, options)?;
        let mut by_rank: Vec<u32> = (0..values.len() as u32).collect();
        // Stable: equal rows stay in arrival order.
        by_rank.sort_by(|&a, &b| compare(a as usize, b as usize));
        let mut within = Vec::with_capacity(ranking.limit.min(by_rank.len()));
        let mut rank = 0;
        for (i, &row) in by_rank.iter().enumerate() {
            let tied =
                ranking.ties && i > 0 && compare(by_rank[i - 1] as usize, row as usize).is_eq();
            if !tied {
                rank = i as u64 + 1;
            }
            if rank > ranking.limit as u64 {
                break;
            }
            within.push((refs[row as usize], rank));
        }
        Ok(within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;

    fn batch(values: &[Option<i64>], ids: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("id", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(values.to_vec())),
                Arc::new(Int64Array::from_iter_values(ids)),
            ],
        )
        .unwrap()
    }

    fn v(b: &RecordBatch) -> Result<ArrayRef> {
        Ok(b.column(0).clone())
    }

    /// (id, rank) of the rows within the limit, in rank order.
    fn ranks(held: &HeldRows, options: SortOptions, ranking: Ranking) -> Vec<(i64, u64)> {
        let batches = held.batches();
        held.ranked(v, options, ranking)
            .unwrap()
            .into_iter()
            .map(|((b, r), rank)| {
                let ids = batches[b].column(1).as_primitive::<Int64Type>();
                (ids.value(r), rank)
            })
            .collect()
    }

    /// The ranking by hand: values sorted by the options, equal values in
    /// arrival (id) order; ranks with or without ties.
    fn by_hand(values: &[Option<i64>], options: SortOptions, ranking: Ranking) -> Vec<(i64, u64)> {
        let array = Int64Array::from(values.to_vec());
        let mut ids: Vec<usize> = (0..values.len()).collect();
        let key = |i: usize| {
            let null = array.is_null(i);
            let value = array.value(i);
            let null_rank = if null == options.nulls_first { 0 } else { 1 };
            let value = if options.descending { -value } else { value };
            (null_rank, if null { 0 } else { value })
        };
        ids.sort_by_key(|&i| (key(i), i));
        let mut out = Vec::new();
        for (at, &i) in ids.iter().enumerate() {
            let rank = if ranking.ties {
                1 + ids.iter().filter(|&&j| key(j) < key(i)).count() as u64
            } else {
                at as u64 + 1
            };
            if rank <= ranking.limit as u64 {
                out.push((i as i64, rank));
            }
        }
        out
    }

    #[test]
    fn ranks_held_rows_as_by_hand_in_every_order() {
        let values: Vec<Option<i64>> = vec![
            Some(3),
            None,
            Some(7),
            Some(3),
            Some(7),
            Some(1),
            None,
            Some(7),
            Some(2),
        ];
        for limit in [1, 2, 3, 9, 20] {
            for ties in [false, true] {
                for descending in [false, true] {
                    for nulls_first in [false, true] {
                        let options = SortOptions {
                            descending,
                            nulls_first,
                        };
                        let ranking = Ranking { limit, ties };
                        let mut held = HeldRows::default();
                        // Three batches, so the concatenation keeps arrival order.
                        for (from, to) in [(0, 4), (4, 5), (5, 9)] {
                            let b = batch(&values[from..to], from as i64..to as i64);
                            held.add(b, v, options, ranking).unwrap();
                        }
                        assert_eq!(
                            ranks(&held, options, ranking),
                            by_hand(&values, options, ranking),
                            "limit {limit}, ties {ties}, {options:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn compaction_keeps_what_ranks_and_bounds_the_rows() {
        let options = SortOptions {
            descending: true,
            nulls_first: false,
        };
        for ties in [false, true] {
            let ranking = Ranking { limit: 2, ties };
            let mut held = HeldRows::default();
            let mut all = Vec::new();
            // 10,000 rows in batches of 50, values repeating so ties span
            // compactions.
            for b in 0..200 {
                let values: Vec<Option<i64>> =
                    (0..50).map(|i| Some((b * 50 + i) * 37 % 101)).collect();
                all.extend_from_slice(&values);
                held.add(batch(&values, b * 50..b * 50 + 50), v, options, ranking)
                    .unwrap();
                assert!(held.rows() <= COMPACT_AT + 50, "{} rows held", held.rows());
            }
            assert_eq!(
                ranks(&held, options, ranking),
                by_hand(&all, options, ranking),
                "ties {ties}"
            );
        }
    }

    #[test]
    fn nothing_held_ranks_to_none_and_empty_batches_are_ignored() {
        let options = SortOptions::default();
        let ranking = Ranking {
            limit: 1,
            ties: true,
        };
        let mut held = HeldRows::default();
        assert!(held.ranked(v, options, ranking).unwrap().is_empty());
        held.add(batch(&[], 0..0), v, options, ranking).unwrap();
        assert!(held.ranked(v, options, ranking).unwrap().is_empty());
    }
}
