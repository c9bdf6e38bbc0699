//! Top-N rows per window: for each window and partition, the first `limit`
//! rows by the ORDER BY, emitted in rank order when the window closes
//! (`ROW_NUMBER() OVER (PARTITION BY window, ... ORDER BY ...) <= limit`), or
//! with `ties` every row whose rank is at most `limit`, a row's rank being one
//! more than the number of rows strictly better (`RANK() ... <= limit`).
//!
//! # Semantics
//!
//! * **Windows.** Rows find their windows with a [`WindowAssign`]: usually
//!   the window column of an earlier window aggregate (ranking its results),
//!   or tumble/hop windows from event time. Late rows go to the late output
//!   (`Emitter::late`).
//! * **Partitions.** Within a window, rows are ranked separately per value of
//!   the PARTITION BY keys; nulls form their own partition, as in SQL.
//! * **Ranking.** By the ORDER BY (asc/desc, nulls first/last). Ties are
//!   broken by arrival order: of two rows with equal sort keys, the one that
//!   arrived first ranks first, so the result is deterministic for a given
//!   input order. With `ties`, equal rows share a rank and all of them are
//!   kept: the result does not depend on the input order.
//! * **Firing.** The watermark W is the largest seen. Every window with
//!   `end <= W` fires, in order of (end, start): per partition (in order of
//!   first appearance) its best `limit` rows in rank order, with `row_number`
//!   1, 2, ... appended if asked for; entered time = the watermark's. Then the
//!   watermark is forwarded. At end of input every open window fires.
//!
//! # State
//!
//! A partition holds at most twice what its last cut kept (`limit` rows, or
//! with ties also the rows tied with the last): when it would hold more, it
//! is sorted and cut back, and its worst kept row becomes a cutoff that
//! rejects any later row not strictly better (with ties: worse), before the
//! row is copied. The rows of one arriving batch are cut the same way among
//! themselves first, so a large batch is not copied whole. Accepted rows are
//! copied into per-window chunks together with their sort keys (arrow
//! `RowConverter` bytes, so a comparison is a `memcmp`); when the chunks hold
//! more than twice the live candidates, the window is compacted. State is
//! thus bounded by the rows within the limit per partition, not by the rows
//! a window sees. Without PARTITION BY keys and with one ORDER BY
//! expression, a batch's rows worse than the limit-th best of their window
//! in the batch are dropped before any key is encoded (`batch_best.rs`), and
//! the survivors are held as they came and ranked once, when their window
//! fires (`held.rs`): no key is encoded at all. A snapshot holds the
//! candidates with what ranks them, and the watermark (`state.rs`); at
//! another parallelism each partition goes to the instance its rows will
//! reach (`rescale.rs`).

mod batch_best;
mod held;
mod rescale;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt32Array, UInt64Array, new_null_array};
use arrow::compute::{interleave_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};
use millrace_core::batch::schema_with_entered;
use millrace_core::time::now_ns;
use millrace_core::{
    Emitter, Error, Operator, OperatorFactory, Result, Snapshot, Watermark, strip_entered,
};

use crate::join::{check_window_assign, note_entered};
use crate::window::{Assignment, WindowAssign, evaluate, take_closed};
use crate::{FastMap, MAX_OUTPUT_ROWS};
use batch_best::BatchBest;
pub use batch_best::no_worse_than_limit_th;
pub(crate) use batch_best::ranks_unencoded;
use held::HeldRows;

/// Compaction leaves a window alone while its chunks hold at most this many
/// rows beyond twice its live candidates, so small windows are not rewritten
/// over and over.
const COMPACT_SLACK_ROWS: usize = 4096;

/// The best `limit` rows per window and partition (see the module doc).
#[derive(Clone, Debug)]
pub struct TopNSpec {
    /// Shown in plans and errors.
    pub name: String,
    /// User columns of the input (no entered column).
    pub input_schema: SchemaRef,
    /// How rows find their windows (a window column or tumble/hop windows).
    pub window: WindowAssign,
    /// PARTITION BY expressions besides the window.
    pub partition_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// ORDER BY (asc/desc, nulls first/last).
    pub order_by: Vec<PhysicalSortExpr>,
    /// Keep rows with row_number (with `ties`: rank) <= limit.
    pub limit: usize,
    /// Rank as `RANK()`: rows with equal sort keys share a rank, and every
    /// row ranked within the limit is kept.
    pub ties: bool,
    /// Append the row_number column (UInt64, 1-based) to the output.
    pub row_number: bool,
    /// Input columns (+ the row_number column if `row_number`).
    pub output_schema: SchemaRef,
}

/// Creates top-N operators; validates the spec once.
pub struct TopNFactory {
    spec: Arc<TopNSpec>,
    sort_fields: Vec<SortField>,
    partition_fields: Vec<SortField>,
    output_with_entered: SchemaRef,
}

impl TopNFactory {
    pub fn new(spec: TopNSpec) -> Result<Self> {
        let name = &spec.name;
        let input = &spec.input_schema;
        if spec.limit == 0 {
            return Err(Error::plan(format!(
                "{name}: the row limit is 0, so the query can never return a row; use a limit of at least 1"
            )));
        }
        check_window_assign(name, "input", &spec.window, input)?;
        let sort_types = data_types(name, spec.order_by.iter().map(|s| &s.expr), input)?;
        let partition_types = data_types(name, &spec.partition_keys, input)?;
        for (types, what) in [
            (&sort_types, "ORDER BY"),
            (&partition_types, "PARTITION BY"),
        ] {
            let fields: Vec<SortField> = types.iter().cloned().map(SortField::new).collect();
            if !RowConverter::supports_fields(&fields) {
                let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
                return Err(Error::plan(format!(
                    "{name}: {what} expressions of types [{}] cannot be compared",
                    types.join(", ")
                )));
            }
        }
        let sort_fields = sort_types
            .into_iter()
            .zip(&spec.order_by)
            .map(|(dt, s)| SortField::new_with_options(dt, s.options))
            .collect();
        let partition_fields = partition_types.into_iter().map(SortField::new).collect();
        check_output(&spec)?;
        Ok(Self {
            output_with_entered: schema_with_entered(&spec.output_schema),
            spec: Arc::new(spec),
            sort_fields,
            partition_fields,
        })
    }
}

/// The types of `exprs` over `input`.
fn data_types<'a>(
    name: &str,
    exprs: impl IntoIterator<Item = &'a Arc<dyn PhysicalExpr>>,
    input: &Schema,
) -> Result<Vec<DataType>> {
    exprs
        .into_iter()
        .map(|e| {
            e.data_type(input)
                .map_err(|err| Error::plan(format!("{name}: expression {e}: {err}")))
        })
        .collect()
}

