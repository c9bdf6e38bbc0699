//! Interval join: a left row meets the right rows with the same key whose
//! event time lies in `[left_time + lower, left_time + upper]` (inclusive).
//!
//! # Semantics
//!
//! * **Matching.** Each arriving row first probes the rows buffered from the
//!   other input with the same key and a time in its band, and the pairs that
//!   pass the filter are emitted at once, with the arriving row's entered time
//!   (the later of the two rows to enter). Then the row is buffered. So each
//!   pair is emitted exactly once, when its second row arrives.
//! * **Late rows** (event time below the watermark) go to the late output
//!   of their side (`Emitter::late`). Rows with a null key can never match and are
//!   not buffered; in a LEFT join a (non-late) left row with a null key is
//!   emitted at once, padded with nulls.
//! * **Expiry.** With watermark W (the largest seen), every future row has
//!   time >= W. A left row can no longer match once `left_time + upper < W`,
//!   a right row once `right_time - lower < W`; both are then forgotten. In a
//!   LEFT join the expiring left rows that never matched are emitted, padded
//!   with nulls, in event-time order (equal times in arrival order), with
//!   the watermark's entered time, before the watermark is forwarded. At
//!   end of input a LEFT join emits every still-buffered unmatched left row.
//! * **Kinds.** INNER and LEFT. A RIGHT interval join is a LEFT one with the
//!   inputs swapped (the planner can do that); FULL is not supported.
//!
//! # State
//!
//! Arriving batches are kept whole (user columns only), and per key a list of
//! (time, batch, row) references sorted by time, so a probe is a binary
//! search and expiry removes a prefix. A batch is released when the last of
//! its buffered rows expires; rows expire by time, so the rows of a batch
//! mostly expire together. Expiry visits the keys only when the watermark
//! passes the earliest buffered time. A snapshot holds the buffered rows,
//! their batches and match flags, and the watermark (`interval/state.rs`);
//! at another parallelism each row goes to the instance its key's rows will
//! reach (`interval/rescale.rs`).

mod rescale;
mod state;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, UInt32Array};
use arrow::compute::{interleave, take, take_arrays};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::SortField;
use datafusion::physical_expr::PhysicalExpr;
use millrace_core::time::{event_times_ms, now_ns};
use millrace_core::{
    Emitter, Error, Operator, OperatorFactory, Result, Snapshot, Watermark, entered_column,
    strip_entered,
};

use super::{
    JoinKind, JoinOutput, JoinShape, KeyEncoder, check_event_time, check_join, check_width,
    describe_filter, describe_keys, no_such_input, note_entered, passed, side,
};
use crate::window::evaluate;
use crate::{FastMap, MAX_OUTPUT_ROWS};

/// A join of rows whose event times are close (see the module doc).
#[derive(Clone, Debug)]
pub struct IntervalJoinSpec {
    /// Shown in plans and errors.
    pub name: String,
    /// User columns of the left input (no entered column).
    pub left_schema: SchemaRef,
    /// User columns of the right input (no entered column).
    pub right_schema: SchemaRef,
    /// Equi-join keys; `left_keys[i]` is compared with `right_keys[i]`.
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Event times (a timestamp of any unit, or Int64 milliseconds).
    pub left_time: Arc<dyn PhysicalExpr>,
    pub right_time: Arc<dyn PhysicalExpr>,
    /// A pair matches when left_time + lower_ms <= right_time <= left_time + upper_ms (inclusive).
    pub lower_ms: i64,
    pub upper_ms: i64,
    /// Inner or Left.
    pub kind: JoinKind,
    /// Residual predicate over the joined row (evaluated on `output_schema`).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Left columns then right columns.
    pub output_schema: SchemaRef,
}

/// Creates interval join operators; validates the spec once.
pub struct IntervalJoinFactory {
    spec: Arc<IntervalJoinSpec>,
    key_fields: Vec<SortField>,
}

impl IntervalJoinFactory {
    pub fn new(spec: IntervalJoinSpec) -> Result<Self> {
        let name = &spec.name;
        if !matches!(spec.kind, JoinKind::Inner | JoinKind::Left) {
            return Err(Error::plan(format!(
                "{name}: a {} interval join is not supported; use an inner or left join (a right join is a left join with the inputs swapped)",
                spec.kind
            )));
        }
        if spec.lower_ms > spec.upper_ms {
            return Err(Error::plan(format!(
                "{name}: the time band is empty: right_time must be within [left_time + {} ms, left_time + {} ms], and the lower bound exceeds the upper",
                spec.lower_ms, spec.upper_ms
            )));
        }
        check_event_time(name, "left", &spec.left_time, &spec.left_schema)?;
        check_event_time(name, "right", &spec.right_time, &spec.right_schema)?;
        let key_fields = check_join(JoinShape {
            name,
            kind: spec.kind,
            left_schema: &spec.left_schema,
            right_schema: &spec.right_schema,
            left_keys: &spec.left_keys,
            right_keys: &spec.right_keys,
            filter: spec.filter.as_ref(),
            output_schema: &spec.output_schema,
        })?;
        Ok(Self {
            spec: Arc::new(spec),
            key_fields,
        })
    }
}

