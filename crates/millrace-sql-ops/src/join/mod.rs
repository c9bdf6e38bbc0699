//! Streaming joins for SQL plans: window joins and interval joins.
//!
//! Both operators have two inputs (0 = left, 1 = right). They pair rows whose
//! equi-join keys are equal — a key with a null in it never matches, as in
//! SQL — keep the pairs for which the residual filter is true (null counts as
//! false), and emit the left columns, then the right columns, then the
//! entered column. Outer kinds also emit the rows that found no partner,
//! padded with nulls on the other side.
//!
//! * [`WindowJoinFactory`]: rows meet when they fall in the same window
//!   `[start, end)`; a window is joined, emitted and forgotten once the
//!   watermark reaches its end (see [`window`]).
//! * [`IntervalJoinFactory`]: a left row meets the right rows whose event time
//!   lies in a band around its own; a pair is emitted as soon as its second
//!   row arrives, and a row is forgotten once the watermark shows no partner
//!   can still come (see [`interval`]).
//!
//! Keys are compared as the bytes of one shared arrow `RowConverter`, so any
//! key type arrow can encode works; both sides must have the same key types
//! (the planner coerces them).

pub mod interval;
#[cfg(test)]
pub(crate) mod test_util;
pub mod window;

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, new_null_array};
use arrow::buffer::NullBuffer;
use arrow::compute::{filter_record_batch, prep_null_mask_filter};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_expr::PhysicalExpr;
use millrace_core::batch::schema_with_entered;
use millrace_core::time::is_event_time_type;
use millrace_core::{Emitter, Error, Result, entered_column};

use crate::window::{WindowAssign, evaluate};

pub use interval::{IntervalJoinFactory, IntervalJoinSpec};
pub use window::{WindowJoinFactory, WindowJoinSpec};

/// Which unmatched rows a join keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Only pairs.
    Inner,
    /// Pairs, and left rows without a partner padded with nulls.
    Left,
    /// Pairs, and right rows without a partner padded with nulls.
    Right,
    /// Pairs, and unmatched rows of both sides padded with nulls.
    Full,
}

impl JoinKind {
    /// Left rows without a partner are emitted (with null right columns).
    pub fn keeps_unmatched_left(self) -> bool {
        matches!(self, JoinKind::Left | JoinKind::Full)
    }

    /// Right rows without a partner are emitted (with null left columns).
    pub fn keeps_unmatched_right(self) -> bool {
        matches!(self, JoinKind::Right | JoinKind::Full)
    }
}

impl fmt::Display for JoinKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JoinKind::Inner => "inner",
            JoinKind::Left => "left",
            JoinKind::Right => "right",
            JoinKind::Full => "full",
        })
    }
}

/// The equi-join keys as plans show them: `[a = b, c = d]`.
pub(crate) fn describe_keys(
    left: &[Arc<dyn PhysicalExpr>],
    right: &[Arc<dyn PhysicalExpr>],
) -> String {
    let pairs: Vec<String> = left
        .iter()
        .zip(right)
        .map(|(l, r)| format!("{l} = {r}"))
        .collect();
    format!("[{}]", pairs.join(", "))
}

/// The residual filter as plans show it: `" where <filter>"`, or nothing.
pub(crate) fn describe_filter(filter: Option<&Arc<dyn PhysicalExpr>>) -> String {
    filter.map_or(String::new(), |f| format!(" where {f}"))
}

/// Of a pair of per-input things, input `input`'s (0 is left, 1 is right).
pub(crate) fn side<T>(input: usize, left: T, right: T) -> T {
    if input == 0 { left } else { right }
}

/// The side name used in messages (`input` 0 is left, 1 is right).
pub(crate) fn side_name(input: usize) -> &'static str {
    side(input, "left", "right")
}

/// Error for a batch on an input a two-input operator does not have.
pub(crate) fn no_such_input(input: usize) -> Error {
    Error::Other(format!(
        "a join has inputs 0 (left) and 1 (right); got a batch on input {input}"
    ))
}