/// Checks that the output is the input columns, then row_number if asked for.
fn check_output(spec: &TopNSpec) -> Result<()> {
    let name = &spec.name;
    let (input, output) = (&spec.input_schema, &spec.output_schema);
    let n = input.fields().len();
    let expected = n + usize::from(spec.row_number);
    if output.fields().len() != expected {
        return Err(Error::plan(format!(
            "{name}: the output schema has {} columns; expected the {n} input columns{}",
            output.fields().len(),
            if spec.row_number {
                " then row_number"
            } else {
                ""
            }
        )));
    }
    for (i, out) in output.fields().iter().take(n).enumerate() {
        let field = input.field(i);
        if field.data_type() != out.data_type() || (field.is_nullable() && !out.is_nullable()) {
            return Err(Error::plan(format!(
                "{name}: output column '{}' ({}{}) does not match input column '{}' ({}{})",
                out.name(),
                out.data_type(),
                if out.is_nullable() { "" } else { " not null" },
                field.name(),
                field.data_type(),
                if field.is_nullable() { "" } else { " not null" },
            )));
        }
    }
    if spec.row_number && output.field(n).data_type() != &DataType::UInt64 {
        return Err(Error::plan(format!(
            "{name}: the row_number column '{}' has type {}; expected UInt64",
            output.field(n).name(),
            output.field(n).data_type()
        )));
    }
    Ok(())
}

impl OperatorFactory for TopNFactory {
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

    /// The snapshot must be a top-N's of this plan (`state.rs`).
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

    /// Candidates go to the instance owning their partition's key group
    /// (their window's, without PARTITION BY keys); see `rescale.rs`.
    fn rescale(&self, old: &[Snapshot], parallelism: usize) -> Result<Vec<Snapshot>> {
        rescale::rescale(self, old, parallelism)
    }

    fn signature(&self) -> String {
        self.describe()
    }
}

impl TopNFactory {
    /// One line for plans: `top-n: row_number <= 2 in windows of w@0 by
    /// [k@1] order by [v@2 DESC], numbered`.
    pub fn describe(&self) -> String {
        let spec = &self.spec;
        let keys: Vec<String> = spec.partition_keys.iter().map(|k| k.to_string()).collect();
        let order: Vec<String> = spec.order_by.iter().map(|o| o.to_string()).collect();
        format!(
            "{}: {} <= {} in {} by [{}] order by [{}]{}",
            spec.name,
            if spec.ties { "rank" } else { "row_number" },
            spec.limit,
            spec.window.describe(),
            keys.join(", "),
            order.join(", "),
            if spec.row_number { ", numbered" } else { "" }
        )
    }

    fn operator(&self) -> Result<TopNOperator> {
        Ok(TopNOperator {
            sort_exprs: self.spec.order_by.iter().map(|s| s.expr.clone()).collect(),
            sort_converter: converter(&self.sort_fields)?,
            partition_converter: converter(&self.partition_fields)?,
            spec: self.spec.clone(),
            output_with_entered: self.output_with_entered.clone(),
            windows: BTreeMap::new(),
            held: BTreeMap::new(),
            watermark: i64::MIN,
            max_entered: None,
            next_seq: 0,
            assignments: Vec::new(),
            batch_best: BatchBest::new(&self.spec),
        })
    }
}

/// A row converter for `fields`; with no fields, one constant null column
/// stands in (a converter needs a column to know the row count), giving
/// every row the same key.
fn converter(fields: &[SortField]) -> Result<RowConverter> {
    if fields.is_empty() {
        Ok(RowConverter::new(vec![SortField::new(DataType::Null)])?)
    } else {
        Ok(RowConverter::new(fields.to_vec())?)
    }
}

/// `exprs` over `batch` as comparable rows (see [`converter`] for no exprs).
fn encode(
    converter: &RowConverter,
    exprs: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
) -> Result<Rows> {
    let columns: Vec<ArrayRef> = if exprs.is_empty() {
        vec![new_null_array(&DataType::Null, batch.num_rows())]
    } else {
        exprs
            .iter()
            .map(|e| evaluate(e, batch))
            .collect::<Result<_>>()?
    };
    Ok(converter.convert_columns(&columns)?)
}

/// A row that may rank within the limit: its arrival number (for ties) and
/// where its values and sort key are.
#[derive(Clone, Copy, Debug)]
struct Cand {
    seq: u64,
    chunk: u32,
    row: u32,
}

/// Rows copied from input (user columns) with their sort keys.
struct Chunk {
    batch: RecordBatch,
    sort: Rows,
}

fn sort_key<'a>(chunks: &'a [Chunk], c: &Cand) -> Row<'a> {
    chunks[c.chunk as usize].sort.row(c.row as usize)
}

/// How many ranks a partition keeps, and whether equal rows share one.
#[derive(Clone, Copy, Debug)]
struct Ranking {
    limit: usize,
    ties: bool,
}

/// Items of which only those that can still rank within the limit are
/// kept: a partition's candidates, or one partition's rows of an arriving
/// batch before any is copied (a window aggregate's firing sends thousands
/// of rows in one batch, of which a top-N keeps a few).
struct Ranked<T> {
    items: Vec<T>,
    /// Index in `items` of the worst item kept by the last cut, if any: an
    /// item arriving later ranks within the limit only if strictly better
    /// (with ties: no worse).
    cutoff: Option<usize>,
    /// Items kept by the last cut (more than the limit with ties).
    kept: usize,
}

impl<T> Default for Ranked<T> {
    fn default() -> Self {
        Ranked {
            items: Vec::new(),
            cutoff: None,
            kept: 0,
        }
    }
}

/// A partition's candidates.
type Partition = Ranked<Cand>;

impl<T> Ranked<T> {
    /// Whether an item with sort key `key`, arriving after every item held,
    /// can still rank within the limit (`key_of`: an item's sort key).
    fn admits<'a>(&self, key: Row<'_>, key_of: impl Fn(&T) -> Row<'a>, ranking: Ranking) -> bool {
        self.cutoff.is_none_or(|i| {
            // Without ties a tie loses: the new item arrived later.
            let worst = key_of(&self.items[i]);
            key < worst || (ranking.ties && key == worst)
        })
    }

    /// Adds an admitted item, and cuts once the items have doubled since
    /// the last cut (so ties cost a sort per doubling, not per item).
    fn push<'a>(
        &mut self,
        item: T,
        key_of: impl Fn(&T) -> Row<'a>,
        seq_of: impl Fn(&T) -> u64,
        ranking: Ranking,
    ) {
        self.items.push(item);
        if self.items.len() > ranking.limit.max(self.kept).saturating_mul(2) {
            self.cut(key_of, seq_of, ranking);
        }
    }

    /// Sorts the items by rank (sort key, then arrival `seq_of`) and keeps
    /// the best `limit`, and with ties every item equal to the last of them.
    fn cut<'a>(
        &mut self,
        key_of: impl Fn(&T) -> Row<'a>,
        seq_of: impl Fn(&T) -> u64,
        ranking: Ranking,
    ) {
        let limit = ranking.limit;
        let items = &mut self.items;
        items.sort_by(|a, b| key_of(a).cmp(&key_of(b)).then(seq_of(a).cmp(&seq_of(b))));
        let mut keep = limit.min(items.len());
        if ranking.ties && keep == limit {
            let last = key_of(&items[limit - 1]);
            keep += items[limit..]
                .iter()
                .take_while(|c| key_of(c) == last)
                .count();
        }
        items.truncate(keep);
        self.kept = keep;
        // Only a full top `limit` can turn later items away.
        self.cutoff = (keep >= limit).then(|| keep - 1);
    }
}

