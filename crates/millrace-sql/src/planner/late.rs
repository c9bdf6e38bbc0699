//! Late rows of a source table to a table of their own (the `late_rows`
//! table option).
//!
//! Lateness is decided by the windowed operator that reads a source's rows
//! (window aggregate, window or interval join, top-N): the rows it leaves
//! out as behind its watermark leave through its late output, with the
//! columns that operator reads, and go to the late table like the rows of
//! an INSERT: through a bounded channel, to the table's sink. The late
//! table receives the columns it declares, picked by name (and cast to the
//! declared types), or, when it declares none, every column the operator
//! reads.
//!
//! The rows of a table with `late_rows` must reach exactly one windowed
//! operator: with none there are no late rows to route, with two a row
//! could be late at one and not at the other.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column as PhysColumn};
use millrace_runtime::Stream;
use millrace_sql_ops::eval::ExprProjectFactory;

use super::{Planned, StreamPlanner};
use crate::error::{SqlError, SqlResult};

impl StreamPlanner<'_> {
    /// Routes the late rows of input `input` of `op` — the operator that
    /// reads `planned` — to the late table of `planned`'s source table, if
    /// it has one.
    pub(super) fn route_late_rows(
        &mut self,
        planned: &Planned,
        op: &Stream,
        input: usize,
    ) -> SqlResult<()> {
        let Some(source) = &planned.late_of else {
            return Ok(());
        };
        let late_table = self.tables[source]
            .late_rows
            .clone()
            .expect("only tables with late_rows are traced");
        if !self.late_routed.insert(source.clone()) {
            return Err(SqlError::new(format!(
                "table '{source}' sets late_rows, but its rows reach more than one windowed operator (a row could be late at one and not at another); read it in one windowed query, or drop late_rows"
            )));
        }
        let Some(table) = self.tables.get(&late_table) else {
            return Err(SqlError::new(format!(
                "table '{source}': late_rows = '{late_table}', but no table '{late_table}' is declared"
            )));
        };
        let Some(sink) = table.connector.sink.clone() else {
            return Err(SqlError::new(format!(
                "table '{source}': late_rows = '{late_table}', but '{late_table}' cannot be written"
            )));
        };
        let late = op.late_rows(input)?;
        let have = late.schema();
        // The operator's input columns: the planned ones by their logical
        // names, then any key columns computed for the exchange (left out).
        let logical: Vec<&str> = planned
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let mut fields = Vec::new();
        let mut exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
        if table.schema.fields().is_empty() {
            for (i, name) in logical.iter().enumerate() {
                let f = have.field(i);
                fields.push(Field::new(*name, f.data_type().clone(), f.is_nullable()));
                exprs.push(Arc::new(PhysColumn::new(f.name(), i)));
            }
        } else {
            for want in table.schema.fields() {
                let Some(i) = logical.iter().position(|n| n == want.name()) else {
                    return Err(SqlError::new(format!(
                        "late_rows table '{late_table}': column '{}' is not among the columns the windowed query reads from '{source}' ({})",
                        want.name(),
                        logical.join(", ")
                    )));
                };
                let column: Arc<dyn PhysicalExpr> =
                    Arc::new(PhysColumn::new(have.field(i).name(), i));
                exprs.push(if have.field(i).data_type() == want.data_type() {
                    column
                } else {
                    Arc::new(CastExpr::new(column, want.data_type().clone(), None))
                });
                fields.push(want.as_ref().clone().with_nullable(true));
            }
        }
        let project = ExprProjectFactory::new(Arc::new(Schema::new(fields)), exprs, None)?;
        late.apply(Arc::new(project)).sink_arc(sink)?;
        Ok(())
    }

    /// Refuses a `late_rows` option that routes nothing: a table read by no
    /// windowed operator has no late rows.
    pub fn check_late_rows_routed(&self) -> SqlResult<()> {
        for name in self.sources.keys() {
            let table = &self.tables[name];
            if table.late_rows.is_some() && !self.late_routed.contains(name) {
                return Err(SqlError::new(format!(
                    "table '{name}' sets late_rows, but no windowed operator (window aggregate, join or top-N) reads its rows, so none can be late"
                )));
            }
        }
        Ok(())
    }
}
