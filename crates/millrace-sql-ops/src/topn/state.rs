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
//!
//! A rescale (`rescale.rs`) reads the same tables as [`SavedWindows`], and
//! writes those each new instance owns with [`write_state`].

use arrow::compute::interleave_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use millrace_core::state::scalars;
use millrace_core::{Error, Result, Snapshot};

use super::held::HeldRows;
use super::{Cand, Chunk, Partition, TopNOperator, WindowTop, encode};
use crate::snapshot::{Columns, Reader, Table};

pub(super) const PROGRESS: &str = "progress";
const ROWS: &str = "rows";
const PARTITIONS: &str = "partitions";
const CANDIDATES: &str = "candidates";
const WINDOWS: &str = "windows";

/// The open windows of a snapshot, in firing order, in the operator's way
/// of keeping rows.
pub(super) enum SavedWindows {
    Ranked(Vec<SavedRanked>),
    Held(Vec<SavedHeld>),
}

/// A window whose rows are ranked on arrival.
pub(super) struct SavedRanked {
    pub start: i64,
    pub end: i64,
    /// The candidates, partition after partition.
    pub rows: RecordBatch,
    /// Per row of `rows`, its arrival number.
    pub seqs: Vec<u64>,
    /// The partitions, in order of first appearance.
    pub partitions: Vec<SavedCut>,
}

/// One partition of a [`SavedRanked`] window.
#[derive(Clone, Copy, Debug)]
pub(super) struct SavedCut {
    /// How many of the window's rows, after the partitions before, are
    /// this partition's candidates.
    pub rows: usize,
    /// How many its last cut kept.
    pub kept: usize,
    /// Which of its candidates is the worst its last cut kept (`None`
    /// before a full cut).
    pub cutoff: Option<usize>,
}

/// A window whose rows are held until it fires.
pub(super) struct SavedHeld {
    pub start: i64,
    pub end: i64,
    /// Its rows, in arrival order.
    pub rows: Vec<RecordBatch>,
    /// How many rows its last compaction kept.
    pub kept: usize,
}

/// The tables of the module doc for `windows`, rows of the input's user
/// columns `schema`, with `progress`.
pub(super) fn write_state(
    schema: &SchemaRef,
    windows: &SavedWindows,
    progress: RecordBatch,
) -> Result<Snapshot> {
    let snapshot = match windows {
        SavedWindows::Ranked(windows) => {
            let mut table = PartitionRows::default();
            for w in windows {
                for cut in &w.partitions {
                    table.push(w.start, w.end, cut);
                }
            }
            let seqs = windows
                .iter()
                .flat_map(|w| &w.seqs)
                .map(|&seq| {
                    i64::try_from(seq)
                        .map_err(|_| Error::Other("top-N arrival numbers ran past i64".into()))
                })
                .collect::<Result<Vec<i64>>>()?;
            Snapshot::none()
                .with_chunks(ROWS, schema, windows.iter().map(|w| &w.rows))?
                .with(PARTITIONS, table.finish()?)
                .with(CANDIDATES, Columns::new().int64("seq", seqs).finish()?)
        }
        SavedWindows::Held(windows) => {
            let table = Columns::new()
                .int64("start", windows.iter().map(|w| w.start).collect())
                .int64("end", windows.iter().map(|w| w.end).collect())
                .int64(
                    "rows",
                    windows
                        .iter()
                        .map(|w| w.rows.iter().map(|b| b.num_rows() as i64).sum())
                        .collect(),
                )
                .int64("kept", windows.iter().map(|w| w.kept as i64).collect())
                .finish()?;
            Snapshot::none()
                .with_chunks(ROWS, schema, windows.iter().flat_map(|w| &w.rows))?
                .with(WINDOWS, table)
        }
    };
    Ok(snapshot.with(PROGRESS, progress))
}