/// The candidates of one window.
#[derive(Default)]
struct WindowTop {
    chunks: Vec<Chunk>,
    /// Rows held by `chunks`, live or evicted.
    chunk_rows: usize,
    /// Partitions in order of first appearance.
    partitions: Vec<Partition>,
    partition_of: FastMap<Box<[u8]>, u32>,
}

/// One batch's rows for a window, with the batch's keys.
struct Arrival<'a> {
    user: &'a RecordBatch,
    sort: &'a Rows,
    partitions: &'a Rows,
    /// Arrival number of the batch's first row.
    seq_base: u64,
}

impl WindowTop {
    fn partition_id(&mut self, key: &[u8]) -> u32 {
        if let Some(&id) = self.partition_of.get(key) {
            return id;
        }
        let id = self.partitions.len() as u32;
        self.partitions.push(Partition::default());
        self.partition_of.insert(key.into(), id);
        id
    }

    /// Adds rows `rows` of `arrival` that can still rank within the limit.
    fn add(
        &mut self,
        rows: &[u32],
        arrival: &Arrival<'_>,
        ranking: Ranking,
        converter: &RowConverter,
    ) -> Result<()> {
        // Which rows can still make their partition's top `limit`: against
        // what the partition holds and against the batch's own better rows,
        // compared by sort key, so only those are copied.
        let mut batch_tops: Vec<Ranked<u32>> = Vec::new();
        let arrival_key = |&r: &u32| arrival.sort.row(r as usize);
        let mut prev: Option<(u32, u32)> = None;
        for &r in rows {
            // Rows of one partition tend to come together (with no PARTITION
            // BY keys, all of them): the row before's partition is tried first.
            let key = arrival.partitions.row(r as usize);
            let pid = match prev {
                Some((p, pid)) if arrival.partitions.row(p as usize) == key => pid,
                _ => self.partition_id(key.data()),
            };
            prev = Some((r, pid));
            let sort = arrival.sort.row(r as usize);
            let chunks = &self.chunks;
            if self.partitions[pid as usize].admits(sort, |c| sort_key(chunks, c), ranking) {
                if batch_tops.len() <= pid as usize {
                    batch_tops.resize_with(pid as usize + 1, Ranked::default);
                }
                let top = &mut batch_tops[pid as usize];
                if top.admits(sort, arrival_key, ranking) {
                    top.push(r, arrival_key, |&r| u64::from(r), ranking);
                }
            }
        }
        // In arrival order, as the partitions' candidates expect.
        let mut admitted: Vec<(u32, u32)> = batch_tops
            .iter()
            .enumerate()
            .flat_map(|(pid, top)| top.items.iter().map(move |&r| (r, pid as u32)))
            .collect();
        if admitted.is_empty() {
            return Ok(());
        }
        admitted.sort_unstable();
        let (accepted, pids): (Vec<u32>, Vec<u32>) = admitted.into_iter().unzip();

        let batch = take_record_batch(arrival.user, &UInt32Array::from(accepted.clone()))?;
        let mut sort = converter.empty_rows(accepted.len(), 0);
        for &r in &accepted {
            sort.push(arrival.sort.row(r as usize));
        }
        let chunk = self.chunks.len() as u32;
        self.chunks.push(Chunk { batch, sort });
        self.chunk_rows += accepted.len();

        let chunks = &self.chunks;
        for (i, (&r, &pid)) in accepted.iter().zip(&pids).enumerate() {
            let cand = Cand {
                seq: arrival.seq_base + u64::from(r),
                chunk,
                row: i as u32,
            };
            self.partitions[pid as usize].push(cand, |c| sort_key(chunks, c), |c| c.seq, ranking);
        }
        self.compact_if_sparse(converter)
    }

    /// Copies the live candidates into one chunk once the chunks hold mostly
    /// evicted rows, so memory follows the candidates.
    fn compact_if_sparse(&mut self, converter: &RowConverter) -> Result<()> {
        let live: usize = self.partitions.iter().map(|p| p.items.len()).sum();
        if self.chunk_rows <= live.saturating_mul(2).saturating_add(COMPACT_SLACK_ROWS) {
            return Ok(());
        }
        let refs: Vec<(usize, usize)> = self
            .partitions
            .iter()
            .flat_map(|p| &p.items)
            .map(|c| (c.chunk as usize, c.row as usize))
            .collect();
        let mut sort = converter.empty_rows(live, 0);
        for &(chunk, row) in &refs {
            sort.push(self.chunks[chunk].sort.row(row));
        }
        let batches: Vec<&RecordBatch> = self.chunks.iter().map(|c| &c.batch).collect();
        let batch = interleave_record_batch(&batches, &refs)?;
        let cands = self.partitions.iter_mut().flat_map(|p| &mut p.items);
        for (row, c) in cands.enumerate() {
            (c.chunk, c.row) = (0, row as u32);
        }
        self.chunks = vec![Chunk { batch, sort }];
        self.chunk_rows = live;
        Ok(())
    }

    /// The rows of every partition within the limit in rank order, as
    /// (chunk, row) positions and 1-based row numbers (with ties: ranks,
    /// equal for equal rows).
    fn ranked(&mut self, ranking: Ranking) -> (Vec<(usize, usize)>, Vec<u64>) {
        let mut refs = Vec::new();
        let mut numbers = Vec::new();
        for partition in &mut self.partitions {
            let chunks = &self.chunks;
            partition.cut(|c| sort_key(chunks, c), |c| c.seq, ranking);
            let mut rank = 0;
            for (i, c) in partition.items.iter().enumerate() {
                let tied = ranking.ties
                    && i > 0
                    && sort_key(chunks, c) == sort_key(chunks, &partition.items[i - 1]);
                if !tied {
                    rank = i as u64 + 1;
                }
                refs.push((c.chunk as usize, c.row as usize));
                numbers.push(rank);
            }
        }
        (refs, numbers)
    }
}

struct TopNOperator {
    spec: Arc<TopNSpec>,
    sort_exprs: Vec<Arc<dyn PhysicalExpr>>,
    sort_converter: RowConverter,
    partition_converter: RowConverter,
    output_with_entered: SchemaRef,
    /// Open windows by (end, start), so the windows a watermark completes are
    /// a prefix.
    windows: BTreeMap<(i64, i64), WindowTop>,
    /// Instead of `windows` where `batch_best` applies: each window's rows
    /// that may rank, ranked when it fires.
    held: BTreeMap<(i64, i64), HeldRows>,
    watermark: i64,
    max_entered: Option<i64>,
    /// Arrival number of the next input row (breaks ties between equal keys).
    next_seq: u64,
    /// Scratch reused across batches.
    assignments: Vec<Assignment>,
    /// Drops a batch's rows that cannot rank within the limit among its
    /// own before they are encoded, where the spec allows.
    batch_best: Option<BatchBest>,
}

impl TopNOperator {
    fn ranking(&self) -> Ranking {
        Ranking {
            limit: self.spec.limit,
            ties: self.spec.ties,
        }
    }

