//! Joins of two streams. A join must bound the state it keeps, by a window
//! (both sides in the same window: `tumble(a.ts, …) = tumble(b.ts, …)`, equal
//! window columns, or equal starts or ends of the same windows) or by a time
//! interval (`b.ts BETWEEN a.ts AND a.ts + INTERVAL …`). Anything else would
//! keep both streams forever.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::logical_expr::{BinaryExpr, Expr, Join, JoinType, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysColumn;
use millrace_sql_ops::eval::ExprProjectFactory;
use millrace_sql_ops::join::{
    IntervalJoinFactory, IntervalJoinSpec, JoinKind, WindowJoinFactory, WindowJoinSpec,
};
use millrace_sql_ops::window::{WindowAssign, WindowKind};

use super::aggregate::FoundWindow;
use super::{Keyed, Planned, StreamPlanner};
use crate::error::{SqlError, SqlResult};
use crate::interval::scalar_interval_ms;

const HOW_TO_BOUND: &str = "join within a window (ON a.k = b.k AND tumble(a.ts, INTERVAL '10' SECOND) = tumble(b.ts, INTERVAL '10' SECOND)) or within a time interval (ON a.k = b.k AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' MINUTE)";

impl StreamPlanner<'_> {
    pub(super) fn join(&mut self, left: Planned, right: Planned, j: &Join) -> SqlResult<Planned> {
        let kind = match j.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            other => {
                return Err(SqlError::new(format!(
                    "{other} joins (from IN / EXISTS subqueries) are not supported over streams; write an explicit join with a time bound: {HOW_TO_BOUND}"
                )));
            }
        };
        let mut windows: Option<(FoundWindow, FoundWindow, Expr, Expr)> = None;
        let mut left_keys = Vec::new();
        let mut right_keys = Vec::new();
        for (l, r) in &j.on {
            let found = match (self.window_of(&left, l)?, self.window_of(&right, r)?) {
                (Some(a), Some(b)) => {
                    same_windows(&a, &b)?;
                    Some((a, b, l.clone(), r.clone()))
                }
                (Some(_), None) | (None, Some(_)) => {
                    return Err(SqlError::new(format!(
                        "{l} = {r}: a window can only be matched with a window of the same kind"
                    )));
                }
                (None, None) => self.equal_bounds(&left, &right, l, r)?,
            };
            match (found, &windows) {
                (None, _) => {
                    left_keys.push(l.clone());
                    right_keys.push(r.clone());
                }
                (Some(found), None) => windows = Some(found),
                // The same pair again (its start and its end): one window join.
                (Some((_, _, fl, fr)), Some((_, _, wl, wr))) if fl == *wl && fr == *wr => {}
                (Some(_), Some(_)) => {
                    return Err(SqlError::new(
                        "a join may match one pair of windows, not several",
                    ));
                }
            }
        }
        // With no keys but windows carried as columns on both sides, rows are
        // routed by the window column (equal windows meet in one instance).
        let by_window = match &windows {
            Some((a, b, l, r))
                if left_keys.is_empty()
                    && matches!(a.assign, WindowAssign::Column { .. })
                    && matches!(b.assign, WindowAssign::Column { .. }) =>
            {
                Some((vec![l.clone()], vec![r.clone()]))
            }
            _ => None,
        };
        let (left_route, right_route) = by_window
            .clone()
            .unwrap_or_else(|| (left_keys.clone(), right_keys.clone()));
        let lk = self.keyed(&left, &left_route)?;
        let rk = self.keyed(&right, &right_route)?;
        let (lk_keys, rk_keys) = if by_window.is_some() {
            (Vec::new(), Vec::new())
        } else {
            (lk.keys.clone(), rk.keys.clone())
        };
        // The operator's output: both inputs' columns, computed key columns
        // included, those of a side the join pads with nulls nullable (as in
        // DataFusion's join schema `j.schema`; the inputs' own fields may be
        // non-null, a `count(*)` say).
        let (pad_left, pad_right) = (kind.keeps_unmatched_right(), kind.keeps_unmatched_left());
        let joined_df = extended(&left, &lk, "__left_keys", pad_left)?.join(&extended(
            &right,
            &rk,
            "__right_keys",
            pad_right,
        )?)?;
        let filter = j
            .filter
            .as_ref()
            .map(|f| self.lowering.expr(f, &joined_df))
            .transpose()?;
        let output_schema = concat(&lk.schema, pad_left, &rk.schema, pad_right);
        let keyless = left_route.is_empty();

        let stream = if let Some((lw, rw, _, _)) = windows {
            let name = format!(
                "window_join[{}{}]",
                kind_name(kind),
                lw.kind
                    .or(rw.kind)
                    .map(|k| format!(", {k}"))
                    .unwrap_or_default()
            );
            let spec = WindowJoinSpec {
                name,
                left_schema: lk.schema.clone(),
                right_schema: rk.schema.clone(),
                left_keys: lk_keys.clone(),
                right_keys: rk_keys.clone(),
                left_window: lw.assign,
                right_window: rw.assign,
                kind,
                filter,
                output_schema: output_schema.clone(),
            };
            lk.stream
                .connect(&rk.stream, Arc::new(WindowJoinFactory::new(spec)?))?
        } else {
            let Some(bound) = j
                .filter
                .as_ref()
                .and_then(|f| interval_bound(f, &left, &right, &j.schema))
            else {
                return Err(SqlError::new(format!(
                    "this join of two streams has no time bound, so it would keep both streams in memory forever; {HOW_TO_BOUND}"
                )));
            };
            if !matches!(kind, JoinKind::Inner | JoinKind::Left) {
                return Err(SqlError::new(
                    "interval joins support INNER and LEFT joins (put the stream whose unmatched rows you want on the left)",
                ));
            }
            let time = |p: &Planned, i: usize| -> Arc<dyn PhysicalExpr> {
                Arc::new(PhysColumn::new(p.schema.field(i).name(), i))
            };
            let spec = IntervalJoinSpec {
                name: format!(
                    "interval_join[{}, right time in left time + [{} ms, {} ms]]",
                    kind_name(kind),
                    bound.lower_ms,
                    bound.upper_ms
                ),
                left_schema: lk.schema.clone(),
                right_schema: rk.schema.clone(),
                left_keys: lk_keys.clone(),
                right_keys: rk_keys.clone(),
                left_time: time(&left, bound.left_time),
                right_time: time(&right, bound.right_time),
                lower_ms: bound.lower_ms,
                upper_ms: bound.upper_ms,
                kind,
                filter,
                output_schema: output_schema.clone(),
            };
            lk.stream
                .connect(&rk.stream, Arc::new(IntervalJoinFactory::new(spec)?))?
        };
        let stream = if keyless {
            stream.with_parallelism(1)?
        } else {
            stream
        };
        self.route_late_rows(&left, &stream, 0)?;
        self.route_late_rows(&right, &stream, 1)?;
        // Drop computed key columns: the join's logical columns remain.
        let left_len = left.schema.fields().len();
        let keep: Vec<usize> = (0..left_len)
            .chain((0..right.schema.fields().len()).map(|i| lk.schema.fields().len() + i))
            .collect();
        let stream = if keep.len() == output_schema.fields().len() {
            stream
        } else {
            let exprs = keep
                .iter()
                .map(|&i| {
                    Arc::new(PhysColumn::new(output_schema.field(i).name(), i))
                        as Arc<dyn PhysicalExpr>
                })
                .collect();
            let f = ExprProjectFactory::new(Planned::runtime_schema(&j.schema), exprs, None)?;
            stream.apply(Arc::new(f))
        };
        // A padded side's window columns are null in its padded rows, so
        // they are no longer windows a later query could group or join by.
        let mut out_windows = HashMap::new();
        if !pad_left {
            for (i, k) in &left.windows {
                out_windows.insert(*i, *k);
            }
        }
        if !pad_right {
            for (i, k) in &right.windows {
                out_windows.insert(left_len + i, *k);
            }
        }
        Ok(Planned {
            stream: stream.into(),
            schema: j.schema.clone(),
            event_time: None,
            windows: out_windows,
            time_hint: left.time_hint.clone(),
            late_of: None,
        })
    }
}