/// Error unless a batch (user columns) arriving on `input` has as many
/// columns as its schema; checked on arrival so that no later step indexes
/// past a short batch.
pub(crate) fn check_width(
    batch: &RecordBatch,
    schema: &Schema,
    name: &str,
    input: usize,
) -> Result<()> {
    if batch.num_columns() == schema.fields().len() {
        return Ok(());
    }
    Err(Error::Other(format!(
        "{name}: a batch on the {} input has {} user columns; the plan expects {} ({})",
        side_name(input),
        batch.num_columns(),
        schema.fields().len(),
        column_names(schema)
    )))
}

fn column_names(schema: &Schema) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    names.join(", ")
}

/// Raises `max` to the largest entered time of `batch`.
pub(crate) fn note_entered(max: &mut Option<i64>, batch: &RecordBatch) {
    if let Some(m) = entered_column(batch).and_then(arrow::compute::max) {
        *max = Some(max.map_or(m, |cur| cur.max(m)));
    }
}

/// Checks a window assignment a join or top-N can run (tumble or hop
/// windows over an event time, or a window column; not sessions), naming
/// the operator and the input in the error.
pub(crate) fn check_window_assign(
    name: &str,
    side: &str,
    assign: &WindowAssign,
    schema: &Schema,
) -> Result<()> {
    assign
        .validate(schema, false)
        .map_err(|e| e.context(&format!("{name}: the {side} input")))
}

/// Checks that `time` evaluates to a timestamp or Int64 milliseconds.
pub(crate) fn check_event_time(
    name: &str,
    side: &str,
    time: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<()> {
    let dt = time.data_type(schema).map_err(crate::df_err)?;
    if is_event_time_type(&dt) {
        Ok(())
    } else {
        Err(Error::plan(format!(
            "{name}: the {side} event time {time} has type {dt}; expected a timestamp or Int64 milliseconds"
        )))
    }
}

/// What both joins' specs declare about their inputs and output.
pub(crate) struct JoinShape<'a> {
    pub name: &'a str,
    pub kind: JoinKind,
    pub left_schema: &'a Schema,
    pub right_schema: &'a Schema,
    pub left_keys: &'a [Arc<dyn PhysicalExpr>],
    pub right_keys: &'a [Arc<dyn PhysicalExpr>],
    pub filter: Option<&'a Arc<dyn PhysicalExpr>>,
    pub output_schema: &'a Schema,
}

/// Checks keys, output and filter of a join spec; returns the key fields
/// (see [`check_keys`]).
pub(crate) fn check_join(shape: JoinShape<'_>) -> Result<Vec<SortField>> {
    let JoinShape {
        name,
        kind,
        left_schema,
        right_schema,
        left_keys,
        right_keys,
        filter,
        output_schema,
    } = shape;
    let key_fields = check_keys(name, left_schema, right_schema, left_keys, right_keys)?;
    check_output(name, kind, left_schema, right_schema, output_schema)?;
    check_filter(name, filter, output_schema)?;
    Ok(key_fields)
}

/// Checks that the equi-join keys pair up (same count, same types, encodable
/// as rows) and returns the row-encoding fields shared by both sides.
pub(crate) fn check_keys(
    name: &str,
    left_schema: &Schema,
    right_schema: &Schema,
    left_keys: &[Arc<dyn PhysicalExpr>],
    right_keys: &[Arc<dyn PhysicalExpr>],
) -> Result<Vec<SortField>> {
    if left_keys.len() != right_keys.len() {
        return Err(Error::plan(format!(
            "{name}: {} left join key(s) but {} right join key(s); each left key needs a right key to compare with",
            left_keys.len(),
            right_keys.len()
        )));
    }
    let mut types = Vec::with_capacity(left_keys.len());
    for (l, r) in left_keys.iter().zip(right_keys) {
        let lt = l.data_type(left_schema).map_err(crate::df_err)?;
        let rt = r.data_type(right_schema).map_err(crate::df_err)?;
        if lt != rt {
            return Err(Error::plan(format!(
                "{name}: join key {l} = {r} compares {lt} with {rt}; cast one side so both have the same type"
            )));
        }
        types.push(lt);
    }
    let fields: Vec<SortField> = types.iter().cloned().map(SortField::new).collect();
    if !RowConverter::supports_fields(&fields) {
        let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        return Err(Error::plan(format!(
            "{name}: join keys of types [{}] cannot be compared",
            types.join(", ")
        )));
    }
    Ok(fields)
}

