//! Window aggregates over windows known row by row: tumbling, hopping, and
//! windows carried by the rows. Each open window keeps a key → group index
//! table (`key_table.rs`) and one DataFusion `GroupsAccumulator` per aggregate.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::compute::{concat, take};
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use millrace_core::state::{scalar, scalars};
use millrace_core::time::now_ns;
use millrace_core::{Emitter, Operator, Result, Snapshot, StateSize, Watermark};

use super::input::{BatchInputs, max_entered};
use super::key_table::KeyTable;
use super::keys::KeyCodec;
use super::output::{Fired, emit_fired};
use super::state::{
    GROUPS, GroupRows, PROGRESS, Rebuild, Repeats, corrupt, empty_keys, empty_states, groups_table,
    take_groups_states,
};
use super::{AggPhase, EmitBest, Plan, new_groups_accumulators};
use crate::rescale::Merge;
use crate::topn::no_worse_than_limit_th;
use crate::window::{Assignment, take_closed};
use crate::{FastMap, df_err};

/// Open windows are ordered by `(end, start)`: firing takes a prefix.
type WindowId = (i64, i64);

struct OpenWindow {
    /// Group keys (bytes from `keys.rs`; empty without keys) and their indices.
    groups: KeyTable,
    accs: Vec<Box<dyn GroupsAccumulator>>,
}

impl OpenWindow {
    /// Memory held: the key table, the accumulators.
    fn state(&self) -> StateSize {
        StateSize {
            bytes: self.groups.size() + self.accs.iter().map(|a| a.size()).sum::<usize>(),
            keys: self.groups.len(),
            key_bytes: self.groups.key_bytes(),
        }
    }
}

pub(super) struct FixedWindowOperator {
    plan: Arc<Plan>,
    codec: KeyCodec,
    windows: BTreeMap<WindowId, OpenWindow>,
    watermark: i64,
    max_entered: Option<i64>,
    /// Scratch for the window memberships of one batch.
    assignments: Vec<Assignment>,
    /// Scratch for the late rows of one batch.
    late: Vec<u32>,
    /// The most state held at once, measured before each firing.
    peak: StateSize,
    /// The next watermark is forwarded once it reaches this time.
    forward_at: i64,
    /// The windows the last watermark fired, freed at the next call rather
    /// than before their results have left the task (thousands of keys
    /// take tens of microseconds to free).
    retired: Vec<(WindowId, OpenWindow)>,
}

impl FixedWindowOperator {
    pub(super) fn new(plan: Arc<Plan>, codec: KeyCodec) -> Self {
        Self {
            plan,
            codec,
            windows: BTreeMap::new(),
            watermark: i64::MIN,
            max_entered: None,
            assignments: Vec::new(),
            late: Vec::new(),
            peak: StateSize::default(),
            forward_at: i64::MIN,
            retired: Vec::new(),
        }
    }

    /// Forwards `wm` when it reaches a window end, and no other time. The
    /// output rows carry their window and no event time, so consumers read
    /// time only through those windows: they close one when the watermark
    /// reaches its end, and a watermark between two ends tells them nothing.
    /// Upstream sends one watermark per source batch; a lightly loaded
    /// source sends batches of a few rows, and forwarding each would cost
    /// every hop after this one a message per batch. Carried windows end
    /// wherever the rows say, so then every watermark is forwarded.
    fn forward_watermark(&mut self, wm: Watermark, out: &mut Emitter) {
        if wm.time_ms < self.forward_at {
            return;
        }
        self.forward_at = match self.plan.spec.assign.kind() {
            Some(kind) => kind.next_end_after(self.watermark).unwrap_or(i64::MIN),
            None => i64::MIN,
        };
        out.watermark(wm);
    }

    /// Records the state held now if it is the most so far. Called before
    /// windows fire, when the state is at its largest.
    fn note_peak(&mut self) {
        let mut now = StateSize::default();
        for w in self.windows.values() {
            now += w.state();
        }
        if now.bytes > self.peak.bytes {
            self.peak = now;
        }
    }

