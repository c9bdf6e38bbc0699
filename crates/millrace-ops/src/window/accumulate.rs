//! Aggregate planning and accumulation for the window operator.
//!
//! Each aggregate is planned once into an [`AccKind`] that fixes its input cast
//! and its accumulator layout. Accumulators are column-wise vectors indexed by
//! group id, and every (kind, input type) pair has its own monomorphic loop,
//! so the per-row work is a load, an update and a store with no dispatch.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, PrimitiveArray};
use arrow::buffer::NullBuffer;
use arrow::compute::{CastOptions, cast, cast_with_options};
use arrow::datatypes::{DataType, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use millrace_core::{Error, Result};

use super::operator::batch_column;
use super::{Agg, AggFunc, column_index};

/// How one aggregate is computed: which accumulator vectors it uses and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AccKind {
    CountAll,
    CountCol,
    SumInt,
    SumFloat,
    MinInt,
    MaxInt,
    MinFloat,
    MaxFloat,
    Avg,
}

impl AccKind {
    /// The type the input column is cast to once per batch, if values are read.
    fn input_type(self) -> Option<DataType> {
        match self {
            AccKind::CountAll | AccKind::CountCol => None,
            AccKind::SumInt | AccKind::MinInt | AccKind::MaxInt => Some(DataType::Int64),
            AccKind::SumFloat | AccKind::MinFloat | AccKind::MaxFloat | AccKind::Avg => {
                Some(DataType::Float64)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct AggPlan {
    pub(super) kind: AccKind,
    /// Index of the input column in the batch.
    pub(super) column: Option<usize>,
    /// For error messages, e.g. `sum(price) AS total`.
    label: String,
    pub(super) output_type: DataType,
}

pub(super) fn plan_agg(agg: &Agg, input: &Schema) -> Result<AggPlan> {
    let label = agg.to_string();
    let Some(name) = &agg.column else {
        return if agg.func == AggFunc::Count {
            Ok(AggPlan {
                kind: AccKind::CountAll,
                column: None,
                label,
                output_type: DataType::Int64,
            })
        } else {
            Err(Error::plan(format!(
                "aggregate {label}: {} needs a column; only count may count rows (*)",
                agg.func
            )))
        };
    };
    let index = column_index(input, name, &format!("aggregate {label}"))?;
    let dt = input.field(index).data_type();
    let (int, float, ts) = (
        dt.is_integer(),
        dt.is_floating(),
        matches!(dt, DataType::Timestamp(_, _)),
    );
    let (kind, output_type) = match agg.func {
        AggFunc::Count => (AccKind::CountCol, DataType::Int64),
        AggFunc::Sum if int => (AccKind::SumInt, DataType::Int64),
        AggFunc::Sum if float => (AccKind::SumFloat, DataType::Float64),
        AggFunc::Min if int => (AccKind::MinInt, DataType::Int64),
        AggFunc::Max if int => (AccKind::MaxInt, DataType::Int64),
        AggFunc::Min if ts => (AccKind::MinInt, dt.clone()),
        AggFunc::Max if ts => (AccKind::MaxInt, dt.clone()),
        AggFunc::Min if float => (AccKind::MinFloat, DataType::Float64),
        AggFunc::Max if float => (AccKind::MaxFloat, DataType::Float64),
        AggFunc::Avg if int || float => (AccKind::Avg, DataType::Float64),
        func => {
            let accepted = if matches!(func, AggFunc::Min | AggFunc::Max) {
                "an integer, float or timestamp"
            } else {
                "an integer or float"
            };
            return Err(Error::plan(format!(
                "aggregate {label}: column '{name}' has type {dt}; {func} needs {accepted} column"
            )));
        }
    };
    Ok(AggPlan {
        kind,
        column: Some(index),
        label,
        output_type,
    })
}

/// Accumulators of one aggregate in one window, indexed by group id. Each
/// [`AccKind`] uses `counts` (non-null inputs seen) and at most one of `ints`
/// and `floats`.
#[derive(Default)]
pub(super) struct Acc {
    ints: Vec<i64>,
    floats: Vec<f64>,
    counts: Vec<u64>,
}

impl Acc {
    /// Makes room for `groups` groups, new ones at the aggregate's identity.
    pub(super) fn grow(&mut self, kind: AccKind, groups: usize) {
        if self.counts.len() >= groups {
            return;
        }
        self.counts.resize(groups, 0);
        match kind {
            AccKind::CountAll | AccKind::CountCol => {}
            AccKind::SumInt => self.ints.resize(groups, 0),
            AccKind::MinInt => self.ints.resize(groups, i64::MAX),
            AccKind::MaxInt => self.ints.resize(groups, i64::MIN),
            AccKind::SumFloat | AccKind::Avg => self.floats.resize(groups, 0.0),
            // f64::min/max return the other operand when one is NaN, so a NaN
            // start is replaced by the first value, and stays only if all are NaN.
            AccKind::MinFloat | AccKind::MaxFloat => self.floats.resize(groups, f64::NAN),
        }
    }
}

/// An aggregate's input for one batch, cast once to the accumulator's type.
pub(super) enum AggInput {
    None,
    Nulls(Option<NullBuffer>),
    Int(Int64Array),
    Float(Float64Array),
}

pub(super) fn internal(what: &str) -> Error {
    Error::Other(format!("internal error in window operator: {what}"))
}

/// Each aggregate's input column of `batch`, cast once to its accumulator type.
pub(super) fn prepare_inputs(aggs: &[AggPlan], batch: &RecordBatch) -> Result<Vec<AggInput>> {
    let options = CastOptions {
        safe: false, // an out-of-range UInt64 must fail, not become null
        ..Default::default()
    };
    aggs.iter()
        .map(|plan| {
            let Some(index) = plan.column else {
                return Ok(AggInput::None);
            };
            let column = batch_column(batch, index)?;
            Ok(match plan.kind.input_type() {
                None => AggInput::Nulls(column.logical_nulls()),
                Some(DataType::Int64) => AggInput::Int(
                    cast_with_options(column, &DataType::Int64, &options)?
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .cloned()
                        .ok_or_else(|| internal("cast to Int64"))?,
                ),
                Some(_) => AggInput::Float(
                    cast_with_options(column, &DataType::Float64, &options)?
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .cloned()
                        .ok_or_else(|| internal("cast to Float64"))?,
                ),
            })
        })
        .collect()
}

/// Calls `f(group, value)` for each non-null value of the rows in `rows`.
/// Generic so every aggregate gets its own loop with no dispatch per row.
#[inline(always)]
pub(super) fn for_each_value<T: Copy>(
    values: &[T],
    nulls: Option<&NullBuffer>,
    rows: &[u32],
    gids: &[u32],
    mut f: impl FnMut(usize, T),
) {
    match nulls {
        Some(nulls) if nulls.null_count() > 0 => {
            for (&r, &g) in rows.iter().zip(gids) {
                if nulls.is_valid(r as usize) {
                    f(g as usize, values[r as usize]);
                }
            }
        }
        _ => {
            for (&r, &g) in rows.iter().zip(gids) {
                f(g as usize, values[r as usize]);
            }
        }
    }
}

/// Folds the rows of one window into one aggregate's accumulators.
pub(super) fn update(
    plan: &AggPlan,
    acc: &mut Acc,
    input: &AggInput,
    rows: &[u32],
    gids: &[u32],
    window_start: i64,
) -> Result<()> {
    let Acc {
        ints,
        floats,
        counts,
    } = acc;
    match (plan.kind, input) {
        (AccKind::CountAll, _) => {
            for &g in gids {
                counts[g as usize] += 1;
            }
        }
        (AccKind::CountCol, AggInput::Nulls(nulls)) => match nulls {
            Some(nulls) if nulls.null_count() > 0 => {
                for (&r, &g) in rows.iter().zip(gids) {
                    counts[g as usize] += u64::from(nulls.is_valid(r as usize));
                }
            }
            _ => {
                for &g in gids {
                    counts[g as usize] += 1;
                }
            }
        },
        (AccKind::SumInt, AggInput::Int(a)) => {
            let mut overflow = false;
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                let (sum, o) = ints[g].overflowing_add(v);
                ints[g] = sum;
                overflow |= o;
                counts[g] += 1;
            });
            if overflow {
                return Err(Error::Other(format!(
                    "{} overflowed Int64 in the window starting at {window_start} ms",
                    plan.label
                )));
            }
        }
        (AccKind::MinInt, AggInput::Int(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                ints[g] = ints[g].min(v);
                counts[g] += 1;
            });
        }
        (AccKind::MaxInt, AggInput::Int(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                ints[g] = ints[g].max(v);
                counts[g] += 1;
            });
        }
        (AccKind::SumFloat | AccKind::Avg, AggInput::Float(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                floats[g] += v;
                counts[g] += 1;
            });
        }
        (AccKind::MinFloat, AggInput::Float(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                floats[g] = floats[g].min(v);
                counts[g] += 1;
            });
        }
        (AccKind::MaxFloat, AggInput::Float(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                floats[g] = floats[g].max(v);
                counts[g] += 1;
            });
        }
        (kind, _) => return Err(internal(&format!("{kind:?} got an input of another type"))),
    }
    Ok(())
}

