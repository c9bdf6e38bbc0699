//! Session window aggregates: per key, rows closer than the gap in event
//! time share a session `[first, last + gap)`.
//!
//! A session's extent is only known once no more rows can reach it, so each
//! session keeps its own scalar `Accumulator`s; when a row bridges two
//! sessions their accumulators merge (`state` of one into `merge_batch` of
//! the other), the way DataFusion combines partial aggregates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use millrace_core::state::{scalar, scalars};
use millrace_core::time::now_ns;
use millrace_core::{Emitter, Error, Operator, Result, Snapshot, Watermark};

use super::input::{BatchInputs, max_entered};
use super::keys::KeyCodec;
use super::output::{Fired, emit_fired};
use super::state::{
    GROUPS, GroupRows, PROGRESS, Rebuild, Repeats, accumulators_from, corrupt, empty_keys,
    empty_states, groups_table, take_session_state,
};
use super::{Plan, new_accumulators};
use crate::rescale::Merge;
use crate::{FastMap, df_err};

/// A group key in row format, shared by the session map and the firing index.
type Key = Arc<[u8]>;

struct Session {
    end: i64,
    accs: Vec<Box<dyn Accumulator>>,
}

impl Session {
    /// Folds `other`'s aggregate state into this session's.
    fn absorb(&mut self, mut other: Session) -> Result<()> {
        for (mine, theirs) in self.accs.iter_mut().zip(&mut other.accs) {
            let state: Vec<ArrayRef> = theirs
                .state()
                .and_then(|values| values.iter().map(ScalarValue::to_array).collect())
                .map_err(df_err)?;
            mine.merge_batch(&state).map_err(df_err)?;
        }
        Ok(())
    }
}

pub(super) struct SessionOperator {
    plan: Arc<Plan>,
    /// Key bytes that sort as the keys do: sessions fire in that order.
    codec: KeyCodec,
    gap_ms: i64,
    /// Per key, its open sessions by start; they never overlap.
    sessions: FastMap<Key, BTreeMap<i64, Session>>,
    /// Every open session as `(end, key, start)`: firing takes a prefix.
    by_end: BTreeSet<(i64, Key, i64)>,
    watermark: i64,
    max_entered: Option<i64>,
}

impl SessionOperator {
    pub(super) fn new(plan: Arc<Plan>, codec: KeyCodec, gap_ms: i64) -> Self {
        Self {
            plan,
            codec,
            gap_ms,
            sessions: FastMap::default(),
            by_end: BTreeSet::new(),
            watermark: i64::MIN,
            max_entered: None,
        }
    }

    fn session_end(&self, ts: i64) -> Result<i64> {
        ts.checked_add(self.gap_ms).ok_or_else(|| {
            Error::Other(format!(
                "event time {ts} ms is too far from the epoch for a session gap of {} ms",
                self.gap_ms
            ))
        })
    }

    /// Adds the rows of one key, sorted by event time, as runs of rows closer
    /// than the gap: each run is one session as far as this batch knows.
    fn add_rows(
        &mut self,
        key: &[u8],
        rows: &[u32],
        times: &[i64],
        inputs: &BatchInputs,
    ) -> Result<()> {
        let mut i = 0;
        while i < rows.len() {
            let start = times[rows[i] as usize];
            let mut end = self.session_end(start)?;
            let mut j = i + 1;
            while j < rows.len() && times[rows[j] as usize] < end {
                end = self.session_end(times[rows[j] as usize])?;
                j += 1;
            }
            self.add_run(key, start, end, &rows[i..j], inputs)?;
            i = j;
        }
        Ok(())
    }

