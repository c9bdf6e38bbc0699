//! Turning fired (window, group) results into output batches.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use millrace_core::{Emitter, Result};

use super::keys::KeyCodec;
use super::{Plan, group_column};
use crate::MAX_OUTPUT_ROWS;
use crate::window::window_array;

/// Results of the windows one watermark fired, one entry per output row.
#[derive(Default)]
pub(super) struct Fired<'a> {
    /// Group keys as bytes (see `keys.rs`; ignored without keys), unless
    /// `key_columns` has them decoded already.
    pub keys: Vec<&'a [u8]>,
    pub key_columns: Option<Vec<ArrayRef>>,
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    /// One column per aggregate.
    pub aggs: Vec<ArrayRef>,
}

impl Fired<'_> {
    pub fn num_rows(&self) -> usize {
        self.starts.len()
    }
}

/// Emits `fired` as output batches of at most [`MAX_OUTPUT_ROWS`] rows whose
/// entered column is `entered_ns`.
pub(super) fn emit_fired(
    plan: &Plan,
    codec: &KeyCodec,
    fired: Fired<'_>,
    entered_ns: i64,
    out: &mut Emitter,
) -> Result<()> {
    let total = fired.num_rows();
    if total == 0 {
        return Ok(());
    }
    let schema = &plan.output_with_entered;
    let spec = &plan.spec;
    let declared = |i: usize| schema.field(i).data_type();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());

    let keys = match fired.key_columns {
        Some(columns) => columns,
        None => codec.decode(&fired.keys)?,
    };
    for (k, key) in keys.into_iter().enumerate() {
        // The row format may decode a type to an equivalent one (e.g. a
        // dictionary to its values); restore the declared type.
        columns.push(cast_to(
            key,
            declared(group_column(k, spec.window_position)),
        )?);
    }
    columns.insert(spec.window_position, window_array(fired.starts, fired.ends));
    let first_agg = spec.keys.len() + 1;
    for (a, values) in fired.aggs.into_iter().enumerate() {
        columns.push(cast_to(values, declared(first_agg + a))?);
    }
    columns.push(Arc::new(Int64Array::from_value(entered_ns, total)));

    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let mut offset = 0;
    while offset < total {
        let len = MAX_OUTPUT_ROWS.min(total - offset);
        out.data(batch.slice(offset, len));
        offset += len;
    }
    Ok(())
}

fn cast_to(array: ArrayRef, declared: &DataType) -> Result<ArrayRef> {
    if array.data_type() == declared {
        Ok(array)
    } else {
        Ok(cast(&array, declared)?)
    }
}