impl StreamPlanner<'_> {
    /// `l = r` as equal bounds of two windows (`a.w['start'] = b.w['start']`,
    /// or the ends): with the same windows on both sides, a bound determines
    /// the window, so this is the window join of `a.w = b.w`, returned as
    /// that pair. `None` when `l` and `r` are not both bounds of windows.
    fn equal_bounds(
        &self,
        left: &Planned,
        right: &Planned,
        l: &Expr,
        r: &Expr,
    ) -> SqlResult<Option<(FoundWindow, FoundWindow, Expr, Expr)>> {
        let (Some((lw, lb)), Some((rw, rb))) = (window_bound(l), window_bound(r)) else {
            return Ok(None);
        };
        let (Some(a), Some(b)) = (self.window_of(left, lw)?, self.window_of(right, rw)?) else {
            return Ok(None);
        };
        // Named as written (`c.w[start]`), not as calls (`get_field(…)`).
        let (l, r) = (l.schema_name(), r.schema_name());
        let (lws, rws) = (lw.schema_name(), rw.schema_name());
        if lb != rb {
            return Err(SqlError::new(format!(
                "{l} = {r} compares the {lb} of one window with the {rb} of another; a window join matches equal windows: ON {lws} = {rws} (or their equal starts, or equal ends)"
            )));
        }
        match (a.kind, b.kind) {
            (Some(ka), Some(kb)) if ka != kb => {
                return Err(SqlError::new(format!(
                    "{l} = {r}: equal {lb}s mean the same window only when both sides have the same windows; here they differ ({ka} and {kb}); group both sides by the same window, then join ON {lws} = {rws}"
                )));
            }
            (Some(_), Some(_)) => {}
            _ => {
                return Err(SqlError::new(format!(
                    "{l} = {r}: the windows' sizes are not known here, so equal {lb}s may not be the same window; join ON {lws} = {rws}"
                )));
            }
        }
        same_windows(&a, &b)?;
        Ok(Some((a, b, lw.clone(), rw.clone())))
    }
}

