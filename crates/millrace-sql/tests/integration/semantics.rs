//! Streaming SQL semantics on small hand-checked inputs: session windows,
//! top-N per window, window joins and interval joins, with out-of-order and
//! late rows. `batch_size = 1` makes the watermark advance after every row,
//! so which rows are late is decided by the file order alone.
//!
//! Joins are only given rows that are on time at their own source: a join's
//! watermark is the minimum over its two inputs, so whether a row late at
//! its source is also late at the join depends on how far the other input
//! has got — the join operators' own tests cover late rows deterministically.

use std::io::Write;

use crate::common::{late_rows, rows, run_sql};

fn jsonl(dir: &tempfile::TempDir, name: &str, lines: &[&str]) -> String {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    path.display().to_string()
}

const PRELUDE: &str = "SET parallelism = 1;\nSET batch_size = 1;\n";

#[test]
fn session_windows_merge_close_rows_and_drop_late_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        &dir,
        "clicks.jsonl",
        &[
            r#"{"usr":"a","ts":1000}"#,
            r#"{"usr":"a","ts":3000}"#,
            r#"{"usr":"b","ts":2000}"#,
            r#"{"usr":"a","ts":2000}"#, // out of order, within the 1 s bound
            r#"{"usr":"a","ts":12000}"#, // watermark 11000: a's first session [1000, 8000) closes
            r#"{"usr":"a","ts":4000}"#, // late
            r#"{"usr":"b","ts":6000}"#, // late (would have merged b's sessions)
            r#"{"usr":"b","ts":15000}"#,
            r#"{"usr":"a","ts":16000}"#, // 4 s after 12000: same session
        ],
    );
    let sql = format!(
        "{PRELUDE}
        CREATE TABLE clicks (usr VARCHAR, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH (connector = 'file', path = '{path}', format = 'json');
        CREATE TABLE out WITH (connector = 'console');
        INSERT INTO out
        SELECT usr, count(*) AS n,
               CAST(session(ts, INTERVAL '5' SECOND)['start'] AS BIGINT) AS s,
               CAST(session(ts, INTERVAL '5' SECOND)['end'] AS BIGINT) AS e
        FROM clicks GROUP BY usr, session(ts, INTERVAL '5' SECOND);"
    );
    let (batches, summary) = run_sql(&sql, &[]);
    assert_eq!(
        rows(&batches),
        vec![
            "a | 2 | 12000 | 21000",
            "a | 3 | 1000 | 8000",
            "b | 1 | 15000 | 20000",
            "b | 1 | 2000 | 7000",
        ]
    );
    assert_eq!(late_rows(&summary), 2);
}

/// Bids `lines` (item, price, ts; watermark 1 s behind) and the view
/// `per_item`: per item and 10 s tumbling window `w`, the `total` of its
/// prices; then `insert` (an `INSERT INTO out …`).
fn per_item_totals(dir: &tempfile::TempDir, lines: &[&str], insert: &str) -> String {
    let path = jsonl(dir, "bids.jsonl", lines);
    format!(
        "{PRELUDE}
        CREATE TABLE bids (item VARCHAR, price BIGINT, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH (connector = 'file', path = '{path}');
        CREATE TABLE out WITH (connector = 'console');
        CREATE VIEW per_item AS
            SELECT item, tumble(ts, INTERVAL '10' SECOND) AS w, sum(price) AS total
            FROM bids GROUP BY item, tumble(ts, INTERVAL '10' SECOND);
        {insert}"
    )
}

#[test]
fn top_n_per_window_ranks_window_results() {
    let dir = tempfile::tempdir().unwrap();
    let sql = per_item_totals(
        &dir,
        &[
            r#"{"item":"x","price":5,"ts":1000}"#,
            r#"{"item":"y","price":7,"ts":2000}"#,
            r#"{"item":"z","price":1,"ts":1500}"#, // out of order, on time
            r#"{"item":"x","price":4,"ts":9000}"#,
            r#"{"item":"w","price":20,"ts":12000}"#, // watermark 11000: window [0, 10 s) fires
            r#"{"item":"y","price":100,"ts":3000}"#, // late: would have made y first
            r#"{"item":"w","price":1,"ts":15000}"#,
            r#"{"item":"v","price":3,"ts":19000}"#,
            r#"{"item":"u","price":2,"ts":25000}"#,
        ],
        "INSERT INTO out
        SELECT item, total, CAST(w['start'] AS BIGINT) AS ws, rn FROM (
            SELECT item, w, total, ROW_NUMBER() OVER (PARTITION BY w ORDER BY total DESC) AS rn
            FROM per_item)
        WHERE rn <= 2;",
    );
    let (batches, summary) = run_sql(&sql, &[]);
    assert_eq!(
        rows(&batches),
        vec![
            "u | 2 | 20000 | 1",
            "v | 3 | 10000 | 2",
            "w | 21 | 10000 | 1",
            "x | 9 | 0 | 1",
            "y | 7 | 0 | 2",
        ]
    );
    assert_eq!(late_rows(&summary), 1);
}

/// RANK() keeps ties: in [0, 10 s) a and b both total 5 (rank 1) and c's 3
/// ranks 3, so `rk <= 2` keeps a and b only; in [10 s, 20 s) d alone.
#[test]
fn rank_per_window_keeps_every_row_tied_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let sql = per_item_totals(
        &dir,
        &[
            r#"{"item":"a","price":2,"ts":1000}"#,
            r#"{"item":"b","price":5,"ts":2000}"#,
            r#"{"item":"c","price":3,"ts":2500}"#,
            r#"{"item":"a","price":3,"ts":4000}"#,
            r#"{"item":"d","price":1,"ts":12000}"#,
            r#"{"item":"e","price":1,"ts":25000}"#,
        ],
        "INSERT INTO out
        SELECT item, total, CAST(w['start'] AS BIGINT) AS ws, rk FROM (
            SELECT item, w, total, RANK() OVER (PARTITION BY w ORDER BY total DESC) AS rk
            FROM per_item)
        WHERE rk <= 2;",
    );
    let (batches, _) = run_sql(&sql, &[]);
    assert_eq!(
        rows(&batches),
        vec![
            "a | 5 | 0 | 1",
            "b | 5 | 0 | 1",
            "d | 1 | 10000 | 1",
            "e | 1 | 20000 | 1",
        ]
    );
}

