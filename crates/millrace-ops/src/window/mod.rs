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
//!   [`Emitter::count_late`](millrace_core::Emitter::count_late) and, under [`LatePolicy::SideOutput`], written
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

mod accumulate;
mod operator;

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use millrace_core::batch::schema_with_entered;
use millrace_core::time::is_event_time_type;
use millrace_core::{ENTERED_COLUMN, Error, Operator, OperatorFactory, Result, SinkFactory};

use accumulate::{AccKind, AggPlan, plan_agg};
use operator::WindowOperator;

/// A hopping window copies each row into `size / slide` windows; beyond this
/// the work per row (and state) is almost surely a mistake in the query.
pub const MAX_WINDOWS_PER_ROW: i64 = 10_000;

/// The shape of the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size_ms: i64 },
    Hopping { size_ms: i64, slide_ms: i64 },
}

impl WindowKind {
    /// Checks `size > 0`, `0 < slide <= size`, `size % slide == 0`, and that a
    /// row falls into at most [`MAX_WINDOWS_PER_ROW`] windows.
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
        if size / slide > MAX_WINDOWS_PER_ROW {
            return Err(Error::plan(format!(
                "hopping window of {size} ms every {slide} ms puts each row in {} windows; at most {MAX_WINDOWS_PER_ROW} are supported (use a larger slide)",
                size / slide
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

fn column_index(schema: &Schema, name: &str, context: &str) -> Result<usize> {
    match schema.index_of(name) {
        Ok(i) if name != ENTERED_COLUMN => Ok(i),
        _ => Err(Error::plan(format!(
            "{context}: unknown column '{name}'; available columns: {}",
            crate::expr::user_columns(schema)
        ))),
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
            LatePolicy::SideOutput(f) => {
                Some(f.create(instance, parallelism, self.input.clone())?)
            }
        };
        Ok(Box::new(WindowOperator::new(self, converter, side)))
    }
}