    /// Adds `rows` spanning the session `[start, end)` of `key`, merging it
    /// with every open session of the key it overlaps.
    fn add_run(
        &mut self,
        key: &[u8],
        start: i64,
        end: i64,
        rows: &[u32],
        inputs: &BatchInputs,
    ) -> Result<()> {
        let key: Key = match self.sessions.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        let key_sessions = self.sessions.entry(key.clone()).or_default();
        // Sessions of a key are disjoint, so ordered by start they are also
        // ordered by end: walk back from the last one starting before `end`
        // while they still reach past `start`.
        let overlapping: Vec<i64> = key_sessions
            .range(..end)
            .rev()
            .take_while(|(_, s)| s.end > start)
            .map(|(&s, _)| s)
            .collect();
        let (mut lo, mut hi) = (start, end);
        let mut merged: Option<Session> = None;
        for s_start in overlapping {
            let Some(s) = key_sessions.remove(&s_start) else {
                continue;
            };
            self.by_end.remove(&(s.end, key.clone(), s_start));
            lo = lo.min(s_start);
            hi = hi.max(s.end);
            merged = Some(match merged {
                None => s,
                Some(mut m) => {
                    m.absorb(s)?;
                    m
                }
            });
        }
        let mut session = match merged {
            Some(s) => s,
            None => Session {
                end: hi,
                accs: new_accumulators(&self.plan.spec.aggs)?,
            },
        };
        session.end = hi;
        for (a, acc) in session.accs.iter_mut().enumerate() {
            let values = inputs.gather_selected(a, rows)?;
            acc.update_batch(&values).map_err(df_err)?;
        }
        key_sessions.insert(lo, session);
        self.by_end.insert((hi, key, lo));
        Ok(())
    }

    /// Removes and returns the open session of `key` starting at `start`.
    fn take_session(&mut self, key: &[u8], start: i64) -> Result<Session> {
        let missing = || {
            Error::Other(format!(
                "session index out of step: no open session starting at {start} ms"
            ))
        };
        let key_sessions = self.sessions.get_mut(key).ok_or_else(missing)?;
        let session = key_sessions.remove(&start).ok_or_else(missing)?;
        if key_sessions.is_empty() {
            self.sessions.remove(key);
        }
        Ok(session)
    }

    /// Emits every session with `end <= up_to` (all of them for `None`).
    fn fire(&mut self, up_to: Option<i64>, entered_ns: i64, out: &mut Emitter) -> Result<()> {
        let fired = match up_to.map(|t| t.checked_add(1)) {
            Some(Some(after)) => {
                let rest = self.by_end.split_off(&(after, Key::from([]), i64::MIN));
                std::mem::replace(&mut self.by_end, rest)
            }
            // No bound, or a bound past every possible end.
            _ => std::mem::take(&mut self.by_end),
        };
        if fired.is_empty() {
            return Ok(());
        }
        let mut values: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(fired.len()); self.plan.spec.aggs.len()];
        let mut result = Fired::default();
        for (end, key, start) in &fired {
            let mut session = self.take_session(key, *start)?;
            for (acc, column) in session.accs.iter_mut().zip(&mut values) {
                column.push(acc.evaluate().map_err(df_err)?);
            }
            result.keys.push(&key[..]);
            result.starts.push(*start);
            result.ends.push(*end);
        }
        result.aggs = values
            .into_iter()
            .map(ScalarValue::iter_to_array)
            .collect::<Result<_, _>>()
            .map_err(df_err)?;
        emit_fired(&self.plan, &self.codec, result, entered_ns, out)
    }
}

impl Rebuild for SessionOperator {
    /// The watermark by its minimum, the largest entered time by its
    /// maximum (reasons at [`Merge`]).
    fn progress_rules(&self) -> &'static [(&'static str, Merge)] {
        &[("watermark", Merge::Min), ("max_entered", Merge::Max)]
    }

    fn continue_from(&mut self, progress: &RecordBatch) -> Result<()> {
        self.watermark = scalar(progress, "watermark")?.unwrap_or(i64::MIN);
        self.max_entered = scalar(progress, "max_entered")?;
        Ok(())
    }

    /// A session of a key is never merged with another: a key's sessions
    /// all come from one instance (sessions are keyed, or run at
    /// parallelism 1), so two starting together are corrupt either way.
    fn absorb(&mut self, groups: &RecordBatch, _repeats: Repeats) -> Result<()> {
        let rows = GroupRows::read(&self.plan, &self.codec, groups)?;
        for r in 0..rows.starts.len() {
            let (start, end) = (rows.starts[r], rows.ends[r]);
            let key: Key = Arc::from(rows.keys.key(r as u32));
            let session = Session {
                end,
                accs: accumulators_from(&self.plan, &rows.states_at(r, 1))?,
            };
            let key_sessions = self.sessions.entry(key.clone()).or_default();
            if key_sessions.insert(start, session).is_some() {
                return Err(corrupt(format!("two sessions of one key start at {start}")));
            }
            self.by_end.insert((end, key, start));
        }
        Ok(())
    }
}

