//! Keyed window aggregates of streaming SQL (`GROUP BY tumble(..), k` and
//! friends) over DataFusion's accumulators, so every aggregate function
//! DataFusion offers (including `DISTINCT` and `FILTER (WHERE ..)`) works.
//!
//! # Semantics
//!
//! * **Windows.** Rows are placed by [`WindowAssign`]: tumbling and hopping
//!   windows from event time, windows a row already carries (a window column
//!   from an earlier stage), or session windows. Within a window, rows are
//!   grouped by the key expressions; a null key is a group like any other. No
//!   keys means one group per window.
//! * **Late rows.** The operator's watermark is the largest it has received
//!   (initially none). Rows the window module calls late (event time below the
//!   watermark; a carried window whose end is at or below it) go to the late
//!   output ([`Emitter::late`](millrace_core::Emitter::late)).
//!   A row that is not late can only land in a window that has not fired.
//! * **Firing.** On a watermark `W`, every window with `end <= W` fires, in
//!   order of `(end, start)` (sessions: `(end, key, start)`), and only then is
//!   the watermark forwarded. Within a window, groups come in order of first
//!   appearance. Fired rows carry the watermark's `entered_ns`, so their
//!   latency counts from the event that closed them. At end of input every
//!   open window fires with the largest entered time seen on input (or now,
//!   if no row was ever seen).
//! * **Output.** One row per (window, group): the group columns in the spec's
//!   order (the window struct at `window_position`), one column per
//!   aggregate, then the entered column; at most 64K rows per batch. With
//!   [`EmitBest`], only each window's groups that a `RANK()` top-N by one
//!   aggregate could keep.
//! * **Sessions.** Per key, a row at `t` opens `[t, t + gap)`; sessions that
//!   overlap merge (their accumulators merge through `state`/`merge_batch`),
//!   so rows closer than `gap` share a session and a bridging row joins two.
//!   Sessions only touching (`end == start`) stay apart.
//! * **Phases.** An aggregate without keys may run as a partial phase
//!   (rows in, accumulator states per window out) before an exchange and a
//!   final phase (states in, merged per carried window); see [`AggPhase`].
//! * **State.** A snapshot holds every open window's groups (keys and
//!   accumulator states) and the watermark (`state.rs`); a restored
//!   instance continues exactly where the snapshotted one was. At another
//!   parallelism each group goes to the instance its key's rows will reach
//!   (`rescale.rs`).
//!
//! # Cost
//!
//! Per batch: keys are encoded once (one fixed-width key of a fixed window
//! as its array's bytes, else in the row format; `keys.rs`) and aggregate
//! arguments and filters evaluated once; rows are bucketed per window and each window's
//! slice gathered with `take` (skipped when one window takes the whole batch)
//! for one `update_batch` per aggregate. Sessions use one scalar
//! `Accumulator` per session and aggregate, updated once per run of nearby
//! rows of a key.

mod fixed;
mod input;
mod key_table;
mod keys;
mod output;
mod phase;
mod rescale;
mod session;
mod state;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::{Accumulator, GroupsAccumulator};
use datafusion::physical_expr::aggregate::LoweredAggregate;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use keys::KeyCodec;
use millrace_core::batch::schema_with_entered;
use millrace_core::{ENTERED_COLUMN, Error, Operator, OperatorFactory, Result, Snapshot};

use crate::df_err;
use crate::window::{WindowAssign, WindowKind, window_type};

use fixed::FixedWindowOperator;
pub use phase::AggPhase;
use session::SessionOperator;
use state::Rebuild;

/// A keyed window aggregate as the SQL planner describes it.
#[derive(Clone, Debug)]
pub struct WindowAggSpec {
    /// Shown in plans and error messages, e.g. "window_agg".
    pub name: String,
    /// User columns of the input (no entered column).
    pub input_schema: SchemaRef,
    /// How rows map to windows (tumble/hop/session from event time, or a
    /// carried window column).
    pub assign: WindowAssign,
    /// Non-window GROUP BY expressions, evaluated on input batches.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Index of the window column among the output's group columns
    /// (`0..=keys.len()`).
    pub window_position: usize,
    /// Aggregates, as DataFusion lowers them (aggregate + optional
    /// `FILTER (WHERE ...)` expression).
    pub aggs: Vec<LoweredAggregate>,
    /// Output user schema: group columns (keys with the window column
    /// inserted at `window_position`), then one column per aggregate (per
    /// state column of each aggregate in the partial phase).
    pub output_schema: SchemaRef,
    /// One phase, or which of two (see [`AggPhase`] and
    /// [`WindowAggSpec::split_two_phase`]).
    pub phase: AggPhase,
    /// Emit only the groups a top-N with ties over this output keeps.
    pub emit_best: Option<EmitBest>,
}

