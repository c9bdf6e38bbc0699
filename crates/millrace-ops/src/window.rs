//! Keyed event-time windows: tumbling and hopping aggregates.
//!
//! # Semantics
//!
//! * **Assignment.** Windows are aligned to the Unix epoch. A tumbling window of
//!   `size` covers `[k*size, (k+1)*size)`; a hopping window of `size` and
//!   `slide` covers `[k*slide, k*slide + size)`, so each row falls into
//!   `size / slide` windows. Event time is read from the declared column
//!   (`Timestamp` of any unit, or `Int64` milliseconds); a null event time is an
//!   error, since such a row cannot be placed.
//! * **Groups.** Within a window, rows are grouped by the key columns (nulls
//!   form their own group, as in SQL `GROUP BY`). No key columns means one
//!   group per window.
//! * **Late rows.** A row is late if its event time is below the operator's
//!   current watermark (the largest `on_watermark` time seen; initially
//!   `i64::MIN`). Late rows never enter a window: they are counted with
//!   [`Emitter::count_late`] and, under [`LatePolicy::SideOutput`], written
//!   (user columns only) to a side sink. Since every window holding a non-late
//!   row ends after the watermark, no row ever lands in a window already fired.
//! * **Firing.** On a watermark `wm`, every window with `end <= wm.time_ms` is
//!   emitted, in ascending order of end, and only then is the watermark
//!   forwarded, so downstream sees the results before the promise that covers
//!   them. Their rows carry `wm.entered_ns` as entered time: their latency
//!   counts from the event that closed them. At end of input every remaining
//!   window fires, with entered time the largest seen on input.
//! * **Output.** One row per (window, key): the key columns (as in the input),
//!   `window_start` and `window_end` (`Timestamp(Millisecond)`), then one column
//!   per aggregate. Rows come ordered by window end; within a window, in order
//!   of first appearance of the key. The output event time is `window_end`.
//! * **Aggregates.** `count(*)` counts rows, `count(col)` non-null values, both
//!   `Int64`. `sum` is `Int64` over integers (checked: overflow is an error)
//!   and `Float64` over floats. `min`/`max` are `Int64` over integers,
//!   `Float64` over floats (NaN is ignored unless every value is NaN), and keep
//!   the type of a timestamp column. `avg` is `Float64`. Nulls are ignored; a
//!   group whose values are all null gets null (except for counts).
//!
//! # Cost
//!
//! Per batch: one `RowConverter` pass encodes the key columns; rows are bucketed
//! by window; per window one hash lookup per row yields a dense group id; then
//! each aggregate runs one tight, monomorphic loop over (row, group) pairs,
//! updating column-wise accumulators (`Vec<i64>`, `Vec<f64>`, `Vec<u64>`
//! indexed by group id). No allocation per row except for a new key. Keys are
//! decoded back to columns only when their window fires.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, PrimitiveArray,
    TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::{CastOptions, cast, cast_with_options, filter_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use millrace_core::batch::schema_with_entered;
use millrace_core::time::{event_times_ms, is_event_time_type, now_ns};
use millrace_core::{
    ENTERED_COLUMN, Emitter, Error, Operator, OperatorFactory, Result, SinkFactory, SinkWriter,
    Watermark, entered_column, strip_entered,
};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Fired results are emitted in batches of at most this many rows (zero-copy
/// slices of one built batch), so one huge window does not become one huge
/// message in a channel bounded in rows.
const MAX_OUTPUT_ROWS: usize = 64 * 1024;

/// The shape of the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size_ms: i64 },
    Hopping { size_ms: i64, slide_ms: i64 },
}

impl WindowKind {
    /// Checks `size > 0`, `0 < slide <= size` and `size % slide == 0`.
    pub fn validate(&self) -> Result<()> {
        let (size, slide) = (self.size_ms(), self.slide_ms());
        if size <= 0 {
            return Err(Error::plan(format!(
                "window size must be positive, got {size} ms"
            )));
        }
        if slide <= 0 || slide > size {
            return Err(Error::plan(format!(
                "hopping window slide must be in (0, size = {size} ms], got {slide} ms"
            )));
        }
        if size % slide != 0 {
            return Err(Error::plan(format!(
                "hopping window size ({size} ms) must be a multiple of its slide ({slide} ms)"
            )));
        }
        Ok(())
    }

    pub fn size_ms(&self) -> i64 {
        match *self {
            WindowKind::Tumbling { size_ms } | WindowKind::Hopping { size_ms, .. } => size_ms,
        }
    }

    /// Distance between consecutive window starts (the size, for tumbling).
    pub fn slide_ms(&self) -> i64 {
        match *self {
            WindowKind::Tumbling { size_ms } => size_ms,
            WindowKind::Hopping { slide_ms, .. } => slide_ms,
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WindowKind::Tumbling { size_ms } => write!(f, "tumbling {size_ms}ms"),
            WindowKind::Hopping { size_ms, slide_ms } => {
                write!(f, "hopping {size_ms}ms every {slide_ms}ms")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl fmt::Display for AggFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Avg => "avg",
        })
    }
}

/// One aggregate: `func(column) AS output`.
#[derive(Debug, Clone)]
pub struct Agg {
    pub func: AggFunc,
    /// The input column; `None` only for `count(*)`.
    pub column: Option<String>,
    pub output: String,
}

impl Agg {
    fn new(func: AggFunc, column: &str, output: &str) -> Self {
        Self {
            func,
            column: Some(column.to_string()),
            output: output.to_string(),
        }
    }

    /// `count(*)`: rows in the group.
    pub fn count_all(output: &str) -> Self {
        Self {
            func: AggFunc::Count,
            column: None,
            output: output.to_string(),
        }
    }
    /// `count(column)`: non-null values in the group.
    pub fn count(column: &str, output: &str) -> Self {
        Self::new(AggFunc::Count, column, output)
    }
    pub fn sum(column: &str, output: &str) -> Self {
        Self::new(AggFunc::Sum, column, output)
    }
    pub fn min(column: &str, output: &str) -> Self {
        Self::new(AggFunc::Min, column, output)
    }
    pub fn max(column: &str, output: &str) -> Self {
        Self::new(AggFunc::Max, column, output)
    }
    pub fn avg(column: &str, output: &str) -> Self {
        Self::new(AggFunc::Avg, column, output)
    }
}

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.column.as_deref().unwrap_or("*");
        write!(f, "{}({column}) AS {}", self.func, self.output)
    }
}