/// Bids whose totals per item and 10 s window are: [0, 10 s) a 5, b 5, c 3;
/// [10 s, 20 s) d and e only null prices (null totals); [20 s, 30 s) f 1.
const TIES_AND_NULLS: &[&str] = &[
    r#"{"item":"a","price":2,"ts":1000}"#,
    r#"{"item":"b","price":5,"ts":2000}"#,
    r#"{"item":"c","price":3,"ts":2500}"#,
    r#"{"item":"a","price":3,"ts":4000}"#,
    r#"{"item":"d","price":null,"ts":12000}"#,
    r#"{"item":"e","price":null,"ts":13000}"#,
    r#"{"item":"f","price":1,"ts":25000}"#,
];

/// Those totals (`p`) joined by `from` with a maximum (`m`): the rows out,
/// after checking the plan contains `planned_as`.
fn joined_rows(from: &str, planned_as: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let sql = per_item_totals(
        &dir,
        TIES_AND_NULLS,
        &format!(
            "INSERT INTO out
            SELECT p.item, p.total, CAST(p.w['start'] AS BIGINT) AS ws, m.top FROM {from};"
        ),
    );
    let planned = plan(&sql);
    assert!(planned.contains(planned_as), "{planned}");
    rows(&run_sql(&sql, &[]).0)
}

fn plan(sql: &str) -> String {
    millrace_sql::SqlPipeline::plan_with(sql, &millrace_sql::PlanOptions::default())
        .unwrap()
        .explain()
        .unwrap()
}

/// Rows joined with their window's maximum (planned as the rows at rank 1,
/// ties kept): both items at 5, none where every total is null (a null
/// maximum equals nothing), and the maximum's columns as the join gives them.
#[test]
fn rows_joined_with_their_window_maximum_keep_ties_and_skip_null_maxima() {
    assert_eq!(
        joined_rows(
            "per_item p JOIN (SELECT w, max(total) AS top FROM per_item GROUP BY w) m
            ON p.w = m.w AND p.total = m.top",
            "top_n[rank <= 1]",
        ),
        vec!["a | 5 | 0 | 5", "b | 5 | 0 | 5", "f | 1 | 20000 | 1"]
    );
}

/// The same with the maximum on the join's left and the keys the other way
/// round: the rewrite keeps the join's column order.
#[test]
fn the_window_maximum_on_the_left_gives_the_same_rows() {
    assert_eq!(
        joined_rows(
            "(SELECT w, max(total) AS top FROM per_item GROUP BY w) m JOIN per_item p
            ON m.top = p.total AND m.w = p.w",
            "top_n[rank <= 1]",
        ),
        vec!["a | 5 | 0 | 5", "b | 5 | 0 | 5", "f | 1 | 20000 | 1"]
    );
}

/// A window minimum works the same way: c's 3 in [0, 10 s), f's 1.
#[test]
fn rows_joined_with_their_window_minimum_are_the_lowest() {
    assert_eq!(
        joined_rows(
            "per_item p JOIN (SELECT w, min(total) AS top FROM per_item GROUP BY w) m
            ON p.w = m.w AND p.total = m.top",
            "top_n[rank <= 1]",
        ),
        vec!["c | 3 | 0 | 3", "f | 1 | 20000 | 1"]
    );
}