    /// Emits every window with `end <= up_to` (all for `None`).
    fn fire(&mut self, up_to: Option<i64>, entered_ns: i64, out: &mut Emitter) -> Result<()> {
        let fired = take_closed(&mut self.windows, up_to);
        for (_, window) in fired {
            self.emit_window(window, entered_ns, out)?;
        }
        // Only one of the two maps is in use, so windows fire in order.
        for (_, held) in take_closed(&mut self.held, up_to) {
            self.emit_held(held, entered_ns, out)?;
        }
        Ok(())
    }

    /// Holds each window's rows of `user` (cut already), by `assignments`.
    fn hold(&mut self, user: &RecordBatch) -> Result<()> {
        let ranking = self.ranking();
        let Some(best) = &self.batch_best else {
            return Ok(());
        };
        for run in self
            .assignments
            .chunk_by(|a, b| (a.end, a.start) == (b.end, b.start))
        {
            // A batch all of one window (a firing's) is held as it is.
            let whole = run.len() == user.num_rows()
                && run.iter().enumerate().all(|(i, a)| a.row as usize == i);
            let rows = if whole {
                user.clone()
            } else {
                let rows = UInt32Array::from_iter_values(run.iter().map(|a| a.row));
                take_record_batch(user, &rows)?
            };
            self.held
                .entry((run[0].end, run[0].start))
                .or_default()
                .add(rows, |b| best.order_values(b), best.options(), ranking)?;
        }
        Ok(())
    }

    fn emit_held(&self, held: HeldRows, entered_ns: i64, out: &mut Emitter) -> Result<()> {
        let Some(best) = &self.batch_best else {
            return Ok(());
        };
        let ranked = held.ranked(|b| best.order_values(b), best.options(), self.ranking())?;
        let batches = held.batches();
        for within in ranked.chunks(MAX_OUTPUT_ROWS) {
            let refs: Vec<_> = within.iter().map(|&(row, _)| row).collect();
            let mut columns = interleave_record_batch(&batches, &refs)?.columns().to_vec();
            if self.spec.row_number {
                let numbers = within.iter().map(|&(_, rank)| rank);
                columns.push(Arc::new(UInt64Array::from_iter_values(numbers)));
            }
            columns.push(Arc::new(Int64Array::from_value(entered_ns, within.len())));
            out.data(RecordBatch::try_new(
                self.output_with_entered.clone(),
                columns,
            )?);
        }
        Ok(())
    }

    fn emit_window(&self, mut window: WindowTop, entered_ns: i64, out: &mut Emitter) -> Result<()> {
        let (refs, numbers) = window.ranked(self.ranking());
        let batches: Vec<&RecordBatch> = window.chunks.iter().map(|c| &c.batch).collect();
        for (refs, numbers) in refs
            .chunks(MAX_OUTPUT_ROWS)
            .zip(numbers.chunks(MAX_OUTPUT_ROWS))
        {
            let rows = interleave_record_batch(&batches, refs)?;
            let mut columns = rows.columns().to_vec();
            if self.spec.row_number {
                columns.push(Arc::new(UInt64Array::from(numbers.to_vec())));
            }
            columns.push(Arc::new(Int64Array::from_value(entered_ns, refs.len())));
            out.data(RecordBatch::try_new(
                self.output_with_entered.clone(),
                columns,
            )?);
        }
        Ok(())
    }
}

/// Error unless a batch (user columns) has as many columns as the input
/// schema; checked on arrival so that no later step indexes past it.
fn check_width(name: &str, batch: &RecordBatch, schema: &Schema) -> Result<()> {
    if batch.num_columns() == schema.fields().len() {
        return Ok(());
    }
    Err(Error::Other(format!(
        "{name}: an input batch has {} user columns; the plan expects {}",
        batch.num_columns(),
        schema.fields().len()
    )))
}

impl Operator for TopNOperator {
    /// Every open window's candidates and the watermark (see `state.rs`).
    fn snapshot(&mut self) -> Result<Snapshot> {
        self.state_snapshot()
    }