/// The open windows of a snapshot of [`write_state`] (ranked on arrival,
/// or `held`), each window's rows as one batch; an error names what does
/// not fit.
pub(super) fn read_windows(
    state: &Snapshot,
    schema: &SchemaRef,
    held: bool,
) -> Result<SavedWindows> {
    let reader = Reader::new("top-N", state);
    let rows = reader.rows(ROWS, schema)?;
    if held {
        let windows = reader.table(WINDOWS)?;
        let (starts, ends) = (windows.int64s("start")?, windows.int64s("end")?);
        let kept = windows.int64s("kept")?;
        let parts = windows.split(&rows, &windows.int64s("rows")?)?;
        let saved = parts
            .into_iter()
            .enumerate()
            .map(|(w, batch)| SavedHeld {
                start: starts[w],
                end: ends[w],
                rows: vec![batch],
                kept: usize::try_from(kept[w]).unwrap_or(0),
            })
            .collect();
        return Ok(SavedWindows::Held(saved));
    }
    let table = reader.table(PARTITIONS)?;
    let partitions = PartitionRows::read(&table)?;
    let candidates = reader.table(CANDIDATES)?;
    candidates.check_aligned(&rows)?;
    let seqs = candidates
        .int64s("seq")?
        .into_iter()
        .map(|seq| u64::try_from(seq).map_err(|_| candidates.corrupt(format!("seq {seq}"))))
        .collect::<Result<Vec<u64>>>()?;
    // The partitions of one window are consecutive, as are its rows.
    let mut cuts = Vec::with_capacity(partitions.rows.len());
    for p in 0..partitions.rows.len() {
        let rows = usize::try_from(partitions.rows[p])
            .map_err(|_| table.corrupt(format!("partition {p} has {} rows", partitions.rows[p])))?;
        cuts.push(SavedCut {
            rows,
            kept: usize::try_from(partitions.kept[p]).unwrap_or(0),
            cutoff: match partitions.cutoffs[p] {
                None => None,
                Some(c) => {
                    Some(usize::try_from(c).map_err(|_| {
                        table.corrupt(format!("partition {p} has its cutoff at {c}"))
                    })?)
                }
            },
        });
    }
    let mut windows = Vec::new();
    let mut first = 0;
    let ids: Vec<(i64, i64)> = partitions
        .starts
        .iter()
        .copied()
        .zip(partitions.ends.iter().copied())
        .collect();
    for run in ids.chunk_by(|a, b| a == b) {
        let (start, end) = run[0];
        windows.push(SavedRanked {
            start,
            end,
            rows: RecordBatch::new_empty(schema.clone()),
            seqs: Vec::new(),
            partitions: cuts[first..first + run.len()].to_vec(),
        });
        first += run.len();
    }
    let counts: Vec<i64> = windows
        .iter()
        .map(|w| w.partitions.iter().map(|c| c.rows as i64).sum())
        .collect();
    let mut first_row = 0;
    for (window, batch) in windows.iter_mut().zip(table.split(&rows, &counts)?) {
        let n = batch.num_rows();
        window.seqs = seqs[first_row..first_row + n].to_vec();
        window.rows = batch;
        first_row += n;
    }
    Ok(SavedWindows::Ranked(windows))
}

impl TopNOperator {
    /// The tables of the module doc; the operator is left as it was.
    pub(super) fn state_snapshot(&self) -> Result<Snapshot> {
        // Every arrival number is below `next_seq`, so all of them fit too.
        let next_seq = i64::try_from(self.next_seq)
            .map_err(|_| Error::Other("top-N arrival numbers ran past i64".into()))?;
        let windows = if self.batch_best.is_some() {
            SavedWindows::Held(
                self.held
                    .iter()
                    .map(|(&(end, start), held)| SavedHeld {
                        start,
                        end,
                        rows: held.batches().into_iter().cloned().collect(),
                        kept: held.kept(),
                    })
                    .collect(),
            )
        } else {
            SavedWindows::Ranked(self.ranked_windows()?)
        };
        let progress = scalars(&[
            ("watermark", Some(self.watermark)),
            ("max_entered", self.max_entered),
            ("next_seq", Some(next_seq)),
        ]);
        write_state(&self.spec.input_schema, &windows, progress)
    }

