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
//!
//! The top-N goes under the projections and aliases that pass the window
//! and value columns on as they are, and those are applied to the rows it
//! keeps: a projection over the counts (q5 takes the window's bounds out
//! of its struct) then runs on a few rows per window, not on all of them.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::{Aggregate, Expr, Join, JoinType, LogicalPlan, SortExpr};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysColumn;
use millrace_sql_ops::window_agg::EmitBest;

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

/// Below the rows side, the projections and aliases that pass the window
/// and value columns on unchanged: the top-N ranks the rows under them, and
/// they are applied to the rows it keeps, not to every row (q5: a few of
/// each firing's thousands of counts instead of all).
struct Beneath<'a> {
    /// Where the top-N goes: below the projections and aliases passed.
    base: &'a LogicalPlan,
    /// The nodes passed on the way down, outermost first; the innermost is
    /// a projection, which drops the top-N's rank column.
    above: Vec<&'a LogicalPlan>,
    /// The window and value columns in `base`'s output.
    window: Column,
    value: Column,
}

fn beneath<'a>(rows: &'a LogicalPlan, window: &Column, value: &Column) -> Beneath<'a> {
    // Each level: a node and the two columns in its output.
    let mut levels = vec![(rows, window.clone(), value.clone())];
    loop {
        let (node, window, value) = &levels[levels.len() - 1];
        let node: &'a LogicalPlan = node;
        let input = match node {
            LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) => node.inputs()[0],
            _ => break,
        };
        let below = |c: &Column| -> Option<Column> {
            let idx = node.schema().index_of_column(c).ok()?;
            match node {
                LogicalPlan::Projection(p) => match p.expr[idx].clone().unalias_nested().data {
                    Expr::Column(c) => Some(c),
                    _ => None,
                },
                _ => {
                    let (q, f) = input.schema().qualified_field(idx);
                    Some(Column::new(q.cloned(), f.name()))
                }
            }
        };
        let (Some(window), Some(value)) = (below(window), below(value)) else {
            break;
        };
        levels.push((input, window, value));
    }
    // The deepest level right under a projection (or the rows themselves).
    let at = (1..levels.len())
        .rev()
        .find(|&i| matches!(levels[i - 1].0, LogicalPlan::Projection(_)))
        .unwrap_or(0);
    let above = levels[..at].iter().map(|l| l.0).collect();
    let (base, window, value) = levels.swap_remove(at);
    Beneath {
        base,
        above,
        window,
        value,
    }
}

/// When the rows ranked are an aggregate's output and the value is one of
/// its aggregates, the aggregate can emit only the groups at rank 1 (see
/// `EmitBest`): the aggregate and what to emit.
fn emit_best<'a>(
    base: &'a LogicalPlan,
    value: &Column,
    lowest: bool,
) -> Option<(&'a Aggregate, EmitBest)> {
    let LogicalPlan::Aggregate(agg) = base else {
        return None;
    };
    let at = base.schema().index_of_column(value).ok()?;
    let aggregate = at.checked_sub(agg.group_expr.len())?;
    let options = SortOptions {
        descending: !lowest,
        nulls_first: false,
    };
    Some((
        agg,
        EmitBest {
            aggregate,
            options,
            limit: 1,
        },
    ))
}

impl StreamPlanner<'_> {
    /// Plans a recognized join with the window maximum as the rows at it.
    pub(super) fn at_window_max(
        &mut self,
        m: &AtWindowMax<'_>,
        j: &Join,
    ) -> SqlResult<Option<Planned>> {
        let under = beneath(m.rows, &m.window, &m.value);
        let emits_best = emit_best(under.base, &under.value, m.lowest);
        let pre_ranked = emits_best.is_some();
        let base = match emits_best {
            // Not cached as the aggregate's plan: other readers of the
            // same aggregate need all of its groups.
            Some((agg, best)) => {
                let input = self.plan(&agg.input)?;
                self.aggregate_with(input, agg, Some(best))?
            }
            None => self.plan(under.base)?,
        };
        let window_idx = base.schema.index_of_column(&under.window)?;
        let value_idx = base.schema.index_of_column(&under.value)?;
        // Only a window carried in a column is a window here (else the
        // join is refused, or planned, as written).
        if !base.windows.contains_key(&window_idx) {
            return Ok(None);
        }
        // The join's columns: the rows', and the maximum side's from the
        // row's own window and value.
        let rows_schema = m.rows.schema();
        let n = rows_schema.fields().len();
        let max_columns = m.max_side.iter().map(|c| match c {
            Carries::Window => rows_schema.index_of_column(&m.window),
            Carries::Value => rows_schema.index_of_column(&m.value),
        });
        let max_columns = max_columns.collect::<Result<Vec<_>, _>>()?;
        let order: Vec<usize> = if m.rows_on_left {
            (0..n).chain(max_columns).collect()
        } else {
            max_columns.into_iter().chain(0..n).collect()
        };
        let out = Planned::runtime_schema(&j.schema);
        let same_types = order.len() == out.fields().len()
            && order
                .iter()
                .enumerate()
                .all(|(at, &i)| out.field(at).data_type() == rows_schema.field(i).data_type());
        if !same_types {
            // Not the shape this rewrite knows (e.g. a cast maximum).
            return Ok(None);
        }
        let value = Expr::Column(under.value.clone());
        let base = if base.schema.field(value_idx).is_nullable() {
            let schema = base.schema.clone();
            self.filter(base, &value.clone().is_not_null(), &schema)?
        } else {
            base
        };
        let rank = DFSchema::try_from(Schema::new(vec![Field::new(
            "__rank",
            DataType::UInt64,
            false,
        )]))?;
        let ranked_schema = Arc::new(base.schema.join(&rank)?);
        let partition_by = [Expr::Column(under.window.clone())];
        let order_by = [SortExpr::new(value, m.lowest, false)];
        let top = TopN {
            input: under.base,
            window_schema: &ranked_schema,
            projections: Vec::new(),
            partition_by: &partition_by,
            order_by: &order_by,
            limit: 1,
            ties: true,
            pre_ranked,
        };
        // The rank is last, so the rows' columns keep their positions.
        let mut rows = self.top_n(base, &top, &ranked_schema)?;
        for node in under.above.iter().rev() {
            rows = self.reapply(rows, node)?;
        }
        let runtime = Planned::runtime_schema(&rows.schema);
        let column = |i: usize| -> Arc<dyn PhysicalExpr> {
            Arc::new(PhysColumn::new(runtime.field(i).name(), i))
        };
        let exprs = order.iter().map(|&i| column(i)).collect();
        let windows = order
            .iter()
            .enumerate()
            .filter_map(|(at, i)| rows.windows.get(i).map(|k| (at, *k)))
            .collect();
        Ok(Some(Planned {
            stream: rows.stream.project(exprs, out)?,
            schema: j.schema.clone(),
            event_time: None,
            windows,
            time_hint: rows.time_hint,
            late_of: None,
        }))
    }

    /// A projection or alias from above the top-N, over what is below it.
    fn reapply(&mut self, input: Planned, node: &LogicalPlan) -> SqlResult<Planned> {
        match node {
            LogicalPlan::Projection(p) => self.project(input, p),
            // An alias is only passed above a projection (see `beneath`).
            _ => Ok(Planned {
                schema: node.schema().clone(),
                ..input
            }),
        }
    }
}