    /// Adds rows `rows` (ascending, each once) of the batch to window `id`.
    fn update_window(&mut self, id: WindowId, rows: &[u32], inputs: &BatchInputs) -> Result<()> {
        let window = match self.windows.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(OpenWindow {
                groups: KeyTable::new(),
                accs: new_groups_accumulators(&self.plan.spec.aggs)?,
            }),
        };
        let groups: Vec<usize> = if self.codec.has_keys() {
            rows.iter()
                .map(|&r| window.groups.group_of(inputs.key(r)))
                .collect()
        } else {
            // Without keys every row is in the window's one group: no
            // per-row hashing.
            window.groups.group_of(&[]);
            vec![0; rows.len()]
        };
        let num_groups = window.groups.len();
        // A window holding every row of the batch (the common tumbling case)
        // reads the batch's arrays as they are.
        let indices = (rows.len() != inputs.num_rows()).then(|| UInt32Array::from(rows.to_vec()));
        let merge = self.plan.spec.phase == AggPhase::Final;
        for (a, acc) in window.accs.iter_mut().enumerate() {
            let (values, filter) = inputs.gather(a, indices.as_ref())?;
            if merge {
                acc.merge_batch(&values, &groups, num_groups)
            } else {
                acc.update_batch(&values, &groups, filter.as_ref(), num_groups)
            }
            .map_err(df_err)?;
        }
        Ok(())
    }

    /// Emits every window with `end <= up_to` (all of them for `None`).
    fn fire(&mut self, up_to: Option<i64>, entered_ns: i64, out: &mut Emitter) -> Result<()> {
        let mut fired = take_closed(&mut self.windows, up_to);
        if fired.is_empty() {
            // Nothing waits on this call: free what earlier firings left.
            self.retired.clear();
            return Ok(());
        }
        let aggs = evaluate_windows(&mut fired, self.plan.spec.phase)?;
        if let Some(best) = &self.plan.spec.emit_best {
            let result = best_groups(&fired, aggs, best)?;
            emit_fired(&self.plan, &self.codec, result, entered_ns, out)?;
            self.retired.append(&mut fired);
            return Ok(());
        }
        // Keys in group-index order, so they line up with the aggregates.
        let tables: Vec<&KeyTable> = fired.iter().map(|(_, w)| &w.groups).collect();
        let mut result = Fired {
            aggs,
            key_columns: Some(self.codec.decode_tables(&tables)?),
            ..Fired::default()
        };
        for &((end, start), ref window) in &fired {
            let n = window.groups.len();
            result.starts.extend(std::iter::repeat_n(start, n));
            result.ends.extend(std::iter::repeat_n(end, n));
        }
        emit_fired(&self.plan, &self.codec, result, entered_ns, out)?;
        self.retired.append(&mut fired);
        Ok(())
    }
}

