//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use millrace_core::{SourceFactory, SourcePoll, strip_entered};

/// Runs `command` with `input` on its standard input; what it printed and
/// how it ended.
pub fn output_with_stdin(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// `ts` (timestamp, ms) and `k` (BIGINT): the schema of the hand-made
/// sources whose event time is `ts`.
pub fn ts_and_key_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("k", DataType::Int64, false),
    ]))
}

/// Every row of a bounded, unpaced source read directly (no pipeline):
/// the input of the independent batch computations.
pub fn read_all(source: &dyn SourceFactory) -> Vec<RecordBatch> {
    let mut reader = source.create(0, 1).expect("reader");
    let mut out = Vec::new();
    loop {
        match reader.poll_batch(4096).expect("poll") {
            SourcePoll::Batch(b) => out.push(strip_entered(&b)),
            SourcePoll::Exhausted => return out,
            SourcePoll::Pending { .. } => panic!("test sources must not be paced"),
        }
    }
}

/// Column `name` of every batch as i64 (Int64 or Timestamp(ms));
/// `window.start` and `window.end` read the bounds of the `window` column.
pub fn ints(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    let mut v = Vec::new();
    for b in batches {
        let c = match name.split_once('.') {
            Some((column, field)) => b
                .column_by_name(column)
                .and_then(|s| s.as_struct().column_by_name(field))
                .unwrap_or_else(|| panic!("no column {name}")),
            None => b
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}")),
        };
        match c.data_type() {
            DataType::Int64 => v.extend(c.as_primitive::<Int64Type>().values().iter().copied()),
            DataType::Timestamp(_, _) => v.extend(
                c.as_primitive::<TimestampMillisecondType>()
                    .values()
                    .iter()
                    .copied(),
            ),
            other => panic!("column {name} is {other}"),
        }
    }
    v
}

pub fn floats(batches: &[RecordBatch], name: &str) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"));
            let a = c.as_primitive::<Float64Type>();
            assert_eq!(a.null_count(), 0);
            a.values().to_vec()
        })
        .collect()
}

pub fn strings(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"));
            (0..c.len())
                .map(|i| c.as_string::<i32>().value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Start of every window of `size`/`slide` (ms) that contains `ts`.
pub fn windows_of(ts: i64, size: i64, slide: i64) -> Vec<i64> {
    let last = ts.div_euclid(slide) * slide;
    let mut starts = Vec::new();
    let mut s = last;
    while s > ts - size {
        starts.push(s);
        s -= slide;
    }
    starts
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

pub type Table<K, V> = BTreeMap<K, V>;

/// The binary under test, without the live endpoint unless a test asks
/// for it (`--http`): tests read its stderr from the first line.
pub fn millrace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
    command.env("MILLRACE_HTTP", "off");
    command
}

/// Runs `sql` to its end; panics with its stderr on failure.
pub fn run_to_end(sql: &Path) -> Duration {
    let started = Instant::now();
    let out = millrace()
        .args(["run", sql.to_str().unwrap()])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// A small deterministic generator of kill delays.
pub struct Moments(pub u64);

impl Moments {
    pub fn next_below(&mut self, bound: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = bound.as_nanos().max(1) as u64;
        Duration::from_nanos(self.0 % nanos)
    }
}