/// What happens to rows behind the watermark (always counted).
#[derive(Clone)]
pub enum LatePolicy {
    Drop,
    /// Also write them, user columns only, to a sink of this factory.
    SideOutput(Arc<dyn SinkFactory>),
}

impl fmt::Debug for LatePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LatePolicy::Drop => f.write_str("Drop"),
            LatePolicy::SideOutput(s) => write!(f, "SideOutput({})", s.name()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub keys: Vec<String>,
    pub aggs: Vec<Agg>,
    /// Event-time column of the input.
    pub event_time: String,
    pub late: LatePolicy,
}

/// How one aggregate is computed: which accumulator vectors it uses and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccKind {
    CountAll,
    CountCol,
    SumInt,
    SumFloat,
    MinInt,
    MaxInt,
    MinFloat,
    MaxFloat,
    Avg,
}

impl AccKind {
    /// The type the input column is cast to once per batch, if values are read.
    fn input_type(self) -> Option<DataType> {
        match self {
            AccKind::CountAll | AccKind::CountCol => None,
            AccKind::SumInt | AccKind::MinInt | AccKind::MaxInt => Some(DataType::Int64),
            AccKind::SumFloat | AccKind::MinFloat | AccKind::MaxFloat | AccKind::Avg => {
                Some(DataType::Float64)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct AggPlan {
    kind: AccKind,
    /// Index of the input column in the batch.
    column: Option<usize>,
    /// For error messages, e.g. `sum(price) AS total`.
    label: String,
    output_type: DataType,
}

fn plan_agg(agg: &Agg, input: &Schema) -> Result<AggPlan> {
    let label = agg.to_string();
    let Some(name) = &agg.column else {
        return if agg.func == AggFunc::Count {
            Ok(AggPlan {
                kind: AccKind::CountAll,
                column: None,
                label,
                output_type: DataType::Int64,
            })
        } else {
            Err(Error::plan(format!(
                "aggregate {label}: {} needs a column; only count may count rows (*)",
                agg.func
            )))
        };
    };
    let index = column_index(input, name, &format!("aggregate {label}"))?;
    let dt = input.field(index).data_type();
    let (int, float, ts) = (
        dt.is_integer(),
        dt.is_floating(),
        matches!(dt, DataType::Timestamp(_, _)),
    );
    let (kind, output_type) = match agg.func {
        AggFunc::Count => (AccKind::CountCol, DataType::Int64),
        AggFunc::Sum if int => (AccKind::SumInt, DataType::Int64),
        AggFunc::Sum if float => (AccKind::SumFloat, DataType::Float64),
        AggFunc::Min if int => (AccKind::MinInt, DataType::Int64),
        AggFunc::Max if int => (AccKind::MaxInt, DataType::Int64),
        AggFunc::Min if ts => (AccKind::MinInt, dt.clone()),
        AggFunc::Max if ts => (AccKind::MaxInt, dt.clone()),
        AggFunc::Min if float => (AccKind::MinFloat, DataType::Float64),
        AggFunc::Max if float => (AccKind::MaxFloat, DataType::Float64),
        AggFunc::Avg if int || float => (AccKind::Avg, DataType::Float64),
        func => {
            let accepted = if matches!(func, AggFunc::Min | AggFunc::Max) {
                "an integer, float or timestamp"
            } else {
                "an integer or float"
            };
            return Err(Error::plan(format!(
                "aggregate {label}: column '{name}' has type {dt}; {func} needs {accepted} column"
            )));
        }
    };
    Ok(AggPlan {
        kind,
        column: Some(index),
        label,
        output_type,
    })
}

fn column_index(schema: &Schema, name: &str, context: &str) -> Result<usize> {
    match schema.index_of(name) {
        Ok(i) if name != ENTERED_COLUMN => Ok(i),
        _ => {
            let available: Vec<&str> = schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .filter(|n| *n != ENTERED_COLUMN)
                .collect();
            Err(Error::plan(format!(
                "{context}: unknown column '{name}'; available columns: {}",
                available.join(", ")
            )))
        }
    }
}

/// A keyed event-time window aggregate (see the module doc for semantics).
pub struct WindowFactory {
    input: SchemaRef,
    spec: WindowSpec,
    key_indices: Vec<usize>,
    key_fields: Vec<SortField>,
    event_time_index: usize,
    aggs: Vec<AggPlan>,
    output: SchemaRef,
    output_with_entered: SchemaRef,
}

impl WindowFactory {
    pub fn new(input: SchemaRef, spec: WindowSpec) -> Result<Self> {
        spec.kind.validate()?;
        let event_time_index = column_index(&input, &spec.event_time, "window event time")?;
        let et_type = input.field(event_time_index).data_type();
        if !is_event_time_type(et_type) {
            return Err(Error::plan(format!(
                "window event-time column '{}' has type {et_type}; expected a timestamp or Int64 milliseconds",
                spec.event_time
            )));
        }

        let mut fields: Vec<Arc<Field>> = Vec::new();
        let mut key_indices = Vec::new();
        let mut key_fields = Vec::new();
        for key in &spec.keys {
            let i = column_index(&input, key, "window key")?;
            let field = input.field(i);
            key_indices.push(i);
            key_fields.push(SortField::new(field.data_type().clone()));
            fields.push(Arc::new(field.clone()));
        }
        if !RowConverter::supports_fields(&key_fields) {
            let types: Vec<String> = key_indices
                .iter()
                .map(|&i| input.field(i).data_type().to_string())
                .collect();
            return Err(Error::plan(format!(
                "window keys [{}] have types [{}], which cannot be grouped on",
                spec.keys.join(", "),
                types.join(", ")
            )));
        }
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        fields.push(Arc::new(Field::new("window_start", ts.clone(), false)));
        fields.push(Arc::new(Field::new("window_end", ts, false)));

        let mut aggs = Vec::with_capacity(spec.aggs.len());
        for agg in &spec.aggs {
            let plan = plan_agg(agg, &input)?;
            let nullable = !matches!(plan.kind, AccKind::CountAll | AccKind::CountCol);
            fields.push(Arc::new(Field::new(
                &agg.output,
                plan.output_type.clone(),
                nullable,
            )));
            aggs.push(plan);
        }
        for (i, f) in fields.iter().enumerate() {
            if f.name() == ENTERED_COLUMN || fields[..i].iter().any(|g| g.name() == f.name()) {
                return Err(Error::plan(format!(
                    "window output column '{}' is defined more than once (keys, window_start, window_end and aggregate outputs must have distinct names)",
                    f.name()
                )));
            }
        }
        let output = Arc::new(Schema::new(fields));
        Ok(Self {
            output_with_entered: schema_with_entered(&output),
            output,
            input,
            spec,
            key_indices,
            key_fields,
            event_time_index,
            aggs,
        })
    }
}

impl OperatorFactory for WindowFactory {
    fn name(&self) -> String {
        let aggs: Vec<String> = self.spec.aggs.iter().map(|a| a.to_string()).collect();
        format!(
            "window({} by [{}]: {})",
            self.spec.kind,
            self.spec.keys.join(", "),
            aggs.join(", ")
        )
    }

    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn output_event_time(&self) -> Option<String> {
        Some("window_end".into())
    }

    fn create(&self, instance: usize, parallelism: usize) -> Result<Box<dyn Operator>> {
        let converter = if self.key_fields.is_empty() {
            None
        } else {
            Some(RowConverter::new(self.key_fields.clone())?)
        };
        let side = match &self.spec.late {
            LatePolicy::Drop => None,
            LatePolicy::SideOutput(f) => Some(f.create(instance, parallelism, self.input.clone())?),
        };
        Ok(Box::new(WindowOperator {
            size_ms: self.spec.kind.size_ms(),
            slide_ms: self.spec.kind.slide_ms(),
            event_time_index: self.event_time_index,
            event_time: self.spec.event_time.clone(),
            key_indices: self.key_indices.clone(),
            converter,
            aggs: self.aggs.clone(),
            schema: self.output_with_entered.clone(),
            side,
            windows: BTreeMap::new(),
            watermark: i64::MIN,
            max_entered: None,
            buckets: Vec::new(),
            active_buckets: 0,
            bucket_of_end: FastMap::default(),
            gids: Vec::new(),
        }))
    }
}

/// Accumulators of one aggregate in one window, indexed by group id. Each
/// [`AccKind`] uses `counts` (non-null inputs seen) and at most one of `ints`
/// and `floats`.
#[derive(Default)]
struct Acc {
    ints: Vec<i64>,
    floats: Vec<f64>,
    counts: Vec<u64>,
}

impl Acc {
    /// Makes room for `groups` groups, new ones at the aggregate's identity.
    fn grow(&mut self, kind: AccKind, groups: usize) {
        if self.counts.len() >= groups {
            return;
        }
        self.counts.resize(groups, 0);
        match kind {
            AccKind::CountAll | AccKind::CountCol => {}
            AccKind::SumInt => self.ints.resize(groups, 0),
            AccKind::MinInt => self.ints.resize(groups, i64::MAX),
            AccKind::MaxInt => self.ints.resize(groups, i64::MIN),
            AccKind::SumFloat | AccKind::Avg => self.floats.resize(groups, 0.0),
            // f64::min/max return the other operand when one is NaN, so a NaN
            // start is replaced by the first value, and stays only if all are NaN.
            AccKind::MinFloat | AccKind::MaxFloat => self.floats.resize(groups, f64::NAN),
        }
    }
}

/// One open window: its key → group id map and per-aggregate accumulators.
struct WindowState {
    groups: FastMap<Box<[u8]>, u32>,
    accs: Vec<Acc>,
}

/// An aggregate's input for one batch, cast once to the accumulator's type.
enum AggInput {
    None,
    Nulls(Option<NullBuffer>),
    Int(Int64Array),
    Float(Float64Array),
}

/// Rows of the current batch that fall into the window ending at `end`.
#[derive(Default)]
struct Bucket {
    end: i64,
    rows: Vec<u32>,
}

struct WindowOperator {
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

    fn prepare_inputs(&self, batch: &RecordBatch) -> Result<Vec<AggInput>> {
        let options = CastOptions {
            safe: false, // an out-of-range UInt64 must fail, not become null
            ..Default::default()
        };
        self.aggs
            .iter()
            .map(|plan| {
                let Some(index) = plan.column else {
                    return Ok(AggInput::None);
                };
                let column = batch_column(batch, index)?;
                Ok(match plan.kind.input_type() {
                    None => AggInput::Nulls(column.logical_nulls()),
                    Some(DataType::Int64) => AggInput::Int(
                        cast_with_options(column, &DataType::Int64, &options)?
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .cloned()
                            .ok_or_else(|| internal("cast to Int64"))?,
                    ),
                    Some(_) => AggInput::Float(
                        cast_with_options(column, &DataType::Float64, &options)?
                            .as_any()
                            .downcast_ref::<Float64Array>()
                            .cloned()
                            .ok_or_else(|| internal("cast to Float64"))?,
                    ),
                })
            })
            .collect()
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
            columns.extend(converter.convert_rows(keys.iter().map(|k| parser.parse(k)))?);
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
        let inputs = self.prepare_inputs(&batch)?;
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
                update(plan, acc, input, &bucket.rows, gids, bucket.end - self.size_ms)?;
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
}

fn batch_column(batch: &RecordBatch, index: usize) -> Result<&ArrayRef> {
    batch.columns().get(index).ok_or_else(|| {
        Error::Other(format!(
            "input batch has {} columns; expected column {index}",
            batch.num_columns()
        ))
    })
}

fn internal(what: &str) -> Error {
    Error::Other(format!("internal error in window operator: {what}"))
}

/// Calls `f(group, value)` for each non-null value of the rows in `rows`.
/// Generic so every aggregate gets its own loop with no dispatch per row.
#[inline(always)]
fn for_each_value<T: Copy>(
    values: &[T],
    nulls: Option<&NullBuffer>,
    rows: &[u32],
    gids: &[u32],
    mut f: impl FnMut(usize, T),
) {
    match nulls {
        Some(nulls) if nulls.null_count() > 0 => {
            for (&r, &g) in rows.iter().zip(gids) {
                if nulls.is_valid(r as usize) {
                    f(g as usize, values[r as usize]);
                }
            }
        }
        _ => {
            for (&r, &g) in rows.iter().zip(gids) {
                f(g as usize, values[r as usize]);
            }
        }
    }
}

/// Folds the rows of one window into one aggregate's accumulators.
fn update(
    plan: &AggPlan,
    acc: &mut Acc,
    input: &AggInput,
    rows: &[u32],
    gids: &[u32],
    window_start: i64,
) -> Result<()> {
    let Acc {
        ints,
        floats,
        counts,
    } = acc;
    match (plan.kind, input) {
        (AccKind::CountAll, _) => {
            for &g in gids {
                counts[g as usize] += 1;
            }
        }
        (AccKind::CountCol, AggInput::Nulls(nulls)) => {
            match nulls {
                Some(nulls) if nulls.null_count() > 0 => {
                    for (&r, &g) in rows.iter().zip(gids) {
                        counts[g as usize] += u64::from(nulls.is_valid(r as usize));
                    }
                }
                _ => {
                    for &g in gids {
                        counts[g as usize] += 1;
                    }
                }
            }
        }
        (AccKind::SumInt, AggInput::Int(a)) => {
            let mut overflow = false;
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                let (sum, o) = ints[g].overflowing_add(v);
                ints[g] = sum;
                overflow |= o;
                counts[g] += 1;
            });
            if overflow {
                return Err(Error::Other(format!(
                    "{} overflowed Int64 in the window starting at {window_start} ms",
                    plan.label
                )));
            }
        }
        (AccKind::MinInt, AggInput::Int(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                ints[g] = ints[g].min(v);
                counts[g] += 1;
            });
        }
        (AccKind::MaxInt, AggInput::Int(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                ints[g] = ints[g].max(v);
                counts[g] += 1;
            });
        }
        (AccKind::SumFloat | AccKind::Avg, AggInput::Float(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                floats[g] += v;
                counts[g] += 1;
            });
        }
        (AccKind::MinFloat, AggInput::Float(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                floats[g] = floats[g].min(v);
                counts[g] += 1;
            });
        }
        (AccKind::MaxFloat, AggInput::Float(a)) => {
            for_each_value(a.values(), a.nulls(), rows, gids, |g, v| {
                floats[g] = floats[g].max(v);
                counts[g] += 1;
            });
        }
        (kind, _) => return Err(internal(&format!("{kind:?} got an input of another type"))),
    }
    Ok(())
}