/// Checks that the output schema is the left columns then the right columns,
/// with the side an outer join pads nullable.
pub(crate) fn check_output(
    name: &str,
    kind: JoinKind,
    left: &Schema,
    right: &Schema,
    output: &Schema,
) -> Result<()> {
    let (l, r) = (left.fields().len(), right.fields().len());
    if output.fields().len() != l + r {
        return Err(Error::plan(format!(
            "{name}: the output schema has {} columns; expected the {l} left columns then the {r} right columns",
            output.fields().len()
        )));
    }
    let inputs = left
        .fields()
        .iter()
        .map(|f| (f, "left", kind.keeps_unmatched_right()))
        .chain(
            right
                .fields()
                .iter()
                .map(|f| (f, "right", kind.keeps_unmatched_left())),
        );
    for ((input, side, padded), out) in inputs.zip(output.fields()) {
        if input.data_type() != out.data_type() {
            return Err(Error::plan(format!(
                "{name}: output column '{}' has type {}, but {side} column '{}' has type {}",
                out.name(),
                out.data_type(),
                input.name(),
                input.data_type()
            )));
        }
        if padded && !out.is_nullable() {
            return Err(Error::plan(format!(
                "{name}: output column '{}' must be nullable: a {kind} join pads the {side} columns with nulls",
                out.name()
            )));
        }
        if input.is_nullable() && !out.is_nullable() {
            return Err(Error::plan(format!(
                "{name}: output column '{}' is declared non-null, but {side} column '{}' may be null",
                out.name(),
                input.name()
            )));
        }
    }
    Ok(())
}

/// Checks that the residual filter is a boolean over the output columns.
pub(crate) fn check_filter(
    name: &str,
    filter: Option<&Arc<dyn PhysicalExpr>>,
    output: &Schema,
) -> Result<()> {
    let Some(filter) = filter else {
        return Ok(());
    };
    let dt = filter.data_type(output).map_err(crate::df_err)?;
    if dt == DataType::Boolean {
        Ok(())
    } else {
        Err(Error::plan(format!(
            "{name}: the join filter {filter} has type {dt}; expected a boolean"
        )))
    }
}

/// Encodes the equi-join keys of either side as comparable bytes. One
/// converter serves both sides, so equal keys give equal bytes.
pub(crate) struct KeyEncoder {
    converter: RowConverter,
    /// Key expressions of the left and the right input.
    exprs: [Vec<Arc<dyn PhysicalExpr>>; 2],
}

/// The keys of one batch: bytes per row, and which rows have a null in a key.
pub(crate) struct Keys {
    rows: Rows,
    nulls: Option<NullBuffer>,
}

impl Keys {
    /// Row `i`'s key bytes, or `None` if a key column is null there (such a
    /// row never matches).
    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        match &self.nulls {
            Some(nulls) if nulls.is_null(i) => None,
            _ => Some(self.rows.row(i).data()),
        }
    }

    /// Memory held: the encoded rows and the null mask.
    pub(crate) fn size(&self) -> usize {
        self.rows.size() + self.nulls.as_ref().map_or(0, |n| n.buffer().len())
    }
}

impl KeyEncoder {
    /// `fields` as returned by [`check_keys`].
    pub(crate) fn new(
        fields: &[SortField],
        left: &[Arc<dyn PhysicalExpr>],
        right: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Self> {
        // Without keys every row has the same key: one constant null column
        // (a key encoder needs at least one column to know the row count).
        let fields = if fields.is_empty() {
            vec![SortField::new(DataType::Null)]
        } else {
            fields.to_vec()
        };
        Ok(Self {
            converter: RowConverter::new(fields)?,
            exprs: [left.to_vec(), right.to_vec()],
        })
    }

    /// The keys of `batch` (user columns of input `input`).
    pub(crate) fn encode(&self, input: usize, batch: &RecordBatch) -> Result<Keys> {
        let exprs = &self.exprs[input];
        if exprs.is_empty() {
            let constant = new_null_array(&DataType::Null, batch.num_rows());
            return Ok(Keys {
                rows: self.converter.convert_columns(&[constant])?,
                nulls: None,
            });
        }
        let arrays = exprs
            .iter()
            .map(|e| evaluate(e, batch))
            .collect::<Result<Vec<_>>>()?;
        let logical: Vec<Option<NullBuffer>> = arrays.iter().map(|a| a.logical_nulls()).collect();
        let nulls = NullBuffer::union_many(logical.iter().map(Option::as_ref));
        Ok(Keys {
            rows: self.converter.convert_columns(&arrays)?,
            nulls,
        })
    }
}

/// Builds output batches: joined columns, the residual filter, the entered
/// column.
pub(crate) struct JoinOutput {
    /// User columns (what the filter sees).
    schema: SchemaRef,
    with_entered: SchemaRef,
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// Number of left columns at the front of `schema`.
    left_width: usize,
}

impl JoinOutput {
    pub(crate) fn new(
        schema: SchemaRef,
        left_width: usize,
        filter: Option<Arc<dyn PhysicalExpr>>,
    ) -> Self {
        Self {
            with_entered: schema_with_entered(&schema),
            schema,
            filter,
            left_width,
        }
    }