/// The output column of one aggregate over the fired windows, in order.
pub(super) fn finish_agg<'a>(
    plan: &AggPlan,
    accs: impl Iterator<Item = &'a Acc> + Clone,
    total: usize,
) -> Result<ArrayRef> {
    let counts = accs.clone().flat_map(|a| a.counts.iter().copied());
    // Groups with no non-null input get null (all but the counts).
    let validity = || -> Option<NullBuffer> {
        let nulls = NullBuffer::from_iter(counts.clone().map(|c| c > 0));
        (nulls.null_count() > 0).then_some(nulls)
    };
    let array: ArrayRef = match plan.kind {
        AccKind::CountAll | AccKind::CountCol => Arc::new(Int64Array::from_iter_values(
            counts.clone().map(|c| c as i64),
        )),
        AccKind::SumInt | AccKind::MinInt | AccKind::MaxInt => {
            let values: Vec<i64> = accs.flat_map(|a| a.ints.iter().copied()).collect();
            let ints: ArrayRef =
                Arc::new(PrimitiveArray::<Int64Type>::new(values.into(), validity()));
            if &plan.output_type == ints.data_type() {
                ints
            } else {
                // A timestamp min/max: same values, the input's type.
                cast(&ints, &plan.output_type)?
            }
        }
        AccKind::SumFloat | AccKind::MinFloat | AccKind::MaxFloat => {
            let values: Vec<f64> = accs.flat_map(|a| a.floats.iter().copied()).collect();
            Arc::new(Float64Array::new(values.into(), validity()))
        }
        AccKind::Avg => {
            let values: Vec<f64> = accs
                .flat_map(|a| a.floats.iter().zip(&a.counts))
                .map(|(&sum, &n)| if n > 0 { sum / n as f64 } else { 0.0 })
                .collect();
            Arc::new(Float64Array::new(values.into(), validity()))
        }
    };
    if array.len() != total {
        return Err(internal("aggregate length differs from key count"));
    }
    Ok(array)
}
