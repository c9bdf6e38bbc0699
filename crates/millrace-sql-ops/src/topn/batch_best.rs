//! Before a top-N encodes anything, the rows of an arriving batch that
//! cannot rank within the limit among the batch's own rows of their window.
//!
//! A window aggregate's firing sends a top-N thousands of rows in one batch
//! (q5: ~3 k auction counts per instance), of which it keeps one or a few.
//! Encoding every row's sort key and partition key to compare them one by
//! one took most of the top-N's time on the path of each window's result.
//! With no PARTITION BY keys and one ORDER BY expression, arrow's sort
//! kernel finds the limit-th best value of a window's rows in one pass, and
//! only the rows no worse than it go on to be ranked exactly (arrival order
//! among equal rows, the partition's earlier candidates). Rows equal to
//! that value are all kept, so the exact ranking still sees every row that
//! could rank within the limit, with or without ties.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, make_comparator};
use arrow::compute::{SortOptions, sort_to_indices, take, take_record_batch};
use arrow::datatypes::DataType;
use datafusion::physical_expr::PhysicalExpr;
use millrace_core::Result;

use super::TopNSpec;
use crate::window::{Assignment, evaluate};

/// A window's rows in one batch are cut only when there are more than this
/// many and more than four times the limit: for a few rows the exact path is
/// as cheap as the sort.
const MIN_ROWS: usize = 64;

/// The one ORDER BY expression of a top-N without PARTITION BY keys.
pub(super) struct BatchBest {
    order_by: Arc<dyn PhysicalExpr>,
    options: SortOptions,
    limit: usize,
}

impl BatchBest {
    /// For a top-N whose only partition is the window and which orders by
    /// one expression of a type arrow's sort kernel ranks as the row format
    /// does (primitives and strings); `None` otherwise.
    pub(super) fn new(spec: &TopNSpec) -> Option<Self> {
        let [order] = spec.order_by.as_slice() else {
            return None;
        };
        if !spec.partition_keys.is_empty() {
            return None;
        }
        let data_type = order.expr.data_type(&spec.input_schema).ok()?;
        let sortable =
            data_type.is_primitive() || matches!(data_type, DataType::Utf8 | DataType::LargeUtf8);
        sortable.then(|| BatchBest {
            order_by: order.expr.clone(),
            options: order.options,
            limit: spec.limit,
        })
    }

    /// Drops from `assignments` (sorted by window, rows ascending within
    /// one) every row worse than its window's limit-th best in `batch`, and
    /// returns the batch of the rows left with `assignments` renumbered to
    /// it (in the same order, so arrival order is kept); `None` when no row
    /// was dropped.
    pub(super) fn keep(
        &self,
        batch: &RecordBatch,
        assignments: &mut Vec<Assignment>,
    ) -> Result<Option<RecordBatch>> {
        let min_rows = MIN_ROWS.max(self.limit.saturating_mul(4));
        if assignments.len() <= min_rows {
            return Ok(None);
        }
        let values = evaluate(&self.order_by, batch)?;
        let mut kept: Vec<Assignment> = Vec::with_capacity(assignments.len());
        for run in assignments.chunk_by(|a, b| (a.end, a.start) == (b.end, b.start)) {
            if run.len() <= min_rows {
                kept.extend_from_slice(run);
                continue;
            }
            let run_values = self.values_of(&values, run)?;
            let best = sort_to_indices(&run_values, Some(self.options), Some(self.limit))?;
            let worst_kept = best.value(best.len() - 1) as usize;
            let order = make_comparator(&run_values, &run_values, self.options)?;
            kept.extend(
                run.iter()
                    .enumerate()
                    .filter(|&(i, _)| order(i, worst_kept).is_le())
                    .map(|(_, a)| *a),
            );
        }
        if kept.len() == assignments.len() {
            return Ok(None);
        }
        // One copy of each row still wanted by some window, in batch order.
        let mut rows: Vec<u32> = kept.iter().map(|a| a.row).collect();
        rows.sort_unstable();
        rows.dedup();
        let mut renumber = vec![0u32; batch.num_rows()];
        for (new, &old) in rows.iter().enumerate() {
            renumber[old as usize] = new as u32;
        }
        for a in &mut kept {
            a.row = renumber[a.row as usize];
        }
        *assignments = kept;
        Ok(Some(take_record_batch(batch, &UInt32Array::from(rows))?))
    }

    /// The ORDER BY values of one window's rows: the batch's own array when
    /// the window holds every row (a firing's batch is one window).
    fn values_of(&self, values: &ArrayRef, run: &[Assignment]) -> Result<ArrayRef> {
        if run.len() == values.len() {
            return Ok(values.clone());
        }
        let rows = UInt32Array::from_iter_values(run.iter().map(|a| a.row));
        Ok(take(values, &rows, None)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::test_util::{ints, schema};
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::expressions::col;

    #[test]
    fn keeps_each_windows_rows_no_worse_than_its_limit_th_best_renumbered() {
        let input = schema(&[("v", DataType::Int64)]);
        let order_by = PhysicalSortExpr::new_default(col("v", &input).unwrap()).desc();
        let best = BatchBest {
            order_by: order_by.expr,
            options: order_by.options,
            limit: 2,
        };
        // 200 rows, values 0..10 repeating: window (0, 10) holds rows 0..100,
        // window (10, 20) rows 100..200 and also rows 0..5 (carried
        // windows may overlap).
        let values: Vec<Option<i64>> = (0..200).map(|i| Some(i % 10)).collect();
        let b = RecordBatch::try_new(input.clone(), vec![ints(&values)]).unwrap();
        let at = |row: u32, start: i64| Assignment {
            row,
            start,
            end: start + 10,
        };
        let mut assignments: Vec<Assignment> = (0..100)
            .map(|r| at(r, 0))
            .chain((0..5).chain(100..200).map(|r| at(r, 10)))
            .collect();
        let kept = best
            .keep(&b, &mut assignments)
            .unwrap()
            .expect("rows dropped");
        // The two best of each window are 9s: every 9 stays (a tie with the
        // second best may still rank), and rows 0..5 (values 0..4) go.
        let nines: Vec<u32> = (0..200).filter(|r| r % 10 == 9).collect();
        assert_eq!(kept.num_rows(), nines.len());
        let expected: Vec<Assignment> = (0..10)
            .map(|n| at(n, 0))
            .chain((10..20).map(|n| at(n, 10)))
            .collect();
        assert_eq!(assignments, expected);
        let v = kept
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        assert!(v.iter().all(|v| v == Some(9)));
    }

    #[test]
    fn a_batch_of_few_rows_is_left_as_it_is() {
        let input = schema(&[("v", DataType::Int64)]);
        let best = BatchBest {
            order_by: col("v", &input).unwrap(),
            options: SortOptions::default(),
            limit: 2,
        };
        let b = RecordBatch::try_new(input.clone(), vec![ints(&[Some(1); 64])]).unwrap();
        let mut assignments: Vec<Assignment> = (0..64)
            .map(|row| Assignment {
                row,
                start: 0,
                end: 10,
            })
            .collect();
        assert!(best.keep(&b, &mut assignments).unwrap().is_none());
        assert_eq!(assignments.len(), 64);
    }
}