    /// Number of left columns.
    pub(crate) fn left_width(&self) -> usize {
        self.left_width
    }

    /// Number of right columns.
    pub(crate) fn right_width(&self) -> usize {
        self.schema.fields().len() - self.left_width
    }

    /// Emits the pairs (row `i` of `left` with row `i` of `right`, entered
    /// time `entered[i]`) that pass the filter. Returns which pairs passed,
    /// or `None` when all did (no filter).
    pub(crate) fn emit_pairs(
        &self,
        left: Vec<ArrayRef>,
        right: Vec<ArrayRef>,
        entered: ArrayRef,
        out: &mut Emitter,
    ) -> Result<Option<BooleanArray>> {
        let mut columns = left;
        columns.extend(right);
        let joined = RecordBatch::try_new(self.schema.clone(), columns)?;
        let passed = match &self.filter {
            None => None,
            Some(filter) => Some(filter_verdict(filter, &joined)?),
        };
        let mut columns = joined.columns().to_vec();
        columns.push(entered);
        let batch = RecordBatch::try_new(self.with_entered.clone(), columns)?;
        out.data(match &passed {
            Some(mask) => filter_record_batch(&batch, mask)?,
            None => batch,
        });
        Ok(passed)
    }

    /// Emits left rows without a partner: `left` columns, null right columns.
    pub(crate) fn emit_left_padded(
        &self,
        left: Vec<ArrayRef>,
        entered: ArrayRef,
        out: &mut Emitter,
    ) -> Result<()> {
        let nulls = self.nulls(self.left_width, self.schema.fields().len(), entered.len());
        self.emit_padded(left, nulls, entered, out)
    }

    /// Emits right rows without a partner: null left columns, `right` columns.
    pub(crate) fn emit_right_padded(
        &self,
        right: Vec<ArrayRef>,
        entered: ArrayRef,
        out: &mut Emitter,
    ) -> Result<()> {
        let nulls = self.nulls(0, self.left_width, entered.len());
        self.emit_padded(nulls, right, entered, out)
    }

    /// Null columns for output fields `from..to`.
    fn nulls(&self, from: usize, to: usize, rows: usize) -> Vec<ArrayRef> {
        self.schema.fields()[from..to]
            .iter()
            .map(|f| new_null_array(f.data_type(), rows))
            .collect()
    }

    fn emit_padded(
        &self,
        left: Vec<ArrayRef>,
        right: Vec<ArrayRef>,
        entered: ArrayRef,
        out: &mut Emitter,
    ) -> Result<()> {
        let mut columns = left;
        columns.extend(right);
        columns.push(entered);
        out.data(RecordBatch::try_new(self.with_entered.clone(), columns)?);
        Ok(())
    }
}

/// The filter's verdict per row, with null turned into false.
fn filter_verdict(filter: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray> {
    let value = evaluate(filter, batch)?;
    let Some(mask) = value.as_boolean_opt() else {
        return Err(Error::Other(format!(
            "join filter {filter} returned {}, not a boolean",
            value.data_type()
        )));
    };
    Ok(if mask.null_count() > 0 {
        prep_null_mask_filter(mask)
    } else {
        mask.clone()
    })
}

/// True if pair `i` passed the filter (`None`: everything passed).
pub(crate) fn passed(mask: Option<&BooleanArray>, i: usize) -> bool {
    mask.is_none_or(|m| m.value(i))
}
