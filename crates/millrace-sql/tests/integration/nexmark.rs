//! Every Nexmark SQL file in `queries/nexmark`, run on a bounded seeded
//! stream and compared with DataFusion batch SQL over the same events. The
//! batch queries are written separately: windows as `date_bin`, hopping
//! windows as shifted copies, sessions from `lag` over each bidder's bids.

use crate::common::{assert_same_rows, batch_sql, late_rows, read_all, run_sql};
use millrace_connectors::nexmark::{NexmarkConfig, NexmarkKind, NexmarkSource};
use millrace_runtime::RunSummary;

/// 40 s of event time at 1000 events/s: four 10 s windows, twenty 2 s hops.
const EVENTS: u64 = 40_000;
const EVENT_RATE: u64 = 1000;

fn query(name: &str) -> String {
    let path = format!(
        "{}/../../queries/nexmark/{name}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: Some(EVENTS),
        event_rate: EVENT_RATE as f64,
        ..NexmarkConfig::default()
    }
}

fn events(kind: NexmarkKind) -> Vec<arrow::record_batch::RecordBatch> {
    read_all(&NexmarkSource::new(kind, config()))
}

/// Runs the streaming query at parallelism 2 with the test's event counts.
fn stream(name: &str, tables: &[&str]) -> Vec<arrow::record_batch::RecordBatch> {
    stream_with(name, tables, &[]).0
}

