//! Errors a user can act on: each names where and what, and none panics.

use millrace_sql::{SqlError, SqlPipeline};

const BID: &str = "CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
    WITH (connector = 'nexmark', kind = 'bid', events = '1000');
CREATE TABLE out WITH (connector = 'discard');
";

fn plan_err(sql: &str) -> SqlError {
    match SqlPipeline::plan(sql) {
        Ok(_) => panic!("planning should fail:\n{sql}"),
        Err(e) => e,
    }
}

#[test]
fn syntax_error_points_at_line_and_column() {
    let e = plan_err(&format!("{BID}INSERT INTO out SELEC auction FROM bid;"));
    assert_eq!(e.line, Some(4), "{e}");
    assert_eq!(e.column, Some(17), "{e}");
    assert!(e.message.starts_with("syntax error"), "{e}");
}

#[test]
fn unknown_column_names_the_column_and_the_statement() {
    let e = plan_err(&format!("{BID}INSERT INTO out SELECT pricee FROM bid;"));
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("pricee"), "{e}");
    assert!(e.message.contains("INSERT INTO out"), "{e}");
}

#[test]
fn type_mismatch_is_a_planning_error() {
    let e = plan_err(&format!(
        "{BID}INSERT INTO out SELECT price + channel FROM bid;"
    ));
    assert!(
        e.message.contains("Int64") && e.message.contains("Utf8"),
        "{e}"
    );
}

#[test]
fn sink_column_type_mismatch_names_the_column() {
    let sql = "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '10');
CREATE TABLE out (a BIGINT, b BOOLEAN) WITH (connector = 'console');
INSERT INTO out SELECT auction, date_time FROM bid;";
    let e = plan_err(sql);
    assert!(e.message.contains("column 2 ('date_time')"), "{e}");
}

#[test]
fn unwindowed_aggregate_is_refused_with_a_fix() {
    let e = plan_err(&format!(
        "{BID}INSERT INTO out SELECT auction, count(*) FROM bid GROUP BY auction;"
    ));
    assert!(e.message.contains("needs a window"), "{e}");
    assert!(e.message.contains("tumble(date_time"), "{e}");
}

#[test]
fn unbounded_join_is_refused_with_a_fix() {
    let sql = "CREATE TABLE person WITH (connector = 'nexmark', kind = 'person', events = '10');
CREATE TABLE auction WITH (connector = 'nexmark', kind = 'auction', events = '10');
CREATE TABLE out WITH (connector = 'discard');
INSERT INTO out SELECT p.name, a.id FROM person p JOIN auction a ON p.id = a.seller;";
    let e = plan_err(sql);
    assert!(e.message.contains("no time bound"), "{e}");
    assert!(e.message.contains("BETWEEN"), "{e}");
}

#[test]
fn unbounded_order_by_is_refused() {
    let e = plan_err(&format!(
        "{BID}INSERT INTO out SELECT price FROM bid ORDER BY price;"
    ));
    assert!(e.message.contains("ORDER BY"), "{e}");
}

#[test]
fn window_on_a_column_without_watermark_is_refused() {
    let e = plan_err(&format!(
        "{BID}INSERT INTO out SELECT count(*) FROM bid GROUP BY tumble(CAST(auction AS TIMESTAMP), INTERVAL '1' SECOND);"
    ));
    assert!(e.message.contains("event-time column"), "{e}");
}

/// A table with an event time, windowed on another column or on one
/// computed from it: the error names the event time, not "no event time".
#[test]
fn a_window_on_another_column_names_the_event_time() {
    for query in [
        "SELECT count(*) AS n FROM bid GROUP BY tumble(CAST(price AS TIMESTAMP), INTERVAL '1' SECOND)",
        "SELECT count(*) AS n FROM (SELECT auction, date_time + INTERVAL '1' SECOND AS t FROM bid) \
         GROUP BY tumble(t, INTERVAL '1' SECOND)",
    ] {
        let e = plan_err(&format!("{BID}INSERT INTO out {query};"));
        assert!(e.message.contains("the event time is 'date_time'"), "{e}");
        assert!(!e.message.contains("no event time"), "{e}");
    }
}