impl Rebuild for FixedWindowOperator {
    /// The watermark and the next forwarding time by their minimum, the
    /// largest entered time by its maximum (reasons at [`Merge`]).
    fn progress_rules(&self) -> &'static [(&'static str, Merge)] {
        &[
            ("watermark", Merge::Min),
            ("forward_at", Merge::Min),
            ("max_entered", Merge::Max),
        ]
    }

    fn continue_from(&mut self, progress: &RecordBatch) -> Result<()> {
        self.watermark = scalar(progress, "watermark")?.unwrap_or(i64::MIN);
        self.forward_at = scalar(progress, "forward_at")?.unwrap_or(i64::MIN);
        self.max_entered = scalar(progress, "max_entered")?;
        Ok(())
    }

    fn absorb(&mut self, groups: &RecordBatch, repeats: Repeats) -> Result<()> {
        let rows = GroupRows::read(&self.plan, &self.codec, groups)?;
        // Each window's rows are contiguous, in group order: a snapshot
        // writes them so, and a rescale's split keeps their order.
        let mut first = 0;
        while first < rows.starts.len() {
            let id = (rows.ends[first], rows.starts[first]);
            let mut last = first + 1;
            while last < rows.starts.len() && (rows.ends[last], rows.starts[last]) == id {
                last += 1;
            }
            let window = match self.windows.entry(id) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(OpenWindow {
                    groups: KeyTable::new(),
                    accs: new_groups_accumulators(&self.plan.spec.aggs)?,
                }),
            };
            let mut indices = Vec::with_capacity(last - first);
            for r in first..last {
                let open = window.groups.len();
                let g = window.groups.group_of(rows.keys.key(r as u32));
                if g < open && repeats == Repeats::Refuse {
                    return Err(corrupt(format!(
                        "a key repeats in window [{}, {})",
                        id.1, id.0
                    )));
                }
                indices.push(g);
            }
            let num_groups = window.groups.len();
            for (acc, state) in window
                .accs
                .iter_mut()
                .zip(rows.states_at(first, last - first))
            {
                acc.merge_batch(&state, &indices, num_groups)
                    .map_err(df_err)?;
            }
            first = last;
        }
        Ok(())
    }
}

/// Of each window's groups, those no worse than the limit-th best by the
/// ranked aggregate (see [`EmitBest`]); `aggs` are every group's values, in
/// window then group order.
fn best_groups<'a>(
    fired: &'a [(WindowId, OpenWindow)],
    aggs: Vec<ArrayRef>,
    best: &EmitBest,
) -> Result<Fired<'a>> {
    let mut result = Fired::default();
    let mut picked: Vec<u32> = Vec::new();
    let mut offset = 0;
    for &((end, start), ref window) in fired {
        let n = window.groups.len();
        let groups: Vec<usize> = if n > best.limit {
            let values = aggs[best.aggregate].slice(offset, n);
            no_worse_than_limit_th(&values, best.options, best.limit)?
        } else {
            (0..n).collect()
        };
        for g in groups {
            picked.push((offset + g) as u32);
            result.keys.push(window.groups.key(g));
            result.starts.push(start);
            result.ends.push(end);
        }
        offset += n;
    }
    let picked = UInt32Array::from(picked);
    result.aggs = aggs
        .iter()
        .map(|a| take(a.as_ref(), &picked, None))
        .collect::<Result<_, _>>()?;
    Ok(result)
}

/// Final values of every aggregate over the groups of `windows` (in the
/// partial phase, their states), in window then group order: one column per
/// aggregate (per state column).
fn evaluate_windows(
    windows: &mut [(WindowId, OpenWindow)],
    phase: AggPhase,
) -> Result<Vec<ArrayRef>> {
    let mut parts: Vec<Vec<ArrayRef>> = Vec::new();
    for (_, window) in windows.iter_mut() {
        let mut columns = Vec::new();
        for acc in &mut window.accs {
            if phase == AggPhase::Partial {
                columns.extend(acc.state(EmitTo::All).map_err(df_err)?);
            } else {
                columns.push(acc.evaluate(EmitTo::All).map_err(df_err)?);
            }
        }
        parts.resize_with(columns.len(), Vec::new);
        for (column, part) in columns.into_iter().zip(&mut parts) {
            part.push(column);
        }
    }
    parts
        .into_iter()
        .map(|part| match part.as_slice() {
            [one] => Ok(one.clone()),
            _ => {
                let refs: Vec<&dyn Array> = part.iter().map(|a| a.as_ref()).collect();
                Ok(concat(&refs)?)
            }
        })
        .collect()
}

