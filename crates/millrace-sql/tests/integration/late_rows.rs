//! Late rows as an output: a source table's `late_rows` option sends the
//! rows its windowed operator leaves out to a table of their own. Compared
//! with an independent account of which rows were behind the watermark.
//!
//! `batch_size = 1` and one instance: the source sends a watermark after
//! every row, so the watermark a row meets at the window is the largest
//! event time before it, less the bound.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

use millrace_core::{CollectSink, SinkFactory, strip_entered};
use millrace_sql::{PlanOptions, SqlPipeline};

use crate::common::{late_rows, rows};

/// Runs `sql`, collecting the tables `out` and `late`.
fn run_with_late(sql: &str) -> (Vec<String>, Vec<String>, u64) {
    let (out, late) = (CollectSink::new(), CollectSink::new());
    let mut sinks: HashMap<String, Arc<dyn SinkFactory>> = HashMap::new();
    sinks.insert("out".into(), Arc::new(out.clone()));
    sinks.insert("late".into(), Arc::new(late.clone()));
    let options = PlanOptions {
        sinks,
        ..PlanOptions::default()
    };
    let job = SqlPipeline::plan_with(sql, &options).unwrap_or_else(|e| panic!("plan failed: {e}"));
    let summary = job.run().unwrap_or_else(|e| panic!("run failed: {e}"));
    let strip = |s: &CollectSink| -> Vec<_> { s.batches().iter().map(strip_entered).collect() };
    (rows(&strip(&out)), rows(&strip(&late)), late_rows(&summary))
}

/// Pseudo-random readings (sensor, ts, value), mostly in time order, some
/// far behind.
fn readings() -> Vec<(String, i64, i64)> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut ts = 0i64;
    (0..600)
        .map(|i| {
            ts += next(400) as i64;
            // One row in eight comes up to 6 s late.
            let t = if next(8) == 0 {
                (ts - next(6000) as i64).max(0)
            } else {
                ts
            };
            (format!("s{}", next(4)), t, i)
        })
        .collect()
}

const BOUND_MS: i64 = 1000;

#[test]
fn late_rows_reach_their_table_and_are_exactly_the_rows_behind_the_watermark() {
    let input = readings();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readings.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for (sensor, ts, v) in &input {
        writeln!(f, r#"{{"sensor":"{sensor}","ts":{ts},"v":{v}}}"#).unwrap();
    }
    let sql = format!(
        "SET parallelism = 1;
         SET batch_size = 1;
         CREATE TABLE readings (sensor VARCHAR, ts BIGINT, v BIGINT,
                                WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH (connector = 'file', path = '{}', format = 'json', late_rows = 'late');
         CREATE TABLE late (ts BIGINT, sensor VARCHAR, v BIGINT) WITH (connector = 'console');
         CREATE TABLE out WITH (connector = 'console');
         INSERT INTO out
         SELECT sensor, CAST(tumble(ts, INTERVAL '5' SECOND)['start'] AS BIGINT) AS w,
                count(*) AS n, sum(v) AS total
         FROM readings GROUP BY sensor, tumble(ts, INTERVAL '5' SECOND);",
        path.display()
    );
    let (out, late, counted) = run_with_late(&sql);

    // Independently: a row is late when its time is below the largest time
    // before it less the bound; the others are counted in their window.
    let mut watermark = i64::MIN;
    let mut want_late = Vec::new();
    let mut windows: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for (sensor, ts, v) in &input {
        if *ts < watermark {
            want_late.push(format!("{ts} | {sensor} | {v}"));
        } else {
            let w = windows
                .entry((sensor.clone(), ts - ts.rem_euclid(5000)))
                .or_default();
            w.0 += 1;
            w.1 += v;
        }
        watermark = watermark.max(ts - BOUND_MS);
    }
    want_late.sort();
    let mut want_out: Vec<String> = windows
        .iter()
        .map(|((s, w), (n, t))| format!("{s} | {w} | {n} | {t}"))
        .collect();
    want_out.sort();

    assert!(want_late.len() > 20, "the input must have late rows");
    assert_eq!(late, want_late);
    assert_eq!(counted, want_late.len() as u64);
    assert_eq!(out, want_out);
}

#[test]
fn late_rows_that_route_nothing_or_name_a_missing_column_are_refused() {
    let plan = |late_table: &str, query: &str| {
        let sql = format!(
            "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '10', late_rows = 'late');
             {late_table}
             CREATE TABLE out WITH (connector = 'console');
             {query}"
        );
        SqlPipeline::plan(&sql).err().map(|e| e.to_string())
    };
    let windowed = "INSERT INTO out SELECT auction, count(*) FROM bid GROUP BY auction, tumble(date_time, INTERVAL '10' SECOND);";
    let err = plan(
        "CREATE TABLE late WITH (connector = 'console');",
        "INSERT INTO out SELECT auction FROM bid;",
    )
    .expect("refused");
    assert!(err.contains("no windowed operator"), "{err}");
    let err = plan(
        "CREATE TABLE late (nope BIGINT) WITH (connector = 'console');",
        windowed,
    )
    .expect("refused");
    assert!(err.contains("column 'nope'"), "{err}");
    let err = plan("", windowed).expect("refused");
    assert!(err.contains("no table 'late'"), "{err}");
    assert_eq!(
        plan("CREATE TABLE late WITH (connector = 'console');", windowed),
        None
    );
}