impl OperatorFactory for IntervalJoinFactory {
    fn name(&self) -> String {
        self.spec.name.clone()
    }

    fn output_schema(&self) -> SchemaRef {
        self.spec.output_schema.clone()
    }

    fn output_event_time(&self) -> Option<String> {
        None
    }

    fn create(&self, _instance: usize, _parallelism: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(self.operator()?))
    }

    /// The snapshot must be an interval join's of this plan
    /// (`interval/state.rs`).
    fn resume(
        &self,
        _instance: usize,
        _parallelism: usize,
        state: &Snapshot,
    ) -> Result<Box<dyn Operator>> {
        let mut op = self.operator()?;
        op.restore_state(state)?;
        Ok(Box::new(op))
    }

    /// Rows go to the instance owning their key's key group; see
    /// `interval/rescale.rs`.
    fn rescale(&self, old: &[Snapshot], parallelism: usize) -> Result<Vec<Snapshot>> {
        rescale::rescale(&self.spec, old, parallelism)
    }

    fn signature(&self) -> String {
        self.describe()
    }
}

impl IntervalJoinFactory {
    /// One line for plans: `interval join: left join on [k@0 = k@0] and
    /// rt@1 in [lt@1 -5 ms, lt@1 +10 ms] where rt@4 > lt@1`.
    pub fn describe(&self) -> String {
        let spec = &self.spec;
        format!(
            "{}: {} join on {} and {} in [{} {:+} ms, {} {:+} ms]{}",
            spec.name,
            spec.kind,
            describe_keys(&spec.left_keys, &spec.right_keys),
            spec.right_time,
            spec.left_time,
            spec.lower_ms,
            spec.left_time,
            spec.upper_ms,
            describe_filter(spec.filter.as_ref())
        )
    }

    fn operator(&self) -> Result<IntervalJoinOperator> {
        let spec = &self.spec;
        Ok(IntervalJoinOperator {
            keys: KeyEncoder::new(&self.key_fields, &spec.left_keys, &spec.right_keys)?,
            output: JoinOutput::new(
                spec.output_schema.clone(),
                spec.left_schema.fields().len(),
                spec.filter.clone(),
            ),
            spec: spec.clone(),
            sides: [Buffered::new(), Buffered::new()],
            watermark: i64::MIN,
            max_entered: None,
        })
    }
}

/// A buffered row: its event time and where its values are.
#[derive(Clone, Copy, Debug)]
struct RowRef {
    time: i64,
    slot: u32,
    row: u32,
}

/// One buffered input batch (user columns).
struct Slot {
    batch: RecordBatch,
    /// Orders the slots by arrival (slot ids are reused, so they do not).
    arrival: u64,
    /// Rows of `batch` still buffered; the slot is freed at zero.
    live: usize,
    /// Per row, whether it found a partner (kept for left rows of a LEFT join).
    matched: Vec<bool>,
}

