//! Top-N per window: `ROW_NUMBER() OVER (PARTITION BY window, … ORDER BY …)`
//! or `RANK() OVER (…)` (ties share a rank and are all kept) filtered to
//! `<= N`. Over a stream this is the only ranking that finishes: the
//! window's end says when all rows of a partition have arrived.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchemaRef, ScalarValue};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Filter, LogicalPlan, Operator, Projection, SortExpr,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::create_physical_sort_exprs;
use datafusion::physical_expr::expressions::Column as PhysColumn;
use millrace_sql_ops::topn::{TopNFactory, TopNSpec};

use super::{Planned, PlannedStream, StreamPlanner};
use crate::error::{SqlError, SqlResult};

/// A recognized top-N: `input`, ranked within `partition_by` by `order_by`,
/// keeping ranks `1..=limit`.
pub(super) struct TopN<'a> {
    pub input: &'a LogicalPlan,
    /// The window node's output schema (input columns, then the rank).
    pub window_schema: &'a DFSchemaRef,
    /// Projections the optimizer placed between the filter and the window
    /// (outermost first); they pass the rank through and are re-applied.
    pub projections: Vec<&'a Projection>,
    pub partition_by: &'a [Expr],
    pub order_by: &'a [SortExpr],
    pub limit: usize,
    /// `RANK()`: equal rows share a rank (`ROW_NUMBER()`: they do not).
    pub ties: bool,
    /// Each input instance already emits, per window, only its rows within
    /// the limit, ties included: what a partial phase would keep (an
    /// aggregate's `EmitBest`). Such rows go straight to the final phase.
    pub pre_ranked: bool,
}

/// Matches `Filter(rank <= N)` over `Window(row_number() OVER …)` or
/// `Window(rank() OVER …)`, with only projections between them.
pub(super) fn match_top_n(f: &Filter) -> SqlResult<Option<TopN<'_>>> {
    let mut projections = Vec::new();
    let mut node = f.input.as_ref();
    while let LogicalPlan::Projection(p) = node {
        projections.push(p);
        node = p.input.as_ref();
    }
    let LogicalPlan::Window(w) = node else {
        return Ok(None);
    };
    let [Expr::WindowFunction(wf)] = w.window_expr.as_slice() else {
        return Ok(None);
    };
    let wf: &WindowFunction = wf;
    let (function, ties) = match wf.fun.name() {
        "row_number" => ("ROW_NUMBER()", false),
        "rank" => ("RANK()", true),
        _ => return Ok(None),
    };
    let rank_name = w.schema.field(w.schema.fields().len() - 1).name().clone();
    let Some(limit) = rank_limit(&f.predicate, &rank_name) else {
        return Err(SqlError::new(format!(
            "{function} over a stream must be filtered to the first N ranks (WHERE rn <= N); found WHERE {}",
            f.predicate
        )));
    };
    if limit == 0 {
        return Err(SqlError::new("top-N needs N >= 1"));
    }
    Ok(Some(TopN {
        input: w.input.as_ref(),
        window_schema: &w.schema,
        projections,
        partition_by: &wf.params.partition_by,
        order_by: &wf.params.order_by,
        limit,
        ties,
        pre_ranked: false,
    }))
}

/// `rank <= N`, `rank < N`, `rank = 1` (either way round) as the largest rank kept.
fn rank_limit(predicate: &Expr, rank: &str) -> Option<usize> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return None;
    };
    let is_rank = |e: &Expr| matches!(e, Expr::Column(c) if c.name == rank);
    let value = |e: &Expr| match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int64(Some(n)) => Some(*n),
            ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok(),
            ScalarValue::Int32(Some(n)) => Some(*n as i64),
            _ => None,
        },
        _ => None,
    };
    let (op, n) = if is_rank(left) {
        (*op, value(right)?)
    } else if is_rank(right) {
        (op.swap()?, value(left)?)
    } else {
        return None;
    };
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    usize::try_from(limit).ok()
}

