//! A top-N's state at another parallelism (`OperatorFactory::rescale`).
//!
//! Each partition of a window (its candidates and its last cut) goes to
//! the instance that will receive its rows:
//!
//! * **With PARTITION BY keys**, the planner routes the input by the key
//!   columns (the spec's keys are those columns), so a partition goes with
//!   the key group of its keys, evaluated again from its rows.
//! * **Without keys, over a carried window column**, the input is routed
//!   by that column (one phase, or the final phase of two): a window goes
//!   with the window, rebuilt from its bounds. The partial phase of two
//!   (`RANK()` only) reads its input where it is; its candidates are
//!   merged per window downstream, so any placement is right, and they are
//!   spread the same way.
//! * **Without either** every row meets at one instance (parallelism 1):
//!   only 1 → 1.
//!
//! Where old instances held the same partition of a window (a partial
//! phase, whose input was not routed by key), its candidates are put
//! together as not yet cut: with ties (`RANK()`), which rows rank within
//! the limit depends only on the rows, so the firing's cut keeps what one
//! instance would have. Without ties, equal rows rank by arrival, which
//! the old instances' numbers do not order between them: refused. That
//! happens only to an input not routed by key, which the planner never
//! gives a `ROW_NUMBER()` top-N.
//!
//! Progress: the watermark merges by its minimum, the largest entered time
//! and the next arrival number by their maximum (reasons at
//! `crate::rescale::Merge`).

use std::collections::BTreeMap;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use millrace_core::{Error, Result, Snapshot};

use super::batch_best::BatchBest;
use super::state::{
    PROGRESS, SavedCut, SavedHeld, SavedRanked, SavedWindows, read_windows, write_state,
};
use super::{TopNFactory, converter, encode};
use crate::FastMap;
use crate::rescale::{
    Merge, Partitioned, merge_progress, one_instance_only, owners_by_keys, owners_by_window,
};
use crate::window::{WindowAssign, evaluate};

/// One partition of a window bound for a new instance.
struct Part {
    rows: Vec<RecordBatch>,
    seqs: Vec<u64>,
    cut: SavedCut,
}

/// The partitions of one window bound for a new instance, in order of
/// first appearance, found by their PARTITION BY key bytes.
#[derive(Default)]
struct Parts {
    parts: Vec<Part>,
    index: FastMap<Box<[u8]>, usize>,
}

pub(super) fn rescale(
    factory: &TopNFactory,
    old: &[Snapshot],
    parallelism: usize,
) -> Result<Vec<Snapshot>> {
    let spec = &factory.spec;
    if old.iter().all(Snapshot::is_empty) {
        return Ok(vec![Snapshot::none(); parallelism]);
    }
    let partitioned = Partitioned::of(
        !spec.partition_keys.is_empty(),
        matches!(spec.window, WindowAssign::Column { .. }),
    );
    if partitioned == Partitioned::OneInstance {
        return one_instance_only(&spec.name, old, parallelism);
    }
    let what = format!("top-N '{}'", spec.name);
    let rules = [
        ("watermark", Merge::Min),
        ("max_entered", Merge::Max),
        ("next_seq", Merge::Max),
    ];
    let progress = merge_progress(&what, old, PROGRESS, &rules)?;
    let held = BatchBest::new(spec).is_some();
    let keys = converter(&factory.partition_fields)?;
    // Per new instance, its windows by (end, start).
    let mut ranked: Vec<BTreeMap<(i64, i64), Parts>> =
        (0..parallelism).map(|_| BTreeMap::new()).collect();
    let mut holding: Vec<BTreeMap<(i64, i64), SavedHeld>> =
        (0..parallelism).map(|_| BTreeMap::new()).collect();
    let merge_refused = |start: i64, end: i64| {
        Error::Other(format!(
            "{what} cannot be restored at another parallelism: two instances held a \
             partition of window [{start}, {end}), and without ties (ROW_NUMBER) its equal \
             rows rank by an arrival order the two do not share"
        ))
    };
    for snapshot in old.iter().filter(|s| !s.is_empty()) {
        match read_windows(snapshot, &spec.input_schema, held)? {
            SavedWindows::Held(windows) => {
                // Held windows have no PARTITION BY keys: they go by window.
                for w in windows {
                    let owner = owners_by_window(&[w.start], &[w.end], parallelism)?[0];
                    match holding[owner].get_mut(&(w.end, w.start)) {
                        None => {
                            holding[owner].insert((w.end, w.start), w);
                        }
                        Some(_) if !spec.ties => return Err(merge_refused(w.start, w.end)),
                        Some(mine) => {
                            mine.rows.extend(w.rows);
                            mine.kept += w.kept;
                        }
                    }
                }
            }
            SavedWindows::Ranked(windows) => {
                for w in windows {
                    let n = w.rows.num_rows();
                    let owners = match partitioned {
                        Partitioned::ByKeys => {
                            let values = spec
                                .partition_keys
                                .iter()
                                .map(|k| evaluate(k, &w.rows))
                                .collect::<Result<Vec<_>>>()?;
                            owners_by_keys(&values, n, parallelism)?
                        }
                        _ => vec![owners_by_window(&[w.start], &[w.end], parallelism)?[0]; n],
                    };
                    let key_rows = encode(&keys, &spec.partition_keys, &w.rows)?;
                    let mut offset = 0;
                    for cut in &w.partitions {
                        if cut.rows == 0 || offset + cut.rows > n {
                            return Err(Error::Other(format!(
                                "{what} snapshot is corrupt: window [{}, {}) has a partition of {} rows at row {offset} of {n}",
                                w.start, w.end, cut.rows
                            )));
                        }
                        let windows = &mut ranked[owners[offset]];
                        let parts = windows.entry((w.end, w.start)).or_default();
                        let rows = w.rows.slice(offset, cut.rows);
                        let seqs = w.seqs[offset..offset + cut.rows].to_vec();
                        let key: Box<[u8]> = key_rows.row(offset).data().into();
                        match parts.index.get(&key) {
                            None => {
                                parts.index.insert(key, parts.parts.len());
                                parts.parts.push(Part {
                                    rows: vec![rows],
                                    seqs,
                                    cut: *cut,
                                });
                            }
                            Some(_) if !spec.ties => return Err(merge_refused(w.start, w.end)),
                            Some(&i) => {
                                let part = &mut parts.parts[i];
                                part.rows.push(rows);
                                part.seqs.extend(seqs);
                                part.cut = SavedCut {
                                    rows: part.seqs.len(),
                                    kept: 0,
                                    cutoff: None,
                                };
                            }
                        }
                        offset += cut.rows;
                    }
                }
            }
        }
    }
    let schema = &spec.input_schema;
    (0..parallelism)
        .map(|j| {
            let windows = if held {
                SavedWindows::Held(std::mem::take(&mut holding[j]).into_values().collect())
            } else {
                let windows = std::mem::take(&mut ranked[j])
                    .into_iter()
                    .map(|((end, start), parts)| {
                        let batches = parts.parts.iter().flat_map(|p| &p.rows);
                        Ok(SavedRanked {
                            start,
                            end,
                            rows: concat_batches(schema, batches)?,
                            seqs: parts.parts.iter().flat_map(|p| &p.seqs).copied().collect(),
                            partitions: parts.parts.iter().map(|p| p.cut).collect(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                SavedWindows::Ranked(windows)
            };
            write_state(schema, &windows, progress.clone())
        })
        .collect()
}