/// An aggregate over the windows that `per_item` carries, with no other key,
/// runs in two phases (partial where the totals are, final routed by window)
/// and gives per window the maximum total: 5, null (only null totals), 1.
#[test]
fn an_aggregate_over_carried_windows_runs_in_two_phases() {
    let dir = tempfile::tempdir().unwrap();
    let sql = per_item_totals(
        &dir,
        TIES_AND_NULLS,
        "INSERT INTO out
        SELECT CAST(w['start'] AS BIGINT) AS ws, max(total) AS top FROM per_item GROUP BY w;",
    );
    assert!(plan(&sql).contains("(partial)"), "{}", plan(&sql));
    let (batches, _) = run_sql(&sql, &[]);
    assert_eq!(rows(&batches), vec!["0 | 5", "10000 | NULL", "20000 | 1"]);
}

/// The maximum of other rows than the joined ones (here of totals under 5)
/// is a join like any other: c's 3 in [0, 10 s) is that maximum.
#[test]
fn a_maximum_over_other_rows_is_joined_as_written() {
    assert_eq!(
        joined_rows(
            "per_item p JOIN (SELECT w, max(total) AS top FROM per_item WHERE total < 5 GROUP BY w) m
            ON p.w = m.w AND p.total = m.top",
            "window_join",
        ),
        vec!["c | 3 | 0 | 3", "f | 1 | 20000 | 1"]
    );
}

/// Orders and payments; payments arrive out of order within the bound.
fn orders_and_payments(dir: &tempfile::TempDir) -> String {
    let orders = jsonl(
        dir,
        "orders.jsonl",
        &[
            r#"{"id":1,"ts":1000}"#,
            r#"{"id":2,"ts":9500}"#,
            r#"{"id":3,"ts":9000}"#, // out of order, on time
            r#"{"id":4,"ts":15000}"#,
            r#"{"id":5,"ts":21000}"#,
        ],
    );
    let payments = jsonl(
        dir,
        "payments.jsonl",
        &[
            r#"{"order_id":1,"amount":10,"ts":2000}"#,
            r#"{"order_id":3,"amount":30,"ts":3000}"#,
            r#"{"order_id":2,"amount":20,"ts":10500}"#,
            r#"{"order_id":1,"amount":11,"ts":9999}"#, // out of order, on time
            r#"{"order_id":4,"amount":40,"ts":19999}"#,
            r#"{"order_id":5,"amount":50,"ts":30000}"#,
        ],
    );
    format!(
        "{PRELUDE}
        CREATE TABLE orders (id BIGINT, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH (connector = 'file', path = '{orders}');
        CREATE TABLE payments (order_id BIGINT, amount BIGINT, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH (connector = 'file', path = '{payments}');
        CREATE TABLE out WITH (connector = 'console');"
    )
}

#[test]
fn window_join_matches_keys_within_the_same_window() {
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "{}
        INSERT INTO out
        SELECT o.id, p.amount, CAST(tumble(o.ts, INTERVAL '10' SECOND)['start'] AS BIGINT) AS ws
        FROM orders o JOIN payments p
          ON o.id = p.order_id AND tumble(o.ts, INTERVAL '10' SECOND) = tumble(p.ts, INTERVAL '10' SECOND);",
        orders_and_payments(&dir)
    );
    let (batches, summary) = run_sql(&sql, &[]);
    // Order 2 and its payment fall in different windows; so do 5 and its payment.
    assert_eq!(
        rows(&batches),
        vec!["1 | 10 | 0", "1 | 11 | 0", "3 | 30 | 0", "4 | 40 | 10000"]
    );
    assert_eq!(late_rows(&summary), 0);
}

#[test]
fn left_window_join_pads_unmatched_rows() {
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "{}
        INSERT INTO out
        SELECT o.id, p.amount, CAST(tumble(o.ts, INTERVAL '10' SECOND)['start'] AS BIGINT) AS ws
        FROM orders o LEFT JOIN payments p
          ON o.id = p.order_id AND tumble(o.ts, INTERVAL '10' SECOND) = tumble(p.ts, INTERVAL '10' SECOND);",
        orders_and_payments(&dir)
    );
    let (batches, _) = run_sql(&sql, &[]);
    assert_eq!(
        rows(&batches),
        vec![
            "1 | 10 | 0",
            "1 | 11 | 0",
            "2 | NULL | 0",
            "3 | 30 | 0",
            "4 | 40 | 10000",
            "5 | NULL | 20000"
        ]
    );
}

