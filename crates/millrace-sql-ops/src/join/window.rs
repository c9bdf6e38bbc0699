//! Window join: rows of the two inputs meet when they fall in the same window.
//!
//! # Semantics
//!
//! * **Windows.** Each input assigns its rows to windows with its own
//!   [`WindowAssign`]: tumble or hop windows from event time, or the window
//!   column an earlier window aggregate produced. Two windows are the same
//!   when their start and end are; the planner gives both sides the same
//!   windows, so e.g. a carried `tumble(10s)` column on one side meets
//!   `tumble(ts, 10s)` on the other.
//! * **Late rows.** A row is late when its side's assignment says so (event
//!   time below the watermark, or a carried window that already ended); late
//!   rows go to the late output of their side (`Emitter::late`).
//! * **Firing.** The watermark W is the largest seen. Every window with
//!   `end <= W` fires, in order of (end, start): its buffered rows are joined
//!   on the keys, filtered, padded for outer kinds, emitted with entered time
//!   = the watermark's, and forgotten. Then the watermark is forwarded. At end
//!   of input every open window fires (entered time = the largest seen).
//! * **Order.** Within a window: the pairs (in arrival order of the larger
//!   side), then unmatched left rows, then unmatched right rows.
//! * **State.** A snapshot holds every open window's rows and the
//!   watermark (`window/state.rs`); at another parallelism each row goes
//!   to the instance its key's rows will reach (`window/rescale.rs`).
//!
//! # Cost
//!
//! On arrival a batch's keys are encoded and hashed once, and each window
//! it falls in keeps the batch (shared, when the window holds all of its
//! rows, as a tumbling window mostly does; a copy of its rows otherwise).
//! Batches are grouped on arrival in runs of about `COMPACT_ROWS` rows;
//! each run gets one filter of its hashes, and a run of many small batches
//! is first merged into one. Firing a window indexes the smaller side's key
//! bytes and probes with the larger side's (comparing kept hashes first
//! when the smaller side has only a few keys, and skipping runs whose
//! filter says none of the keys is there), then gathers the pairs' columns
//! straight from the buffered batches: nothing is concatenated or
//! re-encoded when the window closes, which is when its results' latency is
//! counted, and its rows are freed at the operator's next call, after the results have left. Output
//! is built `MAX_OUTPUT_ROWS` pairs at a time, so a large window never
//! becomes one huge batch.

