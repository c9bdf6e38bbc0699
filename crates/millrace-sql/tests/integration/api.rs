//! The Rust API (`millrace_sql::api`): expressions coerced as SQL's are,
//! steps checked when added, and windows (with their late rows) equal to an
//! independent computation.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use millrace_connectors::file::FileSource;
use millrace_core::{CollectSink, EventTime, strip_entered};
use millrace_runtime::{Pipeline, PipelineConfig, Stream};
use millrace_sql::api::{StreamExt, Window, agg, col, lit};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]))
}

/// Rows (k, ts, v): keys 0..5, time rising ~100 ms a row, one row in ten
/// up to 3 s back, every seventh value null.
fn rows() -> Vec<(i64, i64, Option<i64>)> {
    (0..400i64)
        .map(|i| {
            let ts = i * 100 - if i % 10 == 3 { (i * 37) % 3000 } else { 0 };
            (i * 7 % 5, ts.max(0), (i % 7 != 0).then_some(i))
        })
        .collect()
}

fn source(dir: &tempfile::TempDir) -> FileSource {
    let path = dir.path().join("rows.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for (k, ts, v) in rows() {
        let v = v.map_or("null".to_string(), |v| v.to_string());
        writeln!(f, r#"{{"k":{k},"ts":{ts},"v":{v}}}"#).unwrap();
    }
    FileSource::json(&path, schema()).with_event_time(EventTime::new("ts", 500))
}

fn pipeline(parallelism: usize) -> Pipeline {
    Pipeline::new(PipelineConfig {
        parallelism,
        workers: parallelism,
        batch_size: 1,
        ..PipelineConfig::default()
    })
}

fn collect(stream: &Stream) -> CollectSink {
    let sink = CollectSink::new();
    stream.sink(sink.clone()).unwrap();
    sink
}

fn batches(sink: &CollectSink) -> Vec<RecordBatch> {
    sink.batches().iter().map(strip_entered).collect()
}

#[test]
fn filter_and_computed_columns_coerce_types_as_sql_does() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(1);
    let rows_in = p.source(source(&dir));
    // Int64 against an Int32 literal; Int64 times a Float64 literal.
    let kept = rows_in
        .filter(col("v").gt(lit(200)))
        .unwrap()
        .with_column("scaled", col("v") * lit(1.5))
        .unwrap()
        .with_column("k", col("k") + lit(10))
        .unwrap();
    let names: Vec<String> = kept
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["k", "ts", "v", "scaled"],
        "replaced in place, added last"
    );
    assert_eq!(kept.schema().field(3).data_type(), &DataType::Float64);
    assert_eq!(kept.event_time().as_deref(), Some("ts"));
    let sink = collect(&kept);
    p.run().unwrap();

    let out = batches(&sink);
    let got: Vec<(i64, i64, f64)> = out
        .iter()
        .flat_map(|b| {
            let k = b.column(0).as_primitive::<Int64Type>().clone();
            let v = b.column(2).as_primitive::<Int64Type>().clone();
            let s = b.column(3).as_primitive::<Float64Type>().clone();
            (0..b.num_rows()).map(move |i| (k.value(i), v.value(i), s.value(i)))
        })
        .collect();
    // Null values fail the predicate, as in SQL.
    let want: Vec<(i64, i64, f64)> = rows()
        .into_iter()
        .filter_map(|(k, _, v)| v.filter(|v| *v > 200).map(|v| (k + 10, v, v as f64 * 1.5)))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn steps_are_checked_when_added() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(1);
    let s = p.source(source(&dir));
    let err = |r: millrace_core::Result<Stream>| r.err().expect("refused").to_string();
    assert!(err(s.filter(col("nope").gt(lit(1)))).contains("nope"));
    assert!(err(s.filter(col("v") + lit(1))).contains("Boolean"));
    let twice = s.project([("a", col("k")), ("a", col("v"))]);
    assert!(err(twice).contains("'a' is projected twice"));
    // Computing the event-time column, or dropping it, loses the event time.
    assert_eq!(
        s.with_column("ts", col("ts") + lit(1))
            .unwrap()
            .event_time(),
        None
    );
    assert_eq!(s.select(&["k", "v"]).unwrap().event_time(), None);
    assert_eq!(
        s.select(&["ts", "k"]).unwrap().event_time().as_deref(),
        Some("ts")
    );
    let no_time = s.select(&["k", "v"]).unwrap();
    let w = Window::tumbling_ms(1000).agg(agg::count_all().alias("n"));
    assert!(err(no_time.window(w)).contains("event-time"));
    // A window without keys sees every row in one instance.
    let keyless = s
        .window(Window::tumbling_ms(1000).agg(agg::count_all().alias("n")))
        .unwrap();
    assert_eq!(keyless.parallelism(), 1);
    assert!(err(keyless.with_parallelism(2)).contains("at most 1"));
}

/// Per (key, window start): count, sum of v (None when all null).
type Windows = BTreeMap<(i64, i64), (i64, Option<i64>)>;

#[test]
fn windows_and_their_late_rows_equal_an_independent_computation() {
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(parallelism);
        let windows = p
            .source(source(&dir))
            .window(
                Window::tumbling_ms(1000)
                    .keys(["k"])
                    .agg(agg::count_all().alias("n"))
                    .agg(agg::sum(col("v")).alias("total")),
            )
            .unwrap();
        let out = collect(&windows);
        let late = collect(&windows.late_rows(0).unwrap());
        // One source instance reads the whole file; the other reads none.
        let summary = p.run().unwrap();

        // Independently: the watermark a row meets is the largest time
        // before it less 500 ms (batch_size 1: a watermark after each row).
        let mut watermark = i64::MIN;
        let mut want_late = Vec::new();
        let mut want: Windows = BTreeMap::new();
        for (k, ts, v) in rows() {
            if ts < watermark {
                want_late.push((k, ts, v));
            } else {
                let w = want.entry((k, ts - ts % 1000)).or_default();
                w.0 += 1;
                w.1 = match (w.1, v) {
                    (None, v) => v,
                    (s, None) => s,
                    (Some(s), Some(v)) => Some(s + v),
                };
            }
            watermark = watermark.max(ts - 500);
        }

        let mut got: Windows = BTreeMap::new();
        for b in batches(&out) {
            let k = b.column(0).as_primitive::<Int64Type>();
            let window = b.column(1).as_struct();
            let start = window
                .column(0)
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            let n = b.column(2).as_primitive::<Int64Type>();
            let total = b.column(3).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let total = (!total.is_null(i)).then(|| total.value(i));
                got.insert((k.value(i), start.value(i)), (n.value(i), total));
            }
        }
        assert_eq!(got, want, "parallelism {parallelism}");

        let mut got_late: Vec<(i64, i64, Option<i64>)> = batches(&late)
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_primitive::<Int64Type>().clone();
                let ts = b.column(1).as_primitive::<Int64Type>().clone();
                let v = b.column(2).as_primitive::<Int64Type>().clone();
                (0..b.num_rows())
                    .map(move |i| (k.value(i), ts.value(i), (!v.is_null(i)).then(|| v.value(i))))
            })
            .collect();
        got_late.sort();
        want_late.sort();
        assert!(want_late.len() > 10, "the input must have late rows");
        assert_eq!(got_late, want_late, "parallelism {parallelism}");
        let counted: u64 = summary.operators.iter().map(|o| o.late_rows).sum();
        assert_eq!(counted, want_late.len() as u64);
    }
}
