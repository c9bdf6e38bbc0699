//! A window aggregate's snapshot and its restore (the state contract of
//! `millrace_core::state`).
//!
//! Two tables:
//! * `groups`: one row per open (window, group): `start`, `end` (ms), the
//!   group's key columns (decoded, in their declared types), then every
//!   aggregate's intermediate state columns (DataFusion's `state`, the
//!   values a partial aggregate hands to a final one). Rows of one window
//!   (fixed windows) are contiguous, in group order.
//! * `progress`: the watermark and the other scalars the operator keeps.
//!
//! Taking an accumulator's state drains it, so a snapshot rebuilds each
//! accumulator from the state it just took (`merge_batch` into a fresh one):
//! exactly what a restore does, so the operator that goes on after a
//! snapshot is the one a recovery would build.
//!
//! A restore and a rescale (`rescale.rs`) build an operator the same way
//! ([`Rebuild`]): a fresh one takes over a `progress` table, then absorbs
//! `groups` rows, its own snapshot's or those it owns of every old
//! instance's.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, new_empty_array};
use arrow::compute::{cast, concat};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Accumulator, GroupsAccumulator};
use millrace_core::{Error, Operator, Result, Snapshot};

use super::keys::{BatchKeys, KeyCodec};
use super::{Plan, new_accumulators, new_groups_accumulators};
use crate::df_err;
use crate::rescale::Merge;

pub(super) const GROUPS: &str = "groups";
pub(super) const PROGRESS: &str = "progress";

/// A window aggregate operator built from snapshot tables.
pub(super) trait Rebuild: Operator {
    /// How each value of its `progress` table merges over old instances in
    /// a rescale.
    fn progress_rules(&self) -> &'static [(&'static str, Merge)];

    /// Takes over the watermark bookkeeping of a `progress` table.
    fn continue_from(&mut self, progress: &RecordBatch) -> Result<()>;

    /// Opens the groups of `groups`, rows of a `groups` table, merging
    /// them into the windows already open. A group whose window and key
    /// are already open is `repeats`.
    fn absorb(&mut self, groups: &RecordBatch, repeats: Repeats) -> Result<()>;
}

/// What [`Rebuild::absorb`] does with a group already open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Repeats {
    /// Refuse it: one snapshot never holds a group twice, so it is corrupt.
    Refuse,
    /// Merge the two accumulator states: old instances of a partial phase
    /// each hold part of one window's aggregate.
    Merge,
}

/// Fills `op`, a fresh operator, with `state`, a snapshot of its own kind.
pub(super) fn restore(op: &mut dyn Rebuild, state: &Snapshot) -> Result<()> {
    op.continue_from(state.table(PROGRESS)?)?;
    op.absorb(state.table(GROUPS)?, Repeats::Refuse)
}

/// The `groups` table from its columns: window bounds, key columns, and
/// state columns (each the concatenation of its parts).
pub(super) fn groups_table(
    starts: Vec<i64>,
    ends: Vec<i64>,
    keys: Vec<ArrayRef>,
    states: Vec<Vec<ArrayRef>>,
) -> Result<RecordBatch> {
    let rows = starts.len();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(starts)),
        Arc::new(Int64Array::from(ends)),
    ];
    let mut fields = vec![
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
    ];
    for (k, key) in keys.into_iter().enumerate() {
        fields.push(Field::new(format!("key{k}"), key.data_type().clone(), true));
        columns.push(key);
    }
    for (s, parts) in states.into_iter().enumerate() {
        let column = match parts.as_slice() {
            [one] => one.clone(),
            _ => concat(
                &parts
                    .iter()
                    .map(|a| a.as_ref())
                    .collect::<Vec<&dyn Array>>(),
            )?,
        };
        fields.push(Field::new(
            format!("state{s}"),
            column.data_type().clone(),
            true,
        ));
        columns.push(column);
    }
    let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &options,
    )?)
}

/// The `groups` table read back: bounds, keys as bytes of `codec`, and
/// each aggregate's state columns.
pub(super) struct GroupRows {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub keys: BatchKeys,
    /// Per aggregate, its state columns over every row.
    pub states: Vec<Vec<ArrayRef>>,
}

impl GroupRows {
    pub(super) fn read(plan: &Plan, codec: &KeyCodec, table: &RecordBatch) -> Result<Self> {
        let (starts, ends) = window_bounds(plan, table)?;
        let mut states = Vec::with_capacity(plan.state_widths.len());
        let mut next = 2 + plan.key_types.len();
        for &w in &plan.state_widths {
            states.push(table.columns()[next..next + w].to_vec());
            next += w;
        }
        Ok(Self {
            starts,
            ends,
            keys: codec.encode(&key_columns(plan, table)?)?,
            states,
        })
    }

    /// Rows `offset..offset + len` of each aggregate's state columns.
    pub(super) fn states_at(&self, offset: usize, len: usize) -> Vec<Vec<ArrayRef>> {
        self.states
            .iter()
            .map(|columns| columns.iter().map(|c| c.slice(offset, len)).collect())
            .collect()
    }
}