/// INSERT into a table that cannot be written says why, by connector.
#[test]
fn an_insert_into_a_read_only_table_says_why() {
    let e = plan_err(
        "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '10');
         CREATE TABLE out (a BIGINT) WITH (connector = 'file', path = 'o.csv', format = 'csv');
         INSERT INTO out SELECT auction AS a FROM bid;",
    );
    assert!(e.message.contains("writes JSON lines only"), "{e}");
    assert!(e.message.contains("format is 'csv'"), "{e}");
    let e = plan_err(
        "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '10');
         CREATE TABLE more WITH (connector = 'nexmark', kind = 'bid');
         INSERT INTO more SELECT * FROM bid;",
    );
    assert!(
        e.message.contains("the nexmark connector can only be read"),
        "{e}"
    );
}

#[test]
fn unknown_table_option_and_connector() {
    let e = plan_err("CREATE TABLE t WITH (connector = 'nexmark', evnts = '10');");
    assert!(e.message.contains("unknown option 'evnts'"), "{e}");
    // The options it takes are listed, the one meant among them.
    for option in ["events", "event_rate", "kind", "rate", "seed", "late_rows"] {
        assert!(e.message.contains(option), "{option}: {e}");
    }
    let e = plan_err("CREATE TABLE t WITH (connector = 'file', path = 'x', formt = 'json');");
    assert!(e.message.contains("unknown option 'formt'"), "{e}");
    assert!(e.message.contains("format"), "{e}");
    let e = plan_err("CREATE TABLE t WITH (connector = 'kafak');");
    assert!(e.message.contains("unknown connector 'kafak'"), "{e}");
}

#[test]
fn garbage_never_panics() {
    let inputs = [
        "",
        ";",
        "((((((((((",
        "CREATE TABLE",
        "CREATE TABLE t (WATERMARK FOR",
        "CREATE TABLE t (WATERMARK FOR x AS",
        "CREATE TABLE t (x BIGINT, WATERMARK FOR x AS x - INTERVAL 'abc' SECOND) WITH (connector='nexmark')",
        "SET parallelism = 'many';",
        "INSERT INTO nowhere SELECT 1;",
        "SELECT 1;",
        "CREATE VIEW v AS SELECT * FROM missing;",
        &format!("{BID}INSERT INTO out SELECT * FROM bid LIMIT 5;"),
        &format!("{BID}INSERT INTO out SELECT DISTINCT auction FROM bid;"),
        &format!(
            "{BID}INSERT INTO out SELECT hop(date_time, INTERVAL '3' SECOND, INTERVAL '10' SECOND) FROM bid;"
        ),
        &format!("{BID}INSERT INTO out SELECT 1;"),
        &format!("{}INSERT INTO out SELECT 1", "(".repeat(5000)),
    ];
    for sql in inputs {
        assert!(SqlPipeline::plan(sql).is_err(), "should fail: {sql}");
    }
}

#[test]
fn live_endpoint_and_alert_settings_from_the_file_and_overrides() {
    let sql = format!(
        "SET http = '127.0.0.1:0';
         SET alert.slow = 'p99 > 5ms';
         SET alert_webhook = 'http://127.0.0.1:9/x';
         {BID} INSERT INTO out SELECT auction FROM bid;"
    );
    let options = millrace_sql::PlanOptions {
        overrides: vec![
            ("alert.slow".into(), "p99 > 9ms".into()),
            ("alert.lag".into(), "watermark_lag > 1s".into()),
        ],
        ..Default::default()
    };
    let job = SqlPipeline::plan_with(&sql, &options).unwrap();
    assert_eq!(
        job.http(),
        Some(&millrace_sql::HttpSetting::At("127.0.0.1:0".into()))
    );
    assert_eq!(
        job.alerts(),
        [
            ("slow".to_string(), "p99 > 9ms".to_string()),
            ("lag".to_string(), "watermark_lag > 1s".to_string())
        ]
    );
    assert_eq!(job.alert_webhook(), Some("http://127.0.0.1:9/x"));
    for (setting, why) in [
        ("SET http = 'nowhere';", "expected HOST:PORT"),
        (
            "SET alert_webhook = 'https://x/y';",
            "expected an http:// URL",
        ),
    ] {
        let err = plan_err(&format!(
            "{setting} {BID} INSERT INTO out SELECT auction FROM bid;"
        ));
        assert!(err.message.contains(why), "{err}");
    }
}
