//! Before a top-N encodes anything, the rows of an arriving batch that
//! cannot rank within the limit among the batch's own rows of their window.
//!
//! A window aggregate's firing sends a top-N thousands of rows in one batch
//! (q5: ~3 k auction counts per instance), of which it keeps one or a few.
//! Encoding every row's sort key and partition key to compare them one by
//! one took most of the top-N's time on the path of each window's result.
//! With no PARTITION BY keys and one ORDER BY expression, one pass over a
//! window's rows finds their limit-th best value (natively for numbers
//! without nulls, through arrow's comparator otherwise, with arrow's sort
//! for limits above [`SMALL_LIMIT`]), and only the rows no worse than it go
//! on to be ranked exactly (arrival order among equal rows, the partition's
//! earlier candidates). Rows equal to that value are all kept, so the exact
//! ranking still sees every row that could rank within the limit, with or
//! without ties. A batch all of one window is cut whole
//! ([`BatchBest::keep_one_window`]) before its rows are assigned to windows;
//! others window by window after ([`BatchBest::keep`]).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, ArrowNativeTypeOp, DynComparator, RecordBatch, UInt32Array, downcast_primitive_array,
    make_comparator,
};
use arrow::compute::{SortOptions, sort_to_indices, take, take_record_batch};
use arrow::datatypes::DataType;
use datafusion::physical_expr::PhysicalExpr;
use millrace_core::Result;

use super::TopNSpec;
use crate::window::{Assignment, WindowAssign, evaluate};

/// A window's rows in one batch are cut only when there are more than this
/// many and more than four times the limit: for a few rows the exact path is
/// as cheap as the sort.
const MIN_ROWS: usize = 64;

