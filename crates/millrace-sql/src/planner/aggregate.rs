//! `GROUP BY` over a window → a keyed window aggregate.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::logical_expr::{Aggregate, Expr};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::expressions::Column as PhysColumn;
use millrace_sql_ops::window::{WindowAssign, WindowKind};
use millrace_sql_ops::window_agg::{AggPhase, EmitBest, WindowAggFactory, WindowAggSpec};

use super::{Planned, StreamPlanner};
use crate::error::{SqlError, SqlResult};
use crate::udf::as_window_call;

/// The window of a grouping, joining or ranking: how rows find it, and its
/// kind when known.
pub(super) struct FoundWindow {
    pub assign: WindowAssign,
    pub kind: Option<WindowKind>,
}

impl StreamPlanner<'_> {
    /// If `e` (over `input`) is a window — a window function call on the
    /// event time, or a window column — how rows are assigned to it.
    pub(super) fn window_of(&self, input: &Planned, e: &Expr) -> SqlResult<Option<FoundWindow>> {
        if let Some(call) = as_window_call(e).map_err(SqlError::new)? {
            let time_idx = match call.time {
                Expr::Column(c) => Some(input.schema.index_of_column(c)?),
                _ => None,
            };
            if time_idx.is_none() || time_idx != input.event_time {
                let declared = match (input.event_time, &input.time_hint) {
                    (Some(i), _) => {
                        format!("the event time here is '{}'", input.schema.field(i).name())
                    }
                    // The table has one, but this input does not carry it
                    // (a query that computed a column from it, or left it out).
                    (None, Some(column)) => format!(
                        "the event time is '{column}', which this input does not carry: window on '{column}' itself (kept as it is, or renamed), not on a column computed from it or another"
                    ),
                    (None, None) => "this input has no event time: declare WATERMARK FOR <column> AS <column> - INTERVAL '...' in its CREATE TABLE".to_string(),
                };
                return Err(SqlError::new(format!(
                    "{}({}, ...): windows follow the watermark, so they must be over the event-time column; {declared}",
                    call.kind.function(),
                    call.time
                )));
            }
            let time = self.lowering.expr(call.time, &input.schema)?;
            return Ok(Some(FoundWindow {
                assign: WindowAssign::Time {
                    time,
                    kind: call.kind,
                },
                kind: Some(call.kind),
            }));
        }
        if let Expr::Column(c) = e {
            let idx = input.schema.index_of_column(c)?;
            if let Some(kind) = input.windows.get(&idx) {
                let field = input.schema.field(idx);
                return Ok(Some(FoundWindow {
                    assign: WindowAssign::Column {
                        window: Arc::new(PhysColumn::new(field.name(), idx)),
                    },
                    kind: Some(*kind),
                }));
            }
        }
        Ok(None)
    }

    pub(super) fn aggregate(&mut self, input: Planned, agg: &Aggregate) -> SqlResult<Planned> {
        self.aggregate_with(input, agg, None)
    }

    /// An aggregate that, when it runs keyed in one phase, emits only the
    /// groups `emit_best` names (a top-N with ties over its output follows;
    /// elsewhere the top-N alone does the ranking).
    pub(super) fn aggregate_with(
        &mut self,
        input: Planned,
        agg: &Aggregate,
        emit_best: Option<EmitBest>,
    ) -> SqlResult<Planned> {
        let mut window: Option<(usize, FoundWindow)> = None;
        let mut keys: Vec<Expr> = Vec::new();
        for (i, g) in agg.group_expr.iter().enumerate() {
            if matches!(g, Expr::GroupingSet(_)) {
                return Err(SqlError::new(
                    "GROUPING SETS, ROLLUP and CUBE are not supported in streaming queries",
                ));
            }
            match self.window_of(&input, g)? {
                Some(found) if window.is_none() => window = Some((i, found)),
                Some(_) => {
                    return Err(SqlError::new(
                        "GROUP BY may contain one window (tumble, hop, session or a window column), not several",
                    ));
                }
                None => keys.push(g.clone()),
            }
        }
        let Some((window_position, window)) = window else {
            let example = match (input.event_time, &input.time_hint) {
                (Some(i), _) => format!(
                    "GROUP BY tumble({}, INTERVAL '10' SECOND), ...",
                    input.schema.field(i).name()
                ),
                (None, Some(name)) => format!("GROUP BY tumble({name}, INTERVAL '10' SECOND), ..."),
                (None, None) => "GROUP BY tumble(event_time, INTERVAL '10' SECOND), ... (after declaring a WATERMARK on the source)".to_string(),
            };
            return Err(SqlError::new(format!(
                "an aggregate over a stream needs a window in GROUP BY, or its state would grow forever and it would never emit a final result; write {example}"
            )));
        };
        // Rows are routed by the keys; with none, by a carried window column
        // (each window's rows meet in one instance, windows spread over all).
        let routing = routing_keys(&keys, &window.assign, &agg.group_expr[window_position]);
        let keyed = self.keyed(&input, &routing)?;
        let physical_input = input.schema.as_arrow();
        let group_count = agg.group_expr.len();
        let mut aggs = Vec::with_capacity(agg.aggr_expr.len());
        for (j, e) in agg.aggr_expr.iter().enumerate() {
            let name = agg.schema.field(group_count + j).name().clone();
            let lowered = LoweredAggregateBuilder::new(
                e,
                &input.schema,
                physical_input,
                self.lowering.props(),
                self.lowering.ctx(),
            )
            .with_name(name)
            .build()?;
            if !lowered.order_bys.is_empty() {
                return Err(SqlError::new(format!(
                    "{e}: ORDER BY inside an aggregate is not supported in streaming queries"
                )));
            }
            aggs.push(lowered);
        }
        let kind = window.kind;
        let name = match &kind {
            Some(k) => format!("window_agg[{k}]"),
            None => "window_agg".to_string(),
        };
        let routed_by_input_column = keyed.single_input_column(&input).is_some();
        let spec = WindowAggSpec {
            name,
            input_schema: keyed.schema.clone(),
            assign: window.assign,
            keys: if keys.is_empty() {
                Vec::new()
            } else {
                keyed.keys
            },
            window_position,
            aggs,
            output_schema: Planned::runtime_schema(&agg.schema),
            phase: AggPhase::Single,
            emit_best: None,
        };
        let stream = if keys.is_empty()
            && routed_by_input_column
            && self.two_phase_aggregation
            && spec.splits_in_two_phases()
        {
            // Rows routed by the window column they carry would meet at the
            // instance owning the window: fold them where they are, then
            // route one state per window and upstream instance by its window.
            let (partial, last) = spec.split_two_phase()?;
            let window = partial.output_schema.field(0).name().clone();
            let first = input
                .stream
                .get()
                .apply(Arc::new(WindowAggFactory::new(partial)?));
            self.route_late_rows(&input, &first, 0)?;
            first
                .key_by([window])?
                .apply(Arc::new(WindowAggFactory::new(last)?))
        } else if !routing.is_empty() {
            let spec = match emit_best {
                Some(best) => {
                    let ranked = spec.output_schema.field(keys.len() + 1 + best.aggregate);
                    WindowAggSpec {
                        name: format!(
                            "{} (emits rank <= {} by {})",
                            spec.name,
                            best.limit,
                            ranked.name()
                        ),
                        emit_best: Some(best),
                        ..spec
                    }
                }
                None => spec,
            };
            let op = keyed.stream.apply(Arc::new(WindowAggFactory::new(spec)?));
            self.route_late_rows(&input, &op, 0)?;
            op
        } else if self.two_phase_aggregation && spec.splits_in_two_phases() {
            // Every row meets at one instance: fold them where they are
            // first, so the exchange carries one state per window and
            // upstream instance instead of every row.
            let (partial, last) = spec.split_two_phase()?;
            let first = input
                .stream
                .get()
                .apply(Arc::new(WindowAggFactory::new(partial)?));
            self.route_late_rows(&input, &first, 0)?;
            first
                .rebalance()
                .apply(Arc::new(WindowAggFactory::new(last)?))
                .with_parallelism(1)?
        } else {
            let op = keyed
                .stream
                .apply(Arc::new(WindowAggFactory::new(spec)?))
                .with_parallelism(1)?;
            self.route_late_rows(&input, &op, 0)?;
            op
        };
        let mut windows = HashMap::new();
        if let Some(k) = kind {
            windows.insert(window_position, k);
        }
        Ok(Planned {
            stream: stream.into(),
            schema: agg.schema.clone(),
            event_time: None,
            windows,
            time_hint: input.time_hint.clone(),
            late_of: None,
        })
    }
}

/// What rows are exchanged by before a keyed stage: its keys, or when it has
/// none and its window is a carried column, that column; else nothing (one
/// instance sees every row).
pub(super) fn routing_keys(keys: &[Expr], window: &WindowAssign, window_expr: &Expr) -> Vec<Expr> {
    match (keys.is_empty(), window) {
        (false, _) => keys.to_vec(),
        (true, WindowAssign::Column { .. }) => vec![window_expr.clone()],
        (true, WindowAssign::Time { .. }) => Vec::new(),
    }
}
