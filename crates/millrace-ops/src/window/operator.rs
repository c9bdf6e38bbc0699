//! The window operator at run time: assigning rows to windows and groups,
//! tracking the watermark and lateness, and firing completed windows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, TimestampMillisecondArray};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows};
use millrace_core::time::{event_times_ms, now_ns};
use millrace_core::{
    Emitter, Error, Operator, Result, SinkWriter, Watermark, entered_column, strip_entered,
};

use super::WindowFactory;
use super::accumulate::{Acc, AggPlan, finish_agg, prepare_inputs, update};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Fired results are emitted in batches of at most this many rows (zero-copy
/// slices of one built batch), so one huge window does not become one huge
/// message in a channel bounded in rows.
const MAX_OUTPUT_ROWS: usize = 64 * 1024;

/// One open window: its key → group id map and per-aggregate accumulators.
struct WindowState {
    groups: FastMap<Box<[u8]>, u32>,
    accs: Vec<Acc>,
}

/// Rows of the current batch that fall into the window ending at `end`.
#[derive(Default)]
struct Bucket {
    end: i64,
    rows: Vec<u32>,
}

/// One parallel instance of the window aggregate: its open windows and the
/// watermark and lateness bookkeeping.
pub(super) struct WindowOperator {
    size_ms: i64,
    slide_ms: i64,
    event_time_index: usize,
    event_time: String,
    key_indices: Vec<usize>,
    /// `None` when there are no keys: every row of a window is in group 0.
    converter: Option<RowConverter>,
    aggs: Vec<AggPlan>,
    /// Output schema, with the entered column.
    schema: SchemaRef,
    side: Option<Box<dyn SinkWriter>>,
    /// Open windows by end.
    windows: BTreeMap<i64, WindowState>,
    watermark: i64,
    max_entered: Option<i64>,
    // Scratch reused across batches to avoid allocating per batch.
    buckets: Vec<Bucket>,
    active_buckets: usize,
    bucket_of_end: FastMap<i64, usize>,
    gids: Vec<u32>,
}

impl WindowOperator {
    pub(super) fn new(
        factory: &WindowFactory,
        converter: Option<RowConverter>,
        side: Option<Box<dyn SinkWriter>>,
    ) -> Self {
        Self {
            size_ms: factory.spec.kind.size_ms(),
            slide_ms: factory.spec.kind.slide_ms(),
            event_time_index: factory.event_time_index,
            event_time: factory.spec.event_time.clone(),
            key_indices: factory.key_indices.clone(),
            converter,
            aggs: factory.aggs.clone(),
            schema: factory.output_with_entered.clone(),
            side,
            windows: BTreeMap::new(),
            watermark: i64::MIN,
            max_entered: None,
            buckets: Vec::new(),
            active_buckets: 0,
            bucket_of_end: FastMap::default(),
            gids: Vec::new(),
        }
    }

    /// Fills `buckets` with the rows of each window the batch touches,
    /// skipping rows below `late_before`.
    fn assign_windows(&mut self, times: &[i64], late_before: i64) -> Result<()> {
        for b in &mut self.buckets[..self.active_buckets] {
            b.rows.clear();
        }
        self.active_buckets = 0;
        self.bucket_of_end.clear();
        let (size, slide) = (self.size_ms, self.slide_ms);
        let per_row = (size / slide) as usize;
        // Rows mostly arrive in time order, so consecutive rows usually hit the
        // same window; remember the last bucket per hop offset.
        let mut recent: Vec<(i64, usize)> = vec![(i64::MIN, usize::MAX); per_row];
        for (i, &t) in times.iter().enumerate() {
            if t < late_before {
                continue;
            }
            let out_of_range = || {
                Error::Other(format!(
                    "event time {t} ms in column '{}' is too far from the epoch to place in a window",
                    self.event_time
                ))
            };
            // The windows holding t end at first_end, first_end + slide, ...,
            // up to last_start + size; checking both extremes covers the rest.
            let last_start = t
                .div_euclid(slide)
                .checked_mul(slide)
                .ok_or_else(out_of_range)?;
            let first_end = last_start.checked_add(slide).ok_or_else(out_of_range)?;
            last_start.checked_add(size).ok_or_else(out_of_range)?;
            for (j, cached) in recent.iter_mut().enumerate() {
                let end = first_end + j as i64 * slide;
                if cached.0 != end {
                    let bucket = match self.bucket_of_end.get(&end) {
                        Some(&b) => b,
                        None => {
                            let b = self.active_buckets;
                            if b == self.buckets.len() {
                                self.buckets.push(Bucket::default());
                            }
                            self.buckets[b].end = end;
                            self.active_buckets += 1;
                            self.bucket_of_end.insert(end, b);
                            b
                        }
                    };
                    *cached = (end, bucket);
                }
                self.buckets[cached.1].rows.push(i as u32);
            }
        }
        Ok(())
    }

    /// Emits every window with `end <= up_to` (all of them for `None`).
    fn fire(&mut self, up_to: Option<i64>, entered_ns: i64, out: &mut Emitter) -> Result<()> {
        let fired = match up_to {
            None => std::mem::take(&mut self.windows),
            Some(t) => match self.windows.first_key_value() {
                Some((&first, _)) if first <= t => {
                    let rest = match t.checked_add(1) {
                        Some(after) => self.windows.split_off(&after),
                        None => BTreeMap::new(),
                    };
                    std::mem::replace(&mut self.windows, rest)
                }
                _ => return Ok(()),
            },
        };
        let total: usize = fired.values().map(|w| w.groups.len()).sum();
        if total == 0 {
            return Ok(());
        }

        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        if let Some(converter) = &self.converter {
            // Keys in group-id order, so they line up with the accumulators.
            let parser = converter.parser();
            let mut keys: Vec<&[u8]> = Vec::with_capacity(total);
            for window in fired.values() {
                let base = keys.len();
                keys.resize(base + window.groups.len(), &[]);
                for (key, &gid) in &window.groups {
                    keys[base + gid as usize] = key;
                }
            }
            for (i, key) in converter
                .convert_rows(keys.iter().map(|k| parser.parse(k)))?
                .into_iter()
                .enumerate()
            {
                // The row format may decode a type to an equivalent one (e.g. a
                // dictionary to its values); restore the declared type.
                let declared = self.schema.field(i).data_type();
                columns.push(if key.data_type() == declared {
                    key
                } else {
                    cast(&key, declared)?
                });
            }
        }
        let mut starts = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(total);
        for (&end, window) in &fired {
            let n = window.groups.len();
            starts.extend(std::iter::repeat_n(end - self.size_ms, n));
            ends.extend(std::iter::repeat_n(end, n));
        }
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        for (a, plan) in self.aggs.iter().enumerate() {
            let accs = fired.values().map(|w| &w.accs[a]);
            columns.push(finish_agg(plan, accs, total)?);
        }
        columns.push(Arc::new(Int64Array::from_value(entered_ns, total)));
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        let mut offset = 0;
        while offset < total {
            let len = MAX_OUTPUT_ROWS.min(total - offset);
            out.data(batch.slice(offset, len));
            offset += len;
        }
        Ok(())
    }
}

impl Operator for WindowOperator {
    fn snapshot(&mut self) -> Result<millrace_core::Snapshot> {
        Err(millrace_core::Error::Other(
            "window state cannot be snapshotted yet".into(),
        ))
    }

    fn on_data(&mut self, _input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        if n > u32::MAX as usize {
            return Err(Error::Other(format!(
                "batch of {n} rows is too large for a window operator"
            )));
        }
        let times = event_times_ms(
            batch_column(&batch, self.event_time_index)?,
            &self.event_time,
        )?;
        if let Some(max) = entered_column(&batch).and_then(arrow::compute::max) {
            self.max_entered = Some(self.max_entered.map_or(max, |m| m.max(max)));
        }

        let watermark = self.watermark;
        let late = times.iter().filter(|&&t| t < watermark).count();
        if late > 0 {
            out.count_late(late as u64);
            if let Some(side) = &mut self.side {
                let mask: BooleanArray = times.iter().map(|&t| Some(t < watermark)).collect();
                side.write(&strip_entered(&filter_record_batch(&batch, &mask)?))?;
            }
            if late == n {
                return Ok(());
            }
        }

        let keys: Option<Rows> = match &self.converter {
            Some(converter) => {
                let columns = self
                    .key_indices
                    .iter()
                    .map(|&i| batch_column(&batch, i).cloned())
                    .collect::<Result<Vec<_>>>()?;
                Some(converter.convert_columns(&columns)?)
            }
            None => None,
        };
        let inputs = prepare_inputs(&self.aggs, &batch)?;
        self.assign_windows(&times, watermark)?;

        let agg_count = self.aggs.len();
        for bucket in &self.buckets[..self.active_buckets] {
            let window = self
                .windows
                .entry(bucket.end)
                .or_insert_with(|| WindowState {
                    groups: FastMap::default(),
                    accs: (0..agg_count).map(|_| Acc::default()).collect(),
                });
            let gids = &mut self.gids;
            gids.clear();
            match &keys {
                Some(keys) => {
                    for &r in &bucket.rows {
                        let key = keys.row(r as usize);
                        let key: &[u8] = key.as_ref();
                        let gid = match window.groups.get(key) {
                            Some(&g) => g,
                            None => {
                                let g = window.groups.len() as u32;
                                window.groups.insert(key.into(), g);
                                g
                            }
                        };
                        gids.push(gid);
                    }
                }
                None => {
                    if window.groups.is_empty() {
                        window.groups.insert(Box::default(), 0);
                    }
                    gids.resize(bucket.rows.len(), 0);
                }
            }
            let groups = window.groups.len();
            for ((plan, acc), input) in self.aggs.iter().zip(&mut window.accs).zip(&inputs) {
                acc.grow(plan.kind, groups);
                update(
                    plan,
                    acc,
                    input,
                    &bucket.rows,
                    gids,
                    bucket.end - self.size_ms,
                )?;
            }
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
        self.fire(None, entered, out)?;
        if let Some(side) = &mut self.side {
            side.finish()?;
        }
        Ok(())
    }

    /// Window ends are multiples of the slide: nothing fires before the
    /// next one after the watermark. Watermarks are passed on.
    fn watermark_interest(&self, downstream: i64) -> i64 {
        let slide = i128::from(self.slide_ms);
        let next = (i128::from(self.watermark).div_euclid(slide) + 1) * slide;
        i64::try_from(next).unwrap_or(i64::MAX).min(downstream)
    }
}

pub(super) fn batch_column(batch: &RecordBatch, index: usize) -> Result<&ArrayRef> {
    batch.columns().get(index).ok_or_else(|| {
        Error::Other(format!(
            "input batch has {} columns; expected column {index}",
            batch.num_columns()
        ))
    })
}