/// The buffered rows of one input.
struct Buffered {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Per key, the buffered rows in ascending time (arrival order among
    /// equal times).
    by_key: FastMap<Box<[u8]>, Vec<RowRef>>,
    /// No buffered row has a smaller time (`i64::MAX` when empty).
    min_time: i64,
    /// The `arrival` of the next slot.
    next_arrival: u64,
}

impl Buffered {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            by_key: FastMap::default(),
            min_time: i64::MAX,
            next_arrival: 0,
        }
    }

    /// Buffers `rows` (row, time, key) of `batch`; `matched` says which rows
    /// of `batch` already found a partner (empty when not tracked).
    fn insert(&mut self, batch: RecordBatch, rows: &[(u32, i64, &[u8])], matched: Vec<bool>) {
        if rows.is_empty() {
            return;
        }
        let slot = Slot {
            batch,
            arrival: self.next_arrival,
            live: rows.len(),
            matched,
        };
        self.next_arrival += 1;
        let slot_id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        for &(row, time, key) in rows {
            let r = RowRef {
                time,
                slot: slot_id,
                row,
            };
            self.min_time = self.min_time.min(time);
            if let Some(list) = self.by_key.get_mut(key) {
                // Rows mostly arrive in time order: usually an append.
                let at = list.partition_point(|x| x.time <= time);
                list.insert(at, r);
            } else {
                self.by_key.insert(key.into(), vec![r]);
            }
        }
    }

    /// Buffered rows with key `key` and time in `[lo, hi]`, in time order.
    fn matches(&self, key: &[u8], lo: i64, hi: i64) -> &[RowRef] {
        let Some(list) = self.by_key.get(key) else {
            return &[];
        };
        let start = list.partition_point(|x| x.time < lo);
        let end = list.partition_point(|x| x.time <= hi);
        &list[start..end.max(start)]
    }

    /// Removes and returns the rows with time < `cutoff`. Their batches stay
    /// until [`Buffered::release`], so the caller can still read them.
    fn expire(&mut self, cutoff: i64) -> Vec<RowRef> {
        let mut expired = Vec::new();
        if cutoff <= self.min_time {
            return expired;
        }
        let mut min_time = i64::MAX;
        self.by_key.retain(|_, list| {
            let n = list.partition_point(|x| x.time < cutoff);
            expired.extend(list.drain(..n));
            if let Some(first) = list.first() {
                min_time = min_time.min(first.time);
            }
            !list.is_empty()
        });
        self.min_time = min_time;
        expired
    }

    /// Removes and returns every buffered row.
    fn drain(&mut self) -> Vec<RowRef> {
        self.min_time = i64::MAX;
        self.by_key.drain().flat_map(|(_, list)| list).collect()
    }

    /// Rows buffered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    /// Batches held.
    #[cfg(test)]
    fn batches(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Frees the batches whose last rows were `refs`.
    fn release(&mut self, refs: &[RowRef]) {
        for r in refs {
            let id = r.slot as usize;
            if let Some(slot) = &mut self.slots[id] {
                slot.live -= 1;
                if slot.live == 0 {
                    self.slots[id] = None;
                    self.free.push(r.slot);
                }
            }
        }
    }

    /// Sorts `refs` by time, equal times in arrival order.
    fn sort_by_time(&self, refs: &mut [RowRef]) {
        let arrival = |r: &RowRef| self.slots[r.slot as usize].as_ref().map(|s| s.arrival);
        refs.sort_by_key(|r| (r.time, arrival(r), r.row));
    }

    fn is_matched(&self, r: &RowRef) -> bool {
        self.slots[r.slot as usize]
            .as_ref()
            .is_some_and(|s| s.matched.get(r.row as usize) == Some(&true))
    }

    fn mark_matched(&mut self, r: &RowRef) {
        if let Some(slot) = &mut self.slots[r.slot as usize]
            && let Some(m) = slot.matched.get_mut(r.row as usize)
        {
            *m = true;
        }
    }

    /// The columns of rows `refs`, in that order.
    fn gather(&self, refs: &[RowRef]) -> Result<Vec<ArrayRef>> {
        // Number the batches `refs` touch, to interleave from just those.
        let mut sources: Vec<&RecordBatch> = Vec::new();
        let mut source_of: FastMap<u32, usize> = FastMap::default();
        let mut indices = Vec::with_capacity(refs.len());
        for r in refs {
            let source = match source_of.get(&r.slot) {
                Some(&s) => s,
                None => {
                    let Some(slot) = &self.slots[r.slot as usize] else {
                        return Err(Error::Other(
                            "interval join state refers to a released batch".into(),
                        ));
                    };
                    sources.push(&slot.batch);
                    source_of.insert(r.slot, sources.len() - 1);
                    sources.len() - 1
                }
            };
            indices.push((source, r.row as usize));
        }
        let Some(first) = sources.first() else {
            return Err(Error::Other("gathering no rows".into()));
        };
        (0..first.num_columns())
            .map(|c| {
                let columns: Vec<&dyn Array> =
                    sources.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(interleave(&columns, &indices)?)
            })
            .collect()
    }
}

struct IntervalJoinOperator {
    spec: Arc<IntervalJoinSpec>,
    keys: KeyEncoder,
    output: JoinOutput,
    /// Buffered rows of the left (0) and right (1) input.
    sides: [Buffered; 2],
    watermark: i64,
    max_entered: Option<i64>,
}

/// One arriving batch while it is being joined.
struct Arriving<'a> {
    input: usize,
    user: &'a RecordBatch,
    entered: &'a ArrayRef,
    /// Per row, whether it found a partner (tracked for left rows of a LEFT join).
    matched: Vec<bool>,
}

impl IntervalJoinOperator {
    /// User columns of input `input` (0 = left, 1 = right).
    fn input_schema(&self, input: usize) -> &SchemaRef {
        side(input, &self.spec.left_schema, &self.spec.right_schema)
    }

