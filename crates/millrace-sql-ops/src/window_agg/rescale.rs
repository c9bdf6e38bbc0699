//! A window aggregate's state at another parallelism
//! (`OperatorFactory::rescale`).
//!
//! Every open group (a row of the `groups` table: window, key, accumulator
//! states) goes to the instance that will receive its rows:
//!
//! * **With keys**, the planner routes the input by the key columns, which
//!   the group keys are (`keyed` in the SQL planner: the spec's keys are
//!   those columns). The table keeps the keys decoded in their declared
//!   types, so hashing them gives the exchange's key group.
//! * **Without keys, over carried windows** (one phase, or the final phase
//!   of two), the input is routed by the window column: a group goes with
//!   its window, rebuilt from the bounds.
//! * **A partial phase** reads its input where it is (forwarded, not
//!   routed), and the final phase merges its states per window, so any
//!   placement is right; groups are spread by window like the final
//!   phase's input. Old instances may each hold a part of one window's
//!   aggregate: those parts are merged (`Repeats::Merge`).
//! * **Without keys over windows of event time** every row meets at one
//!   instance (parallelism 1): only 1 → 1.
//!
//! The progress values merge by the rules the operator gives
//! (`Rebuild::progress_rules`), the same for every new instance. Each new
//! operator is built as a restore builds one and hands over its snapshot,
//! so what a rescale writes is what a snapshot would.

use millrace_core::{Error, Result, Snapshot};

use super::state::{GROUPS, PROGRESS, Rebuild, Repeats, key_columns, window_bounds};
use super::{AggPhase, WindowAggFactory};
use crate::rescale::{
    Partitioned, merge_progress, one_instance_only, owners_by_keys, owners_by_window,
    split_by_owner,
};
use crate::window::WindowAssign;

pub(super) fn rescale(
    factory: &WindowAggFactory,
    old: &[Snapshot],
    parallelism: usize,
) -> Result<Vec<Snapshot>> {
    let plan = &factory.plan;
    let spec = &plan.spec;
    if old.iter().all(Snapshot::is_empty) {
        return Ok(vec![Snapshot::none(); parallelism]);
    }
    let partitioned = match spec.phase {
        AggPhase::Partial => Partitioned::ByWindow,
        AggPhase::Single | AggPhase::Final => Partitioned::of(
            !spec.keys.is_empty(),
            matches!(spec.assign, WindowAssign::Column { .. }),
        ),
    };
    if partitioned == Partitioned::OneInstance {
        return one_instance_only(&spec.name, old, parallelism);
    }
    if parallelism == 0 {
        return Err(Error::Other(format!(
            "operator '{}': cannot restore at parallelism 0",
            spec.name
        )));
    }
    let mut new: Vec<Box<dyn Rebuild>> = (0..parallelism)
        .map(|_| factory.fresh())
        .collect::<Result<_>>()?;
    let what = format!("window aggregate '{}'", spec.name);
    let progress = merge_progress(&what, old, PROGRESS, new[0].progress_rules())?;
    for op in &mut new {
        op.continue_from(&progress)?;
    }
    for snapshot in old.iter().filter(|s| !s.is_empty()) {
        let groups = snapshot
            .table(GROUPS)
            .map_err(|e| Error::Other(format!("{what} {e}")))?;
        let (starts, ends) = window_bounds(plan, groups)?;
        let owners = match partitioned {
            Partitioned::ByKeys => {
                owners_by_keys(&key_columns(plan, groups)?, starts.len(), parallelism)?
            }
            _ => owners_by_window(&starts, &ends, parallelism)?,
        };
        for (op, part) in new
            .iter_mut()
            .zip(split_by_owner(groups, &owners, parallelism)?)
        {
            op.absorb(&part, Repeats::Merge)?;
        }
    }
    new.iter_mut().map(|op| op.snapshot()).collect()
}
