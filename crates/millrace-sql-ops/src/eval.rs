//! Filter and projection over DataFusion physical expressions.
//!
//! Stateless and row-aligned: the entered column rides along untouched, so
//! latency is measured from each surviving row's own entry time. The runtime
//! fuses consecutive stateless operators into one task, so a filter followed
//! by a projection costs no queue between them.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use millrace_core::{
    Emitter, Error, Operator, OperatorFactory, Result, Snapshot, entered_column,
    schema_with_entered,
};

use crate::window::{evaluate, tidy_intervals};

/// Keeps the rows for which `predicate` is true (null counts as false, as in SQL).
pub struct ExprFilterFactory {
    name: String,
    schema: SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
    event_time: Option<String>,
}

impl ExprFilterFactory {
    pub fn new(
        schema: SchemaRef,
        predicate: Arc<dyn PhysicalExpr>,
        event_time: Option<String>,
    ) -> Self {
        Self {
            name: format!("filter[{predicate}]"),
            schema,
            predicate,
            event_time,
        }
    }
}

impl OperatorFactory for ExprFilterFactory {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn output_event_time(&self) -> Option<String> {
        self.event_time.clone()
    }
    fn create(&self, _instance: usize, _parallelism: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(ExprFilter {
            predicate: self.predicate.clone(),
        }))
    }
}

struct ExprFilter {
    predicate: Arc<dyn PhysicalExpr>,
}

impl Operator for ExprFilter {
    /// Keeps nothing between batches.
    fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(Snapshot::none())
    }

    /// Emits nothing on a watermark and passes each one on.
    fn watermark_interest(&self, downstream: i64) -> i64 {
        downstream
    }

    fn on_data(&mut self, _input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        let mask = evaluate(&self.predicate, &batch)?;
        let Some(mask) = mask.as_boolean_opt() else {
            return Err(Error::Other(format!(
                "filter predicate {} gave {}, not a boolean",
                self.predicate,
                mask.data_type()
            )));
        };
        if mask.true_count() == batch.num_rows() {
            out.data(batch);
        } else {
            out.data(filter_record_batch(&batch, mask)?);
        }
        Ok(())
    }
}

/// Computes one output column per expression.
pub struct ExprProjectFactory {
    name: String,
    /// Output user schema (names and types as the logical plan declares them).
    schema: SchemaRef,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    event_time: Option<String>,
}

impl ExprProjectFactory {
    /// `schema` has one field per expression.
    pub fn new(
        schema: SchemaRef,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        event_time: Option<String>,
    ) -> Result<Self> {
        if schema.fields().len() != exprs.len() {
            return Err(Error::plan(format!(
                "projection has {} expressions for {} output columns",
                exprs.len(),
                schema.fields().len()
            )));
        }
        let shown: Vec<String> = schema
            .fields()
            .iter()
            .zip(&exprs)
            .map(|(f, e)| describe_column(f.name(), e))
            .collect();
        Ok(Self {
            name: format!("project[{}]", shown.join(", ")),
            schema,
            exprs,
            event_time,
        })
    }

    /// The expressions, one per output column, over the input's columns.
    pub fn exprs(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.exprs
    }
}

impl OperatorFactory for ExprProjectFactory {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn output_event_time(&self) -> Option<String> {
        self.event_time.clone()
    }
    fn create(&self, _instance: usize, _parallelism: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(ExprProject {
            schema: schema_with_entered(&self.schema),
            columns: self.exprs.iter().map(Computed::of).collect(),
        }))
    }
}

struct ExprProject {
    /// Output schema with the entered column.
    schema: SchemaRef,
    columns: Vec<Computed>,
}

/// How a projection computes one output column. Most of what projections
/// do is pass a column through or take a field of a struct column (a
/// window's bounds, `window['start']`). Done here, these skip DataFusion's
/// per-call work for a function (argument fields, return field, the
/// literal's lookup): on a window's one-row result that work, not the row,
/// is most of what a projection costs, and it lies on the path of every
/// window result.
enum Computed {
    Column(usize),
    /// `get_field(column, 'name')` on a struct column: the child as it is,
    /// which is what `get_field` returns for a struct.
    StructField {
        column: usize,
        name: String,
        expr: Arc<dyn PhysicalExpr>,
    },
    Expr(Arc<dyn PhysicalExpr>),
}

