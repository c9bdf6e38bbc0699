//! The Rust API: stateless steps and windows over a runtime [`Stream`],
//! written as DataFusion expressions and planned onto the same operators
//! SQL uses (`millrace-sql-ops`).
//!
//! ```no_run
//! use millrace_sql::api::{StreamExt, Window, agg, col, lit};
//! use millrace_runtime::{Pipeline, PipelineConfig};
//! # fn demo(src: impl millrace_core::SourceFactory + 'static,
//! #         out: impl millrace_core::SinkFactory + 'static,
//! #         late: impl millrace_core::SinkFactory + 'static) -> millrace_core::Result<()> {
//! let pipeline = Pipeline::new(PipelineConfig::default());
//! let counts = pipeline
//!     .source(src)
//!     .filter(col("price").gt(lit(1000)))?
//!     .window(Window::tumbling_ms(10_000).keys(["auction"]).agg(agg::count_all().alias("bids")))?;
//! counts.sink(out)?;
//! counts.late_rows(0)?.sink(late)?;
//! let summary = pipeline.run()?;
//! println!("{summary}");
//! # Ok(()) }
//! ```
//!
//! Expressions are type-coerced as SQL's are (`col("price") > lit(1000)`
//! compares an Int64 column with an Int32 literal). Every step is checked
//! when it is added (unknown columns, wrong types), so a pipeline that
//! builds has a plan that runs. A window's output is its keys, a `window`
//! column (a struct of `start` and `end`, as in SQL), then its aggregates;
//! rows behind the watermark are counted and, with
//! [`Stream::late_rows`], flow to a stream of their own.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::{LoweredAggregate, LoweredAggregateBuilder};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use millrace_core::{Error, Result};
use millrace_runtime::Stream;
use millrace_sql_ops::df_err;
use millrace_sql_ops::eval::{ExprFilterFactory, ExprProjectFactory};
use millrace_sql_ops::window::{WindowAssign, WindowKind, window_type};
use millrace_sql_ops::window_agg::{AggPhase, WindowAggFactory, WindowAggSpec};

pub use datafusion::prelude::{Expr, col, lit};

use crate::planner::expr::Lowering;

/// DataFusion's aggregate functions (`agg::sum(col("price"))`, and
/// `count_all` for `count(*)`); name each with `.alias(..)`.
pub mod agg {
    pub use datafusion::functions_aggregate::count::count_all;
    pub use datafusion::functions_aggregate::expr_fn::*;
}

/// Steps that evaluate expressions, on a runtime [`Stream`].
pub trait StreamExt {
    /// Keeps the rows where `predicate` is true (null counts as false).
    fn filter(&self, predicate: Expr) -> Result<Stream>;

    /// Exactly these named expressions as columns.
    fn project<S: Into<String>>(
        &self,
        exprs: impl IntoIterator<Item = (S, Expr)>,
    ) -> Result<Stream>;

    /// Keeps these columns, in this order.
    fn select(&self, columns: &[&str]) -> Result<Stream> {
        self.project(columns.iter().map(|c| (c.to_string(), col(*c))))
    }

    /// All columns plus `name = expr` (replacing a column of that name).
    fn with_column(&self, name: &str, expr: Expr) -> Result<Stream>;

    /// An event-time window aggregate. Rows are exchanged by the window's
    /// keys first; a window without keys runs as one instance.
    fn window(&self, window: Window) -> Result<Stream>;
}

impl StreamExt for Stream {
    fn filter(&self, predicate: Expr) -> Result<Stream> {
        let input = Input::of(self)?;
        let predicate = input.lower(predicate)?;
        let returns = predicate.data_type(&input.arrow).map_err(df_err)?;
        if returns != DataType::Boolean {
            return Err(Error::plan(format!(
                "filter predicate {predicate} gives {returns}, not Boolean"
            )));
        }
        let f = ExprFilterFactory::new(self.schema(), predicate, self.event_time());
        Ok(self.apply(Arc::new(f)))
    }

    fn project<S: Into<String>>(
        &self,
        exprs: impl IntoIterator<Item = (S, Expr)>,
    ) -> Result<Stream> {
        let input = Input::of(self)?;
        let mut fields: Vec<Field> = Vec::new();
        let mut physical = Vec::new();
        for (name, expr) in exprs {
            let name: String = name.into();
            if fields.iter().any(|f| f.name() == &name) {
                return Err(Error::plan(format!("column '{name}' is projected twice")));
            }
            let p = input.lower(expr)?;
            let field = p.return_field(&input.arrow).map_err(df_err)?;
            fields.push(field.as_ref().clone().with_name(name));
            physical.push(p);
        }
        // The event time survives only if projected unchanged.
        let event_time = self.event_time().filter(|et| {
            fields.iter().zip(&physical).any(|(f, p)| {
                f.name() == et
                    && p.downcast_ref::<PhysicalColumn>()
                        .is_some_and(|c| c.name() == et)
            })
        });
        let f = ExprProjectFactory::new(Arc::new(Schema::new(fields)), physical, event_time)?;
        Ok(self.apply(Arc::new(f)))
    }

