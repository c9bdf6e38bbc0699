//! `explain` output, as snapshots: operators, parallelism, fused chains
//! (`→`) and fused branches (`└─` under the node they read), exchanges with
//! their keys, and each source's watermark strategy.
//! These change whenever operator names do; update them with the new output
//! after checking it reads right.

use millrace_sql::{PlanOptions, SqlPipeline};

fn explain(name: &str) -> String {
    explain_with(name, &[])
}

/// `explain` of a Nexmark query at parallelism 2 with extra `settings`.
fn explain_with(name: &str, settings: &[(&str, &str)]) -> String {
    let path = format!(
        "{}/../../queries/nexmark/{name}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let sql = std::fs::read_to_string(&path).unwrap();
    let mut overrides = vec![
        ("parallelism".into(), "2".into()),
        ("workers".into(), "2".into()),
    ];
    overrides.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let options = PlanOptions {
        overrides,
        ..Default::default()
    };
    SqlPipeline::plan_with(&sql, &options)
        .unwrap()
        .explain()
        .unwrap()
}

/// The maximum of each window has no keys: each instance folds its bids
/// into a partial maximum, and only those cross to the one final instance.
#[test]
fn q7_window_join_of_bids_with_their_window_maximum() {
    assert_eq!(explain("q7"), Q7);
}

/// `SET two_phase_aggregation = 'off'` sends every bid to the one instance
/// of the maximum, as before two phases.
#[test]
fn q7_in_one_phase_when_two_phases_are_off() {
    let plan = explain_with("q7", &[("two_phase_aggregation", "off")]);
    let every_bid = "    └─ project[bid.price, bid.date_time]
       └─ round-robin ─▶ task 1 (input 0)
";
    let one_phase = "task 1 [parallelism 1]
    window_agg[tumble 10s]
";
    assert!(plan.contains(every_bid), "{plan}");
    assert!(plan.contains(one_phase), "{plan}");
    assert!(!plan.contains("partial"), "{plan}");
}

/// The view `counts` is read by both sides of the join: it is planned once.
/// The join of the counts with their window's maximum keeps the counts at
/// that maximum, so it is planned as a top-N with ties (rank 1) per window.
/// The count aggregate emits only each instance's counts at its window's
/// maximum, which is all a partial top-N would keep, so those few rows go
/// straight to the top-N, routed by window. The projections over the counts
/// (the window's bounds) run after the top-N, on the survivors,
/// composed into one with the join's column order and the sink's names.
#[test]
fn q5_plans_the_shared_view_once_and_keeps_the_counts_at_their_window_maximum() {
    assert_eq!(explain("q5"), Q5);
}

#[test]
fn q11_session_windows_keyed_by_bidder() {
    assert_eq!(explain("q11"), Q11);
}

const Q7: &str = r#"settings: parallelism 2, workers 2, batch_size 1024, latency_target none
sources:
  bid: connector = 'nexmark', kind = 'bid', events = '10000000'; watermark = max(date_time) - 4000 ms, idle after 1000 ms
sinks:
  out (INSERT on line 12)
dataflow:
task 0 [parallelism 2]
    source nexmark-bids
    └─ project[bid.price, bid.date_time]  →  window_agg[tumble 10s] (partial)
       └─ round-robin ─▶ task 1 (input 0)
    └─ project[bid.auction, bid.bidder, bid.price, bid.date_time, bid.extra]
       └─ hash(bid.price) ─▶ task 2 (input 0)
task 1 [parallelism 1]
    window_agg[tumble 10s] (final)
    └─ hash(max(bid.price)) ─▶ task 2 (input 1)
task 2 [parallelism 2]
    window_join[inner, tumble 10s]  →  project[auction, price, bidder, date_time, extra]  →  sink discard
watermarks:
    source nexmark-bids: date_time − 4000 ms, idle timeout 1000 ms
"#;

const Q5: &str = r#"settings: parallelism 2, workers 2, batch_size 1024, latency_target none
sources:
  bid: connector = 'nexmark', kind = 'bid', events = '10000000'; watermark = max(date_time) - 4000 ms, idle after 1000 ms
sinks:
  out (INSERT on line 13)
dataflow:
task 0 [parallelism 2]
    source nexmark-bids  →  project[bid.auction, bid.date_time]
    └─ hash(bid.auction) ─▶ task 1 (input 0)
task 1 [parallelism 2]
    window_agg[hop 10s every 2s] (emits rank <= 1 by count(Int64(1)))
    └─ hash(hop(bid.date_time,2s,10s)) ─▶ task 2 (input 0)
task 2 [parallelism 2]
    top_n[rank <= 1]  →  project[auction, num, window_start = get_field(hop(bid.date_time,2s,10s)@1, start), window_end = get_field(hop(bid.date_time,2s,10s)@1, end)]  →  sink discard
watermarks:
    source nexmark-bids: date_time − 4000 ms, idle timeout 1000 ms
"#;

const Q11: &str = r#"settings: parallelism 2, workers 2, batch_size 1024, latency_target none
sources:
  bid: connector = 'nexmark', kind = 'bid', events = '10000000'; watermark = max(date_time) - 4000 ms, idle after 1000 ms
sinks:
  out (INSERT on line 8)
dataflow:
task 0 [parallelism 2]
    source nexmark-bids  →  project[bid.bidder, bid.date_time]
    └─ hash(bid.bidder) ─▶ task 1 (input 0)
task 1 [parallelism 2]
    window_agg[session gap 10s]  →  project[bidder, bid_count, window_start = get_field(session(bid.date_time,10s)@1, start), window_end = get_field(session(bid.date_time,10s)@1, end)]  →  sink discard
watermarks:
    source nexmark-bids: date_time − 4000 ms, idle timeout 1000 ms
"#;
