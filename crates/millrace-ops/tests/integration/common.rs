//! Helpers shared by the operator tests: building batches that carry the
//! entered column, driving an operator, and rendering output rows as text so
//! expected tables can be checked by eye.
#![allow(dead_code)]

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use millrace_core::{ENTERED_COLUMN, Message, attach_entered};

/// A user schema from `(name, type)` pairs; every column nullable.
pub fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// A batch of `columns` under `schema`, with the entered column attached.
pub fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>, entered: Vec<i64>) -> RecordBatch {
    let user = RecordBatch::try_new(schema.clone(), columns).expect("valid test batch");
    attach_entered(&user, Int64Array::from(entered)).expect("entered column fits")
}

/// Data batches among `messages`.
pub fn data(messages: &[Message]) -> Vec<RecordBatch> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Data(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// One value as text: timestamps as raw milliseconds, nulls as `null`.
fn cell(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) {
        return "null".into();
    }
    let array = match array.data_type() {
        DataType::Timestamp(_, _) => cast(array, &DataType::Int64).expect("timestamp as int"),
        _ => array.clone(),
    };
    array_value_to_string(&array, row).expect("displayable")
}

/// Rows of `batches` as `a|b|c` text, user columns only, in arrival order.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let columns: Vec<(usize, &ArrayRef)> = b
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| b.schema().field(*i).name() != ENTERED_COLUMN)
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = columns.iter().map(|(_, c)| cell(c, r)).collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// [`rows`], sorted.
pub fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = rows(batches);
    out.sort();
    out
}

/// The entered column of every row of `batches`, in order.
pub fn entered(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            millrace_core::entered_column(b)
                .expect("batch has an entered column")
                .values()
                .to_vec()
        })
        .collect()
}