impl Computed {
    fn of(expr: &Arc<dyn PhysicalExpr>) -> Self {
        if let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>()
            && f.name() == "get_field"
            && let [base, name] = f.args()
            && let Some(base) = base.downcast_ref::<Column>()
            && let Some(name) = name.downcast_ref::<Literal>()
            && let Some(Some(name)) = name.value().try_as_str()
        {
            return Computed::StructField {
                column: base.index(),
                name: name.to_string(),
                expr: expr.clone(),
            };
        }
        match expr.downcast_ref::<Column>() {
            Some(c) => Computed::Column(c.index()),
            None => Computed::Expr(expr.clone()),
        }
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        match self {
            Computed::Column(i) => batch.columns().get(*i).cloned().ok_or_else(|| {
                Error::Other(format!(
                    "a projection reads column {i} of a batch with {} columns",
                    batch.num_columns()
                ))
            }),
            Computed::StructField { column, name, expr } => {
                let field = batch
                    .columns()
                    .get(*column)
                    .and_then(|c| c.as_struct_opt())
                    .and_then(|s| s.column_by_name(name));
                match field {
                    Some(field) => Ok(field.clone()),
                    // Not a struct with that field: DataFusion says why.
                    None => evaluate(expr, batch),
                }
            }
            Computed::Expr(expr) => evaluate(expr, batch),
        }
    }
}

impl Operator for ExprProject {
    /// Keeps nothing between batches.
    fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(Snapshot::none())
    }

    /// Emits nothing on a watermark and passes each one on.
    fn watermark_interest(&self, downstream: i64) -> i64 {
        downstream
    }

    fn on_data(&mut self, _input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 1);
        for (computed, field) in self.columns.iter().zip(self.schema.fields()) {
            let array = computed.evaluate(&batch)?;
            columns.push(conform(array, field.data_type())?);
        }
        let Some(entered) = entered_column(&batch) else {
            return Err(Error::Other("input batch lacks the entered column".into()));
        };
        columns.push(Arc::new(entered.clone()));
        out.data(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}

/// How explain shows one output column: its name when it passes an input
/// column through, `name = expr` when computed (long texts shortened).
fn describe_column(name: &str, expr: &Arc<dyn PhysicalExpr>) -> String {
    const MAX: usize = 48;
    let short = |s: &str| -> String {
        if s.chars().count() <= MAX {
            s.to_string()
        } else {
            let head: String = s.chars().take(MAX - 1).collect();
            format!("{head}…")
        }
    };
    // Interval literals as durations first, so that cutting keeps more.
    let name = short(&tidy_intervals(name));
    match expr.downcast_ref::<datafusion::physical_expr::expressions::Column>() {
        Some(_) => name,
        None => format!("{name} = {}", short(&tidy_intervals(&expr.to_string()))),
    }
}