    fn with_column(&self, name: &str, expr: Expr) -> Result<Stream> {
        let schema = self.schema();
        let mut exprs: Vec<(String, Expr)> = schema
            .fields()
            .iter()
            .map(|f| {
                (
                    f.name().clone(),
                    col(datafusion::common::Column::from_name(f.name())),
                )
            })
            .collect();
        match exprs.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = expr,
            None => exprs.push((name.to_string(), expr)),
        }
        self.project(exprs)
    }

    fn window(&self, window: Window) -> Result<Stream> {
        let event_time = window
            .event_time
            .clone()
            .or_else(|| self.event_time())
            .ok_or_else(|| {
                Error::plan("a window needs an event-time column; this stream declares none")
            })?;
        if window.aggs.is_empty() {
            return Err(Error::plan("a window needs at least one aggregate"));
        }
        let keyless = window.keys.is_empty();
        let input = if keyless {
            self.clone().rebalance()
        } else {
            self.clone().key_by(window.keys.clone())?
        };
        let factory = Arc::new(window.factory(&Input::of(self)?, &event_time)?);
        let out = input.apply(factory);
        if keyless {
            out.with_max_parallelism(1)
        } else {
            Ok(out)
        }
    }
}

/// A stream's schema in the forms planning needs.
struct Input {
    arrow: SchemaRef,
    df: DFSchema,
    lowering: Lowering,
}

impl Input {
    fn of(stream: &Stream) -> Result<Self> {
        let arrow = stream.schema();
        let df = DFSchema::try_from(arrow.as_ref().clone()).map_err(df_err)?;
        Ok(Self {
            arrow,
            df,
            lowering: Lowering::new(),
        })
    }

    fn simplifier(&self) -> ExprSimplifier {
        let context = SimplifyContext::builder()
            .with_schema(Arc::new(self.df.clone()))
            .build();
        ExprSimplifier::new(context)
    }

    /// Coerces types as SQL does: an expression the planner could have
    /// produced.
    fn coerce(&self, expr: Expr) -> Result<Expr> {
        self.simplifier().coerce(expr, &self.df).map_err(df_err)
    }

    /// A row-by-row expression, coerced and with its constants folded.
    fn lower(&self, expr: Expr) -> Result<Arc<dyn PhysicalExpr>> {
        let expr = self
            .simplifier()
            .simplify(self.coerce(expr)?)
            .map_err(df_err)?;
        self.lowering
            .expr(&expr, &self.df)
            .map_err(|e| Error::plan(e.to_string()))
    }

    fn lower_aggregate(&self, expr: Expr) -> Result<LoweredAggregate> {
        let expr = self.coerce(expr)?;
        LoweredAggregateBuilder::new(
            &expr,
            &self.df,
            &self.arrow,
            self.lowering.props(),
            self.lowering.ctx(),
        )
        .build()
        .map_err(df_err)
    }
}

/// A window aggregate for [`StreamExt::window`].
#[derive(Clone)]
pub struct Window {
    kind: WindowKind,
    keys: Vec<String>,
    aggs: Vec<Expr>,
    event_time: Option<String>,
}

impl Window {
    pub fn new(kind: WindowKind) -> Self {
        Window {
            kind,
            keys: Vec::new(),
            aggs: Vec::new(),
            event_time: None,
        }
    }

    pub fn tumbling(size: Duration) -> Self {
        Self::tumbling_ms(millis(size))
    }

    pub fn tumbling_ms(size_ms: i64) -> Self {
        Self::new(WindowKind::Tumble { size_ms })
    }

    pub fn hopping(size: Duration, slide: Duration) -> Self {
        Self::new(WindowKind::Hop {
            slide_ms: millis(slide),
            size_ms: millis(size),
        })
    }

    /// A session per key: rows less than `gap` apart share one.
    pub fn session(gap: Duration) -> Self {
        Self::new(WindowKind::Session {
            gap_ms: millis(gap),
        })
    }

    pub fn keys<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// An aggregate, named with `.alias(..)` (`agg::max(col("t")).alias("hottest")`).
    pub fn agg(mut self, aggregate: Expr) -> Self {
        self.aggs.push(aggregate);
        self
    }

    /// Windows over this column instead of the stream's event-time column.
    pub fn event_time(mut self, column: &str) -> Self {
        self.event_time = Some(column.to_string());
        self
    }

    fn factory(&self, input: &Input, event_time: &str) -> Result<WindowAggFactory> {
        let column = |name: &str| input.lower(col(datafusion::common::Column::from_name(name)));
        let keys = self
            .keys
            .iter()
            .map(|k| column(k))
            .collect::<Result<Vec<_>>>()?;
        let aggs = self
            .aggs
            .iter()
            .map(|a| input.lower_aggregate(a.clone()))
            .collect::<Result<Vec<_>>>()?;
        let mut fields: Vec<FieldRef> = self
            .keys
            .iter()
            .map(|k| Ok(Arc::new(input.arrow.field_with_name(k)?.clone())))
            .collect::<Result<Vec<_>>>()?;
        fields.push(Arc::new(Field::new("window", window_type(), false)));
        fields.extend(aggs.iter().map(|a| a.aggregate.field()));
        let shown: Vec<String> = aggs
            .iter()
            .map(|a| {
                let f = a.aggregate.field();
                let human = a.aggregate.human_display().unwrap_or(f.name());
                format!("{human} AS {}", f.name())
            })
            .collect();
        WindowAggFactory::new(WindowAggSpec {
            name: format!(
                "window({} by [{}]: {})",
                self.kind,
                self.keys.join(", "),
                shown.join(", ")
            ),
            input_schema: input.arrow.clone(),
            assign: WindowAssign::Time {
                time: column(event_time)?,
                kind: self.kind,
            },
            window_position: keys.len(),
            keys,
            aggs,
            output_schema: Arc::new(Schema::new(fields)),
            phase: AggPhase::Single,
            emit_best: None,
        })
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