fn kind_name(kind: JoinKind) -> &'static str {
    match kind {
        JoinKind::Inner => "inner",
        JoinKind::Left => "left",
        JoinKind::Right => "right",
        JoinKind::Full => "full",
    }
}

/// The logical schema of a keyed input in the join's output: its columns,
/// then computed keys (under `keys_qualifier`: both sides may have computed
/// a `__key3`); all nullable if the join pads this side.
fn extended(p: &Planned, keyed: &Keyed, keys_qualifier: &str, padded: bool) -> SqlResult<DFSchema> {
    let n = p.schema.fields().len();
    let mut fields: Vec<(Option<TableReference>, Arc<Field>)> = p
        .schema
        .iter()
        .map(|(q, f)| (q.cloned(), nullable_if(f, padded)))
        .collect();
    for f in keyed.schema.fields().iter().skip(n) {
        fields.push((
            Some(TableReference::bare(keys_qualifier)),
            nullable_if(f, padded),
        ));
    }
    Ok(DFSchema::new_with_metadata(fields, HashMap::new())?)
}

/// The left fields then the right fields, a padded side's made nullable.
fn concat(left: &SchemaRef, pad_left: bool, right: &SchemaRef, pad_right: bool) -> SchemaRef {
    let fields: Vec<Arc<Field>> = (left.fields().iter().map(|f| nullable_if(f, pad_left)))
        .chain(right.fields().iter().map(|f| nullable_if(f, pad_right)))
        .collect();
    Arc::new(Schema::new(fields))
}

fn nullable_if(f: &Arc<Field>, padded: bool) -> Arc<Field> {
    if padded && !f.is_nullable() {
        Arc::new(f.as_ref().clone().with_nullable(true))
    } else {
        f.clone()
    }
}

/// Both sides of a window join must have the same windows, and not
/// sessions (which differ per key and side).
fn same_windows(a: &FoundWindow, b: &FoundWindow) -> SqlResult<()> {
    if let (Some(ka), Some(kb)) = (a.kind, b.kind)
        && ka != kb
    {
        return Err(SqlError::new(format!(
            "a window join needs the same windows on both sides; found {ka} and {kb}"
        )));
    }
    if matches!(a.kind, Some(WindowKind::Session { .. }))
        || matches!(b.kind, Some(WindowKind::Session { .. }))
    {
        return Err(SqlError::new(
            "session windows differ per key and side, so they cannot be joined; join on tumble or hop windows",
        ));
    }
    Ok(())
}