mod rescale;
mod state;

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, UInt32Array};
use arrow::compute::{concat_batches, interleave, take, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::SortField;
use datafusion::physical_expr::PhysicalExpr;
use millrace_core::time::now_ns;
use millrace_core::{
    Emitter, Error, Operator, OperatorFactory, Result, Snapshot, StateSize, Watermark,
    strip_entered,
};

use super::{
    JoinKind, JoinOutput, JoinShape, KeyEncoder, Keys, check_join, check_width,
    check_window_assign, describe_filter, describe_keys, no_such_input, note_entered, passed, side,
};
use crate::window::{Assignment, WindowAssign, take_closed};
use crate::{FastMap, MAX_OUTPUT_ROWS};

/// A join of the rows of each window (see the module doc).
#[derive(Clone, Debug)]
pub struct WindowJoinSpec {
    /// Shown in plans and errors.
    pub name: String,
    /// User columns of the left input (no entered column).
    pub left_schema: SchemaRef,
    /// User columns of the right input (no entered column).
    pub right_schema: SchemaRef,
    /// Equi-join keys; `left_keys[i]` is compared with `right_keys[i]`.
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// How each side's rows find their windows (tumble/hop from event time,
    /// or a window column); session windows are rejected.
    pub left_window: WindowAssign,
    pub right_window: WindowAssign,
    pub kind: JoinKind,
    /// Residual predicate over the joined row (evaluated on `output_schema`).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Left columns then right columns.
    pub output_schema: SchemaRef,
}

/// Creates window join operators; validates the spec once.
pub struct WindowJoinFactory {
    spec: Arc<WindowJoinSpec>,
    key_fields: Vec<SortField>,
}

impl WindowJoinFactory {
    pub fn new(spec: WindowJoinSpec) -> Result<Self> {
        let name = &spec.name;
        check_window_assign(name, "left", &spec.left_window, &spec.left_schema)?;
        check_window_assign(name, "right", &spec.right_window, &spec.right_schema)?;
        if let (Some(l), Some(r)) = (spec.left_window.kind(), spec.right_window.kind())
            && l != r
        {
            return Err(Error::plan(format!(
                "{name}: the left input uses {l} windows and the right input {r} windows; a window join needs the same windows on both sides"
            )));
        }
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

    /// One line for plans: `window join: inner join on [k@0 = k@0] in
    /// tumble 10ms on ts@1 / tumble 10ms on ts@1`.
    pub fn describe(&self) -> String {
        let spec = &self.spec;
        format!(
            "{}: {} join on {} in {} / {}{}",
            spec.name,
            spec.kind,
            describe_keys(&spec.left_keys, &spec.right_keys),
            spec.left_window.describe(),
            spec.right_window.describe(),
            describe_filter(spec.filter.as_ref())
        )
    }

    fn operator(&self) -> Result<WindowJoinOperator> {
        let spec = &self.spec;
        Ok(WindowJoinOperator {
            keys: KeyEncoder::new(&self.key_fields, &spec.left_keys, &spec.right_keys)?,
            output: JoinOutput::new(
                spec.output_schema.clone(),
                spec.left_schema.fields().len(),
                spec.filter.clone(),
            ),
            spec: spec.clone(),
            windows: BTreeMap::new(),
            watermark: i64::MIN,
            max_entered: None,
            assignments: Vec::new(),
            retired: Vec::new(),
            peak: StateSize::default(),
        })
    }
}

impl OperatorFactory for WindowJoinFactory {
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

    /// The snapshot must be a window
    /// join's of this plan (`window/state.rs`).
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

    /// Rows go to the instance owning their key's key group (their
    /// window's, when the inputs are routed by window); see
    /// `window/rescale.rs`.
    fn rescale(&self, old: &[Snapshot], parallelism: usize) -> Result<Vec<Snapshot>> {
        rescale::rescale(&self.spec, old, parallelism)
    }

    fn signature(&self) -> String {
        self.describe()
    }
}

/// A run of batches is closed once it holds this many rows (or a batch this
/// large arrives behind it): it gets one [`HashFilter`] of its hashes.
const COMPACT_ROWS: usize = 1024;

/// A closed run of more batches than this (on average under 64 rows a
/// batch) is merged into one batch. A lightly loaded source sends rows
/// nearly one at a time, and a window would otherwise hold, gather from and
/// finally free thousands of batches when it fires; at that load the copy
/// is cheap. A run of fewer, larger batches is kept as they came: under
/// load they are hundreds of rows, and copying them again (and encoding
/// their keys again) cost q7's window join half its time when the bids
/// arrived ~250 rows at a time.
const MAX_RUN_BATCHES: usize = 16;

/// A kept batch's keys, with a hash of each row's key bytes taken on
/// arrival: the few-keys probe compares these when the window fires, and
/// skips runs of batches whose filter says none of them is there.
struct KeptKeys {
    keys: Keys,
    /// Meaningless where the key is null: check [`Keys::get`] on a match.
    hashes: Vec<u64>,
    /// Bytes of the rows' keys.
    key_bytes: usize,
}

impl KeptKeys {
    fn encode(encoder: &KeyEncoder, input: usize, batch: &RecordBatch) -> Result<Arc<Self>> {
        let keys = encoder.encode(input, batch)?;
        let mut key_bytes = 0;
        let hashes: Vec<u64> = (0..batch.num_rows())
            .map(|r| {
                keys.get(r).map_or(0, |k| {
                    key_bytes += k.len();
                    key_hash(k)
                })
            })
            .collect();
        Ok(Arc::new(Self {
            keys,
            hashes,
            key_bytes,
        }))
    }

    /// Memory held: encoded keys and hashes.
    fn size(&self) -> usize {
        self.keys.size() + 8 * self.hashes.capacity()
    }
}

/// A Bloom filter over the key hashes of a run of kept batches (two bits
/// per hash, about eight bits per row: a key that is not there passes about
/// one time in twenty). Firing a window whose other side has a few keys
/// would otherwise read every kept hash; most runs hold none of those keys
/// (q7: the bids at the window's maximum price), and their hashes, written
/// tens of milliseconds earlier, are no longer in cache.
struct HashFilter {
    words: Vec<u64>,
}

impl HashFilter {
    /// A filter over the hashes of one or more batches.
    fn new<'a>(hashes: impl Iterator<Item = &'a [u64]> + Clone) -> Self {
        let rows: usize = hashes.clone().map(<[u64]>::len).sum();
        let bits = (rows * 8).next_power_of_two().max(64);
        let mut filter = Self {
            words: vec![0; bits / 64],
        };
        for &h in hashes.flatten() {
            for bit in filter.bits(h) {
                filter.words[bit / 64] |= 1 << (bit % 64);
            }
        }
        filter
    }

    /// Two bit positions from independent halves of the hash.
    fn bits(&self, hash: u64) -> [usize; 2] {
        let mask = self.words.len() * 64 - 1;
        [hash as usize & mask, (hash >> 32) as usize & mask]
    }

    /// False only if no row's hash is `hash`.
    fn may_contain(&self, hash: u64) -> bool {
        self.bits(hash)
            .iter()
            .all(|&bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn size(&self) -> usize {
        8 * self.words.capacity()
    }
}

/// Equal key bytes, equal hashes.
fn key_hash(bytes: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x6b65_7973).hash_one(bytes)
}

/// One side's rows of one window: batches in arrival order, each with its
/// rows' keys (encoded on arrival). Those before `open_from` are closed
/// runs, each under one filter; those from `open_from` on wait for enough
/// rows to close the next. A window that fires uses these as they are (it scans their
/// hashes), so firing never waits for a merge or a filter.
#[derive(Default)]
struct SideRows {
    batches: Vec<(RecordBatch, Arc<KeptKeys>)>,
    /// The closed runs: their batches, in order, and their filter.
    filters: Vec<(Range<usize>, HashFilter)>,
    open_from: usize,
    open_rows: usize,
    rows: usize,
    /// Memory of the batches, their keys and the filters; a batch that
    /// overlapping windows share is counted in each.
    state: StateSize,
}

impl SideRows {
    /// Keeps a batch in the open run, closing the run once it holds
    /// `COMPACT_ROWS` rows; a batch that large closes the run before it and
    /// is a run of its own.
    fn push(
        &mut self,
        batch: RecordBatch,
        keys: Arc<KeptKeys>,
        encoder: &KeyEncoder,
        input: usize,
    ) -> Result<()> {
        let n = batch.num_rows();
        if n >= COMPACT_ROWS {
            self.close_run(encoder, input)?;
        }
        self.rows += n;
        self.state += kept_state(&batch, &keys);
        self.batches.push((batch, keys));
        self.open_rows += n;
        if self.open_rows >= COMPACT_ROWS {
            self.close_run(encoder, input)?;
        }
        Ok(())
    }

    /// Closes the open run under a filter, merging it into one batch first
    /// when it has more than `MAX_RUN_BATCHES` batches.
    fn close_run(&mut self, encoder: &KeyEncoder, input: usize) -> Result<()> {
        let count = self.batches.len() - self.open_from;
        if count == 0 {
            return Ok(());
        }
        if count > MAX_RUN_BATCHES {
            let mut run = Vec::with_capacity(count);
            for (batch, keys) in self.batches.drain(self.open_from..) {
                self.state -= kept_state(&batch, &keys);
                run.push(batch);
            }
            let merged = concat_batches(run[0].schema_ref(), &run)?;
            let keys = KeptKeys::encode(encoder, input, &merged)?;
            self.state += kept_state(&merged, &keys);
            self.batches.push((merged, keys));
        }
        let run = &self.batches[self.open_from..];
        let filter = HashFilter::new(run.iter().map(|(_, k)| &k.hashes[..]));
        self.state += StateSize {
            bytes: filter.size(),
            ..StateSize::default()
        };
        self.filters
            .push((self.open_from..self.batches.len(), filter));
        self.open_from = self.batches.len();
        self.open_rows = 0;
        Ok(())
    }

    /// The batches as runs: each closed run with its filter, then the
    /// batches not yet under one.
    fn runs(&self) -> impl Iterator<Item = (Range<usize>, Option<&HashFilter>)> {
        self.filters
            .iter()
            .map(|(run, filter)| (run.clone(), Some(filter)))
            .chain([(self.open_from..self.batches.len(), None)])
    }

    /// The batches to probe, in arrival order: with `few` key hashes, the
    /// closed runs whose filter holds none of them are skipped.
    fn probe_order<'a>(&'a self, few: Option<&'a [u64]>) -> impl Iterator<Item = usize> + 'a {
        self.runs()
            .filter(move |(_, filter)| match (few, filter) {
                (Some(few), Some(filter)) => few.iter().any(|&h| filter.may_contain(h)),
                _ => true,
            })
            .flat_map(|(run, _)| run)
    }

    /// Places `(batch, row)` by key bytes, in arrival order; rows with a
    /// null key are left out (they match nothing).
    fn index(&self) -> FastMap<&[u8], Vec<Place>> {
        let mut table: FastMap<&[u8], Vec<Place>> = FastMap::default();
        for (b, (batch, kept)) in self.batches.iter().enumerate() {
            for r in 0..batch.num_rows() {
                if let Some(key) = kept.keys.get(r) {
                    table.entry(key).or_default().push((b as u32, r as u32));
                }
            }
        }
        table
    }
}

/// What keeping `batch` with `keys` holds; its rows are the entries.
fn kept_state(batch: &RecordBatch, keys: &KeptKeys) -> StateSize {
    StateSize {
        bytes: batch.get_array_memory_size() + keys.size(),
        keys: batch.num_rows(),
        key_bytes: keys.key_bytes,
    }
}

/// A buffered row: (batch, row) within one side of one window.
type Place = (u32, u32);

/// The rows each side has buffered for one window.
#[derive(Default)]
struct WindowRows {
    sides: [SideRows; 2],
}

struct WindowJoinOperator {
    spec: Arc<WindowJoinSpec>,
    keys: KeyEncoder,
    output: JoinOutput,
    /// Open windows by (end, start), so the windows a watermark completes are
    /// a prefix.
    windows: BTreeMap<(i64, i64), WindowRows>,
    watermark: i64,
    max_entered: Option<i64>,
    /// Scratch reused across batches.
    assignments: Vec<Assignment>,
    /// The windows the last watermark fired, freed at the next call rather
    /// than before their results have left the task (a window of 100k rows
    /// takes tens of microseconds to free).
    retired: Vec<WindowRows>,
    /// The most buffered at once, taken after each input batch.
    peak: StateSize,
}

/// Build sides with at most this many distinct keys are probed by hash
/// comparison (see [`WindowJoinOperator::join_window`]).
const FEW_KEYS: usize = 4;

impl WindowJoinOperator {
    /// User columns of input `input` (0 = left, 1 = right).
    fn input_schema(&self, input: usize) -> &SchemaRef {
        side(input, &self.spec.left_schema, &self.spec.right_schema)
    }

    /// Records what the open windows buffer if it is the most so far: a few
    /// additions per open window, after each input batch (state only grows
    /// between firings).
    fn note_peak(&mut self) {
        let mut now = StateSize::default();
        for rows in self.windows.values() {
            for side in &rows.sides {
                now += side.state;
            }
        }
        if now.bytes > self.peak.bytes {
            self.peak = now;
        }
    }

    /// Joins and emits every window with `end <= up_to` (all for `None`).
    fn fire(&mut self, up_to: Option<i64>, entered_ns: i64, out: &mut Emitter) -> Result<()> {
        let fired = take_closed(&mut self.windows, up_to);
        if fired.is_empty() {
            // Nothing waits on this call: free what earlier firings left.
            self.retired.clear();
        }
        for (_, rows) in fired {
            self.join_window(&rows, entered_ns, out)?;
            self.retired.push(rows);
        }
        Ok(())
    }

    fn join_window(&self, rows: &WindowRows, entered_ns: i64, out: &mut Emitter) -> Result<()> {
        let [left, right] = &rows.sides;
        if self.spec.kind == JoinKind::Inner && (left.rows == 0 || right.rows == 0) {
            return Ok(());
        }
        let mut pairs = WindowPairs::new(left, right, &self.output, self.spec.kind, entered_ns);
        // Hash the smaller side, probe with the larger in arrival order.
        let build_left = left.rows <= right.rows;
        let (build, probe) = if build_left {
            (left, right)
        } else {
            (right, left)
        };
        let table = build.index();
        // A build side of a few keys (one row per window from an aggregate,
        // as in "the bids at the window's maximum") is probed by comparing
        // the hashes kept since arrival; only a row whose hash matches one
        // of them is looked up.
        let few: Option<Vec<u64>> =
            (table.len() <= FEW_KEYS).then(|| table.keys().map(|k| key_hash(k)).collect());
        if !table.is_empty() {
            for b in probe.probe_order(few.as_deref()) {
                let (batch, kept) = &probe.batches[b];
                let mut probe_row = |r: usize| -> Result<()> {
                    let Some(matches) = kept.keys.get(r).and_then(|k| table.get(k)) else {
                        return Ok(());
                    };
                    let here = (b as u32, r as u32);
                    for &there in matches {
                        let (l, r) = if build_left {
                            (there, here)
                        } else {
                            (here, there)
                        };
                        pairs.push(l, r, out)?;
                    }
                    Ok(())
                };
                match &few {
                    // One pass over the batch's kept hashes.
                    Some(few) => {
                        for (r, h) in kept.hashes.iter().enumerate() {
                            if few.contains(h) {
                                probe_row(r)?;
                            }
                        }
                    }
                    None => {
                        for r in 0..batch.num_rows() {
                            probe_row(r)?;
                        }
                    }
                }
            }
        }
        pairs.finish(out)
    }
}

/// One side's columns at firing time, for gathering rows from its batches.
struct Gather<'a> {
    /// Per column, that column of every batch.
    columns: Vec<Vec<&'a dyn Array>>,
    /// Row offset of each batch among the side's rows.
    starts: Vec<usize>,
    /// Per row of the side, whether it found a partner that passed the
    /// filter; empty unless the join keeps this side's unmatched rows (an
    /// inner join of a 100k-row window need not clear 100k flags).
    matched: Vec<bool>,
}

impl<'a> Gather<'a> {
    fn new(side: &'a SideRows, width: usize, keeps_unmatched: bool) -> Self {
        let mut starts = Vec::with_capacity(side.batches.len());
        let mut offset = 0;
        for (batch, _) in &side.batches {
            starts.push(offset);
            offset += batch.num_rows();
        }
        let columns = (0..width)
            .map(|c| {
                side.batches
                    .iter()
                    .map(|(b, _)| b.column(c).as_ref())
                    .collect()
            })
            .collect();
        Self {
            columns,
            starts,
            matched: if keeps_unmatched {
                vec![false; side.rows]
            } else {
                Vec::new()
            },
        }
    }

    /// The rows at `places`, in order. Only the batches they come from take
    /// part: `interleave` costs per array it is given, and a window's few
    /// matches (q7: the bids at the maximum) usually sit in one of its
    /// dozens of batches, which `take` reads directly, or, for one run of
    /// rows, slices without copying.
    fn gather(&self, places: &[Place]) -> Result<Vec<ArrayRef>> {
        let mut used: Vec<u32> = places.iter().map(|&(b, _)| b).collect();
        used.sort_unstable();
        used.dedup();
        if let [only] = used[..] {
            let first = places[0].1;
            let consecutive = places
                .iter()
                .enumerate()
                .all(|(i, &(_, r))| r as usize == first as usize + i);
            if consecutive {
                // One run of rows (often a single one): a zero-copy slice.
                return Ok(self
                    .columns
                    .iter()
                    .map(|arrays| arrays[only as usize].slice(first as usize, places.len()))
                    .collect());
            }
            let rows = UInt32Array::from_iter_values(places.iter().map(|&(_, r)| r));
            return self
                .columns
                .iter()
                .map(|arrays| Ok(take(arrays[only as usize], &rows, None)?))
                .collect();
        }
        let indices: Vec<(usize, usize)> = places
            .iter()
            .map(|&(b, r)| {
                let (Ok(i) | Err(i)) = used.binary_search(&b);
                (i, r as usize)
            })
            .collect();
        self.columns
            .iter()
            .map(|arrays| {
                let subset: Vec<&dyn Array> = used.iter().map(|&b| arrays[b as usize]).collect();
                Ok(interleave(&subset, &indices)?)
            })
            .collect()
    }

    fn mark(&mut self, (b, r): Place) {
        if let Some(m) = self.matched.get_mut(self.starts[b as usize] + r as usize) {
            *m = true;
        }
    }

    /// Places of the rows that found no partner, in arrival order.
    fn unmatched(&self) -> Vec<Place> {
        let mut places = Vec::new();
        for (b, &start) in self.starts.iter().enumerate() {
            let end = self
                .starts
                .get(b + 1)
                .copied()
                .unwrap_or(self.matched.len());
            for (r, &m) in self.matched[start..end].iter().enumerate() {
                if !m {
                    places.push((b as u32, r as u32));
                }
            }
        }
        places
    }
}

/// The pairs of one window, emitted `MAX_OUTPUT_ROWS` at a time, and which
/// rows of each side found a partner that passed the filter.
struct WindowPairs<'a> {
    sides: [Gather<'a>; 2],
    output: &'a JoinOutput,
    kind: JoinKind,
    entered_ns: i64,
    pending: [Vec<Place>; 2],
}

impl<'a> WindowPairs<'a> {
    fn new(
        left: &'a SideRows,
        right: &'a SideRows,
        output: &'a JoinOutput,
        kind: JoinKind,
        entered_ns: i64,
    ) -> Self {
        Self {
            sides: [
                Gather::new(left, output.left_width(), kind.keeps_unmatched_left()),
                Gather::new(right, output.right_width(), kind.keeps_unmatched_right()),
            ],
            output,
            kind,
            entered_ns,
            pending: [Vec::new(), Vec::new()],
        }
    }

    fn push(&mut self, l: Place, r: Place, out: &mut Emitter) -> Result<()> {
        self.pending[0].push(l);
        self.pending[1].push(r);
        if self.pending[0].len() >= MAX_OUTPUT_ROWS {
            self.flush(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Emitter) -> Result<()> {
        let n = self.pending[0].len();
        if n == 0 {
            return Ok(());
        }
        let [lp, rp] = std::mem::take(&mut self.pending);
        let left = self.sides[0].gather(&lp)?;
        let right = self.sides[1].gather(&rp)?;
        let entered: ArrayRef = Arc::new(Int64Array::from_value(self.entered_ns, n));
        let mask: Option<BooleanArray> = self.output.emit_pairs(left, right, entered, out)?;
        for (i, (&l, &r)) in lp.iter().zip(&rp).enumerate() {
            if passed(mask.as_ref(), i) {
                self.sides[0].mark(l);
                self.sides[1].mark(r);
            }
        }
        Ok(())
    }

    /// Emits the remaining pairs, then the unmatched rows outer kinds keep.
    fn finish(mut self, out: &mut Emitter) -> Result<()> {
        self.flush(out)?;
        if self.kind.keeps_unmatched_left() {
            for places in self.sides[0].unmatched().chunks(MAX_OUTPUT_ROWS) {
                let entered = Arc::new(Int64Array::from_value(self.entered_ns, places.len()));
                self.output
                    .emit_left_padded(self.sides[0].gather(places)?, entered, out)?;
            }
        }
        if self.kind.keeps_unmatched_right() {
            for places in self.sides[1].unmatched().chunks(MAX_OUTPUT_ROWS) {
                let entered = Arc::new(Int64Array::from_value(self.entered_ns, places.len()));
                self.output
                    .emit_right_padded(self.sides[1].gather(places)?, entered, out)?;
            }
        }
        Ok(())
    }
}

impl Operator for WindowJoinOperator {
    /// Every open window's rows and the watermark (see `state.rs`).
    fn snapshot(&mut self) -> Result<Snapshot> {
        self.state_snapshot()
    }

    fn on_data(&mut self, input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        let (assign, schema) = match input {
            0 => (&self.spec.left_window, &self.spec.left_schema),
            1 => (&self.spec.right_window, &self.spec.right_schema),
            _ => return Err(no_such_input(input)),
        };
        self.retired.clear();
        let user = strip_entered(&batch);
        check_width(&user, schema, &self.spec.name, input)?;
        note_entered(&mut self.max_entered, &batch);
        // A batch all of one window (the usual case under load) is kept
        // whole, without a membership per row and their sort below.
        if let Some((start, end)) = assign.whole_batch_window(&user, self.watermark)? {
            let keys = KeptKeys::encode(&self.keys, input, &user)?;
            let side = &mut self.windows.entry((end, start)).or_default().sides[input];
            side.push(user, keys, &self.keys, input)?;
            self.note_peak();
            return Ok(());
        }
        self.assignments.clear();
        let mut late = Vec::new();
        assign.assign(&user, self.watermark, &mut self.assignments, &mut late)?;
        out.late(input, &batch, &late)?;
        if self.assignments.is_empty() {
            return Ok(());
        }
        let mut whole_keys: Option<Arc<KeptKeys>> = None;
        // Group the memberships by window; the stable sort keeps arrival
        // order within a window.
        self.assignments.sort_by_key(|a| (a.end, a.start));
        for run in self
            .assignments
            .chunk_by(|a, b| (a.end, a.start) == (b.end, b.start))
        {
            // A window holding every row of the batch (rows are unique within
            // a window) shares the batch, and its keys; otherwise it keeps a
            // copy of its rows.
            let whole = run.len() == user.num_rows();
            let rows = if whole {
                user.clone()
            } else {
                let indices = UInt32Array::from_iter_values(run.iter().map(|a| a.row));
                take_record_batch(&user, &indices)?
            };
            let side = &mut self
                .windows
                .entry((run[0].end, run[0].start))
                .or_default()
                .sides[input];
            let keys = match &whole_keys {
                Some(k) if whole => k.clone(),
                _ => {
                    let keys = KeptKeys::encode(&self.keys, input, &rows)?;
                    if whole {
                        whole_keys = Some(keys.clone());
                    }
                    keys
                }
            };
            side.push(rows, keys, &self.keys, input)?;
        }
        self.note_peak();
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

    fn peak_state(&self) -> Option<StateSize> {
        Some(self.peak)
    }

    /// The first window that can close: the earliest open one, or the next
    /// end after the watermark of a side whose windows come from event
    /// time. When both sides carry their windows, a row still on its way
    /// may open any window, so every watermark matters. Watermarks are
    /// passed on, so `downstream`'s count too.
    fn watermark_interest(&self, downstream: i64) -> i64 {
        let kind = self
            .spec
            .left_window
            .kind()
            .or(self.spec.right_window.kind());
        let Some(next_end) = kind.and_then(|k| k.next_end_after(self.watermark)) else {
            return i64::MIN;
        };
        let open = self
            .windows
            .first_key_value()
            .map_or(i64::MAX, |((end, _), _)| *end);
        next_end.min(open).min(downstream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::test_util::{
        batch, carrying_windows, ints, join_round_trip_steps, joined, schema, strs, take, windows,
        with_window_column, wm,
    };
    use crate::round_trip::{
        assert_rescales, assert_rescales_only_one_to_one, assert_round_trips_at_every_cut,
    };
    use crate::window::{WindowKind, window_type};
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field};
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{binary, col};

    /// Left `(k, ts, lv)` and right `(k, ts, rv)`.
    fn sides() -> (SchemaRef, SchemaRef) {
        let left = schema(&[
            ("k", DataType::Int64),
            ("ts", DataType::Int64),
            ("lv", DataType::Utf8),
        ]);
        let right = schema(&[
            ("k", DataType::Int64),
            ("ts", DataType::Int64),
            ("rv", DataType::Utf8),
        ]);
        (left, right)
    }

    fn tumble(schema: &SchemaRef, size_ms: i64) -> WindowAssign {
        WindowAssign::Time {
            time: col("ts", schema).unwrap(),
            kind: WindowKind::Tumble { size_ms },
        }
    }

    /// A join of `sides()` on `k` in tumbling windows of 10 ms.
    fn spec(kind: JoinKind) -> WindowJoinSpec {
        let (left, right) = sides();
        WindowJoinSpec {
            name: "window join".into(),
            left_keys: vec![col("k", &left).unwrap()],
            right_keys: vec![col("k", &right).unwrap()],
            left_window: tumble(&left, 10),
            right_window: tumble(&right, 10),
            kind,
            filter: None,
            output_schema: joined(&left, &right),
            left_schema: left,
            right_schema: right,
        }
    }

    fn operator(spec: WindowJoinSpec) -> Box<dyn Operator> {
        WindowJoinFactory::new(spec).unwrap().create(0, 1).unwrap()
    }

    /// Sends rows `(k, ts, v)` to `input`.
    fn send(
        op: &mut dyn Operator,
        input: usize,
        rows: &[(Option<i64>, i64, &str)],
        out: &mut Emitter,
    ) {
        let (left, right) = sides();
        let s = if input == 0 { left } else { right };
        let k: Vec<Option<i64>> = rows.iter().map(|r| r.0).collect();
        let ts: Vec<Option<i64>> = rows.iter().map(|r| Some(r.1)).collect();
        let v: Vec<&str> = rows.iter().map(|r| r.2).collect();
        let b = batch(&s, vec![ints(&k), ints(&ts), strs(&v)], 1);
        op.on_data(input, b, out).unwrap();
    }

    #[test]
    fn inner_join_fires_each_window_once_its_end_passes() {
        let mut op = operator(spec(JoinKind::Inner));
        let mut out = Emitter::new();
        // Out of order across windows and within them.
        send(
            &mut *op,
            0,
            &[(Some(1), 5, "a"), (Some(2), 12, "b"), (Some(1), 3, "c")],
            &mut out,
        );
        send(
            &mut *op,
            1,
            &[
                (Some(1), 8, "x"),
                (Some(2), 2, "y"),
                (Some(2), 15, "z"),
                (Some(1), 11, "w"),
            ],
            &mut out,
        );
        assert!(
            take(&mut out).is_empty(),
            "nothing fires before the watermark"
        );

        op.on_watermark(wm(10, 777), &mut out).unwrap();
        let messages = out.take_messages();
        // [0,10): left a, c (key 1); right x (key 1), y (key 2, no partner).
        assert_eq!(
            crate::join::test_util::render(&messages),
            ["1, 5, a, 1, 8, x", "1, 3, c, 1, 8, x", "wm 10"]
        );
        assert_eq!(crate::join::test_util::entered(&messages), [777, 777]);

        // Event time 9 is below the watermark 10: late, dropped.
        send(
            &mut *op,
            1,
            &[(Some(2), 9, "late"), (Some(2), 19, "v")],
            &mut out,
        );
        send(&mut *op, 0, &[(Some(2), 14, "d")], &mut out);
        assert_eq!(out.late_rows(), 1);

        op.on_end(&mut out).unwrap();
        // [10,20): left b, d (key 2); right z, v (key 2), w (key 1).
        assert_eq!(
            take(&mut out),
            [
                "2, 12, b, 2, 15, z",
                "2, 14, d, 2, 15, z",
                "2, 12, b, 2, 19, v",
                "2, 14, d, 2, 19, v"
            ]
        );
    }

    #[test]
    fn left_join_pads_rows_without_partner() {
        let mut op = operator(spec(JoinKind::Left));
        let mut out = Emitter::new();
        send(
            &mut *op,
            0,
            &[(Some(1), 1, "a"), (Some(2), 2, "b"), (None, 3, "n")],
            &mut out,
        );
        send(
            &mut *op,
            1,
            &[(Some(1), 4, "x"), (Some(3), 5, "z"), (None, 6, "m")],
            &mut out,
        );
        // A window with left rows only.
        send(&mut *op, 0, &[(Some(5), 25, "e")], &mut out);
        op.on_watermark(wm(10, 1), &mut out).unwrap();
        op.on_end(&mut out).unwrap();
        // Null keys never match, not even each other.
        assert_eq!(
            take(&mut out),
            [
                "1, 1, a, 1, 4, x",
                "2, 2, b, null, null, null",
                "null, 3, n, null, null, null",
                "wm 10",
                "5, 25, e, null, null, null"
            ]
        );
    }

    #[test]
    fn full_join_pads_both_sides() {
        let mut op = operator(spec(JoinKind::Full));
        let mut out = Emitter::new();
        send(
            &mut *op,
            0,
            &[(Some(1), 1, "a"), (Some(2), 2, "b")],
            &mut out,
        );
        send(
            &mut *op,
            1,
            &[(Some(1), 4, "x"), (Some(3), 5, "z")],
            &mut out,
        );
        op.on_end(&mut out).unwrap();
        assert_eq!(
            take(&mut out),
            [
                "1, 1, a, 1, 4, x",
                "2, 2, b, null, null, null",
                "null, null, null, 3, 5, z"
            ]
        );
    }

    #[test]
    fn residual_filter_drops_pairs_and_left_join_pads_their_rows() {
        let mut spec = spec(JoinKind::Left);
        // left.ts < right.ts
        let output = spec.output_schema.clone();
        let left_ts = Arc::new(datafusion::physical_expr::expressions::Column::new("ts", 1));
        let right_ts = Arc::new(datafusion::physical_expr::expressions::Column::new("ts", 4));
        spec.filter = Some(binary(left_ts, Op::Lt, right_ts, &output).unwrap());
        let mut op = operator(spec);
        let mut out = Emitter::new();
        send(
            &mut *op,
            0,
            &[(Some(1), 5, "a"), (Some(1), 9, "b")],
            &mut out,
        );
        send(&mut *op, 1, &[(Some(1), 7, "x")], &mut out);
        op.on_watermark(wm(10, 1), &mut out).unwrap();
        // b's only pair fails the filter (9 < 7 is false): b counts as unmatched.
        assert_eq!(
            take(&mut out),
            ["1, 5, a, 1, 7, x", "1, 9, b, null, null, null", "wm 10"]
        );
    }

    #[test]
    fn carried_windows_meet_windows_from_event_time() {
        // Left: results of an earlier window aggregate (w, k, cnt).
        let left = schema(&[
            ("w", window_type()),
            ("k", DataType::Int64),
            ("cnt", DataType::Int64),
        ]);
        let (_, right) = sides();
        let spec = WindowJoinSpec {
            name: "window join".into(),
            left_keys: vec![col("k", &left).unwrap()],
            right_keys: vec![col("k", &right).unwrap()],
            left_window: WindowAssign::Column {
                window: col("w", &left).unwrap(),
            },
            right_window: tumble(&right, 10),
            kind: JoinKind::Inner,
            filter: None,
            output_schema: joined(&left, &right),
            left_schema: left.clone(),
            right_schema: right,
        };
        let mut op = operator(spec);
        let mut out = Emitter::new();
        let aggregates = |bounds: &[(i64, i64)], k: &[Option<i64>], cnt: &[Option<i64>]| {
            batch(&left, vec![windows(bounds), ints(k), ints(cnt)], 1)
        };
        op.on_data(
            0,
            aggregates(
                &[(0, 10), (10, 20), (0, 10)],
                &[Some(1), Some(1), Some(2)],
                &[Some(3), Some(4), Some(5)],
            ),
            &mut out,
        )
        .unwrap();
        send(
            &mut *op,
            1,
            &[(Some(1), 5, "x"), (Some(1), 15, "y"), (Some(2), 25, "z")],
            &mut out,
        );
        op.on_watermark(wm(20, 1), &mut out).unwrap();
        // A carried window that ended at or before the watermark is late.
        op.on_data(0, aggregates(&[(10, 20)], &[Some(2)], &[Some(1)]), &mut out)
            .unwrap();
        op.on_end(&mut out).unwrap();
        assert_eq!(
            take(&mut out),
            ["[0,10), 1, 3, 1, 5, x", "[10,20), 1, 4, 1, 15, y", "wm 20"]
        );
        assert_eq!(out.late_rows(), 1);
    }

    /// Rows `(k, ts, v)` for `input`, as one batch.
    fn rows_batch(input: usize, rows: &[(Option<i64>, i64, String)]) -> RecordBatch {
        let (left, right) = sides();
        let s = if input == 0 { left } else { right };
        let k: Vec<Option<i64>> = rows.iter().map(|r| r.0).collect();
        let ts: Vec<Option<i64>> = rows.iter().map(|r| Some(r.1)).collect();
        let v: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        batch(&s, vec![ints(&k), ints(&ts), strs(&v)], 1)
    }

    #[test]
    fn large_and_tiny_batches_in_hopping_windows_match_a_nested_loop() {
        // Hop windows of 20 ms every 10 ms: every row is in two windows.
        let (left, right) = sides();
        let hop = |s: &SchemaRef| WindowAssign::Time {
            time: col("ts", s).unwrap(),
            kind: WindowKind::Hop {
                size_ms: 20,
                slide_ms: 10,
            },
        };
        let mut spec = spec(JoinKind::Full);
        spec.left_window = hop(&left);
        spec.right_window = hop(&right);
        let mut op = operator(spec);
        let mut out = Emitter::new();
        // Left: one batch of 3000 rows (kept whole, and cut at window
        // boundaries); right: 700 batches of 1 to 3 rows (merged on
        // arrival, a run at a time).
        let l: Vec<(Option<i64>, i64, String)> = (0..3000)
            .map(|i| ((i % 11 != 0).then_some(i % 97), i / 50, format!("l{i}")))
            .collect();
        let r: Vec<(Option<i64>, i64, String)> = (0..1400)
            .map(|i| {
                (
                    (i % 13 != 0).then_some(i % 89),
                    i * 60 / 1400,
                    format!("r{i}"),
                )
            })
            .collect();
        op.on_data(0, rows_batch(0, &l), &mut out).unwrap();
        let mut i = 0;
        while i < r.len() {
            let n = 1 + i % 3;
            let end = (i + n).min(r.len());
            op.on_data(1, rows_batch(1, &r[i..end]), &mut out).unwrap();
            i = end;
        }
        op.on_end(&mut out).unwrap();
        let mut got = take(&mut out);

        // The same by nested loops over each window's rows.
        let mut want = Vec::new();
        let windows_of = |ts: i64| {
            let last = ts.div_euclid(10) * 10;
            [last - 10, last]
        };
        let show = |r: &(Option<i64>, i64, String)| {
            let k = r.0.map_or("null".to_string(), |k| k.to_string());
            format!("{k}, {}, {}", r.1, r.2)
        };
        let starts: std::collections::BTreeSet<i64> = l
            .iter()
            .chain(&r)
            .flat_map(|row| windows_of(row.1))
            .collect();
        for start in starts {
            let in_window = |rows: &[(Option<i64>, i64, String)]| -> Vec<usize> {
                (0..rows.len())
                    .filter(|&i| windows_of(rows[i].1).contains(&start))
                    .collect()
            };
            let (lw, rw) = (in_window(&l), in_window(&r));
            let mut l_matched = vec![false; lw.len()];
            let mut r_matched = vec![false; rw.len()];
            for (a, &li) in lw.iter().enumerate() {
                for (b, &ri) in rw.iter().enumerate() {
                    if l[li].0.is_some() && l[li].0 == r[ri].0 {
                        want.push(format!("{}, {}", show(&l[li]), show(&r[ri])));
                        l_matched[a] = true;
                        r_matched[b] = true;
                    }
                }
            }
            for (a, &li) in lw.iter().enumerate() {
                if !l_matched[a] {
                    want.push(format!("{}, null, null, null", show(&l[li])));
                }
            }
            for (b, &ri) in rw.iter().enumerate() {
                if !r_matched[b] {
                    want.push(format!("null, null, null, {}", show(&r[ri])));
                }
            }
        }
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len());
        assert_eq!(got, want);
    }

    #[test]
    fn a_side_with_few_keys_matches_a_nested_loop_in_arrival_order() {
        // Left: 4000 rows over 4 tumbling windows of 10 ms, keys 0..40 with
        // some nulls, in batches of every size from 1 row to 2000 (the
        // 2000 closes a run of six batches and is one alone; the last two
        // stay open).
        // Right: per window at most three rows, keys 7, 13 and null: the
        // few-keys probe.
        let l: Vec<(Option<i64>, i64, String)> = (0..4000)
            .map(|i| ((i % 17 != 0).then_some(i % 40), i / 100, format!("l{i}")))
            .collect();
        let r: Vec<(Option<i64>, i64, String)> = (0..4)
            .flat_map(|w| {
                [
                    (Some(7), w * 10 + 1, format!("r{w}a")),
                    (Some(13), w * 10 + 2, format!("r{w}b")),
                    (None, w * 10 + 3, format!("r{w}c")),
                ]
            })
            .filter(|row| row.1 != 22)
            .collect();
        let mut op = operator(spec(JoinKind::Inner));
        let mut out = Emitter::new();
        op.on_data(1, rows_batch(1, &r), &mut out).unwrap();
        let sizes = [1, 2, 3, 500, 1, 1, 2000, 7, 300];
        let mut i = 0;
        for n in sizes.iter().cycle() {
            if i == l.len() {
                break;
            }
            let end = (i + n).min(l.len());
            op.on_data(0, rows_batch(0, &l[i..end]), &mut out).unwrap();
            i = end;
        }
        op.on_end(&mut out).unwrap();
        let got = take(&mut out);

        // Window by window, in arrival order of the larger (left) side.
        let show = |r: &(Option<i64>, i64, String)| {
            let k = r.0.map_or("null".to_string(), |k| k.to_string());
            format!("{k}, {}, {}", r.1, r.2)
        };
        let mut want = Vec::new();
        for w in 0..4 {
            for lr in l.iter().filter(|row| row.1 / 10 == w) {
                for rr in r.iter().filter(|row| row.1 / 10 == w) {
                    if lr.0.is_some() && lr.0 == rr.0 {
                        want.push(format!("{}, {}", show(lr), show(rr)));
                    }
                }
            }
        }
        assert!(want.len() > 100);
        assert_eq!(got, want);
    }

    #[test]
    fn peak_state_counts_the_rows_buffered_at_most_at_once() {
        let mut op = operator(spec(JoinKind::Inner));
        let mut out = Emitter::new();
        assert_eq!(op.peak_state(), Some(StateSize::default()));
        // Window [0,10): 3 left rows and 1 right row; [10,20): 1 left row.
        send(
            &mut *op,
            0,
            &[(Some(1), 1, "a"), (Some(2), 2, "b"), (Some(3), 12, "c")],
            &mut out,
        );
        send(&mut *op, 0, &[(Some(1), 4, "d")], &mut out);
        send(&mut *op, 1, &[(Some(1), 5, "x")], &mut out);
        let peak = op.peak_state().unwrap();
        assert_eq!(peak.keys, 5);
        // Int64 keys: 9 bytes per row in the row format.
        assert_eq!(peak.key_bytes, 5 * 9);
        assert!(peak.bytes > peak.key_bytes);
        // [0,10) fires; what [10,20) holds later stays below the peak.
        op.on_watermark(wm(10, 1), &mut out).unwrap();
        send(&mut *op, 0, &[(Some(4), 15, "e")], &mut out);
        assert_eq!(op.peak_state().unwrap(), peak);
    }

    #[test]
    fn runs_of_many_small_batches_are_merged_and_the_others_kept_as_they_came() {
        let s = spec(JoinKind::Inner);
        let factory = WindowJoinFactory::new(s.clone()).unwrap();
        let encoder = KeyEncoder::new(&factory.key_fields, &s.left_keys, &s.right_keys).unwrap();
        let mut side = SideRows::default();
        let mut next = 0;
        let sizes = [300, 5, 5, 800, 2000]
            .into_iter()
            .chain([40; 30])
            .chain([600]);
        for n in sizes {
            let rows: Vec<(Option<i64>, i64, String)> = (next..next + n)
                .map(|i| (Some(i % 50), 1, format!("r{i}")))
                .collect();
            next += n;
            let batch = strip_entered(&rows_batch(0, &rows));
            let keys = KeptKeys::encode(&encoder, 0, &batch).unwrap();
            side.push(batch, keys, &encoder, 0).unwrap();
        }
        // 300 + 5 + 5 + 800 rows close a run of four batches, kept; the 2000
        // is a run alone; 26 batches of 40 close a run of too many batches,
        // merged; four of 40 and the 600 wait in the open run.
        let kept: Vec<usize> = side.batches.iter().map(|(b, _)| b.num_rows()).collect();
        assert_eq!(kept, [300, 5, 5, 800, 2000, 1040, 40, 40, 40, 40, 600]);
        let runs: Vec<(Range<usize>, bool)> =
            side.runs().map(|(run, f)| (run, f.is_some())).collect();
        assert_eq!(
            runs,
            [(0..4, true), (4..5, true), (5..6, true), (6..11, false)]
        );
        for (run, filter) in side.runs() {
            let Some(filter) = filter else { continue };
            for (_, kept) in &side.batches[run] {
                assert!(kept.hashes.iter().all(|&h| filter.may_contain(h)));
            }
        }
        // Every row, once, in arrival order.
        assert_eq!(side.rows, 4910);
        let values: Vec<String> = side
            .batches
            .iter()
            .flat_map(|(b, _)| {
                let v = b.column(2).as_string::<i32>();
                (0..v.len())
                    .map(|i| v.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<String> = (0..4910).map(|i| format!("r{i}")).collect();
        assert_eq!(values, want);
    }

    #[test]
    fn the_hash_filter_passes_every_kept_hash_and_few_others() {
        let kept: Vec<u64> = (0..1000u64).map(|i| key_hash(&i.to_le_bytes())).collect();
        // Given as two batches' hashes, as a run of kept batches is.
        let filter = HashFilter::new([&kept[..300], &kept[300..]].into_iter());
        assert!(kept.iter().all(|&h| filter.may_contain(h)));
        let passed = (1000..11_000u64)
            .filter(|i| filter.may_contain(key_hash(&i.to_le_bytes())))
            .count();
        // Two bits per hash at 8+ bits per row: about 5% pass by chance.
        assert!(passed < 1000, "{passed} of 10000 absent hashes passed");
        assert!(!HashFilter::new(std::iter::empty()).may_contain(key_hash(b"x")));
    }

    /// Every kind, tumbling and hopping windows, parallelism 1 and 2: a
    /// snapshot at any step, restored, changes nothing (the outer kinds pad
    /// rows of windows open at the cut when they fire after it).
    /// Every join kind over tumbling windows of 10 ms, and over hopping
    /// windows of 20 ms every 10 ms, each with a name for messages.
    fn every_join() -> Vec<(String, WindowJoinFactory)> {
        let (left, right) = sides();
        let hop = |s: &SchemaRef| WindowAssign::Time {
            time: col("ts", s).unwrap(),
            kind: WindowKind::Hop {
                size_ms: 20,
                slide_ms: 10,
            },
        };
        let mut joins = Vec::new();
        for kind in [
            JoinKind::Inner,
            JoinKind::Left,
            JoinKind::Right,
            JoinKind::Full,
        ] {
            for hopping in [false, true] {
                let mut spec = spec(kind);
                if hopping {
                    spec.left_window = hop(&left);
                    spec.right_window = hop(&right);
                }
                let factory = WindowJoinFactory::new(spec).unwrap();
                joins.push((format!("{kind}, hopping {hopping}"), factory));
            }
        }
        joins
    }

    #[test]
    fn state_round_trips_through_a_snapshot_at_every_step() {
        let (left, right) = sides();
        for (name, factory) in every_join() {
            for parallelism in [1, 2] {
                let steps = join_round_trip_steps([&left, &right], parallelism);
                let (rows, late) = assert_round_trips_at_every_cut(&factory, &steps);
                let what = format!("{name}, parallelism {parallelism}");
                assert!(rows >= 20, "{what}: {rows} rows");
                assert!(late >= 10, "{what}: {late} late rows");
            }
        }
    }

    #[test]
    fn a_snapshot_of_another_plan_is_refused() {
        let (_, right) = sides();
        // The left input has one more column.
        let wider = schema(&[
            ("k", DataType::Int64),
            ("ts", DataType::Int64),
            ("lv", DataType::Utf8),
            ("extra", DataType::Int64),
        ]);
        let other = WindowJoinSpec {
            left_keys: vec![col("k", &wider).unwrap()],
            left_window: tumble(&wider, 10),
            output_schema: joined(&wider, &right),
            left_schema: wider.clone(),
            ..spec(JoinKind::Inner)
        };
        let mut op = operator(other);
        let mut out = Emitter::new();
        let row = batch(
            &wider,
            vec![
                ints(&[Some(1)]),
                ints(&[Some(5)]),
                strs(&["a"]),
                ints(&[None]),
            ],
            1,
        );
        op.on_data(0, row, &mut out).unwrap();
        let snapshot = op.snapshot().unwrap();

        let factory = WindowJoinFactory::new(spec(JoinKind::Inner)).unwrap();
        let err = factory
            .restore(0, 1, &snapshot)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("snapshot") && err.contains("extra: Int64"),
            "{err}"
        );
        // Another operator's snapshot (a window aggregate's tables).
        let foreign = Snapshot::none()
            .with(
                "groups",
                millrace_core::state::scalars(&[("start", Some(0))]),
            )
            .with(
                "progress",
                millrace_core::state::scalars(&[("watermark", Some(0))]),
            );
        let err = factory
            .restore(0, 1, &foreign)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("snapshot has no table 'windows'"), "{err}");
        assert_eq!(
            factory.signature(),
            "window join: inner join on [k@0 = k@0] in tumble 10ms on ts@1 / tumble 10ms on ts@1"
        );
        // An empty snapshot is a fresh operator.
        let mut fresh = factory.restore(0, 1, &Snapshot::none()).unwrap();
        assert_eq!(fresh.snapshot().unwrap().rows(), 1, "only the progress row");
    }

    #[test]
    fn invalid_specs_are_rejected_with_the_reason() {
        let error = |spec: WindowJoinSpec| match WindowJoinFactory::new(spec) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("spec accepted"),
        };
        let (left, _) = sides();

        let mut s = spec(JoinKind::Inner);
        s.left_window = WindowAssign::Time {
            time: col("ts", &left).unwrap(),
            kind: WindowKind::Session { gap_ms: 5 },
        };
        assert!(error(s).contains("session windows"));

        let mut s = spec(JoinKind::Inner);
        s.right_keys = vec![col("rv", &s.right_schema).unwrap()];
        assert!(error(s).contains("compares Int64 with Utf8"));

        let mut s = spec(JoinKind::Inner);
        s.right_keys.clear();
        assert!(error(s).contains("1 left join key(s) but 0 right"));

        let mut s = spec(JoinKind::Inner);
        s.right_window = tumble(&s.right_schema, 20);
        assert!(error(s).contains("same windows on both sides"));

        let mut s = spec(JoinKind::Left);
        let fields: Vec<Field> = s
            .output_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| f.as_ref().clone().with_nullable(i < 3))
            .collect();
        s.output_schema = Arc::new(arrow::datatypes::Schema::new(fields));
        assert!(error(s).contains("must be nullable"));
    }

    /// Old and new parallelisms the rescale checks run.
    const RESCALES: &[(usize, usize)] = &[(2, 1), (2, 3), (1, 2)];

    /// Every kind, tumbling and hopping windows: each buffered row goes to
    /// the instance owning its key's key group, and the windows several
    /// old instances held parts of are one window there.
    #[test]
    fn state_rescales_by_key_group_at_every_step() {
        let (left, right) = sides();
        let steps = join_round_trip_steps([&left, &right], 1).remove(0);
        for (name, factory) in every_join() {
            let ran = assert_rescales(&factory, &steps, &[&["k"], &["k"]], RESCALES);
            let what = format!("{name}: {ran:?}");
            assert!(ran.rows > 500 && ran.late_rows > 0, "{what}");
            assert!(ran.state_rows > 500, "{what}");
        }
    }

    /// Without keys, both inputs carrying their window: the inputs are
    /// routed by the window column, and each window's rows go with it.
    #[test]
    fn carried_windows_without_keys_rescale_by_window() {
        let (left, right) = sides();
        let (left, right) = (with_window_column(&left), with_window_column(&right));
        let carried = |s: &SchemaRef| WindowAssign::Column {
            window: col("w", s).unwrap(),
        };
        let by_window = WindowJoinSpec {
            name: "window join".into(),
            left_keys: Vec::new(),
            right_keys: Vec::new(),
            left_window: carried(&left),
            right_window: carried(&right),
            kind: JoinKind::Full,
            filter: None,
            output_schema: joined(&left, &right),
            left_schema: left.clone(),
            right_schema: right.clone(),
        };
        let factory = WindowJoinFactory::new(by_window).unwrap();
        let (plain_left, plain_right) = sides();
        let steps = join_round_trip_steps([&plain_left, &plain_right], 1).remove(0);
        let steps = carrying_windows(&steps, "ts", 10);
        let ran = assert_rescales(&factory, &steps, &[&["w"], &["w"]], RESCALES);
        assert!(
            ran.rows > 500 && ran.late_rows > 0 && ran.state_rows > 100,
            "{ran:?}"
        );
        // Without keys over windows of event time, one instance only.
        let keyless = WindowJoinFactory::new(WindowJoinSpec {
            left_keys: Vec::new(),
            right_keys: Vec::new(),
            ..spec(JoinKind::Inner)
        })
        .unwrap();
        let mut op = keyless.create(0, 1).unwrap();
        send(op.as_mut(), 0, &[(Some(1), 5, "a")], &mut Emitter::new());
        let snapshot = op.snapshot().unwrap();
        let says = "cannot be restored at another parallelism";
        assert_rescales_only_one_to_one(&keyless, &snapshot, (2, 1), says);
    }
}