#[test]
fn interval_join_matches_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "{}
        INSERT INTO out
        SELECT o.id, p.amount
        FROM orders o JOIN payments p
          ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + 5000;",
        orders_and_payments(&dir)
    );
    let (batches, summary) = run_sql(&sql, &[]);
    // 3's payment (3000) is before its order (9000); 1's second payment is
    // 8999 ms after; 5's is 9 s after: outside [0, 5 s].
    assert_eq!(rows(&batches), vec!["1 | 10", "2 | 20", "4 | 40"]);
    assert_eq!(late_rows(&summary), 0);
}

#[test]
fn hopping_windows_count_each_row_in_every_window_covering_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        &dir,
        "e.jsonl",
        &[
            r#"{"k":"a","ts":1000}"#,
            r#"{"k":"a","ts":4500}"#,
            r#"{"k":"a","ts":3000}"#,
        ],
    );
    let sql = format!(
        "{PRELUDE}
        CREATE TABLE e (k VARCHAR, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
            WITH (connector = 'file', path = '{path}');
        CREATE TABLE out WITH (connector = 'console');
        INSERT INTO out
        SELECT k, CAST(hop(ts, INTERVAL '2' SECOND, INTERVAL '4' SECOND)['start'] AS BIGINT) AS ws, count(*) AS n
        FROM e GROUP BY k, hop(ts, INTERVAL '2' SECOND, INTERVAL '4' SECOND);"
    );
    let (batches, _) = run_sql(&sql, &[]);
    // Windows of 4 s every 2 s: 1000 in [-2000, 2000) and [0, 4000);
    // 3000 in [0, 4000) and [2000, 6000); 4500 in [2000, 6000) and [4000, 8000).
    assert_eq!(
        rows(&batches),
        vec!["a | -2000 | 1", "a | 0 | 2", "a | 2000 | 2", "a | 4000 | 1"]
    );
}

#[test]
fn union_all_merges_streams_and_keeps_their_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = jsonl(
        &dir,
        "a.jsonl",
        &[r#"{"k":"x","ts":1000}"#, r#"{"k":"y","ts":12000}"#],
    );
    let b = jsonl(
        &dir,
        "b.jsonl",
        &[r#"{"k":"x","ts":5000}"#, r#"{"k":"x","ts":15000}"#],
    );
    let sql = format!(
        "{PRELUDE}
        CREATE TABLE a (k VARCHAR, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH (connector = 'file', path = '{a}');
        CREATE TABLE b (k VARCHAR, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH (connector = 'file', path = '{b}');
        CREATE TABLE out WITH (connector = 'console');
        INSERT INTO out
        SELECT k, CAST(tumble(ts, INTERVAL '10' SECOND)['start'] AS BIGINT) AS ws, count(*) AS n
        FROM (SELECT k, ts FROM a UNION ALL SELECT k, ts FROM b)
        GROUP BY k, tumble(ts, INTERVAL '10' SECOND);"
    );
    let (batches, summary) = run_sql(&sql, &[]);
    assert_eq!(
        rows(&batches),
        vec!["x | 0 | 2", "x | 10000 | 1", "y | 10000 | 1"]
    );
    assert_eq!(late_rows(&summary), 0);
}

/// A projection over a projection is planned as one operator, unless a
/// computed column of the inner one is read twice (composing would compute
/// it twice); the results are the query's as written either way.
#[test]
fn stacked_projections_compose_unless_a_computed_column_is_read_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        &dir,
        "t.jsonl",
        &[
            r#"{"a":1,"b":"x","ts":1000}"#,
            r#"{"a":2,"b":"y","ts":2000}"#,
        ],
    );
    let sql = |select: &str| {
        format!(
            "{PRELUDE}
            CREATE TABLE t (a BIGINT, b VARCHAR, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
                WITH (connector = 'file', path = '{path}', format = 'json');
            CREATE TABLE out WITH (connector = 'console');
            INSERT INTO out {select};"
        )
    };
    let projections = |sql: &str| {
        millrace_sql::SqlPipeline::plan_with(sql, &Default::default())
            .unwrap()
            .explain()
            .unwrap()
            .matches("project[")
            .count()
    };
    let read_once = sql("SELECT d + 1 AS e, c FROM (SELECT a * 10 AS d, upper(b) AS c FROM t) s");
    assert_eq!(projections(&read_once), 1);
    let (batches, _) = run_sql(&read_once, &[]);
    assert_eq!(rows(&batches), vec!["11 | X", "21 | Y"]);

    let read_twice = sql("SELECT d, d + 1 AS e FROM (SELECT a * 10 AS d FROM t) s");
    assert_eq!(projections(&read_twice), 2);
    let (batches, _) = run_sql(&read_twice, &[]);
    assert_eq!(rows(&batches), vec!["10 | 11", "20 | 21"]);
}