impl StreamPlanner<'_> {
    pub(super) fn top_n(
        &mut self,
        input: Planned,
        top: &TopN<'_>,
        schema: &DFSchemaRef,
    ) -> SqlResult<Planned> {
        let mut window = None;
        let mut window_expr = None;
        let mut keys = Vec::new();
        for e in top.partition_by {
            match self.window_of(&input, e)? {
                Some(found) if window.is_none() => {
                    window = Some(found);
                    window_expr = Some(e);
                }
                Some(_) => {
                    return Err(SqlError::new(
                        "top-N may be partitioned by one window, not several",
                    ));
                }
                None => keys.push(e.clone()),
            }
        }
        let Some(window) = window else {
            return Err(SqlError::new(
                "ROW_NUMBER() over a stream must be partitioned by a window (PARTITION BY window, ...), or the ranking never ends; \
                 rank the output of a windowed GROUP BY, e.g. PARTITION BY window ORDER BY num DESC",
            ));
        };
        let routing = match window_expr {
            Some(e) => super::aggregate::routing_keys(&keys, &window.assign, e),
            None => keys.clone(),
        };
        let keyed = self.keyed(&input, &routing)?;
        let order_by = create_physical_sort_exprs(
            top.order_by,
            &input.schema,
            self.lowering.props(),
            self.lowering.ctx(),
        )?;
        // Output: the (possibly key-extended) input columns, then the rank.
        let rank_field = schema.field(schema.fields().len() - 1);
        let mut fields: Vec<Field> = keyed
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(rank_field.name(), DataType::UInt64, false));
        let output_schema = Arc::new(Schema::new(fields));
        let carried_window = keyed
            .single_input_column(&input)
            .filter(|_| keys.is_empty())
            .map(str::to_string);
        let spec = TopNSpec {
            name: if top.ties {
                format!("top_n[rank <= {}]", top.limit)
            } else {
                format!("top_n[{}]", top.limit)
            },
            input_schema: keyed.schema.clone(),
            window: window.assign,
            partition_keys: if keys.is_empty() {
                Vec::new()
            } else {
                keyed.keys
            },
            order_by,
            limit: top.limit,
            ties: top.ties,
            row_number: true,
            output_schema: output_schema.clone(),
        };
        // With ties, ranks within each instance's rows lose nothing: a row
        // within the limit overall is within it among its instance's rows,
        // and so is every row better than it. So a carried window's rows
        // are ranked where they are first, and only those within the
        // limit cross to the window's instance (q5: a few of thousands of
        // counts per window and instance). Without ties, which of equal
        // rows wins depends on arrival order, which the exchange would
        // change.
        let stream = if let Some(window_column) = carried_window
            && top.ties
            && self.two_phase_aggregation
        {
            let ranked_here = if top.pre_ranked {
                input.stream.get()
            } else {
                let partial = TopNSpec {
                    name: format!("{} (partial)", spec.name),
                    row_number: false,
                    output_schema: keyed.schema.clone(),
                    ..spec.clone()
                };
                let partial = input
                    .stream
                    .get()
                    .apply(Arc::new(TopNFactory::new(partial)?));
                self.route_late_rows(&input, &partial, 0)?;
                partial
            };
            ranked_here
                .key_by([window_column])?
                .apply(Arc::new(TopNFactory::new(spec)?))
        } else {
            let op = keyed.stream.apply(Arc::new(TopNFactory::new(spec)?));
            self.route_late_rows(&input, &op, 0)?;
            op
        };
        let stream = if routing.is_empty() {
            stream.with_parallelism(1)?
        } else {
            stream
        };
        let n = input.schema.fields().len();
        let stream = PlannedStream::from(stream);
        let stream = if output_schema.fields().len() == n + 1
            && rank_field.data_type() == &DataType::UInt64
        {
            stream
        } else {
            // Drop computed key columns and give the rank its declared type.
            let mut exprs: Vec<Arc<dyn PhysicalExpr>> = (0..n)
                .map(|i| {
                    Arc::new(PhysColumn::new(output_schema.field(i).name(), i))
                        as Arc<dyn PhysicalExpr>
                })
                .collect();
            let rank_idx = output_schema.fields().len() - 1;
            let rank: Arc<dyn PhysicalExpr> =
                Arc::new(PhysColumn::new(rank_field.name(), rank_idx));
            exprs.push(if rank_field.data_type() == &DataType::UInt64 {
                rank
            } else {
                Arc::new(datafusion::physical_expr::expressions::CastExpr::new(
                    rank,
                    rank_field.data_type().clone(),
                    None,
                ))
            });
            stream.project(exprs, Planned::runtime_schema(schema))?
        };
        Ok(Planned {
            stream,
            schema: schema.clone(),
            event_time: None,
            windows: input.windows.clone(),
            time_hint: input.time_hint.clone(),
            late_of: None,
        })
    }
}
