//! What the snapshots of operators that buffer input rows share (the state
//! contract of `millrace_core::state`): the rows themselves, as one table
//! with the input's columns, and small tables that say whose they are
//! (counts that cut the rows back into windows, batches or partitions, in
//! order; flags per row).
//!
//! Writing: an operator hands over the batches it keeps as they are
//! (`Snapshot::with_chunks`: no copy on the worker, and a checkpoint
//! writes a batch it already holds only once); [`Columns`] builds the
//! tables of counts and flags. Reading: a
//! [`Reader`] finds the tables, checks them against the plan, and names the
//! operator and the table in every error, so a snapshot of another plan is
//! refused with a reason instead of being misread.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt64Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Fields, Int64Type, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use millrace_core::{Error, Result, Snapshot};

/// A table of named columns of equal length, built column by column.
#[derive(Default)]
pub(crate) struct Columns {
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
}

impl Columns {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A non-null Int64 column.
    pub(crate) fn int64(self, name: &str, values: Vec<i64>) -> Self {
        self.with(
            Field::new(name, DataType::Int64, false),
            Int64Array::from(values),
        )
    }

    /// A nullable Int64 column.
    pub(crate) fn opt_int64(self, name: &str, values: Vec<Option<i64>>) -> Self {
        self.with(
            Field::new(name, DataType::Int64, true),
            Int64Array::from(values),
        )
    }

    /// A non-null Boolean column.
    pub(crate) fn bool(self, name: &str, values: Vec<bool>) -> Self {
        self.with(
            Field::new(name, DataType::Boolean, false),
            BooleanArray::from(values),
        )
    }

    fn with(mut self, field: Field, column: impl Array + 'static) -> Self {
        self.fields.push(field);
        self.columns.push(Arc::new(column));
        self
    }

    /// The table; an error if the columns differ in length.
    pub(crate) fn finish(self) -> Result<RecordBatch> {
        let rows = self.columns.first().map_or(0, |c| c.len());
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(self.fields)),
            self.columns,
            &options,
        )?)
    }
}

/// Reads the tables of one operator's snapshot; every error says it is
/// about that operator's snapshot and which table is wrong.
pub(crate) struct Reader<'a> {
    /// The operator, as errors name it (`"window join"`).
    operator: &'a str,
    snapshot: &'a Snapshot,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(operator: &'a str, snapshot: &'a Snapshot) -> Self {
        Self { operator, snapshot }
    }

    /// Table `name`; a missing table is an error (a snapshot that lacks a
    /// part is corrupt or another operator's, never "empty").
    pub(crate) fn table(&self, name: &'a str) -> Result<Table<'a>> {
        let batch = self
            .snapshot
            .table(name)
            .map_err(|e| Error::Other(format!("{} {e}", self.operator)))?;
        Ok(Table {
            operator: self.operator,
            name,
            batch,
        })
    }

    /// Table `name` of buffered rows, as a batch of `schema`: its columns
    /// must have the names and types of `schema`'s (the input the plan
    /// gives this operator).
    pub(crate) fn rows(&self, name: &'a str, schema: &SchemaRef) -> Result<RecordBatch> {
        let table = self.table(name)?;
        let shape = |fields: &Fields| -> Vec<String> {
            fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect()
        };
        let (found, wanted) = (shape(table.batch.schema().fields()), shape(schema.fields()));
        if found != wanted {
            return Err(table.corrupt(format!(
                "its columns are [{}], but this plan's input has [{}]",
                found.join(", "),
                wanted.join(", ")
            )));
        }
        RecordBatch::try_new(schema.clone(), table.batch.columns().to_vec())
            .map_err(|e| table.corrupt(format!("it does not fit this plan's input: {e}")))
    }
}

/// One table of a snapshot being read.
pub(crate) struct Table<'a> {
    operator: &'a str,
    name: &'a str,
    batch: &'a RecordBatch,
}

