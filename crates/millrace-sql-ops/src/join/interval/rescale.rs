//! An interval join's state at another parallelism
//! (`OperatorFactory::rescale`).
//!
//! With keys, the planner routes each input by its key columns (the spec's
//! keys are those columns), so each buffered row goes to the instance
//! owning the key group of its keys, evaluated again from the row (equal
//! keys of the two inputs have one type, so one key group). A row keeps its
//! match flag. Without keys every row meets at one instance (parallelism
//! 1): only 1 → 1.
//!
//! A new instance buffers the old instances' batches one old instance
//! after the other: a key's rows all come from one old instance, in their
//! order, and the order across keys only orders the padded rows of equal
//! time that expire together. The watermark merges by its minimum, the
//! largest entered time by its maximum (reasons at `crate::rescale::Merge`).

use millrace_core::{Result, Snapshot};

use super::IntervalJoinSpec;
use super::state::{PROGRESS, SavedBatch, read_sides, write_state};
use crate::rescale::{
    Merge, Partitioned, merge_progress, one_instance_only, owners_by_keys, split_by_owner,
};
use crate::window::evaluate;

pub(super) fn rescale(
    spec: &IntervalJoinSpec,
    old: &[Snapshot],
    parallelism: usize,
) -> Result<Vec<Snapshot>> {
    if old.iter().all(Snapshot::is_empty) {
        return Ok(vec![Snapshot::none(); parallelism]);
    }
    if Partitioned::of(!spec.left_keys.is_empty(), false) == Partitioned::OneInstance {
        return one_instance_only(&spec.name, old, parallelism);
    }
    let what = format!("interval join '{}'", spec.name);
    let rules = [("watermark", Merge::Min), ("max_entered", Merge::Max)];
    let progress = merge_progress(&what, old, PROGRESS, &rules)?;
    let schemas = [&spec.left_schema, &spec.right_schema];
    let keys = [&spec.left_keys, &spec.right_keys];
    let mut new: Vec<[Vec<SavedBatch>; 2]> =
        (0..parallelism).map(|_| [Vec::new(), Vec::new()]).collect();
    for snapshot in old.iter().filter(|s| !s.is_empty()) {
        for (input, batches) in read_sides(snapshot, schemas)?.into_iter().enumerate() {
            for batch in batches {
                let values = keys[input]
                    .iter()
                    .map(|k| evaluate(k, &batch.rows))
                    .collect::<Result<Vec<_>>>()?;
                let owners = owners_by_keys(&values, batch.rows.num_rows(), parallelism)?;
                let parts = split_by_owner(&batch.rows, &owners, parallelism)?;
                for (owner, rows) in parts.into_iter().enumerate() {
                    if rows.num_rows() == 0 {
                        continue;
                    }
                    let matched = (0..owners.len())
                        .filter(|&r| owners[r] == owner)
                        .map(|r| batch.matched[r])
                        .collect();
                    new[owner][input].push(SavedBatch { rows, matched });
                }
            }
        }
    }
    new.iter()
        .map(|sides| write_state(schemas, sides, progress.clone()))
        .collect()
}