/// Rows of one batch grouped by window, windows in order of first use.
/// A row in the same window as the one before it (rows that carry their
/// window mostly come a window at a time) skips the lookup.
fn bucket_by_window(assignments: &[Assignment]) -> Vec<(WindowId, Vec<u32>)> {
    let mut index: FastMap<WindowId, usize> = FastMap::default();
    let mut buckets: Vec<(WindowId, Vec<u32>)> = Vec::new();
    let mut last: Option<(WindowId, usize)> = None;
    for a in assignments {
        let id = (a.end, a.start);
        let b = match last {
            Some((prev, b)) if prev == id => b,
            _ => *index.entry(id).or_insert_with(|| {
                buckets.push((id, Vec::new()));
                buckets.len() - 1
            }),
        };
        last = Some((id, b));
        buckets[b].1.push(a.row);
    }
    buckets
}

impl Operator for FixedWindowOperator {
    fn on_data(&mut self, _input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        self.retired.clear();
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if let Some(max) = max_entered(&batch) {
            self.max_entered = Some(self.max_entered.map_or(max, |m| m.max(max)));
        }
        let mut assignments = std::mem::take(&mut self.assignments);
        assignments.clear();
        let mut late = std::mem::take(&mut self.late);
        late.clear();
        self.plan
            .spec
            .assign
            .assign(&batch, self.watermark, &mut assignments, &mut late)?;
        out.late(0, &batch, &late)?;
        self.late = late;
        if !assignments.is_empty() {
            let inputs = BatchInputs::evaluate(&self.plan, &self.codec, &batch)?;
            for (id, rows) in bucket_by_window(&assignments) {
                self.update_window(id, &rows, &inputs)?;
            }
        }
        self.assignments = assignments;
        Ok(())
    }

    fn on_watermark(&mut self, wm: Watermark, out: &mut Emitter) -> Result<()> {
        self.watermark = self.watermark.max(wm.time_ms);
        if self
            .windows
            .first_key_value()
            .is_some_and(|((end, _), _)| *end <= self.watermark)
        {
            self.note_peak();
        }
        self.fire(Some(self.watermark), wm.entered_ns, out)?;
        self.forward_watermark(wm, out);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Emitter) -> Result<()> {
        self.note_peak();
        let entered = self.max_entered.unwrap_or_else(now_ns);
        self.fire(None, entered, out)
    }

    fn peak_state(&self) -> Option<StateSize> {
        Some(self.peak)
    }

    /// Every open window's groups with their accumulator states, and the
    /// watermark bookkeeping (see `state.rs`).
    fn snapshot(&mut self) -> Result<Snapshot> {
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut states: Vec<Vec<ArrayRef>> = Vec::new();
        for (&(end, start), window) in &mut self.windows {
            let n = window.groups.len();
            starts.extend(std::iter::repeat_n(start, n));
            ends.extend(std::iter::repeat_n(end, n));
            let columns = take_groups_states(&self.plan, &mut window.accs, n)?;
            states.resize_with(columns.len(), Vec::new);
            for (column, parts) in columns.into_iter().zip(&mut states) {
                parts.push(column);
            }
        }
        let tables: Vec<&KeyTable> = self.windows.values().map(|w| &w.groups).collect();
        let keys = if tables.is_empty() {
            empty_keys(&self.plan)
        } else {
            self.codec.decode_tables(&tables)?
        };
        if states.is_empty() {
            states = empty_states(&self.plan)?;
        }
        let progress = scalars(&[
            ("watermark", Some(self.watermark)),
            ("forward_at", Some(self.forward_at)),
            ("max_entered", self.max_entered),
        ]);
        Ok(Snapshot::none()
            .with(GROUPS, groups_table(starts, ends, keys, states)?)
            .with(PROGRESS, progress))
    }

    /// Own windows: nothing fires and no watermark is passed on before the
    /// next window end (`forward_at`), whatever `downstream` wants. Carried
    /// windows end wherever their rows say: every watermark matters.
    fn watermark_interest(&self, _downstream: i64) -> i64 {
        match self.plan.spec.assign.kind() {
            Some(_) => self.forward_at,
            None => i64::MIN,
        }
    }
}
