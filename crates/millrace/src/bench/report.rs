//! The bench's tables, as Markdown so docs/benchmarks.md can hold them as
//! printed.

use std::fmt::Write;

use super::{LatencyRun, Policy, QueryResult, StateResult};

/// `12.35 M`, `456.7 K`, `89`.
pub fn count(n: f64) -> String {
    millrace_runtime::metrics::fmt_count(n)
}

/// Nanoseconds with a unit that reads at a glance.
pub fn ns(v: u64) -> String {
    millrace_runtime::metrics::fmt_ns(v)
}

/// A percentile of a run, or `—` when the run measured no rows (it fell so
/// far behind that every row it emitted was from its warm-up).
fn pct(p: &super::Point, v: u64) -> String {
    if p.count == 0 { "—".into() } else { ns(v) }
}

/// Below this many measured rows a run's p99 is its largest latency (the
/// rank of the 99th percentile rounds up to the last row) and says little
/// about the policy: the tables that rank policies print the row count
/// beside such a p99.
pub const FEW_ROWS: u64 = 100;

/// Whether any open-loop cell of `results` is over too few rows for its p99
/// to rank (see [`FEW_ROWS`]).
pub fn has_few_rows(results: &[QueryResult]) -> bool {
    results
        .iter()
        .flat_map(|q| &q.policies)
        .flat_map(|p| &p.latency)
        .any(|r| few_rows(&r.point))
}

fn few_rows(p: &super::Point) -> bool {
    p.count > 0 && p.count < FEW_ROWS
}

/// A p99 as `pct` prints it, with the rows it is over when they are few
/// (the median of the runs' counts, as every number of a median point).
fn p99_cell(p: &super::Point) -> String {
    if few_rows(p) {
        let unit = if p.count == 1 { "row" } else { "rows" };
        format!("{} ({} {unit})", ns(p.p99), p.count)
    } else {
        pct(p, p.p99)
    }
}

pub fn bytes(b: Option<u64>) -> String {
    match b {
        Some(b) if b < 10_000_000 => format!("{:.2} MB", b as f64 / 1e6),
        Some(b) => format!("{:.0} MB", b as f64 / 1e6),
        None => "n/a".into(),
    }
}

/// The loads `q` was measured at, as fractions of its maximum rate.
fn fractions(q: &QueryResult) -> Vec<f64> {
    q.policies
        .first()
        .map(|p| p.latency.iter().map(|r| r.fraction).collect())
        .unwrap_or_default()
}

/// Per query: throughput of each policy, then each open-loop run.
pub fn query_tables(q: &QueryResult) -> String {
    let mut s = String::new();
    let workers = q.policies.first().map_or(1, |p| p.throughput.workers);
    let _ = writeln!(
        s,
        "### {}: sustains {} events/s open-loop{} ({} per core on {} workers, batch {}); {} as fast as possible\n",
        q.name,
        count(q.max_rate),
        if q.max_rate_confirmed {
            ""
        } else {
            " (not confirmed: the search ran out of tries)"
        },
        count(q.max_rate / workers.max(1) as f64),
        workers,
        q.search_policy.label(),
        count(q.closed_loop_max),
    );
    s.push_str("| batch | events/s | per core | runs | events | rows out | peak RSS |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for p in &q.policies {
        let t = &p.throughput;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.policy.label(),
            count(t.throughput()),
            count(t.per_core()),
            range(
                &p.throughput_runs,
                |r| count(r.throughput()),
                |r| r.throughput()
            ),
            count(t.events as f64),
            t.sink_rows,
            bytes(t.peak_rss_bytes)
        );
    }
    s.push_str(
        "\n| batch | load | offered events/s | p50 | p99 | p99 of the runs | p99.9 | max | rows | peak RSS |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let fractions = fractions(q);
    for (i, f) in fractions.iter().enumerate() {
        for p in &q.policies {
            let Some(r) = p.latency.get(i) else { continue };
            let l = &r.point;
            let _ = writeln!(
                s,
                "| {} | {:.0}%{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.policy.label(),
                f * 100.0,
                if r.skipped() {
                    " (not run: behind at a lower load)"
                } else if r.behind {
                    " (behind)"
                } else {
                    ""
                },
                count(r.rate),
                pct(l, l.p50),
                pct(l, l.p99),
                range(&r.runs, |p| pct(p, p.p99), |p| p.p99 as f64),
                pct(l, l.p999),
                pct(l, l.max),
                l.count,
                bytes(l.peak_rss_bytes)
            );
        }
    }
    s
}