/// As [`stream`], with further settings; also returns the run summary.
fn stream_with(
    name: &str,
    tables: &[&str],
    settings: &[(&str, &str)],
) -> (Vec<arrow::record_batch::RecordBatch>, RunSummary) {
    let events = EVENTS.to_string();
    let rate = EVENT_RATE.to_string();
    let mut overrides = vec![("parallelism", "2")];
    overrides.extend_from_slice(settings);
    let keys: Vec<(String, String)> = tables
        .iter()
        .flat_map(|t| {
            [
                (format!("{t}.events"), events.clone()),
                (format!("{t}.event_rate"), rate.clone()),
            ]
        })
        .collect();
    overrides.extend(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (batches, summary) = run_sql(&query(name), &overrides);
    // In-order generators and a 4 s bound: no row may be late.
    assert_eq!(late_rows(&summary), 0, "{name}: late rows");
    (batches, summary)
}

fn check(name: &str, batch: &str) {
    check_with(name, batch, &[]);
}

/// Checks query `name` on bids against batch SQL `batch`, run with
/// `settings`; returns the streaming run's summary.
fn check_with(name: &str, batch: &str, settings: &[(&str, &str)]) -> RunSummary {
    let (streaming, summary) = stream_with(name, &["bid"], settings);
    let expected = batch_sql(&[("bid", events(NexmarkKind::Bid))], batch);
    assert!(
        !expected.iter().all(|b| b.num_rows() == 0),
        "{name}: empty expected result"
    );
    assert_same_rows(&streaming, &expected, name);
    summary
}

const BIN10: &str = "date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00')";
const BIN_DAY: &str = "date_bin(INTERVAL '1 day', date_time, TIMESTAMP '1970-01-01T00:00:00')";

#[test]
fn q0_passthrough() {
    check(
        "q0",
        "SELECT auction, bidder, price, channel, url, date_time, extra FROM bid",
    );
}

#[test]
fn q1_currency_conversion() {
    check(
        "q1",
        "SELECT auction, bidder, price * 0.908 AS price, date_time, extra FROM bid",
    );
}

#[test]
fn q2_selection() {
    check(
        "q2",
        "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    );
}

#[test]
fn q3_local_item_suggestion() {
    let streaming = stream("q3", &["person", "auction"]);
    // The unbounded join: equal to the interval join because the generator's
    // sellers are always within its bound.
    let expected = batch_sql(
        &[
            ("person", events(NexmarkKind::Person)),
            ("auction", events(NexmarkKind::Auction)),
        ],
        "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id
         WHERE a.category = 10 AND p.state IN ('OR', 'ID', 'CA')",
    );
    assert!(expected.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    assert_same_rows(&streaming, &expected, "q3");
}

#[test]
fn q20_bids_with_auction_details() {
    let streaming = stream("q20", &["bid", "auction"]);
    let expected = batch_sql(
        &[
            ("bid", events(NexmarkKind::Bid)),
            ("auction", events(NexmarkKind::Auction)),
        ],
        "SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time, b.extra,
                a.item_name, a.description, a.initial_bid, a.reserve, a.date_time, a.expires,
                a.seller, a.category, a.extra
         FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10",
    );
    assert!(expected.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    assert_same_rows(&streaming, &expected, "q20");
}

#[test]
fn q5_hot_items() {
    check("q5", &q5_batch());
}

/// q5 in batch SQL: each bid falls into the five 10 s windows starting at
/// its 2 s bin and the four 2 s steps before it.
fn q5_batch() -> String {
    let bin2 = "date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00')";
    let copies: Vec<String> = (0..5)
        .map(|k| {
            format!(
                "SELECT auction, {bin2} - INTERVAL '{} seconds' AS ws FROM bid",
                2 * k
            )
        })
        .collect();
    let sql = format!(
        "WITH w AS ({}),
              c AS (SELECT auction, ws, count(*) AS num FROM w GROUP BY auction, ws),
              m AS (SELECT ws, max(num) AS top FROM c GROUP BY ws)
         SELECT c.auction, c.num, c.ws, c.ws + INTERVAL '10 seconds'
         FROM c JOIN m ON c.ws = m.ws AND c.num = m.top",
        copies.join(" UNION ALL ")
    );
    sql
}

#[test]
fn q7_highest_bid() {
    check("q7", &q7_batch());
}

fn q7_batch() -> String {
    format!(
        "SELECT b.auction, b.price, b.bidder, b.date_time, b.extra
         FROM bid b
         JOIN (SELECT {BIN10} AS ws, max(price) AS top FROM bid GROUP BY 1) m
           ON date_bin(INTERVAL '10 seconds', b.date_time, TIMESTAMP '1970-01-01T00:00:00') = m.ws
          AND b.price = m.top"
    )
}

/// Exchanges that merge small batches, holding watermarks behind them,
/// change no result: windows, joins, top-N and sessions again, with every
/// exchange merging for its whole budget (`exchange_batching = always`;
/// a 1 s target gives 50 ms, so pieces gather even in a debug build).
/// And they do merge: q7's bids reach its join in fewer batches than with
/// merging off.
#[test]
fn merging_exchanges_change_no_result() {
    let merging = [("latency_target", "1s"), ("exchange_batching", "always")];
    let not_merging = [("latency_target", "1s"), ("exchange_batching", "off")];
    check_with("q5", &q5_batch(), &merging);
    check_with("q11", q11_batch(), &merging);
    let batches_into_join = |s: &RunSummary| -> u64 {
        let exchanges = s.exchanges();
        let into = exchanges
            .iter()
            .filter(|e| e.edge.contains("→ window_join") && e.rows > 1000)
            .collect::<Vec<_>>();
        assert_eq!(
            into.len(),
            1,
            "one exchange carries the bids: {exchanges:?}"
        );
        into[0].batches
    };
    let merged = batches_into_join(&check_with("q7", &q7_batch(), &merging));
    let alone = batches_into_join(&check_with("q7", &q7_batch(), &not_merging));
    assert!(merged < alone, "{merged} batches merging, {alone} not");
}

#[test]
fn q8_new_sellers() {
    let streaming = stream("q8", &["person", "auction"]);
    let sql = format!(
        "SELECT p.id, p.name, p.ws
         FROM (SELECT DISTINCT id, name, {BIN10} AS ws FROM person) p
         JOIN (SELECT DISTINCT seller, {BIN10} AS ws FROM auction) a
           ON p.id = a.seller AND p.ws = a.ws"
    );
    let expected = batch_sql(
        &[
            ("person", events(NexmarkKind::Person)),
            ("auction", events(NexmarkKind::Auction)),
        ],
        &sql,
    );
    assert!(expected.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    assert_same_rows(&streaming, &expected, "q8");
}

#[test]
fn q11_sessions() {
    check("q11", q11_batch());
}

fn q11_batch() -> &'static str {
    "WITH o AS (
            SELECT bidder, date_time,
                   CASE WHEN date_time - lag(date_time) OVER (PARTITION BY bidder ORDER BY date_time) < INTERVAL '10 seconds'
                        THEN 0 ELSE 1 END AS starts
            FROM bid),
          s AS (
            SELECT bidder, date_time,
                   sum(starts) OVER (PARTITION BY bidder ORDER BY date_time ROWS UNBOUNDED PRECEDING) AS session
            FROM o)
         SELECT bidder, count(*), min(date_time), max(date_time) + INTERVAL '10 seconds'
         FROM s GROUP BY bidder, session"
}

#[test]
fn q14_scalar_functions() {
    check(
        "q14",
        "SELECT auction, bidder, price * 0.908,
                CASE WHEN date_part('hour', date_time) BETWEEN 8 AND 18 THEN 'dayTime'
                     WHEN date_part('hour', date_time) <= 6 OR date_part('hour', date_time) >= 20 THEN 'nightTime'
                     ELSE 'otherTime' END,
                date_time, extra,
                character_length(extra) - character_length(replace(extra, 'c', ''))
         FROM bid WHERE price * 0.908 > 1000000 AND price * 0.908 < 50000000",
    );
}

fn bands(prefix: &str, what: &str) -> String {
    format!(
        "count({prefix}{what}) AS {what}_all,
         count({prefix}CASE WHEN price < 10000 THEN {what} END),
         count({prefix}CASE WHEN price >= 10000 AND price < 1000000 THEN {what} END),
         count({prefix}CASE WHEN price >= 1000000 THEN {what} END)"
    )
}

#[test]
fn q15_daily_counts() {
    // FILTER written as CASE: an independent formulation of the same counts.
    check(
        "q15",
        &format!(
            "SELECT {BIN_DAY}, {}, {}, {} FROM bid GROUP BY 1",
            bands("", "price"),
            bands("DISTINCT ", "bidder"),
            bands("DISTINCT ", "auction")
        ),
    );
}

#[test]
fn q16_daily_counts_per_channel() {
    check(
        "q16",
        &format!(
            "SELECT channel, {BIN_DAY}, {}, {}, {} FROM bid GROUP BY 1, 2",
            bands("", "price"),
            bands("DISTINCT ", "bidder"),
            bands("DISTINCT ", "auction")
        ),
    );
}

#[test]
fn q17_daily_auction_stats() {
    check(
        "q17",
        &format!(
            "SELECT auction, {BIN_DAY}, {}, min(price), max(price), avg(price), sum(price)
             FROM bid GROUP BY 1, 2",
            bands("", "price")
        ),
    );
}

#[test]
fn q21_channel_ids() {
    check(
        "q21",
        "SELECT auction, bidder, price, channel, id FROM (
            SELECT auction, bidder, price, channel,
                   CASE lower(channel) WHEN 'apple' THEN '0' WHEN 'google' THEN '1'
                        WHEN 'facebook' THEN '2' WHEN 'baidu' THEN '3'
                        ELSE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] END AS id
            FROM bid) WHERE id IS NOT NULL",
    );
}

#[test]
fn q22_url_directories() {
    check(
        "q22",
        "SELECT auction, bidder, price, channel,
                split_part(url, '/', 4), split_part(url, '/', 5), split_part(url, '/', 6)
         FROM bid",
    );
}

#[test]
fn q12_processing_time_windows() {
    // Which window a bid falls in depends on the wall clock; every bid is
    // counted exactly once, so per bidder the window counts add up to the
    // bidder's bids.
    let streaming = stream("q12", &["bid"]);
    let per_bidder = batch_sql(
        &[("s", streaming)],
        "SELECT bidder, sum(bid_count) FROM s GROUP BY bidder",
    );
    let expected = batch_sql(
        &[("bid", events(NexmarkKind::Bid))],
        "SELECT bidder, count(*) FROM bid GROUP BY bidder",
    );
    assert_same_rows(&per_bidder, &expected, "q12");
}
