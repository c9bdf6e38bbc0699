//! What the rescales of the stateful SQL operators share
//! (`OperatorFactory::rescale`; the contract is in `millrace_core::state`):
//! where each piece of state goes, and how the values that belong to no key
//! merge.
//!
//! **Placement.** The planner partitions a keyed operator's input by hash
//! (`Partitioning::Hash`) over its key columns, or, when it has no keys but
//! its rows carry their window as a column, over that column; without
//! either, every row goes to one instance ([`Partitioned`]). A rescale puts
//! each piece of state where the runtime will route the rows that meet it:
//! it evaluates the same key values from the state (the buffered rows, or
//! the key columns a window aggregate keeps) and places them with the
//! exchange's own hash (`millrace_core::key_groups`).
//!
//! **Progress** ([`merge_progress`]): values that are not keyed are merged
//! by a rule per value, each with its reason at [`Merge`].

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use millrace_core::key_groups::instances_of_rows;
use millrace_core::state::scalar;
use millrace_core::{Error, Result, Snapshot};

use crate::window::window_array;

/// How the planner partitions an operator's input between its instances,
/// which decides where its state may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Partitioned {
    /// By the values of the operator's key expressions: state goes to the
    /// instance owning its key's key group.
    ByKeys,
    /// Without keys, by the window column the rows carry: a window's state
    /// goes to the instance owning the window's key group.
    ByWindow,
    /// Not at all: with no keys and windows of event time every row meets
    /// at one instance, so the planner runs the operator at parallelism 1
    /// and its state has nowhere else to go.
    OneInstance,
}

impl Partitioned {
    /// The partitioning the planner gives an operator with keys
    /// (`has_keys`) or, without, with windows carried in a column by every
    /// input (`carried_windows`).
    pub(crate) fn of(has_keys: bool, carried_windows: bool) -> Self {
        match (has_keys, carried_windows) {
            (true, _) => Partitioned::ByKeys,
            (false, true) => Partitioned::ByWindow,
            (false, false) => Partitioned::OneInstance,
        }
    }
}

/// The rescale of an operator whose input is not partitioned: only from
/// one instance to one (where it is the identity); `name` is the operator.
pub(crate) fn one_instance_only(
    name: &str,
    old: &[Snapshot],
    parallelism: usize,
) -> Result<Vec<Snapshot>> {
    if old.len() == 1 && parallelism == 1 {
        return Ok(old.to_vec());
    }
    Err(Error::Other(format!(
        "operator '{name}' cannot be restored at another parallelism: without keys or \
         carried windows every row goes to one instance, so it runs at parallelism 1 \
         (the checkpoint has {} instance(s), the restore asks for {parallelism})",
        old.len()
    )))
}

/// For each row of `keys` (the key values, evaluated as the exchange
/// hashes them: same columns, same order, same Arrow types), the instance
/// of `parallelism` that will receive that key's rows.
pub(crate) fn owners_by_keys(
    keys: &[ArrayRef],
    rows: usize,
    parallelism: usize,
) -> Result<Vec<usize>> {
    let columns: Vec<&ArrayRef> = keys.iter().collect();
    instances_of_rows(&columns, rows, parallelism)
}

/// For each window `[starts[i], ends[i])`, the instance of `parallelism`
/// that will receive the rows carrying it: the exchange hashes the window
/// column, a non-null struct of two millisecond timestamps, rebuilt here.
pub(crate) fn owners_by_window(
    starts: &[i64],
    ends: &[i64],
    parallelism: usize,
) -> Result<Vec<usize>> {
    let windows = window_array(starts.to_vec(), ends.to_vec());
    instances_of_rows(&[&windows], starts.len(), parallelism)
}

/// The rows of `batch` each instance of `parallelism` owns (`owners[r]`
/// owns row `r`), in their order; instances owning none get no rows.
pub(crate) fn split_by_owner(
    batch: &RecordBatch,
    owners: &[usize],
    parallelism: usize,
) -> Result<Vec<RecordBatch>> {
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); parallelism];
    for (row, &owner) in owners.iter().enumerate() {
        rows[owner].push(row as u32);
    }
    rows.into_iter()
        .map(|rows| Ok(take_record_batch(batch, &UInt32Array::from(rows))?))
        .collect()
}

