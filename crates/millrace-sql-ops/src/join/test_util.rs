//! Helpers shared by the operator tests of this crate: input batches from
//! literal columns, and emitted messages as text rows a reader can check by
//! eye.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use millrace_core::batch::{attach_entered, attach_entered_now};
use millrace_core::{Emitter, Message, Watermark, entered_column, strip_entered};

use crate::round_trip::Step;
use crate::window::{is_window_type, window_array, window_type};

/// A schema of nullable fields.
pub(crate) fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    let fields: Vec<Field> = fields
        .iter()
        .map(|(name, dt)| Field::new(*name, dt.clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// `left` fields then `right` fields (a join's output schema).
pub(crate) fn joined(left: &SchemaRef, right: &SchemaRef) -> SchemaRef {
    let fields: Vec<Arc<Field>> = left
        .fields()
        .iter()
        .chain(right.fields())
        .cloned()
        .collect();
    Arc::new(Schema::new(fields))
}

pub(crate) fn ints(values: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

pub(crate) fn strs(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

/// A window column of `[start, end)` pairs.
pub(crate) fn windows(bounds: &[(i64, i64)]) -> ArrayRef {
    window_array(
        bounds.iter().map(|b| b.0).collect(),
        bounds.iter().map(|b| b.1).collect(),
    )
}

/// A batch as operators receive it: `columns`, then every row entered at
/// `entered_ns`.
pub(crate) fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>, entered_ns: i64) -> RecordBatch {
    let user = RecordBatch::try_new(schema.clone(), columns).unwrap();
    attach_entered_now(&user, entered_ns).unwrap()
}

pub(crate) fn wm(time_ms: i64, entered_ns: i64) -> Watermark {
    Watermark {
        time_ms,
        entered_ns,
    }
}

/// Takes the emitted messages as text: each data row as its user columns
/// `v1, v2, ...` (windows as `[start,end)`), each watermark as `wm T`.
pub(crate) fn take(out: &mut Emitter) -> Vec<String> {
    render(&out.take_messages())
}

pub(crate) fn render(messages: &[Message]) -> Vec<String> {
    let mut lines = Vec::new();
    for m in messages {
        match m {
            Message::Data(b) => {
                let user = strip_entered(b);
                for row in 0..user.num_rows() {
                    let cells: Vec<String> = user.columns().iter().map(|c| cell(c, row)).collect();
                    lines.push(cells.join(", "));
                }
            }
            Message::Watermark(w) => lines.push(format!("wm {}", w.time_ms)),
            other => lines.push(format!("{other:?}")),
        }
    }
    lines
}

fn cell(column: &ArrayRef, row: usize) -> String {
    if column.is_null(row) {
        return "null".into();
    }
    if is_window_type(column.data_type()) {
        let s = column.as_struct();
        let bound = |i: usize| {
            s.column(i)
                .as_primitive::<TimestampMillisecondType>()
                .value(row)
        };
        return format!("[{},{})", bound(0), bound(1));
    }
    let options = FormatOptions::default().with_null("null");
    ArrayFormatter::try_new(column.as_ref(), &options)
        .unwrap()
        .value(row)
        .to_string()
}

/// The entered times of the emitted data rows, in order.
pub(crate) fn entered(messages: &[Message]) -> Vec<i64> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Data(b) => entered_column(b).map(|e| e.values().to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// An out-of-order stream on both inputs of a join, for round-trip tests
/// (`crate::round_trip`): 24 rounds, each a batch on one or both inputs of
/// rows `(k, t, v)` (`schemas[input]` has these three columns), then a
/// watermark 4 ms behind the largest time so far. Keys are 0..4 or null;
/// times rise with the row number, jittered back and forth by more than the
/// watermark's bound and rounded down to even, so some rows are late and
/// many times are equal. Each
/// instance of `parallelism` gets the rows of keys `k % parallelism` (null
/// keys go to 0) and every watermark, as after an exchange by key.
pub(crate) fn join_round_trip_steps(
    schemas: [&SchemaRef; 2],
    parallelism: usize,
) -> Vec<Vec<Step>> {
    let mut steps = vec![Vec::new(); parallelism];
    let mut max_t = i64::MIN;
    let mut n = 0i64;
    for round in 0..24i64 {
        for (input, schema) in schemas.into_iter().enumerate() {
            // Every fifth round one input sends nothing.
            if (round + input as i64) % 5 == 4 {
                continue;
            }
            let mut rows: Vec<Vec<(Option<i64>, i64, String)>> = vec![Vec::new(); parallelism];
            for _ in 0..4 - input {
                let t = n * 3 / 2 + (n * 7919 % 13) - 6;
                let t = t.max(0) / 2 * 2;
                let k = (n % 7 != 3).then_some((n * n + n / 3) % 4);
                let instance = k.map_or(0, |k| k as usize % parallelism);
                rows[instance].push((k, t, format!("{}{n}", ["l", "r"][input])));
                max_t = max_t.max(t);
                n += 1;
            }
            for (instance, rows) in rows.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let k: Vec<Option<i64>> = rows.iter().map(|r| r.0).collect();
                let t: Vec<Option<i64>> = rows.iter().map(|r| Some(r.1)).collect();
                let v: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
                let b = batch(schema, vec![ints(&k), ints(&t), strs(&v)], round + 1);
                steps[instance].push(Step::data(input, b));
            }
        }
        for instance in &mut steps {
            instance.push(Step::Watermark(max_t - 4));
        }
    }
    steps
}

/// `schema` with a (nullable, as the other fields) window column `w` after
/// its columns.
pub(crate) fn with_window_column(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new("w", window_type(), true)));
    Arc::new(Schema::new(fields))
}

/// `steps` with each row given the tumbling window of `size_ms` over its
/// Int64 column `time`, as column `w` (see [`with_window_column`]): rows
/// as an earlier window aggregate would send them.
pub(crate) fn carrying_windows(steps: &[Step], time: &str, size_ms: i64) -> Vec<Step> {
    steps
        .iter()
        .map(|step| match step {
            Step::Data { input, batch } => {
                let user = strip_entered(batch);
                let times = user
                    .column_by_name(time)
                    .expect("time column")
                    .as_primitive::<arrow::datatypes::Int64Type>();
                let starts: Vec<i64> = times
                    .values()
                    .iter()
                    .map(|t| t - t.rem_euclid(size_ms))
                    .collect();
                let ends = starts.iter().map(|s| s + size_ms).collect();
                let mut columns = user.columns().to_vec();
                columns.push(window_array(starts, ends));
                let user =
                    RecordBatch::try_new(with_window_column(user.schema_ref()), columns).unwrap();
                let entered = entered_column(batch).expect("entered column").clone();
                Step::data(*input, attach_entered(&user, entered).unwrap())
            }
            Step::Watermark(_) => step.clone(),
        })
        .collect()
}