/// If `e` is a bound of a window-shaped value (`w['start']` or `w['end']`,
/// `w` a column or a call), that value and the bound's name.
fn window_bound(e: &Expr) -> Option<(&Expr, &'static str)> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::ScalarFunction(call) = e else {
        return None;
    };
    let [window, Expr::Literal(name, _)] = call.args.as_slice() else {
        return None;
    };
    if call.func.name() != "get_field" {
        return None;
    }
    match name.try_as_str().flatten()? {
        "start" => Some((window, "start")),
        "end" => Some((window, "end")),
        _ => None,
    }
}

/// `right_time - left_time ∈ [lower_ms, upper_ms]`, on the two inputs' event times.
struct IntervalBound {
    left_time: usize,
    right_time: usize,
    lower_ms: i64,
    upper_ms: i64,
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Left,
    Right,
}

/// Reads the time bound from the join condition's comparisons between the
/// two sides' event times (each side's time plus or minus an interval).
fn interval_bound(
    filter: &Expr,
    left: &Planned,
    right: &Planned,
    joined: &DFSchema,
) -> Option<IntervalBound> {
    let left_len = left.schema.fields().len();
    let (lt, rt) = (left.event_time?, right.event_time?);
    // A side's event-time column plus an offset in ms.
    let term = |e: &Expr| -> Option<(Side, i64)> {
        let (col, offset) = match e {
            Expr::Column(c) => (c, 0),
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                match (left.as_ref(), op, right.as_ref()) {
                    (Expr::Column(c), Operator::Plus, Expr::Literal(v, _)) => (c, interval(v)?),
                    (Expr::Literal(v, _), Operator::Plus, Expr::Column(c)) => (c, interval(v)?),
                    (Expr::Column(c), Operator::Minus, Expr::Literal(v, _)) => (c, -interval(v)?),
                    _ => return None,
                }
            }
            _ => return None,
        };
        let idx = joined.index_of_column(col).ok()?;
        if idx < left_len && idx == lt {
            Some((Side::Left, offset))
        } else if idx >= left_len && idx - left_len == rt {
            Some((Side::Right, offset))
        } else {
            None
        }
    };
    let mut lower: Option<i64> = None;
    let mut upper: Option<i64> = None;
    let mut compare = |a: &Expr, op: Operator, b: &Expr| {
        let (Some((sa, oa)), Some((sb, ob))) = (term(a), term(b)) else {
            return;
        };
        if sa == sb {
            return;
        }
        // Rewrite `a op b` as `R - L op c`.
        let (op, c) = if sa == Side::Right {
            (op, ob - oa)
        } else {
            (op.swap().unwrap_or(op), oa - ob)
        };
        match op {
            Operator::GtEq => lower = Some(lower.map_or(c, |l| l.max(c))),
            Operator::Gt => lower = Some(lower.map_or(c + 1, |l| l.max(c + 1))),
            Operator::LtEq => upper = Some(upper.map_or(c, |u| u.min(c))),
            Operator::Lt => upper = Some(upper.map_or(c - 1, |u| u.min(c - 1))),
            _ => {}
        }
    };
    for conjunct in datafusion::logical_expr::utils::split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => compare(left, *op, right),
            Expr::Between(b) if !b.negated => {
                compare(&b.expr, Operator::GtEq, &b.low);
                compare(&b.expr, Operator::LtEq, &b.high);
            }
            _ => {}
        }
    }
    match (lower, upper) {
        (Some(lower_ms), Some(upper_ms)) if lower_ms <= upper_ms => Some(IntervalBound {
            left_time: lt,
            right_time: rt,
            lower_ms,
            upper_ms,
        }),
        _ => None,
    }
}

/// An offset in ms: an interval, or a plain integer (for BIGINT event
/// times, which are milliseconds).
fn interval(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int64(Some(n)) => Some(*n),
        ScalarValue::Int32(Some(n)) => Some(*n as i64),
        v => scalar_interval_ms(v).ok(),
    }
}
