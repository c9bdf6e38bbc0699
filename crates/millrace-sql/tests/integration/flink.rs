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

/// The event times of a generator table `options` (its `ts_column`), as
/// ms since 1970, in the order written.
fn generated_times(options: &str, ts_column: &str) -> Vec<i64> {
    let sql = format!(
        "SET parallelism = 1;
         CREATE TABLE g WITH ({options});
         CREATE TABLE out WITH (connector = 'console');
         INSERT INTO out SELECT CAST({ts_column} AS BIGINT) AS t FROM g;"
    );
    let (batches, _) = run_sql(&sql, &[]);
    let mut times: Vec<i64> = rows(&batches).iter().map(|r| r.parse().unwrap()).collect();
    times.sort();
    times
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `start_time = 'now'` with a `rate`: event time follows the wall clock
/// (each event's time lies between the planning and the end of the run),
/// so event-time windows over a generator close in real time; a timestamp
/// starts the event times there.
#[test]
fn generators_can_stamp_event_time_from_the_wall_clock() {
    // The IoT generator dates readings up to `max_delay` before their turn.
    for (connector, column, early) in [
        ("nexmark', kind = 'bid", "date_time", 0),
        ("iot', max_delay = '500ms", "ts", 500),
    ] {
        let before = wall_ms();
        let times = generated_times(
            &format!(
                "connector = '{connector}', events = '2000', rate = '20000', start_time = 'now'"
            ),
            column,
        );
        let after = wall_ms();
        assert!(!times.is_empty(), "{connector}");
        assert!(
            times[0] >= before - early,
            "{connector}: {} before {before}",
            times[0]
        );
        assert!(
            *times.last().unwrap() <= after,
            "{connector}: {times:?} after {after}"
        );
    }
    let times = generated_times(
        "connector = 'nexmark', kind = 'bid', events = '100', start_time = '2024-01-01T00:00:00Z'",
        "date_time",
    );
    assert_eq!(times[0], 1_704_067_200_000);
}