/// Up to this limit, the limit-th best row is found by one pass that keeps
/// the best rows so far in order (most rows lose to the worst of them at one
/// comparison): faster than arrow's sort with a limit at small limits
/// (`cargo run --release -p millrace-sql-ops --example topn_cut` times both
/// on 3 k counts). Larger limits use the sort.
const SMALL_LIMIT: usize = 64;

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
        ranks_unencoded(&data_type).then(|| BatchBest {
            order_by: order.expr.clone(),
            options: order.options,
            limit: spec.limit,
        })
    }

    /// When every row of `batch` is in one window of `window` that is not
    /// late at `watermark` (a firing's batch), the rows no worse than their
    /// limit-th best, in batch order; `None` when none would be dropped or
    /// the batch is not one such window (a late window's rows go the way
    /// that counts each of them).
    pub(super) fn keep_one_window(
        &self,
        batch: &RecordBatch,
        window: &WindowAssign,
        watermark: i64,
    ) -> Result<Option<RecordBatch>> {
        if batch.num_rows() <= self.min_rows() {
            return Ok(None);
        }
        match window.single_window(batch)? {
            Some((_, end)) if end > watermark => {}
            _ => return Ok(None),
        }
        let values = evaluate(&self.order_by, batch)?;
        let kept = no_worse_than_limit_th(&values, self.options, self.limit)?;
        if kept.len() == batch.num_rows() {
            return Ok(None);
        }
        let rows = UInt32Array::from_iter_values(kept.into_iter().map(|i| i as u32));
        Ok(Some(take_record_batch(batch, &rows)?))
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
        let min_rows = self.min_rows();
        if assignments.len() <= min_rows {
            return Ok(None);
        }
        let values = evaluate(&self.order_by, batch)?;
        // Few rows survive: grown as needed, not sized for the batch.
        let mut kept: Vec<Assignment> = Vec::new();
        for run in assignments.chunk_by(|a, b| (a.end, a.start) == (b.end, b.start)) {
            if run.len() <= min_rows {
                kept.extend_from_slice(run);
                continue;
            }
            let run_values = self.values_of(&values, run)?;
            let no_worse = no_worse_than_limit_th(&run_values, self.options, self.limit)?;
            kept.extend(no_worse.into_iter().map(|i| run[i]));
        }
        if kept.len() == assignments.len() {
            return Ok(None);
        }
        // One copy of each row still wanted by some window, in batch order.
        let mut rows: Vec<u32> = kept.iter().map(|a| a.row).collect();
        rows.sort_unstable();
        rows.dedup();
        for a in &mut kept {
            // Found: `rows` holds every kept row.
            a.row = rows.binary_search(&a.row).unwrap_or_default() as u32;
        }
        *assignments = kept;
        Ok(Some(take_record_batch(batch, &UInt32Array::from(rows))?))
    }

    /// The ORDER BY values of `batch`'s rows.
    pub(super) fn order_values(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        evaluate(&self.order_by, batch)
    }

    pub(super) fn options(&self) -> SortOptions {
        self.options
    }

    /// Windows with at most this many rows in a batch are left whole.
    fn min_rows(&self) -> usize {
        MIN_ROWS.max(self.limit.saturating_mul(4))
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

/// Whether a top-N may rank by values of `data_type` before encoding them:
/// arrow's comparator orders them as the row format does.
pub(crate) fn ranks_unencoded(data_type: &DataType) -> bool {
    data_type.is_primitive() || matches!(data_type, DataType::Utf8 | DataType::LargeUtf8)
}

/// Positions in `values` (more than `limit`) of the values no worse than
/// the `limit`-th best by `options`, ascending: every row that can rank
/// within the limit among these, ties with the limit-th included.
pub fn no_worse_than_limit_th(
    values: &ArrayRef,
    options: SortOptions,
    limit: usize,
) -> Result<Vec<usize>> {
    // Numbers without nulls compare natively (a firing's counts): the
    // comparator below is a call per comparison.
    if values.null_count() == 0
        && limit <= SMALL_LIMIT
        && !matches!(values.data_type(), DataType::Interval(_))
    {
        let descending = options.descending;
        downcast_primitive_array!(
            values => return Ok(native_no_worse(values.values(), limit, descending)),
            _ => {}
        );
    }
    let order = make_comparator(values, values, options)?;
    let worst_kept = if limit <= SMALL_LIMIT {
        limit_th_best(&order, values.len(), limit)
    } else {
        let best = sort_to_indices(values, Some(options), Some(limit))?;
        best.value(best.len() - 1) as usize
    };
    Ok((0..values.len())
        .filter(|&i| order(i, worst_kept).is_le())
        .collect())
}

/// The position among `len` rows of the `limit`-th best by `order`
/// (`limit < len`), the rows equal to it counting in any order.
fn limit_th_best(order: &DynComparator, len: usize, limit: usize) -> usize {
    // The best rows so far, best first.
    let mut top: Vec<usize> = Vec::with_capacity(limit + 1);
    for row in 0..len {
        if top.len() == limit && order(row, top[limit - 1]).is_ge() {
            continue;
        }
        let at = top.partition_point(|&t| order(t, row).is_le());
        top.insert(at, row);
        top.truncate(limit);
    }
    top[top.len() - 1]
}

/// [`BatchBest::no_worse_than_limit_th`] for values without nulls, compared
/// by their native order (floats by total order, as the row format does).
fn native_no_worse<T: ArrowNativeTypeOp>(
    values: &[T],
    limit: usize,
    descending: bool,
) -> Vec<usize> {
    // The direction is a constant of each instance, not a branch per value.
    if descending {
        native_no_worse_in::<T, true>(values, limit)
    } else {
        native_no_worse_in::<T, false>(values, limit)
    }
}

fn native_no_worse_in<T: ArrowNativeTypeOp, const DESCENDING: bool>(
    values: &[T],
    limit: usize,
) -> Vec<usize> {
    let better = |a: T, b: T| {
        let order = a.compare(b);
        if DESCENDING {
            order.is_gt()
        } else {
            order.is_lt()
        }
    };
    let worst_kept = if limit == 1 {
        // The best value is a fold the compiler keeps in registers.
        values
            .iter()
            .copied()
            .reduce(|best, v| if better(v, best) { v } else { best })
    } else {
        // The best `limit` values so far, best first.
        let mut top: Vec<T> = Vec::with_capacity(limit + 1);
        for &v in values {
            if top.len() == limit && !better(v, top[limit - 1]) {
                continue;
            }
            let at = top.partition_point(|&t| !better(v, t));
            top.insert(at, v);
            top.truncate(limit);
        }
        top.last().copied()
    };
    let Some(worst_kept) = worst_kept else {
        return Vec::new();
    };
    values
        .iter()
        .enumerate()
        .filter(|&(_, &v)| !better(worst_kept, v))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::test_util::{ints, schema};
    use arrow::array::Int64Array;
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::expressions::col;
    use std::collections::BTreeSet;

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

    /// Native comparison (no nulls), the comparator (nulls) and the sort
    /// (limits above `SMALL_LIMIT`) keep exactly the rows no worse than a
    /// full sort's limit-th value.
    #[test]
    fn the_limit_th_best_is_a_full_sorts_by_every_path() {
        for with_nulls in [false, true] {
            the_limit_th_best_is_a_full_sorts(with_nulls);
        }
    }

    fn the_limit_th_best_is_a_full_sorts(with_nulls: bool) {
        let mut x: u64 = 3;
        let values: Vec<Option<i64>> = (0..1000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = ((x >> 33) % 300) as i64;
                (!with_nulls || v % 11 != 0).then_some(v)
            })
            .collect();
        let input = schema(&[("v", DataType::Int64)]);
        let b = RecordBatch::try_new(input.clone(), vec![ints(&values)]).unwrap();
        for limit in [1, 2, 7, SMALL_LIMIT, SMALL_LIMIT + 1, 200] {
            for descending in [true, false] {
                let options = SortOptions {
                    descending,
                    nulls_first: false,
                };
                let best = BatchBest {
                    order_by: col("v", &input).unwrap(),
                    options,
                    limit,
                };
                let mut assignments: Vec<Assignment> = (0..1000)
                    .map(|row| Assignment {
                        row,
                        start: 0,
                        end: 10,
                    })
                    .collect();
                let kept = best
                    .keep(&b, &mut assignments)
                    .unwrap()
                    .expect("rows dropped");
                // Nulls last: the limit-th best is a value (fewer than 100 nulls).
                let mut sorted: Vec<i64> = values.iter().flatten().copied().collect();
                sorted.sort_unstable_by(|a, b| if descending { b.cmp(a) } else { a.cmp(b) });
                let threshold = sorted[limit - 1];
                let no_worse = |v: i64| {
                    if descending {
                        v >= threshold
                    } else {
                        v <= threshold
                    }
                };
                let want: Vec<Option<i64>> = values
                    .iter()
                    .filter(|v| v.is_some_and(no_worse))
                    .copied()
                    .collect();
                let got = kept
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                assert_eq!(
                    got.iter().collect::<Vec<_>>(),
                    want,
                    "limit {limit}, {options:?}, nulls {with_nulls}"
                );
            }
        }
    }

    /// Floats rank by total order, as the row format ranks them: NaN above
    /// every number, -0 below 0.
    #[test]
    fn floats_rank_by_total_order() {
        let values = [1.0, f64::NAN, -0.0, 0.0, 2.5, f64::NAN, -7.0];
        let many: Vec<f64> = (0..100).flat_map(|_| values).collect();
        // The distinct values kept, by bits.
        let kept = |descending: bool, limit: usize| -> BTreeSet<u64> {
            native_no_worse(&many, limit, descending)
                .into_iter()
                .map(|i| many[i].to_bits())
                .collect()
        };
        let bits = |xs: &[f64]| -> BTreeSet<u64> { xs.iter().map(|x| x.to_bits()).collect() };
        assert_eq!(kept(true, 1), bits(&[f64::NAN]));
        assert_eq!(kept(false, 150), bits(&[-7.0, -0.0]));
        assert_eq!(kept(false, 250), bits(&[-7.0, -0.0, 0.0]));
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