/// The rows of `rows` grouped by key, keys in order of first appearance.
fn rows_by_key<'a>(inputs: &'a BatchInputs, rows: &[u32]) -> Vec<(&'a [u8], Vec<u32>)> {
    let mut index: FastMap<&[u8], usize> = FastMap::default();
    let mut groups: Vec<(&[u8], Vec<u32>)> = Vec::new();
    for &r in rows {
        let key = inputs.key(r);
        let g = *index.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(r);
    }
    groups
}

impl Operator for SessionOperator {
    fn on_data(&mut self, _input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if let Some(max) = max_entered(&batch) {
            self.max_entered = Some(self.max_entered.map_or(max, |m| m.max(max)));
        }
        let times = self.plan.spec.assign.event_times(&batch)?;
        // A row below the watermark could only extend sessions that may
        // already have fired: late, like any row behind the watermark.
        let (on_time, late): (Vec<u32>, Vec<u32>) =
            (0..batch.num_rows() as u32).partition(|&r| times[r as usize] >= self.watermark);
        out.late(0, &batch, &late)?;
        if on_time.is_empty() {
            return Ok(());
        }
        let inputs = BatchInputs::evaluate(&self.plan, &self.codec, &batch)?;
        for (key, mut rows) in rows_by_key(&inputs, &on_time) {
            rows.sort_by_key(|&r| times[r as usize]);
            self.add_rows(key, &rows, &times, &inputs)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: Watermark, out: &mut Emitter) -> Result<()> {
        self.watermark = self.watermark.max(wm.time_ms);
        self.fire(Some(self.watermark), wm.entered_ns, out)?;
        out.watermark(wm);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Emitter) -> Result<()> {
        let entered = self.max_entered.unwrap_or_else(now_ns);
        self.fire(None, entered, out)
    }

    /// Every open session (key, bounds, accumulator states) in firing
    /// order, and the watermark (see `state.rs`).
    fn snapshot(&mut self) -> Result<Snapshot> {
        let (mut starts, mut ends, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        let mut states: Vec<Vec<ArrayRef>> = Vec::new();
        for (end, key, start) in &self.by_end {
            let session = self
                .sessions
                .get_mut(key)
                .and_then(|s| s.get_mut(start))
                .ok_or_else(|| {
                    Error::Other(format!(
                        "session index out of step: no open session starting at {start} ms"
                    ))
                })?;
            let columns: Vec<ArrayRef> = take_session_state(&self.plan, &mut session.accs)?
                .into_iter()
                .flatten()
                .collect();
            states.resize_with(columns.len(), Vec::new);
            for (column, parts) in columns.into_iter().zip(&mut states) {
                parts.push(column);
            }
            starts.push(*start);
            ends.push(*end);
            keys.push(&key[..]);
        }
        let keys = if keys.is_empty() {
            empty_keys(&self.plan)
        } else {
            self.codec.decode(&keys)?
        };
        if states.is_empty() {
            states = empty_states(&self.plan)?;
        }
        let progress = scalars(&[
            ("watermark", Some(self.watermark)),
            ("max_entered", self.max_entered),
        ]);
        Ok(Snapshot::none()
            .with(GROUPS, groups_table(starts, ends, keys, states)?)
            .with(PROGRESS, progress))
    }
}