    fn on_data(&mut self, _input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        let user = strip_entered(&batch);
        check_width(&self.spec.name, &user, &self.spec.input_schema)?;
        note_entered(&mut self.max_entered, &batch);
        // A batch all of one window (a firing's) is cut before its rows are
        // assigned one by one.
        let user = match &self.batch_best {
            Some(best) => best
                .keep_one_window(&user, &self.spec.window, self.watermark)?
                .unwrap_or(user),
            None => user,
        };
        self.assignments.clear();
        let mut late = Vec::new();
        self.spec
            .window
            .assign(&user, self.watermark, &mut self.assignments, &mut late)?;
        // Only a batch with no late row is cut above: `late` numbers the
        // rows of `batch` too.
        out.late(0, &batch, &late)?;
        if self.assignments.is_empty() {
            return Ok(());
        }
        // Group the memberships by window; the stable sort keeps arrival
        // order within a window.
        self.assignments.sort_by_key(|a| (a.end, a.start));
        let seq_base = self.next_seq;
        self.next_seq += user.num_rows() as u64;
        // Row numbers only grow through the cut, so arrival order holds.
        let cut = match &self.batch_best {
            Some(best) => best.keep(&user, &mut self.assignments)?,
            None => None,
        };
        let user = cut.unwrap_or(user);
        if self.batch_best.is_some() {
            return self.hold(&user);
        }
        let sort = encode(&self.sort_converter, &self.sort_exprs, &user)?;
        let partitions = encode(&self.partition_converter, &self.spec.partition_keys, &user)?;
        let arrival = Arrival {
            user: &user,
            sort: &sort,
            partitions: &partitions,
            seq_base,
        };

        let ranking = self.ranking();
        let mut rows: Vec<u32> = Vec::new();
        for run in self
            .assignments
            .chunk_by(|a, b| (a.end, a.start) == (b.end, b.start))
        {
            rows.clear();
            rows.extend(run.iter().map(|a| a.row));
            let window = self.windows.entry((run[0].end, run[0].start)).or_default();
            window.add(&rows, &arrival, ranking, &self.sort_converter)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::test_util::{batch, ints, schema, strs, take, windows, wm};
    use crate::round_trip::{
        Step, assert_partial_rescales, assert_rescales, assert_rescales_only_one_to_one,
        assert_round_trips_at_every_cut,
    };
    use crate::window::{WindowKind, window_type};
    use arrow::compute::SortOptions;
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::col;

    /// Rows of an earlier window aggregate: `(w, k, v, id)`.
    fn input() -> SchemaRef {
        schema(&[
            ("w", window_type()),
            ("k", DataType::Utf8),
            ("v", DataType::Int64),
            ("id", DataType::Int64),
        ])
    }

    fn with_row_number(input: &SchemaRef) -> SchemaRef {
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
        Arc::new(Schema::new(fields))
    }

    /// Per window (carried column `w`) and `k`, the 2 rows of largest `v`.
    fn spec() -> TopNSpec {
        let input = input();
        TopNSpec {
            name: "top-n".into(),
            window: WindowAssign::Column {
                window: col("w", &input).unwrap(),
            },
            partition_keys: vec![col("k", &input).unwrap()],
            order_by: vec![PhysicalSortExpr::new_default(col("v", &input).unwrap()).desc()],
            limit: 2,
            ties: false,
            row_number: true,
            output_schema: with_row_number(&input),
            input_schema: input,
        }
    }

    /// An input row: `(window, k, v, id)`.
    type Input<'a> = ((i64, i64), &'a str, Option<i64>, i64);

    fn send(op: &mut dyn Operator, rows: &[Input<'_>], out: &mut Emitter) {
        let bounds: Vec<(i64, i64)> = rows.iter().map(|r| r.0).collect();
        let k: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let v: Vec<Option<i64>> = rows.iter().map(|r| r.2).collect();
        let id: Vec<Option<i64>> = rows.iter().map(|r| Some(r.3)).collect();
        let b = batch(
            &input(),
            vec![windows(&bounds), strs(&k), ints(&v), ints(&id)],
            1,
        );
        op.on_data(0, b, out).unwrap();
    }

    #[test]
    fn ranks_per_window_and_partition_with_ties_in_arrival_order() {
        let mut op = TopNFactory::new(spec()).unwrap().operator().unwrap();
        let mut out = Emitter::new();
        let (w0, w1) = ((0, 10), (10, 20));
        send(
            &mut op,
            &[
                (w0, "a", Some(5), 1),
                (w0, "a", Some(7), 2),
                (w1, "a", Some(1), 3),
                (w0, "b", Some(3), 4),
                (w0, "a", Some(7), 5),
            ],
            &mut out,
        );
        send(
            &mut op,
            &[
                (w0, "a", Some(6), 6),
                (w1, "a", Some(2), 7),
                (w0, "b", Some(3), 8),
            ],
            &mut out,
        );
        op.on_watermark(wm(10, 1), &mut out).unwrap();
        // Rows with window [0,10) are now late.
        send(&mut op, &[(w0, "a", Some(99), 9)], &mut out);
        assert_eq!(out.late_rows(), 1);
        op.on_watermark(wm(20, 1), &mut out).unwrap();
        // w, k, v, id, row_number. The tied 7s rank by arrival (id 2 first),
        // as do the tied 3s of partition b.
        assert_eq!(
            take(&mut out),
            [
                "[0,10), a, 7, 2, 1",
                "[0,10), a, 7, 5, 2",
                "[0,10), b, 3, 4, 1",
                "[0,10), b, 3, 8, 2",
                "wm 10",
                "[10,20), a, 2, 7, 1",
                "[10,20), a, 1, 3, 2",
                "wm 20"
            ]
        );
    }

    /// With ties (RANK): equal rows share a rank and all are kept, and a rank
    /// skips past the rows tied before it. Hand-checked: in a, values 7, 7, 6,
    /// 5 rank 1, 1, 3, 4, so a limit of 2 keeps both 7s; in b, 3, 3, 3, 1 keep
    /// the three 3s (rank 1), and arrivals after the first cut still join a
    /// tie.
    #[test]
    fn with_ties_equal_rows_share_a_rank_and_all_are_kept() {
        let mut op = TopNFactory::new(TopNSpec {
            ties: true,
            ..spec()
        })
        .unwrap()
        .operator()
        .unwrap();
        let mut out = Emitter::new();
        let w = (0, 10);
        send(
            &mut op,
            &[
                (w, "a", Some(5), 1),
                (w, "a", Some(7), 2),
                (w, "b", Some(3), 3),
                (w, "a", Some(6), 4),
                (w, "b", Some(1), 5),
                (w, "a", Some(7), 6),
                (w, "b", Some(3), 7),
            ],
            &mut out,
        );
        send(
            &mut op,
            &[
                (w, "b", Some(3), 8),
                (w, "a", Some(4), 9),
                (w, "b", Some(2), 10),
            ],
            &mut out,
        );
        op.on_watermark(wm(10, 1), &mut out).unwrap();
        assert_eq!(
            take(&mut out),
            [
                "[0,10), a, 7, 2, 1",
                "[0,10), a, 7, 6, 1",
                "[0,10), b, 3, 3, 1",
                "[0,10), b, 3, 7, 1",
                "[0,10), b, 3, 8, 1",
                "wm 10"
            ]
        );
        // A limit of 3 in a: 7, 7 (rank 1) and 6 (rank 3).
        let mut op = TopNFactory::new(TopNSpec {
            ties: true,
            limit: 3,
            ..spec()
        })
        .unwrap()
        .operator()
        .unwrap();
        send(
            &mut op,
            &[
                (w, "a", Some(7), 1),
                (w, "a", Some(6), 2),
                (w, "a", Some(7), 3),
                (w, "a", Some(5), 4),
            ],
            &mut out,
        );
        op.on_end(&mut out).unwrap();
        assert_eq!(
            take(&mut out),
            [
                "[0,10), a, 7, 1, 1",
                "[0,10), a, 7, 3, 1",
                "[0,10), a, 6, 2, 3"
            ]
        );
    }

    /// One large batch (as a window aggregate's firing sends), ranked
    /// against a sort of the same rows: per partition, by v descending then
    /// arrival, the first 3 (ROW_NUMBER) or every row of rank <= 3 (RANK).
    #[test]
    fn a_large_batch_ranks_as_a_full_sort_of_its_rows() {
        let w = (0, 10);
        let mut x: u64 = 7;
        let rows: Vec<(&str, i64)> = (0..2000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (
                    ["a", "b", "c"][(x >> 33) as usize % 3],
                    ((x >> 40) % 50) as i64,
                )
            })
            .collect();
        for ties in [false, true] {
            let spec = TopNSpec {
                limit: 3,
                ties,
                ..spec()
            };
            let mut op = TopNFactory::new(spec).unwrap().operator().unwrap();
            let mut out = Emitter::new();
            let input: Vec<Input<'_>> = rows
                .iter()
                .enumerate()
                .map(|(i, &(k, v))| (w, k, Some(v), i as i64))
                .collect();
            send(&mut op, &input, &mut out);
            op.on_end(&mut out).unwrap();
            let mut want = Vec::new();
            for k in ["a", "b", "c"] {
                let mut part: Vec<(i64, usize)> = rows
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.0 == k)
                    .map(|(i, r)| (r.1, i))
                    .collect();
                part.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                for (n, &(v, i)) in part.iter().enumerate() {
                    let rank = if ties {
                        part.iter().filter(|p| p.0 > v).count() + 1
                    } else {
                        n + 1
                    };
                    if rank <= 3 {
                        want.push(format!("[0,10), {k}, {v}, {i}, {rank}"));
                    }
                }
            }
            // Partitions come out in order of first appearance.
            let mut got = take(&mut out);
            got.sort();
            want.sort();
            assert_eq!(got, want, "ties = {ties}");
        }
    }

    /// Without PARTITION BY keys a large batch is cut by arrow's sort
    /// kernel first (`batch_best.rs`); the result must still be a full
    /// sort's, in every order, with nulls, ties and two windows per batch.
    #[test]
    fn without_partition_keys_a_large_batch_ranks_as_a_full_sort() {
        // Two runs of windows in one batch (cut per window after assigning),
        // and one window (cut before).
        for w1_from in [1700, 3000] {
            large_batch_without_partition_keys(w1_from);
        }
    }

