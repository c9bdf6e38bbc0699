//! A stream joined with its own maximum per window,
//!
//! ```sql
//! x JOIN (SELECT w, max(v) AS top FROM x GROUP BY w) m ON x.w = m.w AND x.v = m.top
//! ```
//!
//! keeps the rows of `x` whose `v` is the maximum of their window (Nexmark
//! q5: the auctions with the most bids). Planned as written, every row of
//! `x` crosses an exchange to the join and waits there for the maximum,
//! which itself waits for every row. The same rows are `x`'s rank-1 rows
//! per window by `v` descending, ties kept (`RANK() … <= 1`), so this plans
//! a top-N with ties over `x` instead, and gives the maximum's columns the
//! values of the row's own `w` and `v`. Rows whose `v` is null never equal
//! a maximum and are left out first. A minimum is the same, ranked by `v`
//! ascending.
//!
//! The rewrite applies only when both sides read the same rows: each join
//! key, followed down through projections and aliases (which keep rows one
//! to one), must come to the same expression over the same plan on both
//! sides. Anything else is planned as the join it is.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan, SortExpr};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysColumn;
use millrace_sql_ops::eval::ExprProjectFactory;

use super::topn::TopN;
use super::{Planned, StreamPlanner};
use crate::error::SqlResult;

/// What the maximum side's output column carries.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Carries {
    Window,
    /// The `max` (or `min`).
    Value,
}

/// A recognized join of rows with their window's maximum.
pub(super) struct AtWindowMax<'a> {
    /// The side whose rows are kept.
    rows: &'a LogicalPlan,
    /// Whether `rows` is the join's left input (its columns come first).
    rows_on_left: bool,
    /// The window and value columns of `rows`.
    window: Column,
    value: Column,
    /// For each output column of the maximum side, what it carries.
    max_side: Vec<Carries>,
    /// `min` rather than `max`: the lowest `v` ranks first.
    lowest: bool,
}

/// Matches `rows JOIN max_side ON rows.w = max_side.w AND rows.v =
/// max_side.top` (either side, keys in either order), inner, with nothing
/// else in the condition.
pub(super) fn match_at_window_max(j: &Join) -> Option<AtWindowMax<'_>> {
    if j.join_type != JoinType::Inner || j.filter.is_some() || j.on.len() != 2 {
        return None;
    }
    let columns = |pick: fn(&(Expr, Expr)) -> &Expr| -> Option<Vec<Column>> {
        j.on.iter()
            .map(|pair| match pick(pair) {
                Expr::Column(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    };
    let (left_keys, right_keys) = (columns(|p| &p.0)?, columns(|p| &p.1)?);
    matched(&j.right, &right_keys, &j.left, &left_keys, true)
        .or_else(|| matched(&j.left, &left_keys, &j.right, &right_keys, false))
}

/// `max_plan` is a per-window maximum of `rows` under keys `max_keys`
/// (paired with `row_keys` of `rows`).
fn matched<'a>(
    max_plan: &'a LogicalPlan,
    max_keys: &[Column],
    rows: &'a LogicalPlan,
    row_keys: &[Column],
    rows_on_left: bool,
) -> Option<AtWindowMax<'a>> {
    let extreme = maximum_per_group(max_plan)?;
    let mut window = None;
    let mut value = None;
    for (max_key, row_key) in max_keys.iter().zip(row_keys) {
        match carries(max_plan, extreme.node, max_key)? {
            Carries::Window => window = Some(row_key.clone()),
            Carries::Value => value = Some(row_key.clone()),
        }
    }
    let (window, value) = (window?, value?);
    // Both sides must read the same rows: the group expression and the
    // maximum's argument come to what the row keys come to.
    let same = |over_agg_input: &Expr, row_key: &Column| {
        let Expr::Column(c) = over_agg_input else {
            return false;
        };
        let theirs = origin(extreme.input, c);
        let ours = origin(rows, row_key);
        theirs.is_some() && theirs == ours
    };
    if !same(extreme.group, &window) || !same(extreme.arg, &value) {
        return None;
    }
    Some(AtWindowMax {
        rows,
        rows_on_left,
        window,
        value,
        max_side: extreme.carried,
        lowest: extreme.lowest,
    })
}

/// A `max` (or `min`) of one expression per one group expression.
struct PerGroupExtreme<'a> {
    /// The aggregate node.
    node: &'a LogicalPlan,
    /// Its input, its group expression and the argument of its `max`.
    input: &'a LogicalPlan,
    group: &'a Expr,
    arg: &'a Expr,
    /// What each output column of the plan above it carries.
    carried: Vec<Carries>,
    /// `min` rather than `max`.
    lowest: bool,
}