/// `low–high` of `runs` as `show` prints them, ordered by `key`.
fn range(
    runs: &[super::Point],
    show: impl Fn(&super::Point) -> String,
    key: impl Fn(&super::Point) -> f64,
) -> String {
    let lo = runs.iter().min_by(|a, b| key(a).total_cmp(&key(b)));
    let hi = runs.iter().max_by(|a, b| key(a).total_cmp(&key(b)));
    match (lo, hi) {
        (Some(lo), Some(hi)) if runs.len() > 1 => format!("{}–{}", show(lo), show(hi)),
        (Some(one), _) => show(one),
        _ => "—".into(),
    }
}

/// One table over every query: throughput and p99 at each load, one column
/// per policy.
pub fn comparison_table(results: &[QueryResult]) -> String {
    let Some(first) = results.first() else {
        return String::new();
    };
    let labels: Vec<String> = first.policies.iter().map(|p| p.policy.label()).collect();
    let mut s = format!("| query | measure | {} |\n", labels.join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---|".repeat(labels.len()));
    for q in results {
        let cells: Vec<String> = q
            .policies
            .iter()
            .map(|p| count(p.throughput.throughput()))
            .collect();
        let _ = writeln!(s, "| {} | events/s | {} |", q.name, cells.join(" | "));
        let n = q.policies.first().map_or(0, |p| p.latency.len());
        for i in 0..n {
            let f = q.policies[0].latency[i].fraction;
            let cells: Vec<String> = q
                .policies
                .iter()
                .map(|p| match p.latency.get(i) {
                    Some(r) if r.skipped() => "not run (behind)".into(),
                    Some(r) if r.behind => format!("{} (behind)", p99_cell(&r.point)),
                    Some(r) => p99_cell(&r.point),
                    None => "—".into(),
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | p99 at {:.0}% | {} |",
                q.name,
                f * 100.0,
                cells.join(" | ")
            );
        }
    }
    s
}

/// The adaptive policies against the best fixed size, per query: median
/// throughput, and median p50 and p99 at each load (a fixed size that fell
/// behind does not count as best). A ratio below 1 is better than every
/// fixed size for latency; for throughput, above 1.
pub fn adaptive_table(results: &[QueryResult]) -> String {
    let mut s = String::from(
        "| query | measure | best fixed size | adaptive-src | adaptive | adaptive ÷ best fixed |\n|---|---|---|---|---|---|\n",
    );
    fn policy(q: &QueryResult, want: Policy) -> Option<&super::PolicyResult> {
        q.policies.iter().find(|p| p.policy == want)
    }
    /// Run `i` of `p`, if it kept up and measured rows.
    fn kept_up(p: Option<&super::PolicyResult>, i: usize) -> Option<&LatencyRun> {
        p.and_then(|p| p.latency.get(i))
            .filter(|r| !r.behind && r.point.count > 0)
    }
    for q in results {
        let fixed: Vec<_> = q.policies.iter().filter(|p| p.policy.is_fixed()).collect();
        let (src, adaptive) = (
            policy(q, Policy::AdaptiveSources),
            policy(q, Policy::Adaptive),
        );
        let thr = |p: Option<&super::PolicyResult>| p.map(|p| p.throughput.throughput());
        if let Some(best) = fixed.iter().max_by(|a, b| {
            a.throughput
                .throughput()
                .total_cmp(&b.throughput.throughput())
        }) {
            let b = best.throughput.throughput();
            let _ = writeln!(
                s,
                "| {} | events/s | {} ({}) | {} | {} | {} |",
                q.name,
                count(b),
                best.policy.label(),
                thr(src).map_or("—".into(), count),
                thr(adaptive).map_or("—".into(), count),
                thr(adaptive).map_or("—".into(), |a| format!("{:.2}", a / b)),
            );
        }
        let fractions = fractions(q);
        for (i, f) in fractions.iter().enumerate() {
            type Of = fn(&super::Point) -> u64;
            type Show = fn(&super::Point) -> String;
            let measures: [(&str, Of, Show); 2] = [
                ("p50", |p| p.p50, |p| ns(p.p50)),
                ("p99", |p| p.p99, p99_cell),
            ];
            for (what, of, show) in measures {
                let best = fixed
                    .iter()
                    .filter_map(|p| kept_up(Some(p), i).map(|r| (p.policy, &r.point)))
                    .min_by_key(|(_, r)| of(r));
                let cell = |p: Option<&super::PolicyResult>| match (
                    kept_up(p, i),
                    p.and_then(|p| p.latency.get(i)),
                ) {
                    (Some(r), _) => show(&r.point),
                    (None, Some(_)) => "behind".into(),
                    (None, None) => "—".into(),
                };
                let ratio = match (best, kept_up(adaptive, i)) {
                    (Some((_, b)), Some(r)) if of(b) > 0 => {
                        format!("{:.2}", of(&r.point) as f64 / of(b) as f64)
                    }
                    _ => "—".into(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {what} at {:.0}% | {} | {} | {} | {ratio} |",
                    q.name,
                    f * 100.0,
                    best.map_or("—".into(), |(p, r)| format!(
                        "{} ({})",
                        show(r),
                        p.label()
                    )),
                    cell(src),
                    cell(adaptive),
                );
            }
        }
    }
    s
}

/// The adaptive policy's open-loop run of `q` at `fraction`.
fn adaptive_at(q: &QueryResult, fraction: f64) -> Option<&LatencyRun> {
    q.policies
        .iter()
        .find(|p| p.policy == Policy::Adaptive)
        .and_then(|p| {
            p.latency
                .iter()
                .find(|r| (r.fraction - fraction).abs() < 1e-9)
        })
}

/// Peak keyed state of the state query's operators.
pub fn state_table(state: &[StateResult]) -> String {
    let mut s = String::from(
        "| query | operator | peak state | entries | key bytes | bytes per entry beyond its key |\n|---|---|---|---|---|---|\n",
    );
    for st in state {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.0} |",
            st.query,
            st.operator,
            bytes(Some(st.state.bytes as u64)),
            st.state.keys,
            bytes(Some(st.state.key_bytes as u64)),
            st.state.bytes_per_key_beyond_key()
        );
    }
    s
}

/// The targets that these results speak to, each met or not.
pub fn targets_table(results: &[QueryResult], state: &[StateResult]) -> String {
    let mut rows: Vec<(String, String, bool)> = Vec::new();
    for st in state {
        rows.push((
            format!(
                "{}: keyed window state ≤ 100 bytes per key beyond the key",
                st.query
            ),
            format!("{:.0} B", st.state.bytes_per_key_beyond_key()),
            st.state.bytes_per_key_beyond_key() <= 100.0,
        ));
    }
    let find = |name: &str| results.iter().find(|q| q.name == name);
    for (name, per_core) in [("q0", 4e6), ("q5", 1.5e6), ("q7", 1.5e6)] {
        if let Some(q) = find(name) {
            let workers = q
                .policies
                .first()
                .map_or(1, |p| p.throughput.workers.max(1));
            let best = q.max_rate / workers as f64;
            rows.push((
                format!(
                    "{name} ≥ {} events/s per core (sustained open-loop)",
                    count(per_core)
                ),
                if q.max_rate_confirmed {
                    count(best)
                } else {
                    format!("{} (not confirmed)", count(best))
                },
                best >= per_core && q.max_rate_confirmed,
            ));
        }
    }
    if let Some(r) = find("q7").and_then(|q| adaptive_at(q, 0.5)) {
        rows.push((
            "q7 at 50%, adaptive: p99 ≤ 1 ms".into(),
            ns(r.point.p99),
            r.point.p99 <= 1_000_000 && !r.behind,
        ));
        rows.push((
            "q7 at 50%, adaptive: p99.9 ≤ 5 ms".into(),
            ns(r.point.p999),
            r.point.p999 <= 5_000_000 && !r.behind,
        ));
    }
    for q in results {
        if let Some(r) = adaptive_at(q, 0.1) {
            rows.push((
                format!("{} at 10%, adaptive: p50 ≤ 100 µs", q.name),
                ns(r.point.p50),
                r.point.p50 <= 100_000 && !r.behind,
            ));
        }
    }
    if let Some(q) = find("q0") {
        let peak = q
            .policies
            .iter()
            .filter_map(|p| p.throughput.peak_rss_bytes)
            .max();
        if let Some(peak) = peak {
            rows.push((
                "q0 peak RSS ≤ 150 MB at full speed".into(),
                bytes(Some(peak)),
                peak <= 150_000_000,
            ));
        }
    }
    let mut s = String::from("| target | measured | met |\n|---|---|---|\n");
    for (what, measured, met) in rows {
        let _ = writeln!(
            s,
            "| {what} | {measured} | {} |",
            if met { "yes" } else { "no" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::{LatencyRun, Point, PolicyResult};
    use super::*;

    fn point(p99_ms: u64, count: u64) -> Point {
        Point {
            events: 1000,
            elapsed_ns: 1_000_000_000,
            workers: 2,
            sink_rows: count,
            count,
            p50: 50_000,
            p99: p99_ms * 1_000_000,
            p999: p99_ms * 1_000_000,
            max: p99_ms * 1_000_000,
            peak_rss_bytes: None,
        }
    }

    fn policy(policy: Policy, p99_ms: u64, count: u64) -> PolicyResult {
        let p = point(p99_ms, count);
        PolicyResult {
            policy,
            throughput: p.clone(),
            throughput_runs: vec![p.clone()],
            latency: vec![LatencyRun {
                fraction: 0.1,
                rate: 1000.0,
                point: p.clone(),
                runs: vec![p],
                behind: false,
            }],
        }
    }

    /// Fixed 64 measured `rows`, adaptive `rows + 1`.
    fn query(rows: u64) -> QueryResult {
        QueryResult {
            name: "q7".into(),
            file: "q7.sql".into(),
            closed_loop_max: 1000.0,
            max_rate: 1000.0,
            max_rate_confirmed: true,
            search_policy: Policy::Adaptive,
            policies: vec![
                policy(Policy::Fixed(64), 40, rows),
                policy(Policy::Adaptive, 20, rows + 1),
            ],
        }
    }

    #[test]
    fn a_p99_over_few_rows_shows_its_rows() {
        let few = [query(42)];
        let table = adaptive_table(&few);
        assert!(
            table.contains(
                "| q7 | p99 at 10% | 40.0 ms (42 rows) (64) | — | 20.0 ms (43 rows) | 0.50 |"
            ),
            "{table}"
        );
        // p50s are printed bare, and so is a p99 over enough rows.
        assert!(
            table.contains("| q7 | p50 at 10% | 50.0 µs (64) |"),
            "{table}"
        );
        assert!(has_few_rows(&few));
        let many = [query(FEW_ROWS)];
        let table = adaptive_table(&many);
        assert!(
            table.contains("| q7 | p99 at 10% | 40.0 ms (64) | — | 20.0 ms | 0.50 |"),
            "{table}"
        );
        assert!(!has_few_rows(&many));
        let table = comparison_table(&few);
        assert!(
            table.contains("| 40.0 ms (42 rows) | 20.0 ms (43 rows) |"),
            "{table}"
        );
        // A run that measured nothing has no p99 to mark.
        let none = [query(0)];
        let table = comparison_table(&none);
        assert!(
            table.contains("| q7 | p99 at 10% | — | 20.0 ms (1 row) |"),
            "{table}"
        );
        assert!(has_few_rows(&none), "adaptive's one row");
    }

    #[test]
    fn a_load_not_run_says_so() {
        let mut q = query(FEW_ROWS);
        let fixed = &mut q.policies[0].latency[0];
        fixed.point = Point::default();
        fixed.runs.clear();
        fixed.behind = true;
        let results = [q];
        let table = comparison_table(&results);
        assert!(
            table.contains("| q7 | p99 at 10% | not run (behind) | 20.0 ms |"),
            "{table}"
        );
        let tables = query_tables(&results[0]);
        assert!(
            tables.contains("| 64 | 10% (not run: behind at a lower load) | 1.0 K | — | — | — |"),
            "{tables}"
        );
        // Not a result: the best fixed size is taken among the others.
        let table = adaptive_table(&results);
        assert!(table.contains("| q7 | p99 at 10% | — |"), "{table}");
    }
}