/// How one progress value of the old instances becomes the new instances'
/// (the same for all of them). A missing value (`None`) is the one an
/// instance has before any input: no watermark, no row entered.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Merge {
    /// The smallest, `None` if any is. For the watermark: behind a hash
    /// exchange every instance has received the same watermarks (control
    /// messages go to every instance), so the values agree; where they do
    /// not, the smallest never declares late a row the old run would have
    /// let in. Also for the time the next watermark is forwarded at: a
    /// watermark forwarded early costs a message, never a result.
    Min,
    /// The largest of those present. For the largest entered time seen,
    /// which an end-of-input firing gives its rows (latency bookkeeping:
    /// the new instance has seen every row the old ones had); for top-N
    /// arrival numbers, so that rows arriving after the restore rank after
    /// every row restored.
    Max,
}

/// The `table` of scalars (`millrace_core::state::scalars`) every new
/// instance continues from: each value of `rules` merged over the old
/// instances' tables. An empty old snapshot (an instance that kept nothing)
/// counts as one that never received input.
pub(crate) fn merge_progress(
    operator: &str,
    old: &[Snapshot],
    table: &str,
    rules: &[(&str, Merge)],
) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(rules.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(rules.len());
    for &(name, merge) in rules {
        let mut values = Vec::with_capacity(old.len());
        for snapshot in old {
            if snapshot.is_empty() {
                values.push(None);
                continue;
            }
            let progress = snapshot
                .table(table)
                .map_err(|e| Error::Other(format!("{operator} {e}")))?;
            values.push(
                scalar(progress, name).map_err(|e| Error::Other(format!("{operator}: {e}")))?,
            );
        }
        let merged = match merge {
            Merge::Min => values
                .iter()
                .copied()
                .collect::<Option<Vec<i64>>>()
                .and_then(|v| v.into_iter().min()),
            Merge::Max => values.iter().flatten().copied().max(),
        };
        fields.push(Field::new(name, DataType::Int64, true));
        columns.push(Arc::new(Int64Array::from(vec![merged])));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_core::state::scalars;

    #[test]
    fn progress_merges_by_its_rules_and_an_empty_snapshot_never_received_input() {
        let of = |wm: i64, entered: Option<i64>| {
            Snapshot::none().with(
                "progress",
                scalars(&[("watermark", Some(wm)), ("max_entered", entered)]),
            )
        };
        let rules = [("watermark", Merge::Min), ("max_entered", Merge::Max)];
        let merged =
            merge_progress("op", &[of(7, None), of(5, Some(3))], "progress", &rules).unwrap();
        assert_eq!(scalar(&merged, "watermark").unwrap(), Some(5));
        assert_eq!(scalar(&merged, "max_entered").unwrap(), Some(3));
        let with_fresh = [of(7, Some(9)), Snapshot::none()];
        let merged = merge_progress("op", &with_fresh, "progress", &rules).unwrap();
        assert_eq!(scalar(&merged, "watermark").unwrap(), None);
        assert_eq!(scalar(&merged, "max_entered").unwrap(), Some(9));
        let other = Snapshot::none().with("x", scalars(&[("a", Some(1))]));
        let err = merge_progress("op", &[other], "progress", &rules)
            .unwrap_err()
            .to_string();
        assert!(err.contains("op") && err.contains("'progress'"), "{err}");
    }

    #[test]
    fn rows_split_by_owner_keep_their_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let v: ArrayRef = Arc::new(Int64Array::from(vec![10, 11, 12, 13]));
        let batch = RecordBatch::try_new(schema, vec![v]).unwrap();
        let parts = split_by_owner(&batch, &[2, 0, 2, 2], 3).unwrap();
        let sizes: Vec<usize> = parts.iter().map(|p| p.num_rows()).collect();
        assert_eq!(sizes, [1, 0, 3]);
        assert_eq!(
            parts[2].column(0).as_ref(),
            &Int64Array::from(vec![10, 12, 13])
        );
    }

    #[test]
    fn an_operator_without_partitioned_input_only_rescales_one_to_one() {
        let one = vec![Snapshot::none().with("progress", scalars(&[("watermark", Some(1))]))];
        assert_eq!(one_instance_only("top_n", &one, 1).unwrap().len(), 1);
        let err = one_instance_only("top_n", &one, 2).unwrap_err().to_string();
        assert!(
            err.contains("operator 'top_n' cannot be restored at another parallelism"),
            "{err}"
        );
    }
}