/// A window aggregate whose output a top-N with ties ranks per window by
/// one aggregate (`RANK() OVER (PARTITION BY window ORDER BY agg) <= limit`)
/// emits, of each window's groups, only those no worse than the limit-th
/// best by that aggregate, ties kept: every group the top-N could keep, as
/// a firing sends each window whole. Thousands of groups then never become
/// rows (q5: thousands of auction counts per window and instance, of which
/// one or a few are at the maximum).
#[derive(Clone, Debug)]
pub struct EmitBest {
    /// Index into `aggs` of the aggregate ranked by.
    pub aggregate: usize,
    pub options: SortOptions,
    pub limit: usize,
}

/// What every instance of the operator shares: the spec and what planning
/// derived from it.
struct Plan {
    spec: WindowAggSpec,
    /// Types of the keys (empty when there are none).
    key_types: Vec<DataType>,
    /// The output schema followed by the entered column.
    output_with_entered: SchemaRef,
    /// In the final phase, each aggregate's state columns in the input.
    state_columns: Vec<Range<usize>>,
    /// How many intermediate state columns each aggregate has (what a
    /// snapshot keeps of it).
    state_widths: Vec<usize>,
}

impl Plan {
    /// How the keys become bytes; `sorted` when the bytes must sort as the
    /// keys do. Without keys every row of a window is in the one group with
    /// the empty key.
    fn key_codec(&self, sorted: bool) -> Result<KeyCodec> {
        KeyCodec::new(&self.key_types, sorted)
    }
}

/// Creates the keyed window aggregate; see the module doc for semantics.
pub struct WindowAggFactory {
    plan: Arc<Plan>,
}

impl WindowAggFactory {
    /// Checks the spec (window parameters, types of the time, window and key
    /// expressions, aggregates the operator supports, output schema shape)
    /// and reports the first problem as [`Error::Plan`].
    pub fn new(spec: WindowAggSpec) -> Result<Self> {
        let ctx = spec.name.as_str();
        spec.assign
            .validate(&spec.input_schema, true)
            .map_err(|e| e.context(ctx))?;
        validate_aggs(ctx, &spec.aggs)?;
        let state_columns = validate_phase(ctx, &spec)?;
        let key_types = validate_output(ctx, &spec)?;
        validate_emit_best(ctx, &spec)?;
        let output_with_entered = schema_with_entered(&spec.output_schema);
        let state_widths = spec
            .aggs
            .iter()
            .map(|a| Ok(a.aggregate.state_fields().map_err(df_err)?.len()))
            .collect::<Result<_>>()?;
        Ok(Self {
            plan: Arc::new(Plan {
                spec,
                key_types,
                output_with_entered,
                state_columns,
                state_widths,
            }),
        })
    }

    /// A fresh instance: session windows or fixed ones.
    fn fresh(&self) -> Result<Box<dyn Rebuild>> {
        let plan = self.plan.clone();
        Ok(match plan.spec.assign.kind() {
            Some(WindowKind::Session { gap_ms }) => {
                let codec = plan.key_codec(true)?;
                Box::new(SessionOperator::new(plan, codec, gap_ms))
            }
            _ => {
                let codec = plan.key_codec(false)?;
                Box::new(FixedWindowOperator::new(plan, codec))
            }
        })
    }

    /// The spec this factory was built from.
    pub fn spec(&self) -> &WindowAggSpec {
        &self.plan.spec
    }

    /// One line for plans: `window_agg: tumble 10s on ts by [k]: count(*), sum(v)`.
    pub fn describe(&self) -> String {
        let spec = &self.plan.spec;
        let keys: Vec<String> = spec.keys.iter().map(|k| k.to_string()).collect();
        let aggs: Vec<String> = spec
            .aggs
            .iter()
            .map(|a| {
                let name = a.aggregate.human_display().unwrap_or(a.aggregate.name());
                match &a.filter {
                    Some(f) => format!("{name} FILTER (WHERE {f})"),
                    None => name.to_string(),
                }
            })
            .collect();
        format!(
            "{}: {} by [{}]: {}",
            spec.name,
            spec.assign.describe(),
            keys.join(", "),
            aggs.join(", ")
        )
    }
}

