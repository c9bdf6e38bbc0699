//! Two-phase window aggregates: a partial phase where the rows are, a final
//! phase after the exchange.
//!
//! A window aggregate without keys sees every row of its input at one
//! instance. Run in one phase, every source batch crosses an exchange to
//! that instance, which then does all the work: at parallelism 1 it is the
//! pipeline's narrowest point, and at low load it receives thousands of
//! tiny batches and watermarks per second. Split in two, each upstream
//! instance folds its own rows into one accumulator state per window and
//! emits that state (DataFusion's `state`) when the window closes; the
//! final instance merges the states (`merge_batch`) and evaluates. The
//! exchange then carries one row per window and upstream instance.
//!
//! The final phase reads the window the partial rows carry, so it fires
//! once every partial instance has forwarded a watermark past the window's
//! end; a partial forwards a watermark only after firing the windows it
//! closes, so its row for a window always arrives before the watermark that
//! closes it in the final phase.

use std::ops::Range;
use std::sync::Arc;

use arrow::datatypes::{FieldRef, Schema};
use datafusion::physical_expr::aggregate::LoweredAggregate;
use datafusion::physical_expr::expressions::Column;
use millrace_core::{Error, Result};

use super::WindowAggSpec;
use crate::df_err;
use crate::window::{WindowAssign, WindowKind};

/// Which part of the aggregation an operator does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AggPhase {
    /// Rows in, final values out.
    #[default]
    Single,
    /// Rows in; per window, each aggregate's intermediate state out (its
    /// DataFusion `state_fields`, in order).
    Partial,
    /// States from the partial phase in (merged per window), final values
    /// out.
    Final,
}

/// The intermediate state columns of every aggregate, in order.
pub(super) fn state_fields(aggs: &[LoweredAggregate]) -> Result<Vec<FieldRef>> {
    let mut fields = Vec::new();
    for agg in aggs {
        fields.extend(agg.aggregate.state_fields().map_err(df_err)?);
    }
    Ok(fields)
}

/// Per aggregate, its state columns in a partial phase's output, which has
/// the window first.
pub(super) fn state_columns(aggs: &[LoweredAggregate]) -> Result<Vec<Range<usize>>> {
    let mut next = 1;
    aggs.iter()
        .map(|agg| {
            let n = agg.aggregate.state_fields().map_err(df_err)?.len();
            let range = next..next + n;
            next += n;
            Ok(range)
        })
        .collect()
}

impl WindowAggSpec {
    /// Whether [`Self::split_two_phase`] applies: one phase, no keys,
    /// tumbling or hopping windows of event time, or windows carried in a
    /// column (an aggregate over an earlier window aggregate's results).
    pub fn splits_in_two_phases(&self) -> bool {
        self.phase == AggPhase::Single
            && self.keys.is_empty()
            && matches!(
                self.assign,
                WindowAssign::Time {
                    kind: WindowKind::Tumble { .. } | WindowKind::Hop { .. },
                    ..
                } | WindowAssign::Column { .. }
            )
    }

    /// Splits a single-phase aggregate without keys over tumbling, hopping
    /// or carried windows into its partial and final phases (see the module
    /// doc). The final phase produces this spec's output.
    pub fn split_two_phase(&self) -> Result<(WindowAggSpec, WindowAggSpec)> {
        let ctx = &self.name;
        if !self.splits_in_two_phases() {
            return Err(Error::plan(format!(
                "{ctx}: only a single-phase aggregate without keys over tumbling or hopping windows of event time, or over a carried window, is split in two phases"
            )));
        }
        let window = self.output_schema.field(self.window_position).clone();
        let mut fields = vec![Arc::new(window.clone())];
        fields.extend(state_fields(&self.aggs)?);
        let states = Arc::new(Schema::new(fields));
        let partial = WindowAggSpec {
            name: format!("{ctx} (partial)"),
            output_schema: states.clone(),
            phase: AggPhase::Partial,
            emit_best: None,
            ..self.clone()
        };
        let last = WindowAggSpec {
            name: format!("{ctx} (final)"),
            input_schema: states,
            assign: WindowAssign::Column {
                window: Arc::new(Column::new(window.name(), 0)),
            },
            window_position: 0,
            phase: AggPhase::Final,
            ..self.clone()
        };
        Ok((partial, last))
    }
}
