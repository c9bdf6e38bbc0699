//! Stateless row-wise operators: filter, project and computed columns.
//!
//! Each evaluates [`Expr`]s over whole batches with Arrow kernels. None holds
//! state, so watermarks, barriers and `End` pass straight through, and every
//! output row keeps the entered time of the input row it came from: filter
//! selects rows with Arrow's `filter` (which keeps the entered column aligned),
//! project copies the input's entered column unchanged.
//!
//! All types are checked when the factory is built, so a pipeline with an
//! unknown column or a non-Boolean predicate fails before it runs.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use millrace_core::batch::schema_with_entered;
use millrace_core::{ENTERED_COLUMN, Emitter, Error, Operator, OperatorFactory, Result};

use crate::expr::{Expr, col, display_bare};

/// Keeps the rows for which a Boolean predicate is true (null counts as false,
/// as in SQL `WHERE`).
pub struct FilterFactory {
    input: SchemaRef,
    event_time: Option<String>,
    predicate: Expr,
}

impl FilterFactory {
    pub fn new(input: SchemaRef, event_time: Option<String>, predicate: Expr) -> Result<Self> {
        let dt = predicate.data_type(&input)?;
        if !matches!(dt, DataType::Boolean | DataType::Null) {
            return Err(Error::plan(format!(
                "filter predicate {predicate} has type {dt}; a filter needs a Boolean expression"
            )));
        }
        Ok(Self {
            input,
            event_time,
            predicate,
        })
    }
}

impl OperatorFactory for FilterFactory {
    fn name(&self) -> String {
        format!("filter({})", display_bare(&self.predicate))
    }

    fn output_schema(&self) -> SchemaRef {
        self.input.clone()
    }

    fn output_event_time(&self) -> Option<String> {
        self.event_time.clone()
    }

    fn create(&self, _instance: usize, _parallelism: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Filter {
            predicate: self.predicate.clone(),
        }))
    }
}

struct Filter {
    predicate: Expr,
}

impl Operator for Filter {
    fn snapshot(&mut self) -> Result<millrace_core::Snapshot> {
        Ok(millrace_core::Snapshot::none())
    }

    /// Emits nothing on a watermark and passes each one on.
    fn watermark_interest(&self, downstream: i64) -> i64 {
        downstream
    }

    fn on_data(&mut self, _input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        let mask = self.predicate.evaluate(&batch)?;
        // A `NULL` predicate arrives as a Null-typed column: no row passes.
        let Some(mask) = mask.as_boolean_opt() else {
            return Ok(());
        };
        let selected = mask.true_count();
        if selected == batch.num_rows() && mask.null_count() == 0 {
            out.data(batch); // every row passes: no copy
        } else if selected > 0 {
            out.data(filter_record_batch(&batch, mask)?);
        }
        Ok(())
    }
}

/// Computes a new set of named columns from each input row.
pub struct ProjectFactory {
    name: String,
    exprs: Vec<(String, Expr)>,
    output: SchemaRef,
    /// `output` plus the entered column, the schema of emitted batches.
    output_with_entered: SchemaRef,
    event_time: Option<String>,
}

impl ProjectFactory {
    /// Output is exactly `exprs`, in order. The event-time column survives
    /// (possibly renamed) only if projected unchanged as `col(event_time)`.
    pub fn new(
        input: SchemaRef,
        event_time: Option<String>,
        exprs: Vec<(String, Expr)>,
    ) -> Result<Self> {
        let names: Vec<&str> = exprs.iter().map(|(n, _)| n.as_str()).collect();
        let name = format!("project({})", names.join(", "));
        Self::build(name, &input, event_time, exprs)
    }

    /// Every input column plus `name = expr`; a same-named input column is
    /// replaced in place.
    pub fn with_column(
        input: SchemaRef,
        event_time: Option<String>,
        name: &str,
        expr: Expr,
    ) -> Result<Self> {
        let op_name = format!("with_column({name} = {})", display_bare(&expr));
        let mut exprs: Vec<(String, Expr)> = input
            .fields()
            .iter()
            .map(|f| (f.name().clone(), col(f.name())))
            .collect();
        match exprs.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = expr,
            None => exprs.push((name.to_string(), expr)),
        }
        Self::build(op_name, &input, event_time, exprs)
    }

    fn build(
        name: String,
        input: &Schema,
        event_time: Option<String>,
        exprs: Vec<(String, Expr)>,
    ) -> Result<Self> {
        let mut fields = Vec::with_capacity(exprs.len());
        for (i, (out_name, expr)) in exprs.iter().enumerate() {
            if out_name == ENTERED_COLUMN {
                return Err(Error::plan(format!(
                    "{name}: output column name '{ENTERED_COLUMN}' is reserved"
                )));
            }
            if exprs[..i].iter().any(|(n, _)| n == out_name) {
                return Err(Error::plan(format!(
                    "{name}: output column '{out_name}' is defined more than once"
                )));
            }
            let dt = expr.data_type(input)?; // also reports unknown columns
            let field = match expr {
                // A plain column keeps its field (nullability, metadata).
                Expr::Column(c) => match input.field_with_name(c) {
                    Ok(f) => f.clone().with_name(out_name),
                    Err(_) => Field::new(out_name, dt, true),
                },
                _ => Field::new(out_name, dt, true),
            };
            fields.push(Arc::new(field));
        }
        let output = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        let event_time = event_time.and_then(|et| {
            exprs.iter().find_map(|(n, e)| match e {
                Expr::Column(c) if *c == et => Some(n.clone()),
                _ => None,
            })
        });
        Ok(Self {
            name,
            output_with_entered: schema_with_entered(&output),
            output,
            exprs,
            event_time,
        })
    }
}

impl OperatorFactory for ProjectFactory {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn output_event_time(&self) -> Option<String> {
        self.event_time.clone()
    }

    fn create(&self, _instance: usize, _parallelism: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Project {
            exprs: self.exprs.iter().map(|(_, e)| e.clone()).collect(),
            schema: self.output_with_entered.clone(),
        }))
    }
}

struct Project {
    exprs: Vec<Expr>,
    schema: SchemaRef,
}

impl Operator for Project {
    fn snapshot(&mut self) -> Result<millrace_core::Snapshot> {
        Ok(millrace_core::Snapshot::none())
    }

    /// Emits nothing on a watermark and passes each one on.
    fn watermark_interest(&self, downstream: i64) -> i64 {
        downstream
    }

    fn on_data(&mut self, _input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.exprs.len() + 1);
        for expr in &self.exprs {
            columns.push(expr.evaluate(&batch)?);
        }
        let entered = batch
            .column_by_name(ENTERED_COLUMN)
            .ok_or_else(|| Error::Other(format!("input batch has no '{ENTERED_COLUMN}' column")))?;
        columns.push(entered.clone());
        // The row count is explicit so that a projection of literals only, or
        // of no column at all, keeps the batch's rows.
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.data(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?);
        Ok(())
    }
}
