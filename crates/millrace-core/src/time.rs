//! Clocks and event time.
//!
//! * Processing time: [`now_ns`] is a monotonic clock shared by all threads of
//!   the process. Every row's *entered* time and every latency uses it.
//! * Event time: milliseconds since the Unix epoch, read from a designated
//!   column that may be `Timestamp(any unit)` or `Int64` (taken as ms).

use std::sync::OnceLock;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};

use crate::error::{Error, Result};

fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

/// The least and greatest timestamps of `unit` the engine supports: those
/// that nanoseconds in an i64 can also hold (1677-09-21T00:12:43.145224192
/// to 2262-04-11T23:47:16.854775807), so that any of them converts to any
/// unit and is written back as a date. A source rejects others as bad
/// records; a sink refuses to write them.
pub fn timestamp_bounds(unit: TimeUnit) -> (i64, i64) {
    let per_ns = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    // Rounded towards zero, so both bounds convert to nanoseconds.
    (i64::MIN / per_ns + 1, i64::MAX / per_ns)
}

/// A value of `column`, or of a timestamp nested in it (struct fields, list
/// items), outside [`timestamp_bounds`]: the path to it below the column
/// (`""`, `".end"`) and the value; `None` when every value is supported.
pub fn unsupported_timestamp(column: &dyn Array) -> Option<(String, i64)> {
    match column.data_type() {
        DataType::Timestamp(unit, _) => {
            let (lo, hi) = timestamp_bounds(*unit);
            let data = column.to_data();
            // Every timestamp unit is an i64; `buffer` starts at the offset.
            let values = &data.buffer::<i64>(0)[..data.len()];
            if !values.iter().any(|v| *v < lo || *v > hi) {
                return None;
            }
            values
                .iter()
                .enumerate()
                .find(|(row, v)| (**v < lo || **v > hi) && column.is_valid(*row))
                .map(|(_, v)| (String::new(), *v))
        }
        DataType::Struct(fields) => {
            let columns = column.as_struct().columns();
            fields.iter().zip(columns).find_map(|(f, c)| {
                unsupported_timestamp(c.as_ref())
                    .map(|(path, v)| (format!(".{}{path}", f.name()), v))
            })
        }
        DataType::List(_) => unsupported_timestamp(column.as_list::<i32>().values().as_ref()),
        DataType::LargeList(_) => unsupported_timestamp(column.as_list::<i64>().values().as_ref()),
        _ => None,
    }
}

/// Nanoseconds since the first call in this process (monotonic).
#[inline]
pub fn now_ns() -> i64 {
    anchor().elapsed().as_nanos() as i64
}

/// Converts an `Instant` to the [`now_ns`] clock.
pub fn instant_ns(t: Instant) -> i64 {
    t.saturating_duration_since(anchor()).as_nanos() as i64
}

/// Converts a [`now_ns`] reading back to an `Instant`.
pub fn ns_instant(ns: i64) -> Instant {
    anchor() + std::time::Duration::from_nanos(ns.max(0) as u64)
}

/// True if `dt` can serve as an event-time column.
pub fn is_event_time_type(dt: &DataType) -> bool {
    matches!(dt, DataType::Timestamp(_, _) | DataType::Int64)
}

/// Event times of `array` in milliseconds; nulls are reported as an error
/// naming the column, since a row without event time cannot be windowed.
pub fn event_times_ms(array: &ArrayRef, column: &str) -> Result<Vec<i64>> {
    if array.null_count() > 0 {
        return Err(Error::Other(format!(
            "event-time column '{column}' has {} null value(s)",
            array.null_count()
        )));
    }
    let out = match array.data_type() {
        DataType::Int64 => array.as_primitive::<Int64Type>().values().to_vec(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => array
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec(),
        DataType::Timestamp(TimeUnit::Second, _) => array
            .as_primitive::<TimestampSecondType>()
            .values()
            .iter()
            .map(|v| v.saturating_mul(1000))
            .collect(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .iter()
            .map(|v| v.div_euclid(1000))
            .collect(),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => array
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .iter()
            .map(|v| v.div_euclid(1_000_000))
            .collect(),
        other => {
            return Err(Error::plan(format!(
                "event-time column '{column}' has type {other}; expected a timestamp or Int64 milliseconds"
            )));
        }
    };
    Ok(out)
}

/// Largest event time in `array` (ms), or `None` for an empty array.
pub fn max_event_time_ms(array: &ArrayRef, column: &str) -> Result<Option<i64>> {
    Ok(event_times_ms(array, column)?.into_iter().max())
}
