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

/// Where the entered column is in `schema`: last, as every batch the
/// engine builds has it (checked first, since this runs for every batch at
/// every operator), else wherever a name lookup finds it.
fn entered_index(schema: &Schema) -> Option<usize> {
    let fields = schema.fields();
    match fields.last() {
        Some(last) if last.name() == ENTERED_COLUMN => Some(fields.len() - 1),
        _ => schema.index_of(ENTERED_COLUMN).ok(),
    }
}

/// The entered-time column of `batch`, if present.
pub fn entered_column(batch: &RecordBatch) -> Option<&Int64Array> {
    let idx = entered_index(batch.schema_ref())?;
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
    match entered_index(batch.schema_ref()) {
        Some(idx) => {
            let keep: Vec<usize> = (0..batch.num_columns()).filter(|i| *i != idx).collect();
            batch
                .project(&keep)
                .expect("projection of existing columns cannot fail")
        }
        None => batch.clone(),
    }
}

/// Bytes of Arrow memory a batch references (slices count their share).
///
/// Called on every channel send, so the common column types are sized
/// from their lengths and offsets directly; only the rest go through
/// `ArrayData`, which allocates.
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| array_bytes(c.as_ref()))
        .sum()
}

fn array_bytes(a: &dyn Array) -> usize {
    // A validity buffer without nulls counts as absent, as in `ArrayData`.
    let nulls = a
        .nulls()
        .filter(|n| n.null_count() > 0)
        .map_or(0, |n| n.len().div_ceil(8));
    let data_type = a.data_type();
    if let Some(width) = data_type.primitive_width() {
        return a.len() * width + nulls;
    }
    match data_type {
        DataType::Boolean => a.len().div_ceil(8) + nulls,
        DataType::Utf8 => offsets_bytes(a.as_string::<i32>().value_offsets()) + nulls,
        DataType::LargeUtf8 => offsets_bytes(a.as_string::<i64>().value_offsets()) + nulls,
        DataType::Binary => offsets_bytes(a.as_binary::<i32>().value_offsets()) + nulls,
        DataType::LargeBinary => offsets_bytes(a.as_binary::<i64>().value_offsets()) + nulls,
        _ => a
            .to_data()
            .get_slice_memory_size()
            .unwrap_or_else(|_| a.get_array_memory_size()),
    }
}

/// The offsets of a variable-length array and the value bytes they span.
fn offsets_bytes<O: arrow::array::OffsetSizeTrait>(offsets: &[O]) -> usize {
    let values = match (offsets.first(), offsets.last()) {
        (Some(first), Some(last)) => (*last - *first).as_usize(),
        _ => 0,
    };
    std::mem::size_of_val(offsets) + values
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, StringArray};

    /// What `ArrayData` says a batch's (possibly sliced) columns hold.
    fn by_array_data(batch: &RecordBatch) -> usize {
        batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap())
            .sum()
    }

    /// Found last (where the engine puts it) or anywhere else, and stripped
    /// from wherever it is.
    #[test]
    fn the_entered_column_is_found_and_stripped_wherever_it_is() {
        let field = |name: &str| Field::new(name, DataType::Int64, false);
        let column = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
        for (names, at) in [
            (["a", ENTERED_COLUMN, "b"], 1),
            (["a", "b", ENTERED_COLUMN], 2),
        ] {
            let schema = Arc::new(Schema::new(names.map(field).to_vec()));
            let columns = (0..3).map(|i| column(i as i64)).collect();
            let batch = RecordBatch::try_new(schema, columns).unwrap();
            assert_eq!(entered_column(&batch).unwrap().value(0), at as i64);
            let user = strip_entered(&batch);
            assert_eq!(user.num_columns(), 2);
            assert!(user.schema().index_of(ENTERED_COLUMN).is_err());
        }
        let none = RecordBatch::try_new(Arc::new(Schema::new(vec![field("a")])), vec![column(0)]);
        assert!(entered_column(&none.unwrap()).is_none());
    }

    #[test]
    fn batch_bytes_agrees_with_array_data_for_whole_and_sliced_batches() {
        let strings: Vec<Option<String>> = (0..1000)
            .map(|i| (i % 7 != 0).then(|| "x".repeat(i % 13)))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter(
                    (0..1000).map(|i| (i % 5 != 0).then_some(i)),
                )),
                Arc::new(Float64Array::from_iter_values((0..1000).map(|i| i as f64))),
                Arc::new(StringArray::from(strings)),
                Arc::new(BooleanArray::from_iter((0..1000).map(|i| Some(i % 2 == 0)))),
            ],
        )
        .unwrap();
        for (offset, len) in [(0, 1000), (0, 1), (17, 300), (999, 1), (500, 0)] {
            let slice = batch.slice(offset, len);
            assert_eq!(
                batch_bytes(&slice),
                by_array_data(&slice),
                "slice {offset}+{len}"
            );
        }
    }
}
