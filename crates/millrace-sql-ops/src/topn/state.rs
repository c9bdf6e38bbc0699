//! A top-N's snapshot and its restore (the state contract of
//! `millrace_core::state`).
//!
//! In both of the operator's ways of keeping rows (ranked on arrival per
//! partition, or held as they came until the window fires: `held.rs`), a
//! snapshot has:
//! * `rows`: the candidates, rows of the input (its user columns), window
//!   after window in firing order `(end, start)`;
//! * `progress`: `watermark` (the largest received), `max_entered` (the
//!   largest entered time of an input row, which a firing at end of input
//!   gives its rows) and `next_seq` (the arrival number of the next input
//!   row).
//!
//! Ranked on arrival, within a window the rows are partition after
//! partition in order of first appearance (the order they fire in), each
//! partition's candidates in the order it lists them, and two more tables
//! say what is whose:
//! * `partitions`: one row per partition, in the order of `rows`: `start`,
//!   `end` (ms) of its window, `rows` (its candidates), `kept` (how many its
//!   last cut kept) and `cutoff` (which of its candidates is the worst its
//!   last cut kept, the one a later row must beat; null before a full cut).
//! * `candidates`: per row of `rows`, `seq`: its arrival number, which
//!   ranks it after an equal row that arrived before it.
//!
//! Held until the window fires, within a window the rows are in arrival
//! order (which breaks ties), and one more table says whose they are:
//! * `windows`: one row per window: `start`, `end` (ms), `rows`, and
//!   `kept` (how many rows its last compaction kept).
//!
//! Sort and partition keys are encoded again from the rows. The candidates
//! are restored as one batch per window; how the original spread them over
//! chunks (and when it compacted them) changes no output.

use std::ops::Range;

use arrow::compute::interleave_record_batch;
use arrow::record_batch::RecordBatch;
use millrace_core::state::scalars;
use millrace_core::{Error, Result, Snapshot};

use super::held::HeldRows;
use super::{Cand, Chunk, Partition, TopNOperator, WindowTop, encode};
use crate::snapshot::{Columns, Reader, Table, rows_table};

const ROWS: &str = "rows";
const PARTITIONS: &str = "partitions";
const CANDIDATES: &str = "candidates";
const WINDOWS: &str = "windows";
const PROGRESS: &str = "progress";

impl TopNOperator {
    /// The tables of the module doc; the operator is left as it was.
    pub(super) fn state_snapshot(&self) -> Result<Snapshot> {
        // Every arrival number is below `next_seq`, so all of them fit too.
        let next_seq = i64::try_from(self.next_seq)
            .map_err(|_| Error::Other("top-N arrival numbers ran past i64".into()))?;
        let snapshot = if self.batch_best.is_some() {
            self.held_snapshot()?
        } else {
            self.ranked_snapshot()?
        };
        let progress = scalars(&[
            ("watermark", Some(self.watermark)),
            ("max_entered", self.max_entered),
            ("next_seq", Some(next_seq)),
        ]);
        Ok(snapshot.with(PROGRESS, progress))
    }

    /// Fills a fresh operator with the state of a snapshot of
    /// [`Self::state_snapshot`].
    pub(super) fn restore_state(&mut self, state: &Snapshot) -> Result<()> {
        let reader = Reader::new("top-N", state);
        let rows = reader.rows(ROWS, &self.spec.input_schema)?;
        if self.batch_best.is_some() {
            self.restore_held(&reader, &rows)?;
        } else {
            self.restore_ranked(&reader, &rows)?;
        }
        let progress = reader.table(PROGRESS)?;
        self.watermark = progress.scalar("watermark")?.unwrap_or(i64::MIN);
        self.max_entered = progress.scalar("max_entered")?;
        let next_seq = progress.scalar("next_seq")?.unwrap_or(0);
        self.next_seq = u64::try_from(next_seq)
            .map_err(|_| progress.corrupt(format!("next_seq is {next_seq}")))?;
        Ok(())
    }

    fn ranked_snapshot(&self) -> Result<Snapshot> {
        let mut table = PartitionRows::default();
        let mut seqs = Vec::new();
        let mut window_rows = Vec::with_capacity(self.windows.len());
        for (&(end, start), window) in &self.windows {
            let mut refs = Vec::new();
            for partition in &window.partitions {
                table.push(start, end, partition);
                for c in &partition.items {
                    refs.push((c.chunk as usize, c.row as usize));
                    seqs.push(c.seq as i64);
                }
            }
            let chunks: Vec<&RecordBatch> = window.chunks.iter().map(|c| &c.batch).collect();
            window_rows.push(interleave_record_batch(&chunks, &refs)?);
        }
        Ok(Snapshot::none()
            .with(ROWS, rows_table(&self.spec.input_schema, &window_rows)?)
            .with(PARTITIONS, table.finish()?)
            .with(CANDIDATES, Columns::new().int64("seq", seqs).finish()?))
    }