impl OperatorFactory for WindowAggFactory {
    fn name(&self) -> String {
        self.plan.spec.name.clone()
    }

    fn output_schema(&self) -> SchemaRef {
        self.plan.spec.output_schema.clone()
    }

    /// The window column is a struct, not an event-time column; a later
    /// stage that needs event time reads it from the window's bounds.
    fn output_event_time(&self) -> Option<String> {
        None
    }

    fn create(&self, _instance: usize, _parallelism: usize) -> Result<Box<dyn Operator>> {
        let op: Box<dyn Operator> = self.fresh()?;
        Ok(op)
    }

    fn resume(
        &self,
        _instance: usize,
        _parallelism: usize,
        state: &Snapshot,
    ) -> Result<Box<dyn Operator>> {
        let mut op = self.fresh()?;
        state::restore(op.as_mut(), state)?;
        let op: Box<dyn Operator> = op;
        Ok(op)
    }

    /// Groups go to the instance owning their key's key group (their
    /// window's, without keys); see `rescale.rs`.
    fn rescale(&self, old: &[Snapshot], parallelism: usize) -> Result<Vec<Snapshot>> {
        rescale::rescale(self, old, parallelism)
    }

    fn signature(&self) -> String {
        self.describe()
    }
}

/// An aggregate to rank by that exists and ranks unencoded, in a phase that
/// emits final values, over windows that fire whole (not sessions).
fn validate_emit_best(ctx: &str, spec: &WindowAggSpec) -> Result<()> {
    let Some(best) = &spec.emit_best else {
        return Ok(());
    };
    let session = matches!(spec.assign.kind(), Some(WindowKind::Session { .. }));
    if spec.phase == AggPhase::Partial || session || best.limit == 0 {
        return Err(Error::plan(format!(
            "{ctx}: emitting only the best groups needs a limit of at least 1 and final values of tumbling, hopping or carried windows"
        )));
    }
    let Some(column) = spec
        .output_schema
        .fields()
        .get(spec.keys.len() + 1 + best.aggregate)
    else {
        return Err(Error::plan(format!(
            "{ctx}: there is no aggregate {} to rank by",
            best.aggregate
        )));
    };
    if !crate::topn::ranks_unencoded(column.data_type()) {
        return Err(Error::plan(format!(
            "{ctx}: aggregate '{}' of type {} cannot be ranked before output",
            column.name(),
            column.data_type()
        )));
    }
    Ok(())
}

/// Aggregates the operator cannot run yet are refused here, not at run time.
fn validate_aggs(ctx: &str, aggs: &[LoweredAggregate]) -> Result<()> {
    for agg in aggs {
        let name = agg.aggregate.name();
        if !agg.order_bys.is_empty() || !agg.aggregate.order_bys().is_empty() {
            return Err(Error::plan(format!(
                "{ctx}: aggregate '{name}' has an ORDER BY inside its call, which windowed aggregates do not support yet; remove the ORDER BY (or aggregate without ordering)"
            )));
        }
    }
    Ok(())
}

/// A partial phase reads rows and windows of event time, tumbling or
/// hopping, or rows carrying their window; a final phase reads a partial
/// phase's output: the window, then
/// every aggregate's state columns. Neither has keys. Returns, for the final
/// phase, each aggregate's state columns in the input.
fn validate_phase(ctx: &str, spec: &WindowAggSpec) -> Result<Vec<Range<usize>>> {
    let phase = spec.phase;
    if phase == AggPhase::Single {
        return Ok(Vec::new());
    }
    if !spec.keys.is_empty() {
        return Err(Error::plan(format!(
            "{ctx}: a {phase:?} phase has no keys (two phases are for aggregates without keys)"
        )));
    }
    let kind = spec.assign.kind();
    match (phase, &spec.assign) {
        (AggPhase::Partial, WindowAssign::Time { .. })
            if !matches!(kind, Some(WindowKind::Session { .. })) => {}
        (AggPhase::Partial | AggPhase::Final, WindowAssign::Column { .. }) => {}
        _ => {
            return Err(Error::plan(format!(
                "{ctx}: a {phase:?} phase cannot read {}: a partial phase reads tumbling or hopping windows of event time or a window column, a final phase the window column of a partial one",
                spec.assign.describe()
            )));
        }
    }
    if phase == AggPhase::Partial {
        return Ok(Vec::new());
    }
    let states = phase::state_fields(&spec.aggs)?;
    let input = spec.input_schema.fields();
    let found: Vec<&DataType> = input.iter().skip(1).map(|f| f.data_type()).collect();
    let wanted: Vec<&DataType> = states.iter().map(|f| f.data_type()).collect();
    if found != wanted {
        return Err(Error::plan(format!(
            "{ctx}: a final phase reads the window and then the aggregates' states {wanted:?}; its input has {found:?} after column 0"
        )));
    }
    phase::state_columns(&spec.aggs)
}

