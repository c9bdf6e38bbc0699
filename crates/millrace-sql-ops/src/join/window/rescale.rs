//! A window join's state at another parallelism
//! (`OperatorFactory::rescale`).
//!
//! Each buffered row goes to the instance that will receive the rows it
//! can still meet:
//!
//! * **With keys**, the planner routes each input by its key columns (the
//!   spec's keys are those columns), so each row's keys, evaluated again
//!   from the row, give the key group. Equal keys of the two inputs have
//!   the same type (the planner coerces them) and so the same key group.
//! * **Without keys, with both inputs carrying their window as a column**,
//!   the inputs are routed by that column: a window's rows go with the
//!   window.
//! * **Otherwise** every row meets at one instance (parallelism 1): only
//!   1 → 1.
//!
//! A window whose rows several old instances held (each its keys') is one
//! window at the new instance, the old instances' rows one after the
//! other: a window's output depends on which rows it holds, not on their
//! order across keys. The watermark merges by its minimum, the largest
//! entered time by its maximum (reasons at `crate::rescale::Merge`).

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use millrace_core::{Result, Snapshot};

use super::WindowJoinSpec;
use super::state::{PROGRESS, SavedWindow, read_windows, write_state};
use crate::rescale::{
    Merge, Partitioned, merge_progress, one_instance_only, owners_by_keys, owners_by_window,
    split_by_owner,
};
use crate::window::{WindowAssign, evaluate};

pub(super) fn rescale(
    spec: &WindowJoinSpec,
    old: &[Snapshot],
    parallelism: usize,
) -> Result<Vec<Snapshot>> {
    if old.iter().all(Snapshot::is_empty) {
        return Ok(vec![Snapshot::none(); parallelism]);
    }
    let carried = |w: &WindowAssign| matches!(w, WindowAssign::Column { .. });
    let partitioned = Partitioned::of(
        !spec.left_keys.is_empty(),
        carried(&spec.left_window) && carried(&spec.right_window),
    );
    if partitioned == Partitioned::OneInstance {
        return one_instance_only(&spec.name, old, parallelism);
    }
    let what = format!("window join '{}'", spec.name);
    let rules = [("watermark", Merge::Min), ("max_entered", Merge::Max)];
    let progress = merge_progress(&what, old, PROGRESS, &rules)?;
    let schemas = [&spec.left_schema, &spec.right_schema];
    let keys = [&spec.left_keys, &spec.right_keys];
    // Per new instance, its windows by (end, start): each input's rows.
    type Sides = [Vec<RecordBatch>; 2];
    let mut new: Vec<BTreeMap<(i64, i64), Sides>> = vec![BTreeMap::new(); parallelism];
    for snapshot in old.iter().filter(|s| !s.is_empty()) {
        for window in read_windows(snapshot, schemas)? {
            let id = (window.end, window.start);
            if partitioned == Partitioned::ByWindow {
                let owner = owners_by_window(&[window.start], &[window.end], parallelism)?[0];
                let sides = new[owner].entry(id).or_default();
                for (mine, rows) in sides.iter_mut().zip(window.sides) {
                    mine.extend(rows);
                }
                continue;
            }
            for (input, rows) in window.sides.into_iter().enumerate() {
                for batch in rows {
                    let values = keys[input]
                        .iter()
                        .map(|k| evaluate(k, &batch))
                        .collect::<Result<Vec<_>>>()?;
                    let owners = owners_by_keys(&values, batch.num_rows(), parallelism)?;
                    let parts = split_by_owner(&batch, &owners, parallelism)?;
                    for (windows, part) in new.iter_mut().zip(parts) {
                        if part.num_rows() > 0 {
                            windows.entry(id).or_default()[input].push(part);
                        }
                    }
                }
            }
        }
    }
    new.into_iter()
        .map(|windows| {
            let windows: Vec<SavedWindow> = windows
                .into_iter()
                .map(|((end, start), sides)| SavedWindow { start, end, sides })
                .collect();
            write_state(schemas, &windows, progress.clone())
        })
        .collect()
}