    fn restore_ranked(&mut self, reader: &Reader<'_>, rows: &RecordBatch) -> Result<()> {
        let table = reader.table(PARTITIONS)?;
        let partitions = PartitionRows::read(&table)?;
        let candidates = reader.table(CANDIDATES)?;
        candidates.check_aligned(rows)?;
        let seqs = candidates
            .int64s("seq")?
            .into_iter()
            .map(|seq| u64::try_from(seq).map_err(|_| candidates.corrupt(format!("seq {seq}"))))
            .collect::<Result<Vec<u64>>>()?;
        // The partitions of one window are consecutive, as are its rows.
        let ids: Vec<(i64, i64)> = partitions
            .ends
            .iter()
            .copied()
            .zip(partitions.starts.iter().copied())
            .collect();
        let mut windows = Vec::new();
        let mut first = 0;
        for run in ids.chunk_by(|a, b| a == b) {
            windows.push((run[0], first..first + run.len()));
            first += run.len();
        }
        let counts: Vec<i64> = windows
            .iter()
            .map(|(_, range)| partitions.rows[range.clone()].iter().sum())
            .collect();
        let batches = table.split(rows, &counts)?;
        let mut first_row = 0;
        for ((id, range), batch) in windows.into_iter().zip(batches) {
            let n = batch.num_rows();
            let window = self
                .restore_window(batch, &partitions, range, &seqs[first_row..first_row + n])
                .map_err(|e| table.corrupt(e.to_string()))?;
            first_row += n;
            if self.windows.insert(id, window).is_some() {
                return Err(table.corrupt(format!("window [{}, {}) appears twice", id.1, id.0)));
            }
        }
        Ok(())
    }

    /// One window's candidates: `batch`, its rows, holds partitions
    /// `range` of `partitions` one after the other; `seqs` are the rows'
    /// arrival numbers.
    fn restore_window(
        &self,
        batch: RecordBatch,
        partitions: &PartitionRows,
        range: Range<usize>,
        seqs: &[u64],
    ) -> Result<WindowTop> {
        let sort = encode(&self.sort_converter, &self.sort_exprs, &batch)?;
        let keys = encode(&self.partition_converter, &self.spec.partition_keys, &batch)?;
        let mut window = WindowTop::default();
        let mut offset = 0;
        for p in range {
            let n = usize::try_from(partitions.rows[p]).unwrap_or(0);
            let rows = offset..offset + n;
            offset += n;
            let corrupt = |what: &str| Error::Other(format!("partition {p} {what}"));
            if n == 0 {
                return Err(corrupt("has no rows"));
            }
            let key = keys.row(rows.start);
            if rows.clone().any(|r| keys.row(r) != key) {
                return Err(corrupt("has rows of different PARTITION BY keys"));
            }
            let id = window.partition_id(key.data()) as usize;
            if id + 1 != window.partitions.len() {
                return Err(corrupt("repeats an earlier partition of its window"));
            }
            let cutoff = match partitions.cutoffs[p] {
                None => None,
                Some(c) => Some(
                    usize::try_from(c)
                        .ok()
                        .filter(|&c| c < n)
                        .ok_or_else(|| corrupt("has its cutoff beyond its rows"))?,
                ),
            };
            let items = rows
                .map(|r| Cand {
                    seq: seqs[r],
                    chunk: 0,
                    row: r as u32,
                })
                .collect();
            window.partitions[id] = Partition {
                items,
                cutoff,
                kept: usize::try_from(partitions.kept[p]).unwrap_or(0),
            };
        }
        window.chunk_rows = batch.num_rows();
        window.chunks = vec![Chunk { batch, sort }];
        Ok(window)
    }

    fn held_snapshot(&self) -> Result<Snapshot> {
        let (mut starts, mut ends, mut counts, mut kept) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut batches = Vec::new();
        for (&(end, start), held) in &self.held {
            starts.push(start);
            ends.push(end);
            let held_batches = held.batches();
            counts.push(held_batches.iter().map(|b| b.num_rows() as i64).sum());
            batches.extend(held_batches);
            kept.push(held.kept() as i64);
        }
        let windows = Columns::new()
            .int64("start", starts)
            .int64("end", ends)
            .int64("rows", counts)
            .int64("kept", kept)
            .finish()?;
        Ok(Snapshot::none()
            .with(ROWS, rows_table(&self.spec.input_schema, batches)?)
            .with(WINDOWS, windows))
    }

    fn restore_held(&mut self, reader: &Reader<'_>, rows: &RecordBatch) -> Result<()> {
        let windows = reader.table(WINDOWS)?;
        let starts = windows.int64s("start")?;
        let ends = windows.int64s("end")?;
        let kept = windows.int64s("kept")?;
        let parts = windows.split(rows, &windows.int64s("rows")?)?;
        for (w, batch) in parts.into_iter().enumerate() {
            let kept = usize::try_from(kept[w]).unwrap_or(0);
            let (start, end) = (starts[w], ends[w]);
            if self
                .held
                .insert((end, start), HeldRows::restored(batch, kept))
                .is_some()
            {
                return Err(windows.corrupt(format!("window [{start}, {end}) appears twice")));
            }
        }
        Ok(())
    }
}

/// The `partitions` table, row by row.
#[derive(Default)]
struct PartitionRows {
    starts: Vec<i64>,
    ends: Vec<i64>,
    rows: Vec<i64>,
    kept: Vec<i64>,
    cutoffs: Vec<Option<i64>>,
}

impl PartitionRows {
    fn push(&mut self, start: i64, end: i64, partition: &Partition) {
        self.starts.push(start);
        self.ends.push(end);
        self.rows.push(partition.items.len() as i64);
        self.kept.push(partition.kept as i64);
        self.cutoffs.push(partition.cutoff.map(|c| c as i64));
    }

    fn read(table: &Table<'_>) -> Result<Self> {
        Ok(Self {
            starts: table.int64s("start")?,
            ends: table.int64s("end")?,
            rows: table.int64s("rows")?,
            kept: table.int64s("kept")?,
            cutoffs: table.opt_int64s("cutoff")?,
        })
    }

    fn finish(self) -> Result<RecordBatch> {
        Columns::new()
            .int64("start", self.starts)
            .int64("end", self.ends)
            .int64("rows", self.rows)
            .int64("kept", self.kept)
            .opt_int64("cutoff", self.cutoffs)
            .finish()
    }
}