    /// The event times (ms) of `user`, a batch of input `input`.
    fn event_times(&self, input: usize, user: &RecordBatch) -> Result<Vec<i64>> {
        let time = side(input, &self.spec.left_time, &self.spec.right_time);
        event_times_ms(&evaluate(time, user)?, &time.to_string())
    }

    /// Whether left rows' matches must be remembered (to pad the unmatched).
    fn tracks_left_matches(&self) -> bool {
        self.spec.kind == JoinKind::Left
    }

    /// The band of times on the other input that row time `t` of `input` meets.
    fn band(&self, input: usize, t: i64) -> (i64, i64) {
        let (lower, upper) = (self.spec.lower_ms, self.spec.upper_ms);
        if input == 0 {
            (t.saturating_add(lower), t.saturating_add(upper))
        } else {
            (t.saturating_sub(upper), t.saturating_sub(lower))
        }
    }

    /// Emits the pairs (arriving row, buffered row of the other input) that
    /// pass the filter, `MAX_OUTPUT_ROWS` at a time, and records matches.
    fn emit_pairs(
        &mut self,
        arriving: &mut Arriving<'_>,
        pairs: &[(u32, RowRef)],
        out: &mut Emitter,
    ) -> Result<()> {
        let input = arriving.input;
        for chunk in pairs.chunks(MAX_OUTPUT_ROWS) {
            let rows = UInt32Array::from_iter_values(chunk.iter().map(|p| p.0));
            let refs: Vec<RowRef> = chunk.iter().map(|p| p.1).collect();
            let mine = take_arrays(arriving.user.columns(), &rows, None)?;
            let theirs = self.sides[1 - input].gather(&refs)?;
            let entered = take(arriving.entered.as_ref(), &rows, None)?;
            let (left, right) = if input == 0 {
                (mine, theirs)
            } else {
                (theirs, mine)
            };
            let mask = self.output.emit_pairs(left, right, entered, out)?;
            if !self.tracks_left_matches() {
                continue;
            }
            for (i, (row, r)) in chunk.iter().enumerate() {
                if !passed(mask.as_ref(), i) {
                    continue;
                }
                if input == 0 {
                    arriving.matched[*row as usize] = true;
                } else {
                    self.sides[0].mark_matched(r);
                }
            }
        }
        Ok(())
    }

    /// Emits the left rows among `refs` that never matched, padded with
    /// nulls, in event-time order (equal times in arrival order).
    fn emit_unmatched_left(
        &self,
        refs: &[RowRef],
        entered_ns: i64,
        out: &mut Emitter,
    ) -> Result<()> {
        let mut unmatched: Vec<RowRef> = refs
            .iter()
            .filter(|r| !self.sides[0].is_matched(r))
            .copied()
            .collect();
        self.sides[0].sort_by_time(&mut unmatched);
        for chunk in unmatched.chunks(MAX_OUTPUT_ROWS) {
            let left = self.sides[0].gather(chunk)?;
            let entered = Arc::new(Int64Array::from_value(entered_ns, chunk.len()));
            self.output.emit_left_padded(left, entered, out)?;
        }
        Ok(())
    }
}

impl Operator for IntervalJoinOperator {
    /// The buffered rows with their match flags, and the watermark (see
    /// `interval/state.rs`).
    fn snapshot(&mut self) -> Result<Snapshot> {
        self.state_snapshot()
    }

    fn on_data(&mut self, input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        if input > 1 {
            return Err(no_such_input(input));
        }
        let user = strip_entered(&batch);
        check_width(&user, self.input_schema(input), &self.spec.name, input)?;
        note_entered(&mut self.max_entered, &batch);
        let times = self.event_times(input, &user)?;
        let keys = self.keys.encode(input, &user)?;
        let entered: ArrayRef = match entered_column(&batch) {
            Some(e) => Arc::new(e.clone()),
            None => Arc::new(Int64Array::from_value(now_ns(), user.num_rows())),
        };
        let track = input == 0 && self.tracks_left_matches();
        let mut arriving = Arriving {
            input,
            user: &user,
            entered: &entered,
            matched: if track {
                vec![false; user.num_rows()]
            } else {
                Vec::new()
            },
        };

        let mut late: Vec<u32> = Vec::new();
        let mut null_keyed: Vec<u32> = Vec::new();
        let mut keep: Vec<(u32, i64, &[u8])> = Vec::new();
        let mut pairs: Vec<(u32, RowRef)> = Vec::new();
        for (row, &t) in times.iter().enumerate() {
            if t < self.watermark {
                late.push(row as u32);
                continue;
            }
            let Some(key) = keys.get(row) else {
                null_keyed.push(row as u32);
                continue;
            };
            let (lo, hi) = self.band(input, t);
            let found = self.sides[1 - input].matches(key, lo, hi);
            pairs.extend(found.iter().map(|r| (row as u32, *r)));
            keep.push((row as u32, t, key));
            if pairs.len() >= MAX_OUTPUT_ROWS {
                self.emit_pairs(&mut arriving, &pairs, out)?;
                pairs.clear();
            }
        }
        self.emit_pairs(&mut arriving, &pairs, out)?;
        out.late(input, &batch, &late)?;

        if track && !null_keyed.is_empty() {
            // A null key never matches: no need to wait for the watermark.
            let rows = UInt32Array::from(null_keyed);
            let left = take_arrays(user.columns(), &rows, None)?;
            let entered = take(entered.as_ref(), &rows, None)?;
            self.output.emit_left_padded(left, entered, out)?;
        }
        let matched = std::mem::take(&mut arriving.matched);
        self.sides[input].insert(user.clone(), &keep, matched);
        Ok(())
    }