/// DataFusion's physical expressions return the type the logical plan
/// promised; a cast covers the rare function that differs only in
/// representation (e.g. a view type for a plain string).
fn conform(array: ArrayRef, declared: &DataType) -> Result<ArrayRef> {
    if array.data_type() == declared {
        Ok(array)
    } else {
        Ok(arrow::compute::cast(&array, declared)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    use millrace_core::{Message, attach_entered_now, strip_entered};

    fn input() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec!["x", "y", "z"])),
            ],
        )
        .unwrap();
        attach_entered_now(&batch, 7).unwrap()
    }

    fn only_batch(out: &mut Emitter) -> RecordBatch {
        match out.take_messages().as_slice() {
            [Message::Data(b)] => b.clone(),
            other => panic!("expected one batch, got {} messages", other.len()),
        }
    }

    #[test]
    fn filter_drops_false_and_null_rows_and_keeps_entered_aligned() {
        let predicate = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("a", 0)),
            BinOp::Gt,
            Arc::new(Literal::new(ScalarValue::Int64(Some(1)))),
        ));
        let schema = input().schema();
        let f = ExprFilterFactory::new(schema, predicate, None);
        let mut op = f.create(0, 1).unwrap();
        let mut out = Emitter::new();
        op.on_data(0, input(), &mut out).unwrap();
        let got = only_batch(&mut out);
        assert_eq!(got.num_rows(), 1);
        let s = strip_entered(&got);
        assert_eq!(s.column(1).as_string::<i32>().value(0), "z");
        assert_eq!(entered_column(&got).unwrap().value(0), 7);
    }

    /// A stateless operator rescales what it keeps, nothing, and refuses,
    /// by name, a snapshot that holds something.
    #[test]
    fn a_stateless_operator_rescales_nothing_and_refuses_state() {
        let predicate = Arc::new(Column::new("a", 0));
        let f = ExprFilterFactory::new(input().schema(), predicate, None);
        let mut op = f.create(0, 2).unwrap();
        let none = [op.snapshot().unwrap(), Snapshot::none()];
        let rescaled = f.rescale(&none, 3).unwrap();
        assert_eq!(rescaled.len(), 3);
        assert!(rescaled.iter().all(Snapshot::is_empty));
        let held = Snapshot::none().with("rows", input());
        let err = f
            .rescale(&[held, Snapshot::none()], 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("operator 'filter[a@0]' cannot be restored at another parallelism"),
            "{err}"
        );
    }

    #[test]
    fn projection_computes_columns_and_carries_entered() {
        let doubled = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("a", 0)),
            BinOp::Multiply,
            Arc::new(Literal::new(ScalarValue::Int64(Some(2)))),
        ));
        let out_schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, false),
            Field::new("a2", DataType::Int64, true),
        ]));
        let p = ExprProjectFactory::new(
            out_schema,
            vec![Arc::new(Column::new("s", 1)), doubled],
            None,
        )
        .unwrap();
        let mut op = p.create(0, 1).unwrap();
        let mut out = Emitter::new();
        op.on_data(0, input(), &mut out).unwrap();
        let got = only_batch(&mut out);
        let a2 = got.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(a2.iter().collect::<Vec<_>>(), vec![Some(2), None, Some(6)]);
        assert_eq!(
            entered_column(&got).unwrap().values().to_vec(),
            vec![7, 7, 7]
        );
    }

    /// A window's bounds taken by name from its struct column, without
    /// DataFusion's function call, equal what `get_field` computes; a
    /// projection reading past the batch is an error, not a panic.
    #[test]
    fn projection_takes_struct_fields_as_get_field_does() {
        use crate::window::{window_array, window_type};
        use datafusion::common::DFSchema;
        use datafusion::execution::context::ExecutionProps;
        use datafusion::functions::core::expr_fn::get_field;
        use datafusion::logical_expr::col;
        use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
        use datafusion::physical_expr::create_physical_expr;

        let schema = Arc::new(Schema::new(vec![Field::new("w", window_type(), false)]));
        let user = RecordBatch::try_new(
            schema.clone(),
            vec![window_array(vec![0, 2000], vec![10_000, 12_000])],
        )
        .unwrap();
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let bound = |name: &str| {
            create_physical_expr(
                &get_field(col("w"), name),
                &df_schema,
                &ExecutionProps::new(),
                &PhysicalPlanningContext::default(),
            )
            .unwrap()
        };
        let exprs = vec![bound("end"), bound("start")];
        assert!(matches!(
            Computed::of(&exprs[0]),
            Computed::StructField { column: 0, .. }
        ));
        let fields: Vec<Field> = exprs
            .iter()
            .zip(["end", "start"])
            .map(|(e, n)| Field::new(n, e.data_type(&schema).unwrap(), true))
            .collect();
        let p =
            ExprProjectFactory::new(Arc::new(Schema::new(fields)), exprs.clone(), None).unwrap();
        let mut op = p.create(0, 1).unwrap();
        let mut out = Emitter::new();
        op.on_data(0, attach_entered_now(&user, 7).unwrap(), &mut out)
            .unwrap();
        let got = only_batch(&mut out);
        for (i, expr) in exprs.iter().enumerate() {
            assert_eq!(
                got.column(i).as_ref(),
                evaluate(expr, &user).unwrap().as_ref()
            );
        }

        let past = Computed::Column(3);
        assert!(past.evaluate(&user).is_err());
    }

    #[test]
    fn projection_rejects_arity_mismatch() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        assert!(ExprProjectFactory::new(schema, vec![], None).is_err());
    }
}
