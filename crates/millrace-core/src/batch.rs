//! Record batches as the engine carries them.
//!
//! Every batch inside the engine has one extra column, [`ENTERED_COLUMN`]
//! (`Int64`, nanoseconds on [`crate::time::now_ns`]'s clock): the moment each
//! row entered the engine — for a generator, its *scheduled* time, so a
//! stalled pipeline cannot hide its delay. Because it is an ordinary column,
//! Arrow's `filter`, `take` and `slice` keep it aligned with the data for free.
//! Sources attach it, sinks strip it before writing and record latency from it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{Error, Result};

/// Name of the reserved column holding each row's entered time.
pub const ENTERED_COLUMN: &str = "__entered_ns";

/// The entered-time column of `batch`, if present.
pub fn entered_column(batch: &RecordBatch) -> Option<&Int64Array> {
    let idx = batch.schema_ref().index_of(ENTERED_COLUMN).ok()?;
    batch.column(idx).as_primitive_opt::<Int64Type>()
}

/// `schema` plus the entered column (appended last).
pub fn schema_with_entered(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(ENTERED_COLUMN, DataType::Int64, false)));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `schema` without the entered column.
pub fn schema_without_entered(schema: &Schema) -> SchemaRef {
    let fields: Vec<Arc<Field>> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != ENTERED_COLUMN)
        .cloned()
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Appends (or replaces) the entered column.
pub fn attach_entered(batch: &RecordBatch, entered: Int64Array) -> Result<RecordBatch> {
    if entered.len() != batch.num_rows() {
        return Err(Error::Other(format!(
            "entered column has {} rows, batch has {}",
            entered.len(),
            batch.num_rows()
        )));
    }
    let base = strip_entered(batch);
    let schema = schema_with_entered(base.schema_ref());
    let mut columns: Vec<ArrayRef> = base.columns().to_vec();
    columns.push(Arc::new(entered));
    let options = RecordBatchOptions::new().with_row_count(Some(base.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

/// Same entered time for every row of `batch`.
pub fn attach_entered_now(batch: &RecordBatch, entered_ns: i64) -> Result<RecordBatch> {
    attach_entered(batch, Int64Array::from_value(entered_ns, batch.num_rows()))
}

/// The batch without its entered column (a cheap projection).
pub fn strip_entered(batch: &RecordBatch) -> RecordBatch {
    match batch.schema_ref().index_of(ENTERED_COLUMN) {
        Ok(idx) => {
            let keep: Vec<usize> = (0..batch.num_columns()).filter(|i| *i != idx).collect();
            batch
                .project(&keep)
                .expect("projection of existing columns cannot fail")
        }
        Err(_) => batch.clone(),
    }
}

/// Bytes of Arrow memory a batch references (slices count their share).
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}
