//! Flink SQL habits millrace accepts (docs/sql.md, "Coming from Flink
//! SQL"): each form runs against the same input as the millrace form it
//! means, and gives the same results and the same late rows.

use std::io::Write;

use crate::common::{late_rows, rows, run_sql};

/// Readings of two keys, out of order, with rows behind a watermark of no
/// delay (late) and behind one of a second (later still).
fn readings(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("r.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for (k, ts) in [
        ("a", 1000),
        ("b", 2500),
        ("a", 2000), // behind 2500: late without a bound, on time with 1 s
        ("a", 4000),
        ("b", 4500),
        ("a", 1500), // late either way
        ("b", 9000),
        ("a", 12000),
    ] {
        writeln!(f, r#"{{"k":"{k}","ts":{ts}}}"#).unwrap();
    }
    path.display().to_string()
}

/// Per key and 5 s window, the count, with `watermark` as the table's
/// WATERMARK clause and `options` as its WITH list (`PATH` stands for the
/// file).
fn counts(path: &str, watermark: &str, options: &str) -> (Vec<String>, u64) {
    let sql = format!(
        "SET parallelism = 1;
         SET batch_size = 1;
         CREATE TABLE r (k VARCHAR, ts BIGINT, {watermark}) WITH ({options});
         CREATE TABLE out WITH (connector = 'console');
         INSERT INTO out SELECT k, count(*) AS n,
             CAST(tumble(ts, INTERVAL '5' SECOND)['start'] AS BIGINT) AS w
         FROM r GROUP BY k, tumble(ts, INTERVAL '5' SECOND);",
    )
    .replace("PATH", path);
    let (batches, summary) = run_sql(&sql, &[]);
    (rows(&batches), late_rows(&summary))
}

const OPTIONS: &str = "connector = 'file', path = 'PATH', format = 'json'";

#[test]
fn a_watermark_without_as_is_the_largest_event_time_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = readings(&dir);
    let flink = counts(&path, "WATERMARK FOR ts", OPTIONS);
    assert_eq!(flink, counts(&path, "WATERMARK FOR ts AS ts", OPTIONS));
    assert_eq!(flink.1, 2, "{flink:?}");
}

#[test]
fn a_watermark_expression_in_parentheses_means_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = readings(&dir);
    let flink = counts(
        &path,
        "WATERMARK FOR ts AS (ts - INTERVAL '1' SECOND)",
        OPTIONS,
    );
    let millrace = counts(
        &path,
        "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND",
        OPTIONS,
    );
    assert_eq!(flink, millrace);
    assert_eq!(flink.1, 1, "{flink:?}");
}

#[test]
fn option_names_may_be_quoted_as_flink_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = readings(&dir);
    let quoted = "'connector' = 'file', 'path' = 'PATH', 'format' = 'json'";
    let watermark = "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND";
    assert_eq!(
        counts(&path, watermark, quoted),
        counts(&path, watermark, OPTIONS)
    );
}

/// Per key and window, the count and the window's bounds, selected by
/// `bounds` from a table read with `WATERMARK FOR ts AS ts - 1 s`.
fn bounded(path: &str, bounds: &str, group: &str) -> (Vec<String>, u64) {
    let sql = format!(
        "SET parallelism = 1;
         SET batch_size = 1;
         CREATE TABLE r (k VARCHAR, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH (connector = 'file', path = '{path}', format = 'json');
         CREATE TABLE out WITH (connector = 'console');
         INSERT INTO out SELECT k, count(*) AS n, {bounds} FROM r GROUP BY k, {group};",
    );
    let (batches, summary) = run_sql(&sql, &[]);
    (rows(&batches), late_rows(&summary))
}

/// Flink's legacy group windows: `GROUP BY TUMBLE(…)` (or `HOP`, `SESSION`)
/// with `…_START` / `…_END` for the bounds, the same rows as millrace's
/// window functions and their `['start']` / `['end']`.
#[test]
fn legacy_group_window_functions_are_the_window_functions() {
    let dir = tempfile::tempdir().unwrap();
    let path = readings(&dir);
    for (window, args) in [
        ("TUMBLE", "ts, INTERVAL '5' SECOND"),
        ("HOP", "ts, INTERVAL '1' SECOND, INTERVAL '5' SECOND"),
        ("SESSION", "ts, INTERVAL '2' SECOND"),
    ] {
        let lower = window.to_lowercase();
        let flink = bounded(
            &path,
            &format!("{window}_START({args}) AS s, {window}_END({args}) AS e"),
            &format!("{window}({args})"),
        );
        let millrace = bounded(
            &path,
            &format!("{lower}({args})['start'] AS s, {lower}({args})['end'] AS e"),
            &format!("{lower}({args})"),
        );
        assert_eq!(flink, millrace, "{window}");
        assert!(!flink.0.is_empty(), "{window}");
    }
}