    fn large_batch_without_partition_keys(w1_from: usize) {
        let (w0, w1) = ((0, 10), (10, 20));
        let mut x: u64 = 11;
        let rows: Vec<((i64, i64), Option<i64>)> = (0..3000)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = ((x >> 40) % 40) as i64;
                // Nulls among values.
                let w = if i < w1_from { w0 } else { w1 };
                (w, (v % 13 != 5).then_some(v))
            })
            .collect();
        assert!(
            BatchBest::new(&spec()).is_none(),
            "not with PARTITION BY keys"
        );
        for ties in [false, true] {
            for (descending, nulls_first) in
                [(true, true), (true, false), (false, true), (false, false)]
            {
                let options = SortOptions {
                    descending,
                    nulls_first,
                };
                let mut spec = TopNSpec {
                    limit: 3,
                    ties,
                    partition_keys: vec![],
                    ..spec()
                };
                spec.order_by[0].options = options;
                assert!(BatchBest::new(&spec).is_some(), "the batch cut applies");
                let mut op = TopNFactory::new(spec).unwrap().operator().unwrap();
                let mut out = Emitter::new();
                let input: Vec<Input<'_>> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, &(w, v))| (w, "a", v, i as i64))
                    .collect();
                send(&mut op, &input, &mut out);
                op.on_end(&mut out).unwrap();

                // Rank order: nulls first or last, then values either way.
                let rank_key = |v: Option<i64>| match v {
                    None => (!nulls_first, 0),
                    Some(v) => (nulls_first, if descending { -v } else { v }),
                };
                let mut want = Vec::new();
                for (w, label) in [(w0, "[0,10)"), (w1, "[10,20)")] {
                    let mut part: Vec<(Option<i64>, usize)> = rows
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.0 == w)
                        .map(|(i, r)| (r.1, i))
                        .collect();
                    part.sort_by_key(|&(v, i)| (rank_key(v), i));
                    for (n, &(v, i)) in part.iter().enumerate() {
                        let rank = if ties {
                            part.iter().filter(|p| rank_key(p.0) < rank_key(v)).count() + 1
                        } else {
                            n + 1
                        };
                        if rank <= 3 {
                            let v = v.map_or("null".to_string(), |v| v.to_string());
                            want.push(format!("{label}, a, {v}, {i}, {rank}"));
                        }
                    }
                }
                let mut got = take(&mut out);
                got.sort();
                want.sort();
                assert_eq!(
                    got, want,
                    "ties = {ties}, {options:?}, w1 from row {w1_from}"
                );
            }
        }
    }

    /// A batch of one window that is already closed counts every row late,
    /// not only those the batch cut would keep.
    #[test]
    fn a_late_window_counts_every_row_of_its_batch() {
        let spec = TopNSpec {
            partition_keys: vec![],
            ..spec()
        };
        let mut op = TopNFactory::new(spec).unwrap().operator().unwrap();
        let mut out = Emitter::new();
        op.on_watermark(wm(10, 1), &mut out).unwrap();
        let rows: Vec<Input<'_>> = (0..500).map(|i| ((0, 10), "a", Some(i % 7), i)).collect();
        send(&mut op, &rows, &mut out);
        assert_eq!(out.late_rows(), 500);
    }

    #[test]
    fn ascending_order_places_nulls_as_asked_and_end_fires_all() {
        for (nulls_first, expected) in [
            (true, ["[0,10), a, null, 2", "[0,10), a, 1, 3"]),
            (false, ["[0,10), a, 1, 3", "[0,10), a, 2, 4"]),
        ] {
            let mut spec = spec();
            spec.row_number = false;
            spec.output_schema = spec.input_schema.clone();
            spec.order_by[0].options = SortOptions {
                descending: false,
                nulls_first,
            };
            let mut op = TopNFactory::new(spec).unwrap().operator().unwrap();
            let mut out = Emitter::new();
            let w = (0, 10);
            send(
                &mut op,
                &[
                    (w, "a", Some(3), 1),
                    (w, "a", None, 2),
                    (w, "a", Some(1), 3),
                    (w, "a", Some(2), 4),
                ],
                &mut out,
            );
            op.on_end(&mut out).unwrap();
            assert_eq!(take(&mut out), expected, "nulls_first = {nulls_first}");
        }
    }

    #[test]
    fn windows_from_event_time_without_partitions_or_order() {
        // The first 2 rows to arrive per tumbling window of 10 ms on v.
        let input = input();
        let spec = TopNSpec {
            window: WindowAssign::Time {
                time: col("v", &input).unwrap(),
                kind: WindowKind::Tumble { size_ms: 10 },
            },
            partition_keys: vec![],
            order_by: vec![],
            ..spec()
        };
        let mut op = TopNFactory::new(spec).unwrap().operator().unwrap();
        let mut out = Emitter::new();
        let w = (0, 0); // carried but unused
        send(
            &mut op,
            &[
                (w, "a", Some(12), 1),
                (w, "b", Some(3), 2),
                (w, "c", Some(1), 3),
                (w, "d", Some(5), 4),
            ],
            &mut out,
        );
        op.on_watermark(wm(10, 1), &mut out).unwrap();
        assert_eq!(
            take(&mut out),
            ["[0,0), b, 3, 2, 1", "[0,0), c, 1, 3, 2", "wm 10"]
        );
    }

    #[test]
    fn state_stays_bounded_by_the_limit() {
        let mut op = TopNFactory::new(spec()).unwrap().operator().unwrap();
        let mut out = Emitter::new();
        // 20,000 rows, each better than all before it: every row is a
        // candidate on arrival, so cuts and compaction must keep up.
        for b in 0..200 {
            let rows: Vec<_> = (0..100)
                .map(|i| {
                    let n = b * 100 + i;
                    ((0, 10), "a", Some(n), n)
                })
                .collect();
            send(&mut op, &rows, &mut out);
            let window = &op.windows[&(10, 0)];
            assert!(window.partitions[0].items.len() <= 4);
            assert!(window.chunk_rows <= 2 * 4 + COMPACT_SLACK_ROWS + 100);
        }
        op.on_end(&mut out).unwrap();
        assert_eq!(
            take(&mut out),
            ["[0,10), a, 19999, 19999, 1", "[0,10), a, 19998, 19998, 2"]
        );
    }

    /// Round-trip input: rows `(w, ts, k, v, id)`, `w` the tumbling 10 ms
    /// window of `ts`.
    fn timed_input() -> SchemaRef {
        schema(&[
            ("w", window_type()),
            ("ts", DataType::Int64),
            ("k", DataType::Utf8),
            ("v", DataType::Int64),
            ("id", DataType::Int64),
        ])
    }

    /// A row of [`timed_input`]: `(ts, index of k, v, id)`.
    type TimedRow = (i64, usize, Option<i64>, i64);

    /// `rounds` batches of `per_round` rows of [`timed_input`], each
    /// followed by a watermark 4 ms behind the largest `ts` so far. Times
    /// rise with the row number, jittered past the watermark bound, so some rows
    /// are late; `v` repeats (ties) and is sometimes null. Each instance of
    /// `parallelism` gets the rows of its keys and every watermark.
    fn timed_steps(parallelism: usize, rounds: i64, per_round: i64) -> Vec<Vec<Step>> {
        let mut steps = vec![Vec::new(); parallelism];
        let mut max_ts = i64::MIN;
        let keys = ["a", "b", "c", "d", "e"];
        for round in 0..rounds {
            let mut rows: Vec<Vec<TimedRow>> = vec![Vec::new(); parallelism];
            for i in 0..per_round {
                let n = round * per_round + i;
                let ts = (n * 3 / 2 + (n * 7919 % 13) - 6).max(0);
                let k = (n * 7 % 5) as usize;
                let v = (n % 9 != 4).then_some(n * 37 % 5);
                rows[k % parallelism].push((ts, k, v, n));
                max_ts = max_ts.max(ts);
            }
            for (instance, rows) in rows.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let bounds: Vec<(i64, i64)> = rows
                    .iter()
                    .map(|r| (r.0 / 10 * 10, r.0 / 10 * 10 + 10))
                    .collect();
                let ts: Vec<Option<i64>> = rows.iter().map(|r| Some(r.0)).collect();
                let k: Vec<&str> = rows.iter().map(|r| keys[r.1]).collect();
                let v: Vec<Option<i64>> = rows.iter().map(|r| r.2).collect();
                let id: Vec<Option<i64>> = rows.iter().map(|r| Some(r.3)).collect();
                let columns = vec![windows(&bounds), ints(&ts), strs(&k), ints(&v), ints(&id)];
                steps[instance].push(Step::data(0, batch(&timed_input(), columns, round + 1)));
            }
            for instance in &mut steps {
                instance.push(Step::Watermark(max_ts - 4));
            }
        }
        steps
    }

    /// A top-N of [`timed_input`] by `v` descending, numbered.
    fn timed_spec(
        window: WindowAssign,
        partition_keys: &[&str],
        limit: usize,
        ties: bool,
    ) -> TopNSpec {
        let input = timed_input();
        TopNSpec {
            name: "top-n".into(),
            window,
            partition_keys: partition_keys
                .iter()
                .map(|k| col(k, &input).unwrap())
                .collect(),
            order_by: vec![PhysicalSortExpr::new_default(col("v", &input).unwrap()).desc()],
            limit,
            ties,
            row_number: true,
            output_schema: with_row_number(&input),
            input_schema: input,
        }
    }

    fn event_time(size_ms: i64, slide_ms: i64) -> WindowAssign {
        let kind = if size_ms == slide_ms {
            WindowKind::Tumble { size_ms }
        } else {
            WindowKind::Hop { size_ms, slide_ms }
        };
        WindowAssign::Time {
            time: col("ts", &timed_input()).unwrap(),
            kind,
        }
    }

    /// Round trips at every cut, parallelism 1 and 2, of `spec` over
    /// `timed_steps(.., rounds, per_round)`; the runs must emit at least
    /// `min_rows` rows and count some rows late.
    fn assert_top_n_round_trips(spec: TopNSpec, rounds: i64, per_round: i64, min_rows: usize) {
        let what = spec_summary(&spec);
        let factory = TopNFactory::new(spec).unwrap();
        for parallelism in [1, 2] {
            let steps = timed_steps(parallelism, rounds, per_round);
            let (rows, late) = assert_round_trips_at_every_cut(&factory, &steps);
            let what = format!("{what}, parallelism {parallelism}");
            assert!(rows >= min_rows, "{what}: {rows} rows");
            assert!(late >= 3, "{what}: {late} late rows");
        }
    }

    fn spec_summary(spec: &TopNSpec) -> String {
        format!(
            "{} limit {} ties {} partitions {}",
            spec.window.describe(),
            spec.limit,
            spec.ties,
            spec.partition_keys.len()
        )
    }

    /// Ranked on arrival per partition (PARTITION BY keys): carried,
    /// tumbling and hopping windows, with and without ties.
    #[test]
    fn ranked_state_round_trips_through_a_snapshot_at_every_step() {
        let carried = || WindowAssign::Column {
            window: col("w", &timed_input()).unwrap(),
        };
        for ties in [false, true] {
            assert_top_n_round_trips(timed_spec(carried(), &["k"], 2, ties), 24, 9, 150);
            assert_top_n_round_trips(timed_spec(event_time(10, 10), &["k"], 1, ties), 24, 9, 100);
            assert_top_n_round_trips(timed_spec(event_time(20, 10), &["k"], 3, ties), 24, 9, 250);
            // Some 4 rows per partition and window: ties across the cut.
            assert_top_n_round_trips(timed_spec(event_time(30, 30), &["k"], 2, ties), 24, 9, 80);
        }
        // Two ORDER BY expressions: ranked on arrival without partitions.
        let mut spec = timed_spec(event_time(10, 10), &[], 2, false);
        let input = timed_input();
        spec.order_by
            .push(PhysicalSortExpr::new_default(col("id", &input).unwrap()));
        assert!(BatchBest::new(&spec).is_none());
        assert_top_n_round_trips(spec, 24, 9, 40);
    }

    /// Held until the window fires (no PARTITION BY keys, one ORDER BY):
    /// small windows, and windows of some 400 rows arriving 40 at a time,
    /// which the held rows' compaction cuts back between batches.
    #[test]
    fn held_state_round_trips_through_a_snapshot_at_every_step() {
        for ties in [false, true] {
            let spec = timed_spec(event_time(10, 10), &[], 2, ties);
            assert!(BatchBest::new(&spec).is_some());
            assert_top_n_round_trips(spec, 24, 9, 40);
            assert_top_n_round_trips(timed_spec(event_time(20, 10), &[], 2, ties), 24, 9, 60);
            let spec = timed_spec(event_time(600, 600), &[], 3, ties);
            let mut op = TopNFactory::new(spec.clone()).unwrap().operator().unwrap();
            let mut compacted = 0;
            for step in &timed_steps(1, 30, 40)[0] {
                if let Step::Data { batch, .. } = step {
                    op.on_data(0, batch.clone(), &mut Emitter::new()).unwrap();
                    compacted =
                        compacted.max(op.held.values().map(|h| h.kept()).max().unwrap_or(0));
                }
            }
            assert!(compacted > 0, "no window was compacted");
            // 30 rounds of 40 rows: three windows of 600 ms.
            assert_top_n_round_trips(spec, 30, 40, 9);
        }
    }

    #[test]
    fn a_snapshot_of_another_plan_is_refused() {
        // Held rows (no PARTITION BY) and ranked candidates (with it) are
        // kept in different tables: neither plan reads the other's.
        let held = TopNFactory::new(timed_spec(event_time(10, 10), &[], 2, false)).unwrap();
        let ranked = TopNFactory::new(timed_spec(event_time(10, 10), &["k"], 2, false)).unwrap();
        let steps = timed_steps(1, 3, 9);
        for (from, into, missing) in [(&held, &ranked, "partitions"), (&ranked, &held, "windows")] {
            let mut op = from.create(0, 1).unwrap();
            for step in &steps[0] {
                if let Step::Data { batch, .. } = step {
                    op.on_data(0, batch.clone(), &mut Emitter::new()).unwrap();
                }
            }
            let snapshot = op.snapshot().unwrap();
            assert!(snapshot.rows() > 5);
            let err = into
                .restore(0, 1, &snapshot)
                .err()
                .expect("refused")
                .to_string();
            assert!(
                err.contains(&format!("snapshot has no table '{missing}'")),
                "{err}"
            );
        }
        // Another input: the carried-window plan of `spec()` reads rows
        // `(w, k, v, id)`.
        let mut op = ranked.create(0, 1).unwrap();
        if let Step::Data { batch, .. } = &steps[0][0] {
            op.on_data(0, batch.clone(), &mut Emitter::new()).unwrap();
        }
        let snapshot = op.snapshot().unwrap();
        let err = TopNFactory::new(spec())
            .unwrap()
            .restore(0, 1, &snapshot)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("top-N snapshot") && err.contains("ts: Int64"),
            "{err}"
        );
        assert!(held.restore(0, 1, &Snapshot::none()).is_ok());
        assert_eq!(
            TopNFactory::new(spec()).unwrap().signature(),
            "top-n: row_number <= 2 in windows of w@0 by [k@1] order by [v@2 DESC], numbered"
        );
    }

    #[test]
    fn invalid_specs_are_rejected_with_the_reason() {
        let error = |spec: TopNSpec| match TopNFactory::new(spec) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("spec accepted"),
        };
        assert!(error(TopNSpec { limit: 0, ..spec() }).contains("limit is 0"));
        let no_number = TopNSpec {
            row_number: false,
            ..spec()
        };
        assert!(error(no_number).contains("expected the 4 input columns"));
        let input = input();
        let session = TopNSpec {
            window: WindowAssign::Time {
                time: col("v", &input).unwrap(),
                kind: WindowKind::Session { gap_ms: 5 },
            },
            ..spec()
        };
        assert!(error(session).contains("session windows"));
    }

    /// Old and new parallelisms the rescale checks run.
    const RESCALES: &[(usize, usize)] = &[(2, 1), (2, 3), (1, 2)];

    /// Rescales at every cut of `spec` over one stream of
    /// `timed_steps(.., rounds, per_round)`, the input routed by `keys`.
    fn assert_top_n_rescales(spec: TopNSpec, keys: &[&str], rounds: i64, per_round: i64) {
        let what = spec_summary(&spec);
        let factory = TopNFactory::new(spec).unwrap();
        let steps = timed_steps(1, rounds, per_round).remove(0);
        let ran = assert_rescales(&factory, &steps, &[keys], RESCALES);
        assert!(ran.rows > 200 && ran.late_rows > 0, "{what}: {ran:?}");
        assert!(ran.state_rows > 100, "{what}: {ran:?}");
    }

    /// With PARTITION BY keys, each partition goes to the instance owning
    /// its key's key group: carried and event-time windows, with and
    /// without ties.
    #[test]
    fn ranked_state_rescales_by_key_group() {
        let carried = || WindowAssign::Column {
            window: col("w", &timed_input()).unwrap(),
        };
        for ties in [false, true] {
            assert_top_n_rescales(timed_spec(carried(), &["k"], 2, ties), &["k"], 24, 9);
            assert_top_n_rescales(
                timed_spec(event_time(20, 10), &["k"], 3, ties),
                &["k"],
                24,
                9,
            );
        }
    }

    /// Without keys over a carried window, the input is routed by the
    /// window column: each window goes with it, held or ranked.
    #[test]
    fn state_without_keys_rescales_by_window() {
        let input = timed_input();
        let carried = || WindowAssign::Column {
            window: col("w", &input).unwrap(),
        };
        for ties in [false, true] {
            let held = timed_spec(carried(), &[], 2, ties);
            assert!(BatchBest::new(&held).is_some());
            assert_top_n_rescales(held, &["w"], 24, 9);
            let mut ranked = timed_spec(carried(), &[], 2, ties);
            ranked
                .order_by
                .push(PhysicalSortExpr::new_default(col("id", &input).unwrap()));
            assert!(BatchBest::new(&ranked).is_none());
            assert_top_n_rescales(ranked, &["w"], 24, 9);
        }
    }

    /// The partial phase of a `RANK()` top-N reads its input where it is:
    /// old instances may hold candidates of one partition, which a rescale
    /// puts together, and the final phase ranks what it sends.
    #[test]
    fn partial_state_rescales_and_merges_with_ties() {
        let input = timed_input();
        let carried = || WindowAssign::Column {
            window: col("w", &input).unwrap(),
        };
        for held in [true, false] {
            let mut last = timed_spec(carried(), &[], 2, true);
            if !held {
                last.order_by
                    .push(PhysicalSortExpr::new_default(col("id", &input).unwrap()));
            }
            let partial = TopNSpec {
                name: "top-n (partial)".into(),
                row_number: false,
                output_schema: input.clone(),
                ..last.clone()
            };
            let partial = TopNFactory::new(partial).unwrap();
            let last = TopNFactory::new(last).unwrap();
            let steps = timed_steps(1, 24, 9).remove(0);
            let ran = assert_partial_rescales(&partial, &last, &steps, &[&["k"]], RESCALES);
            assert!(
                ran.rows > 200 && ran.state_rows > 100,
                "held {held}: {ran:?}"
            );
        }
        // Without ties, equal rows of two instances have no order: refused.
        let partial = TopNFactory::new(TopNSpec {
            row_number: false,
            output_schema: input.clone(),
            ..timed_spec(carried(), &[], 2, false)
        })
        .unwrap();
        let steps = timed_steps(2, 3, 9);
        let snapshots: Vec<Snapshot> = steps
            .iter()
            .enumerate()
            .map(|(instance, steps)| {
                let mut op = partial.create(instance, 2).unwrap();
                for step in steps {
                    if let Step::Data { batch, .. } = step {
                        op.on_data(0, batch.clone(), &mut Emitter::new()).unwrap();
                    }
                }
                op.snapshot().unwrap()
            })
            .collect();
        let err = partial.rescale(&snapshots, 1).unwrap_err().to_string();
        assert!(err.contains("without ties"), "{err}");
    }

    /// Without keys over event-time windows every row meets at one
    /// instance: one to one only.
    #[test]
    fn state_without_partitioned_input_only_rescales_one_to_one() {
        let factory = TopNFactory::new(timed_spec(event_time(10, 10), &[], 2, false)).unwrap();
        let mut op = factory.create(0, 1).unwrap();
        for step in &timed_steps(1, 3, 9)[0] {
            if let Step::Data { batch, .. } = step {
                op.on_data(0, batch.clone(), &mut Emitter::new()).unwrap();
            }
        }
        let snapshot = op.snapshot().unwrap();
        let says = "operator 'top-n' cannot be restored at another parallelism";
        assert_rescales_only_one_to_one(&factory, &snapshot, (1, 3), says);
    }
}