impl Table<'_> {
    /// Column `column` as non-null Int64 values.
    pub(crate) fn int64s(&self, column: &str) -> Result<Vec<i64>> {
        let values = self.int64_column(column)?;
        if values.null_count() > 0 {
            return Err(self.corrupt(format!("column '{column}' has nulls")));
        }
        Ok(values.values().to_vec())
    }

    /// Column `column` as nullable Int64 values.
    pub(crate) fn opt_int64s(&self, column: &str) -> Result<Vec<Option<i64>>> {
        Ok(self.int64_column(column)?.iter().collect())
    }

    /// Column `column` as non-null Booleans.
    pub(crate) fn bools(&self, column: &str) -> Result<Vec<bool>> {
        let values = self
            .batch
            .column_by_name(column)
            .and_then(|c| c.as_boolean_opt())
            .ok_or_else(|| self.corrupt(format!("it has no Boolean column '{column}'")))?;
        if values.null_count() > 0 {
            return Err(self.corrupt(format!("column '{column}' has nulls")));
        }
        Ok(values.values().iter().collect())
    }

    /// `rows` cut into consecutive parts of `counts` rows (a column of this
    /// table), which must add up to all of them. Each part is a copy: a
    /// slice would keep the whole table's memory alive for as long as the
    /// part that is freed last.
    pub(crate) fn split(&self, rows: &RecordBatch, counts: &[i64]) -> Result<Vec<RecordBatch>> {
        let total = rows.num_rows();
        let mut parts = Vec::with_capacity(counts.len());
        let mut offset = 0usize;
        for &count in counts {
            let count = usize::try_from(count)
                .ok()
                .filter(|n| offset + n <= total)
                .ok_or_else(|| self.corrupt(format!("its counts exceed the {total} rows")))?;
            let indices = UInt64Array::from_iter_values(offset as u64..(offset + count) as u64);
            parts.push(take_record_batch(rows, &indices)?);
            offset += count;
        }
        if offset != total {
            return Err(self.corrupt(format!("its counts cover {offset} of the {total} rows")));
        }
        Ok(parts)
    }

    /// Value `name` of a table of scalars (`millrace_core::state::scalars`).
    pub(crate) fn scalar(&self, name: &str) -> Result<Option<i64>> {
        millrace_core::state::scalar(self.batch, name).map_err(|e| self.corrupt(e.to_string()))
    }

    /// An error unless this table has one row per row of `rows`.
    pub(crate) fn check_aligned(&self, rows: &RecordBatch) -> Result<()> {
        if self.batch.num_rows() == rows.num_rows() {
            return Ok(());
        }
        Err(self.corrupt(format!(
            "it has {} rows for {} buffered rows",
            self.batch.num_rows(),
            rows.num_rows()
        )))
    }

    /// An error saying this table cannot be read as the operator's.
    pub(crate) fn corrupt(&self, what: String) -> Error {
        Error::Other(format!(
            "{} snapshot does not fit this plan: table '{}': {what}",
            self.operator, self.name
        ))
    }

    fn int64_column(&self, column: &str) -> Result<&arrow::array::Int64Array> {
        self.batch
            .column_by_name(column)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| self.corrupt(format!("it has no Int64 column '{column}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_of_counts_read_back_and_bad_ones_are_refused_naming_the_operator() {
        let counts = Columns::new()
            .int64("rows", vec![2, 0, 1])
            .opt_int64("cutoff", vec![Some(1), None, Some(0)])
            .bool("matched", vec![true, false, true])
            .finish()
            .unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let v: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let batch = RecordBatch::try_new(schema.clone(), vec![v]).unwrap();
        let snapshot = Snapshot::none()
            .with("parts", counts)
            .with_chunks("rows", &schema, &[batch.slice(0, 1), batch.slice(1, 2)])
            .unwrap();
        let rows = snapshot.table("rows").unwrap().clone();
        assert_eq!(rows, batch);
        let reader = Reader::new("test op", &snapshot);

        let parts = reader.table("parts").unwrap();
        assert_eq!(parts.int64s("rows").unwrap(), [2, 0, 1]);
        assert_eq!(
            parts.opt_int64s("cutoff").unwrap(),
            [Some(1), None, Some(0)]
        );
        assert_eq!(parts.bools("matched").unwrap(), [true, false, true]);
        assert_eq!(reader.rows("rows", &schema).unwrap(), batch);
        let sizes: Vec<usize> = parts
            .split(&rows, &[2, 0, 1])
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .collect();
        assert_eq!(sizes, [2, 0, 1]);
        parts.check_aligned(&rows).unwrap();

        let other = Arc::new(Schema::new(vec![Field::new("w", DataType::Int64, true)]));
        let errors = [
            reader.table("windows").err().unwrap(),
            reader.rows("rows", &other).unwrap_err(),
            parts.int64s("cutoff").unwrap_err(),
            parts.int64s("nope").unwrap_err(),
            parts.bools("rows").unwrap_err(),
            parts.split(&rows, &[2, 2]).unwrap_err(),
            parts.split(&rows, &[1]).unwrap_err(),
            parts.split(&rows, &[-1, 4]).unwrap_err(),
            parts.check_aligned(&rows.slice(0, 1)).unwrap_err(),
        ];
        for err in errors {
            let err = err.to_string();
            assert!(err.contains("test op") && err.contains("snapshot"), "{err}");
        }
        let err = reader.rows("rows", &other).unwrap_err().to_string();
        assert!(
            err.contains("[v: Int64]") && err.contains("[w: Int64]"),
            "{err}"
        );
    }
}
