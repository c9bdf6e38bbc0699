//! What a window aggregate reads from one input batch: group keys in row
//! format, aggregate arguments and `FILTER` masks, evaluated once per batch
//! and then gathered for the rows of each window.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use arrow::compute::take;
use arrow::record_batch::RecordBatch;
use millrace_core::{Error, Result, entered_column};

use super::keys::{BatchKeys, KeyCodec};
use super::{AggPhase, Plan};
use crate::window::evaluate;

pub(super) struct BatchInputs {
    /// Group keys as bytes (see `keys.rs`).
    keys: BatchKeys,
    /// Per aggregate: its argument arrays over the whole batch (in the final
    /// phase, its state columns).
    args: Vec<Vec<ArrayRef>>,
    /// Per aggregate: its FILTER mask, with NULL already turned to false (a
    /// NULL condition does not select the row, as in SQL).
    filters: Vec<Option<BooleanArray>>,
    num_rows: usize,
}

impl BatchInputs {
    pub(super) fn evaluate(plan: &Plan, codec: &KeyCodec, batch: &RecordBatch) -> Result<Self> {
        let spec = &plan.spec;
        let key_columns = spec
            .keys
            .iter()
            .map(|k| evaluate(k, batch))
            .collect::<Result<Vec<_>>>()?;
        let keys = codec.encode(&key_columns)?;
        let mut args = Vec::with_capacity(spec.aggs.len());
        let mut filters = Vec::with_capacity(spec.aggs.len());
        if spec.phase == AggPhase::Final {
            // The partial phase's states, FILTERs already applied there.
            for columns in &plan.state_columns {
                args.push(batch.columns()[columns.clone()].to_vec());
                filters.push(None);
            }
            return Ok(Self {
                keys,
                args,
                filters,
                num_rows: batch.num_rows(),
            });
        }
        for agg in &spec.aggs {
            let values = agg
                .aggregate
                .expressions()
                .iter()
                .map(|e| evaluate(e, batch))
                .collect::<Result<Vec<_>>>()?;
            args.push(values);
            let filter = match &agg.filter {
                Some(f) => Some(filter_mask(&evaluate(f, batch)?, agg.aggregate.name())?),
                None => None,
            };
            filters.push(filter);
        }
        Ok(Self {
            keys,
            args,
            filters,
            num_rows: batch.num_rows(),
        })
    }

    pub(super) fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// The group key of `row` as bytes (empty when there are no keys).
    pub(super) fn key(&self, row: u32) -> &[u8] {
        self.keys.key(row)
    }

    /// Arguments and filter of aggregate `agg` at `rows` (the whole batch,
    /// uncopied, for `None`).
    pub(super) fn gather(
        &self,
        agg: usize,
        rows: Option<&UInt32Array>,
    ) -> Result<(Vec<ArrayRef>, Option<BooleanArray>)> {
        let Some(rows) = rows else {
            return Ok((self.args[agg].clone(), self.filters[agg].clone()));
        };
        let values = self.args[agg]
            .iter()
            .map(|a| take(a.as_ref(), rows, None))
            .collect::<Result<Vec<_>, _>>()?;
        let filter = match &self.filters[agg] {
            Some(f) => Some(take(f, rows, None)?.as_boolean().clone()),
            None => None,
        };
        Ok((values, filter))
    }

    /// Arguments of aggregate `agg` at those of `rows` its FILTER selects:
    /// for scalar accumulators, whose `update_batch` takes no filter.
    pub(super) fn gather_selected(&self, agg: usize, rows: &[u32]) -> Result<Vec<ArrayRef>> {
        let indices: UInt32Array = match &self.filters[agg] {
            Some(f) => rows
                .iter()
                .copied()
                .filter(|&r| f.value(r as usize))
                .collect(),
            None => rows.iter().copied().collect(),
        };
        Ok(self.args[agg]
            .iter()
            .map(|a| take(a.as_ref(), &indices, None))
            .collect::<Result<Vec<_>, _>>()?)
    }
}

/// A FILTER condition as a mask without nulls.
fn filter_mask(array: &ArrayRef, aggregate: &str) -> Result<BooleanArray> {
    let Some(mask) = array.as_boolean_opt() else {
        return Err(Error::Other(format!(
            "the FILTER condition of '{aggregate}' evaluated to {}, expected Boolean",
            array.data_type()
        )));
    };
    Ok(match mask.nulls() {
        Some(nulls) => BooleanArray::new(mask.values() & nulls.inner(), None),
        None => mask.clone(),
    })
}

/// The largest entered time of `batch`'s rows, if it has any.
pub(super) fn max_entered(batch: &RecordBatch) -> Option<i64> {
    entered_column(batch).and_then(arrow::compute::max)
}