/// The aggregate below `plan` if `plan` is a `max` (or `min`) of one column
/// per one group column, seen through projections and aliases that pass its
/// two columns on.
fn maximum_per_group(plan: &LogicalPlan) -> Option<PerGroupExtreme<'_>> {
    let mut agg = plan;
    while let LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) = agg {
        agg = agg.inputs()[0];
    }
    let LogicalPlan::Aggregate(a) = agg else {
        return None;
    };
    let [Expr::AggregateFunction(max)] = a.aggr_expr.as_slice() else {
        return None;
    };
    let p = &max.params;
    if a.group_expr.len() != 1
        || !matches!(max.func.name(), "max" | "min")
        || p.args.len() != 1
        || p.distinct
        || p.filter.is_some()
        || !p.order_by.is_empty()
    {
        return None;
    }
    let carried = plan
        .schema()
        .columns()
        .iter()
        .map(|c| carries(plan, agg, c))
        .collect::<Option<Vec<_>>>()?;
    Some(PerGroupExtreme {
        node: agg,
        input: &a.input,
        group: &a.group_expr[0],
        arg: &p.args[0],
        carried,
        lowest: max.func.name() == "min",
    })
}

/// What column `c` of `plan` is of `agg`'s two output columns.
fn carries(plan: &LogicalPlan, agg: &LogicalPlan, c: &Column) -> Option<Carries> {
    let (node, expr) = origin(plan, c)?;
    let Expr::Column(at) = expr else {
        return None;
    };
    if !std::ptr::eq(node, agg) {
        return None;
    }
    match agg.schema().index_of_column(&at).ok()? {
        0 => Some(Carries::Window),
        1 => Some(Carries::Value),
        _ => None,
    }
}

/// Follows column `c` of `plan` down through projections and aliases (which
/// keep rows one to one) to the node whose output it is computed from: that
/// node and the expression over its output.
fn origin<'a>(plan: &'a LogicalPlan, c: &Column) -> Option<(&'a LogicalPlan, Expr)> {
    let mut node = plan;
    let mut column = c.clone();
    loop {
        let idx = node.schema().index_of_column(&column).ok()?;
        let expr = match node {
            LogicalPlan::SubqueryAlias(a) => {
                let (q, f) = a.input.schema().qualified_field(idx);
                Expr::Column(Column::new(q.cloned(), f.name()))
            }
            LogicalPlan::Projection(p) => p.expr[idx].clone().unalias_nested().data,
            _ => return Some((node, Expr::Column(column))),
        };
        node = node.inputs()[0];
        match expr {
            Expr::Column(next) => column = next,
            computed => return Some((node, computed)),
        }
    }
}

impl StreamPlanner<'_> {
    /// Plans a recognized join with the window maximum as the rows at it.
    pub(super) fn at_window_max(
        &mut self,
        m: &AtWindowMax<'_>,
        j: &Join,
    ) -> SqlResult<Option<Planned>> {
        let rows = self.plan(m.rows)?;
        let window_idx = rows.schema.index_of_column(&m.window)?;
        let value_idx = rows.schema.index_of_column(&m.value)?;
        // Only a window carried in a column is a window here (else the
        // join is refused, or planned, as written).
        if !rows.windows.contains_key(&window_idx) {
            return Ok(None);
        }
        // The join's columns: the rows', and the maximum side's from the
        // row's own window and value.
        let n = rows.schema.fields().len();
        let max_columns = m.max_side.iter().map(|c| match c {
            Carries::Window => window_idx,
            Carries::Value => value_idx,
        });
        let order: Vec<usize> = if m.rows_on_left {
            (0..n).chain(max_columns).collect()
        } else {
            max_columns.chain(0..n).collect()
        };
        let out = Planned::runtime_schema(&j.schema);
        let same_types = order.len() == out.fields().len()
            && order
                .iter()
                .enumerate()
                .all(|(at, &i)| out.field(at).data_type() == rows.schema.field(i).data_type());
        if !same_types {
            // Not the shape this rewrite knows (e.g. a cast maximum).
            return Ok(None);
        }
        let value = Expr::Column(m.value.clone());
        let rows = if rows.schema.field(value_idx).is_nullable() {
            let schema = rows.schema.clone();
            self.filter(rows, &value.clone().is_not_null(), &schema)?
        } else {
            rows
        };
        let rank = DFSchema::try_from(Schema::new(vec![Field::new(
            "__rank",
            DataType::UInt64,
            false,
        )]))?;
        let ranked_schema = Arc::new(rows.schema.join(&rank)?);
        let partition_by = [Expr::Column(m.window.clone())];
        let order_by = [SortExpr::new(value, m.lowest, false)];
        let top = TopN {
            input: m.rows,
            window_schema: &ranked_schema,
            projections: Vec::new(),
            partition_by: &partition_by,
            order_by: &order_by,
            limit: 1,
            ties: true,
        };
        // The rank is last, so the rows' columns keep their positions.
        let ranked = self.top_n(rows, &top, &ranked_schema)?;
        let runtime = Planned::runtime_schema(&ranked_schema);
        let column = |i: usize| -> Arc<dyn PhysicalExpr> {
            Arc::new(PhysColumn::new(runtime.field(i).name(), i))
        };
        let exprs = order.iter().map(|&i| column(i)).collect();
        let f = ExprProjectFactory::new(out, exprs, None)?;
        let windows = order
            .iter()
            .enumerate()
            .filter_map(|(at, i)| ranked.windows.get(i).map(|k| (at, *k)))
            .collect();
        Ok(Some(Planned {
            stream: ranked.stream.apply(Arc::new(f)),
            schema: j.schema.clone(),
            event_time: None,
            windows,
            time_hint: ranked.time_hint,
        }))
    }
}