    fn on_watermark(&mut self, wm: Watermark, out: &mut Emitter) -> Result<()> {
        self.watermark = self.watermark.max(wm.time_ms);
        let w = self.watermark;
        // left_time + upper < W  <=>  left_time < W - upper (and likewise for
        // the right side with -lower).
        let left = self.sides[0].expire(w.saturating_sub(self.spec.upper_ms));
        let right = self.sides[1].expire(w.saturating_add(self.spec.lower_ms));
        if self.tracks_left_matches() {
            self.emit_unmatched_left(&left, wm.entered_ns, out)?;
        }
        self.sides[0].release(&left);
        self.sides[1].release(&right);
        out.watermark(wm);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Emitter) -> Result<()> {
        if self.tracks_left_matches() {
            let entered = self.max_entered.unwrap_or_else(now_ns);
            let left = self.sides[0].drain();
            self.emit_unmatched_left(&left, entered, out)?;
            self.sides[0].release(&left);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::test_util::{
        batch, entered, ints, join_round_trip_steps, joined, render, schema, strs, take, wm,
    };
    use crate::round_trip::{
        Step, assert_rescales, assert_rescales_only_one_to_one, assert_round_trip,
        assert_round_trips_at_every_cut,
    };
    use arrow::datatypes::DataType;
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{Column, binary, col};

    /// Left `(k, lt, lv)` and right `(k, rt, rv)`.
    fn sides() -> (SchemaRef, SchemaRef) {
        let left = schema(&[
            ("k", DataType::Int64),
            ("lt", DataType::Int64),
            ("lv", DataType::Utf8),
        ]);
        let right = schema(&[
            ("k", DataType::Int64),
            ("rt", DataType::Int64),
            ("rv", DataType::Utf8),
        ]);
        (left, right)
    }

    /// `left.k = right.k AND right.rt BETWEEN left.lt - 5 AND left.lt + 10`.
    fn spec(kind: JoinKind) -> IntervalJoinSpec {
        let (left, right) = sides();
        IntervalJoinSpec {
            name: "interval join".into(),
            left_keys: vec![col("k", &left).unwrap()],
            right_keys: vec![col("k", &right).unwrap()],
            left_time: col("lt", &left).unwrap(),
            right_time: col("rt", &right).unwrap(),
            lower_ms: -5,
            upper_ms: 10,
            kind,
            filter: None,
            output_schema: joined(&left, &right),
            left_schema: left,
            right_schema: right,
        }
    }

    fn operator(spec: IntervalJoinSpec) -> IntervalJoinOperator {
        IntervalJoinFactory::new(spec).unwrap().operator().unwrap()
    }

    /// Sends rows `(k, time, v)` entered at `entered_ns` to `input`.
    fn send(
        op: &mut IntervalJoinOperator,
        input: usize,
        rows: &[(Option<i64>, i64, &str)],
        entered_ns: i64,
        out: &mut Emitter,
    ) {
        let (left, right) = sides();
        let s = if input == 0 { left } else { right };
        let k: Vec<Option<i64>> = rows.iter().map(|r| r.0).collect();
        let t: Vec<Option<i64>> = rows.iter().map(|r| Some(r.1)).collect();
        let v: Vec<&str> = rows.iter().map(|r| r.2).collect();
        let b = batch(&s, vec![ints(&k), ints(&t), strs(&v)], entered_ns);
        op.on_data(input, b, out).unwrap();
    }

    #[test]
    fn pairs_match_at_both_inclusive_bounds_when_the_second_row_arrives() {
        let mut op = operator(spec(JoinKind::Inner));
        let mut out = Emitter::new();
        send(&mut op, 0, &[(Some(1), 100, "a")], 1000, &mut out);
        assert!(take(&mut out).is_empty());
        // a's band is [95, 110].
        send(
            &mut op,
            1,
            &[
                (Some(1), 95, "lo"),
                (Some(1), 110, "hi"),
                (Some(1), 94, "below"),
                (Some(1), 111, "above"),
                (Some(2), 100, "other key"),
            ],
            2000,
            &mut out,
        );
        let messages = out.take_messages();
        assert_eq!(
            render(&messages),
            ["1, 100, a, 1, 95, lo", "1, 100, a, 1, 110, hi"]
        );
        // The entered time is the later row's.
        assert_eq!(entered(&messages), [2000, 2000]);

        // A left row arriving later probes the buffered right rows (band
        // [100, 115]); matches come in right-time order.
        send(&mut op, 0, &[(Some(1), 105, "b")], 3000, &mut out);
        assert_eq!(
            take(&mut out),
            ["1, 105, b, 1, 110, hi", "1, 105, b, 1, 111, above"]
        );
    }

    #[test]
    fn watermark_expires_rows_no_future_row_can_match() {
        let mut op = operator(spec(JoinKind::Inner));
        let mut out = Emitter::new();
        send(
            &mut op,
            0,
            &[(Some(1), 100, "a"), (Some(2), 200, "b")],
            1,
            &mut out,
        );
        send(&mut op, 1, &[(Some(3), 100, "r")], 1, &mut out);

        // Left a stays while a right row at 110 may still come; right r
        // (100 - (-5) = 105 < 110) can no longer meet a future left row.
        op.on_watermark(wm(110, 1), &mut out).unwrap();
        assert_eq!((op.sides[0].len(), op.sides[1].len()), (2, 0));
        assert_eq!(op.sides[1].batches(), 0);
        send(&mut op, 1, &[(Some(1), 110, "x")], 1, &mut out);
        assert_eq!(take(&mut out), ["wm 110", "1, 100, a, 1, 110, x"]);

        // At 111, a (100 + 10 < 111) expires; b keeps its batch alive.
        op.on_watermark(wm(111, 1), &mut out).unwrap();
        assert_eq!(op.sides[0].len(), 1);
        assert_eq!(op.sides[0].batches(), 1);
        // 105 would have met a (band [95, 110]) but is behind the watermark.
        send(&mut op, 1, &[(Some(1), 105, "late")], 1, &mut out);
        assert_eq!(out.late_rows(), 1);
        assert_eq!(take(&mut out), ["wm 111"]);

        op.on_watermark(wm(211, 1), &mut out).unwrap();
        assert_eq!(op.sides[0].batches(), 0, "the batch goes with its last row");
    }

    #[test]
    fn late_rows_are_counted_and_dropped_on_both_sides() {
        let mut op = operator(spec(JoinKind::Inner));
        let mut out = Emitter::new();
        send(&mut op, 0, &[(Some(1), 100, "a")], 1, &mut out);
        op.on_watermark(wm(96, 1), &mut out).unwrap();
        send(
            &mut op,
            1,
            &[(Some(1), 95, "late"), (Some(1), 96, "ok")],
            1,
            &mut out,
        );
        send(&mut op, 0, &[(Some(1), 90, "late too")], 1, &mut out);
        assert_eq!(out.late_rows(), 2);
        assert_eq!(take(&mut out), ["wm 96", "1, 100, a, 1, 96, ok"]);
        assert_eq!((op.sides[0].len(), op.sides[1].len()), (1, 1));
    }

    #[test]
    fn left_join_emits_unmatched_left_rows_when_they_expire() {
        let mut op = operator(spec(JoinKind::Left));
        let mut out = Emitter::new();
        send(
            &mut op,
            0,
            &[
                (Some(1), 100, "a"),
                (Some(2), 101, "b"),
                (None, 102, "n"),
                (Some(3), 300, "c"),
            ],
            5,
            &mut out,
        );
        // A null key can never match: padded at once.
        assert_eq!(take(&mut out), ["null, 102, n, null, null, null"]);
        send(&mut op, 1, &[(Some(1), 104, "x")], 6, &mut out);
        op.on_watermark(wm(111, 70), &mut out).unwrap();
        op.on_watermark(wm(112, 80), &mut out).unwrap();
        let messages = out.take_messages();
        // a matched; b (101 + 10 < 112) expires unmatched at 112.
        assert_eq!(
            render(&messages),
            [
                "1, 100, a, 1, 104, x",
                "wm 111",
                "2, 101, b, null, null, null",
                "wm 112"
            ]
        );
        assert_eq!(entered(&messages), [6, 80]);
        // c is still buffered at the end of input.
        op.on_end(&mut out).unwrap();
        assert_eq!(take(&mut out), ["3, 300, c, null, null, null"]);
    }

    #[test]
    fn residual_filter_decides_what_counts_as_a_match() {
        let mut spec = spec(JoinKind::Left);
        // right.rt > left.lt: only right rows strictly after the left row.
        let output = spec.output_schema.clone();
        let lt = Arc::new(Column::new("lt", 1));
        let rt = Arc::new(Column::new("rt", 4));
        spec.filter = Some(binary(rt, Op::Gt, lt, &output).unwrap());
        let mut op = operator(spec);
        let mut out = Emitter::new();
        send(
            &mut op,
            0,
            &[(Some(1), 100, "a"), (Some(1), 200, "b")],
            1,
            &mut out,
        );
        send(
            &mut op,
            1,
            &[
                (Some(1), 98, "before"),
                (Some(1), 103, "after"),
                (Some(1), 200, "same"),
            ],
            1,
            &mut out,
        );
        op.on_watermark(wm(300, 1), &mut out).unwrap();
        assert_eq!(
            take(&mut out),
            [
                "1, 100, a, 1, 103, after",
                "1, 200, b, null, null, null",
                "wm 300"
            ]
        );
    }

    /// `right.rt > left.lt`: a residual filter that leaves some left rows
    /// with partners in the band but no match.
    fn strictly_after(spec: &IntervalJoinSpec) -> Arc<dyn PhysicalExpr> {
        let lt = Arc::new(Column::new("lt", 1));
        let rt = Arc::new(Column::new("rt", 4));
        binary(rt, Op::Gt, lt, &spec.output_schema).unwrap()
    }

    /// Inner and left joins, with and without a filter, parallelism 1 and
    /// 2: a snapshot at any step, restored, changes nothing. Many rows
    /// share an event time, so the unmatched left rows a watermark pads
    /// come in arrival order among equal times, across the cut too.
    #[test]
    fn state_round_trips_through_a_snapshot_at_every_step() {
        let (left, right) = sides();
        for kind in [JoinKind::Inner, JoinKind::Left] {
            for filtered in [false, true] {
                let mut spec = spec(kind);
                if filtered {
                    spec.filter = Some(strictly_after(&spec));
                }
                let factory = IntervalJoinFactory::new(spec).unwrap();
                for parallelism in [1, 2] {
                    let steps = join_round_trip_steps([&left, &right], parallelism);
                    let (rows, late) = assert_round_trips_at_every_cut(&factory, &steps);
                    let what = format!("{kind}, filter {filtered}, parallelism {parallelism}");
                    assert!(rows >= 25, "{what}: {rows} rows");
                    assert!(late >= 10, "{what}: {late} late rows");
                }
            }
        }
    }

    /// A restored left join still knows which buffered left rows matched:
    /// `a` matched before the cut and is not padded when it expires after.
    #[test]
    fn restored_left_rows_keep_their_matches() {
        let factory = IntervalJoinFactory::new(spec(JoinKind::Left)).unwrap();
        let mut op = factory.operator().unwrap();
        let mut out = Emitter::new();
        send(
            &mut op,
            0,
            &[(Some(1), 100, "a"), (Some(2), 100, "b")],
            1,
            &mut out,
        );
        send(&mut op, 1, &[(Some(1), 104, "x")], 2, &mut out);
        assert_eq!(take(&mut out), ["1, 100, a, 1, 104, x"]);
        let snapshot = op.snapshot().unwrap();
        let mut restored = factory.restore(0, 1, &snapshot).unwrap();
        restored.on_watermark(wm(200, 3), &mut out).unwrap();
        assert_eq!(take(&mut out), ["2, 100, b, null, null, null", "wm 200"]);
    }

    /// Unmatched left rows of equal time are padded in arrival order, not
    /// in the order of the slots their batches were given (`c` reuses the
    /// slot `a` left), so a restore, which gives the slots out again in
    /// arrival order, pads them in the same order.
    #[test]
    fn equal_times_are_padded_in_arrival_order_across_a_restore() {
        let (left, _) = sides();
        let row = |k: i64, t: i64, v: &str| {
            let columns = vec![ints(&[Some(k)]), ints(&[Some(t)]), strs(&[v])];
            Step::data(0, batch(&left, columns, 1))
        };
        let steps = vec![vec![
            row(1, 100, "a"),
            row(2, 120, "b"),
            Step::Watermark(111),
            row(3, 120, "c"),
            Step::Watermark(200),
        ]];
        let factory = IntervalJoinFactory::new(spec(JoinKind::Left)).unwrap();
        for cut in 0..=steps[0].len() {
            let lines = assert_round_trip(&factory, &steps, cut).concat();
            let padded: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(2)).collect();
            assert_eq!(padded, ["a", "b", "c"], "{lines:?}");
        }
    }

    #[test]
    fn a_snapshot_of_another_plan_is_refused() {
        let (left, right) = sides();
        // The right input's value column is an integer here.
        let other_right = schema(&[
            ("k", DataType::Int64),
            ("rt", DataType::Int64),
            ("rv", DataType::Int64),
        ]);
        let other = IntervalJoinSpec {
            right_keys: vec![col("k", &other_right).unwrap()],
            right_time: col("rt", &other_right).unwrap(),
            output_schema: joined(&left, &other_right),
            right_schema: other_right.clone(),
            ..spec(JoinKind::Inner)
        };
        let mut op = operator(other);
        let mut out = Emitter::new();
        let row = batch(
            &other_right,
            vec![ints(&[Some(1)]), ints(&[Some(5)]), ints(&[Some(7)])],
            1,
        );
        op.on_data(1, row, &mut out).unwrap();
        let snapshot = op.snapshot().unwrap();

        let factory = IntervalJoinFactory::new(spec(JoinKind::Inner)).unwrap();
        let err = factory
            .restore(0, 1, &snapshot)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("snapshot") && err.contains("rv: Int64"),
            "{err}"
        );
        // A window join's snapshot has no match flags.
        let window_join = Snapshot::none()
            .with(
                "left",
                strip_entered(&batch(&left, vec![ints(&[]), ints(&[]), strs(&[])], 1)),
            )
            .with(
                "right",
                strip_entered(&batch(&right, vec![ints(&[]), ints(&[]), strs(&[])], 1)),
            );
        let err = factory
            .restore(0, 1, &window_join)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("snapshot has no table 'left_state'"), "{err}");
        assert!(factory.restore(0, 1, &Snapshot::none()).is_ok());
        // The signature says what the plan's state means.
        let mut filtered = spec(JoinKind::Left);
        filtered.filter = Some(strictly_after(&filtered));
        assert_eq!(
            IntervalJoinFactory::new(filtered).unwrap().signature(),
            "interval join: left join on [k@0 = k@0] and rt@1 in [lt@1 -5 ms, lt@1 +10 ms] where rt@4 > lt@1"
        );
    }

    #[test]
    fn invalid_specs_are_rejected_with_the_reason() {
        let error = |spec: IntervalJoinSpec| match IntervalJoinFactory::new(spec) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("spec accepted"),
        };
        assert!(error(spec(JoinKind::Full)).contains("full interval join is not supported"));
        let mut s = spec(JoinKind::Inner);
        (s.lower_ms, s.upper_ms) = (10, -5);
        assert!(error(s).contains("time band is empty"));
        let mut s = spec(JoinKind::Inner);
        s.left_time = col("lv", &s.left_schema).unwrap();
        assert!(error(s).contains("expected a timestamp or Int64"));
    }

    /// Inner and left, with and without a filter: each buffered row goes to
    /// the instance owning its key's key group, its match flag with it.
    #[test]
    fn state_rescales_by_key_group_at_every_step() {
        let (left, right) = sides();
        let steps = join_round_trip_steps([&left, &right], 1).remove(0);
        for kind in [JoinKind::Inner, JoinKind::Left] {
            for filtered in [false, true] {
                let mut spec = spec(kind);
                if filtered {
                    spec.filter = Some(strictly_after(&spec));
                }
                let factory = IntervalJoinFactory::new(spec).unwrap();
                let pairs = [(2, 1), (2, 3), (1, 2)];
                let ran = assert_rescales(&factory, &steps, &[&["k"], &["k"]], &pairs);
                let what = format!("{kind}, filter {filtered}: {ran:?}");
                assert!(ran.rows > 500 && ran.late_rows > 0, "{what}");
                assert!(ran.state_rows > 500, "{what}");
            }
        }
        // Without keys every row meets at one instance.
        let keyless = IntervalJoinFactory::new(IntervalJoinSpec {
            left_keys: Vec::new(),
            right_keys: Vec::new(),
            ..spec(JoinKind::Inner)
        })
        .unwrap();
        let mut op = keyless.operator().unwrap();
        send(&mut op, 0, &[(Some(1), 5, "a")], 1, &mut Emitter::new());
        let snapshot = op.snapshot().unwrap();
        let says = "cannot be restored at another parallelism";
        assert_rescales_only_one_to_one(&keyless, &snapshot, (1, 2), says);
    }
}