    /// Fills a fresh operator with the state of a snapshot of
    /// [`Self::state_snapshot`].
    pub(super) fn restore_state(&mut self, state: &Snapshot) -> Result<()> {
        let reader = Reader::new("top-N", state);
        match read_windows(state, &self.spec.input_schema, self.batch_best.is_some())? {
            SavedWindows::Held(windows) => {
                for w in windows {
                    let (start, end) = (w.start, w.end);
                    if self
                        .held
                        .insert((end, start), HeldRows::restored(w.rows, w.kept))
                        .is_some()
                    {
                        return Err(reader
                            .table(WINDOWS)?
                            .corrupt(format!("window [{start}, {end}) appears twice")));
                    }
                }
            }
            SavedWindows::Ranked(windows) => {
                for w in windows {
                    let (start, end) = (w.start, w.end);
                    let window = self
                        .restore_window(w)
                        .map_err(|e| corrupt_partitions(&reader, e))?;
                    if self.windows.insert((end, start), window).is_some() {
                        return Err(corrupt_partitions(
                            &reader,
                            Error::Other(format!("window [{start}, {end}) appears twice")),
                        ));
                    }
                }
            }
        }
        let progress = reader.table(PROGRESS)?;
        self.watermark = progress.scalar("watermark")?.unwrap_or(i64::MIN);
        self.max_entered = progress.scalar("max_entered")?;
        let next_seq = progress.scalar("next_seq")?.unwrap_or(0);
        self.next_seq = u64::try_from(next_seq)
            .map_err(|_| progress.corrupt(format!("next_seq is {next_seq}")))?;
        Ok(())
    }

    /// Every open window's candidates, partition after partition.
    fn ranked_windows(&self) -> Result<Vec<SavedRanked>> {
        self.windows
            .iter()
            .map(|(&(end, start), window)| {
                let mut refs = Vec::new();
                let mut seqs = Vec::new();
                let mut partitions = Vec::with_capacity(window.partitions.len());
                for partition in &window.partitions {
                    partitions.push(SavedCut {
                        rows: partition.items.len(),
                        kept: partition.kept,
                        cutoff: partition.cutoff,
                    });
                    for c in &partition.items {
                        refs.push((c.chunk as usize, c.row as usize));
                        seqs.push(c.seq);
                    }
                }
                let chunks: Vec<&RecordBatch> = window.chunks.iter().map(|c| &c.batch).collect();
                Ok(SavedRanked {
                    start,
                    end,
                    rows: interleave_record_batch(&chunks, &refs)?,
                    seqs,
                    partitions,
                })
            })
            .collect()
    }

    /// One window ranked on arrival, as it was saved.
    fn restore_window(&self, saved: SavedRanked) -> Result<WindowTop> {
        let batch = saved.rows;
        let sort = encode(&self.sort_converter, &self.sort_exprs, &batch)?;
        let keys = encode(&self.partition_converter, &self.spec.partition_keys, &batch)?;
        let mut window = WindowTop::default();
        let mut offset = 0;
        for (p, cut) in saved.partitions.iter().enumerate() {
            let n = cut.rows;
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
            if cut.cutoff.is_some_and(|c| c >= n) {
                return Err(corrupt("has its cutoff beyond its rows"));
            }
            let items = rows
                .map(|r| Cand {
                    seq: saved.seqs[r],
                    chunk: 0,
                    row: r as u32,
                })
                .collect();
            window.partitions[id] = Partition {
                items,
                cutoff: cut.cutoff,
                kept: cut.kept,
            };
        }
        window.chunk_rows = batch.num_rows();
        window.chunks = vec![Chunk { batch, sort }];
        Ok(window)
    }
}

/// `e` as an error about the `partitions` table.
fn corrupt_partitions(reader: &Reader<'_>, e: Error) -> Error {
    match reader.table(PARTITIONS) {
        Ok(table) => table.corrupt(e.to_string()),
        Err(missing) => missing,
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
    fn push(&mut self, start: i64, end: i64, cut: &SavedCut) {
        self.starts.push(start);
        self.ends.push(end);
        self.rows.push(cut.rows as i64);
        self.kept.push(cut.kept as i64);
        self.cutoffs.push(cut.cutoff.map(|c| c as i64));
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