/// The window bounds of a `groups` table, after checking that it has the
/// columns of this plan's (bounds, keys, states).
pub(super) fn window_bounds(plan: &Plan, table: &RecordBatch) -> Result<(Vec<i64>, Vec<i64>)> {
    let nkeys = plan.key_types.len();
    let expected = 2 + nkeys + plan.state_widths.iter().sum::<usize>();
    if table.num_columns() != expected {
        return Err(corrupt(format!(
            "{} columns, expected {expected} (bounds, {nkeys} key(s), {} state column(s))",
            table.num_columns(),
            expected - 2 - nkeys
        )));
    }
    let bound = |i: usize| -> Result<Vec<i64>> {
        let column = table
            .column(i)
            .as_primitive_opt::<Int64Type>()
            .filter(|c| c.null_count() == 0)
            .ok_or_else(|| corrupt("window bounds are not non-null Int64".into()))?;
        Ok(column.values().to_vec())
    };
    Ok((bound(0)?, bound(1)?))
}

/// The group key columns of a `groups` table in the keys' declared types:
/// the values, and types, the input's key columns had (the planner routes
/// the input by exactly these columns).
pub(super) fn key_columns(plan: &Plan, table: &RecordBatch) -> Result<Vec<ArrayRef>> {
    plan.key_types
        .iter()
        .enumerate()
        .map(|(k, dt)| {
            let column = table
                .columns()
                .get(2 + k)
                .ok_or_else(|| corrupt(format!("key column {k} is missing")))?;
            Ok(cast(column, dt)?)
        })
        .collect()
}

/// Takes every aggregate's state over all its groups (draining them) and
/// replaces the accumulators with fresh ones holding that state: returns
/// the state columns, aggregate after aggregate.
pub(super) fn take_groups_states(
    plan: &Plan,
    accs: &mut Vec<Box<dyn GroupsAccumulator>>,
    num_groups: usize,
) -> Result<Vec<ArrayRef>> {
    let mut per_agg = Vec::with_capacity(accs.len());
    for acc in accs.iter_mut() {
        per_agg.push(
            acc.state(datafusion::logical_expr::EmitTo::All)
                .map_err(df_err)?,
        );
    }
    *accs = groups_accumulators_from(plan, &per_agg, num_groups)?;
    Ok(per_agg.into_iter().flatten().collect())
}

/// Fresh grouped accumulators holding `states` (per aggregate, its state
/// columns, one row per group `0..num_groups`).
pub(super) fn groups_accumulators_from(
    plan: &Plan,
    states: &[Vec<ArrayRef>],
    num_groups: usize,
) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
    let mut accs = new_groups_accumulators(&plan.spec.aggs)?;
    let groups: Vec<usize> = (0..num_groups).collect();
    for (acc, state) in accs.iter_mut().zip(states) {
        acc.merge_batch(state, &groups, num_groups)
            .map_err(df_err)?;
    }
    Ok(accs)
}

/// Takes one session's state (draining its accumulators) and replaces them
/// with fresh ones holding it: returns the state as one-row columns,
/// aggregate after aggregate.
pub(super) fn take_session_state(
    plan: &Plan,
    accs: &mut Vec<Box<dyn Accumulator>>,
) -> Result<Vec<Vec<ArrayRef>>> {
    let mut per_agg = Vec::with_capacity(accs.len());
    for acc in accs.iter_mut() {
        let values = acc.state().map_err(df_err)?;
        let columns = values
            .iter()
            .map(|v| v.to_array())
            .collect::<Result<Vec<_>, _>>()
            .map_err(df_err)?;
        per_agg.push(columns);
    }
    *accs = accumulators_from(plan, &per_agg)?;
    Ok(per_agg)
}

/// Fresh scalar accumulators holding `states` (per aggregate, its state
/// columns with one row).
pub(super) fn accumulators_from(
    plan: &Plan,
    states: &[Vec<ArrayRef>],
) -> Result<Vec<Box<dyn Accumulator>>> {
    let mut accs = new_accumulators(&plan.spec.aggs)?;
    for (acc, state) in accs.iter_mut().zip(states) {
        acc.merge_batch(state).map_err(df_err)?;
    }
    Ok(accs)
}

/// State columns without rows, one per state field (a snapshot with no
/// open window).
pub(super) fn empty_states(plan: &Plan) -> Result<Vec<Vec<ArrayRef>>> {
    Ok(super::phase::state_fields(&plan.spec.aggs)?
        .iter()
        .map(|f| vec![new_empty_array(f.data_type())])
        .collect())
}

/// Key columns without rows, one per key.
pub(super) fn empty_keys(plan: &Plan) -> Vec<ArrayRef> {
    plan.key_types.iter().map(new_empty_array).collect()
}

pub(super) fn corrupt(what: String) -> Error {
    Error::Other(format!("window aggregate snapshot is corrupt: {what}"))
}