/// The output column of one aggregate over the fired windows, in order.
fn finish_agg<'a>(
    plan: &AggPlan,
    accs: impl Iterator<Item = &'a Acc> + Clone,
    total: usize,
) -> Result<ArrayRef> {
    let counts = accs.clone().flat_map(|a| a.counts.iter().copied());
    // Groups with no non-null input get null (all but the counts).
    let validity = || -> Option<NullBuffer> {
        let nulls = NullBuffer::from_iter(counts.clone().map(|c| c > 0));
        (nulls.null_count() > 0).then_some(nulls)
    };
    let array: ArrayRef = match plan.kind {
        AccKind::CountAll | AccKind::CountCol => {
            Arc::new(Int64Array::from_iter_values(counts.clone().map(|c| c as i64)))
        }
        AccKind::SumInt | AccKind::MinInt | AccKind::MaxInt => {
            let values: Vec<i64> = accs.flat_map(|a| a.ints.iter().copied()).collect();
            let ints: ArrayRef = Arc::new(PrimitiveArray::<Int64Type>::new(
                values.into(),
                validity(),
            ));
            if &plan.output_type == ints.data_type() {
                ints
            } else {
                // A timestamp min/max: same values, the input's type.
                cast(&ints, &plan.output_type)?
            }
        }
        AccKind::SumFloat | AccKind::MinFloat | AccKind::MaxFloat => {
            let values: Vec<f64> = accs.flat_map(|a| a.floats.iter().copied()).collect();
            Arc::new(Float64Array::new(values.into(), validity()))
        }
        AccKind::Avg => {
            let values: Vec<f64> = accs
                .flat_map(|a| a.floats.iter().zip(&a.counts))
                .map(|(&sum, &n)| if n > 0 { sum / n as f64 } else { 0.0 })
                .collect();
            Arc::new(Float64Array::new(values.into(), validity()))
        }
    };
    if array.len() != total {
        return Err(internal("aggregate length differs from key count"));
    }
    Ok(array)
}