/// The output schema has one group column per key plus the window, then one
/// column per aggregate (per state column in a partial phase), with the
/// types they produce. Returns the row-format fields of the keys.
fn validate_output(ctx: &str, spec: &WindowAggSpec) -> Result<Vec<DataType>> {
    let out = spec.output_schema.as_ref();
    let produced: Vec<(String, DataType)> = match spec.phase {
        AggPhase::Partial => phase::state_fields(&spec.aggs)?
            .iter()
            .map(|f| (format!("state '{}'", f.name()), f.data_type().clone()))
            .collect(),
        AggPhase::Single | AggPhase::Final => spec
            .aggs
            .iter()
            .map(|a| {
                let what = format!("aggregate '{}'", a.aggregate.name());
                (what, a.aggregate.field().data_type().clone())
            })
            .collect(),
    };
    let (nkeys, naggs) = (spec.keys.len(), produced.len());
    if spec.window_position > nkeys {
        return Err(Error::plan(format!(
            "{ctx}: window position {} is out of range for {nkeys} key(s) (expected 0..={nkeys})",
            spec.window_position
        )));
    }
    if out.fields().len() != nkeys + 1 + naggs {
        return Err(Error::plan(format!(
            "{ctx}: output schema has {} column(s); expected {} ({nkeys} key(s), the window, {naggs} aggregate column(s))",
            out.fields().len(),
            nkeys + 1 + naggs
        )));
    }
    if let Ok(i) = out.index_of(ENTERED_COLUMN) {
        return Err(Error::plan(format!(
            "{ctx}: output column {i} is named '{ENTERED_COLUMN}', which the engine reserves"
        )));
    }
    let expect_type = |index: usize, what: String, produced: &DataType| {
        let field = out.field(index);
        if field.data_type() == produced {
            Ok(())
        } else {
            Err(Error::plan(format!(
                "{ctx}: output column {index} ('{}') is declared {} but {what} produces {produced}",
                field.name(),
                field.data_type()
            )))
        }
    };
    expect_type(spec.window_position, "the window".into(), &window_type())?;

    let mut key_types = Vec::with_capacity(nkeys);
    for (k, key) in spec.keys.iter().enumerate() {
        let dt = key.data_type(&spec.input_schema).map_err(df_err)?;
        expect_type(
            group_column(k, spec.window_position),
            format!("key {key}"),
            &dt,
        )?;
        key_types.push(dt);
    }
    let key_fields: Vec<SortField> = key_types.iter().cloned().map(SortField::new).collect();
    if !RowConverter::supports_fields(&key_fields) {
        let types: Vec<String> = key_types.iter().map(|t| t.to_string()).collect();
        return Err(Error::plan(format!(
            "{ctx}: GROUP BY keys of types [{}] cannot be grouped on",
            types.join(", ")
        )));
    }
    for (a, (what, dt)) in produced.into_iter().enumerate() {
        expect_type(nkeys + 1 + a, what, &dt)?;
    }
    Ok(key_types)
}

/// Output position of key `k`: keys before the window keep their index,
/// later ones shift by one.
fn group_column(k: usize, window_position: usize) -> usize {
    if k < window_position { k } else { k + 1 }
}

/// Grouped accumulators for one window, one per aggregate: DataFusion's own
/// when the function has one, else its scalar accumulator behind the adapter.
fn new_groups_accumulators(aggs: &[LoweredAggregate]) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
    aggs.iter()
        .map(|agg| {
            let expr = agg.aggregate.clone();
            if expr.groups_accumulator_supported() {
                expr.create_groups_accumulator().map_err(df_err)
            } else {
                Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                    expr.create_accumulator()
                })) as Box<dyn GroupsAccumulator>)
            }
        })
        .collect()
}

/// Scalar accumulators for one session, one per aggregate.
fn new_accumulators(aggs: &[LoweredAggregate]) -> Result<Vec<Box<dyn Accumulator>>> {
    aggs.iter()
        .map(|agg| agg.aggregate.create_accumulator().map_err(df_err))
        .collect()
}
