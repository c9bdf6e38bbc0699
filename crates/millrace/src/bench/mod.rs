//! `millrace bench`: Nexmark SQL queries measured as DESIGN.md asks.
//!
//! For each query and each batch policy (fixed sizes and the adaptive
//! controller):
//!
//! 1. **throughput**: the query runs as fast as the generator can feed it
//!    (bounded channels hold the generator back to what the pipeline
//!    sustains, so no backlog grows); events/s over the run.
//! 2. **latency**: open-loop runs at fixed fractions of the query's maximum
//!    rate (the best throughput of any policy, so every policy is offered the
//!    same load). Event *i* is due at start + *i*/rate and its latency counts
//!    from that due time; percentiles come from the sink's HDR histogram.
//!    A policy that falls behind at one load is not run at higher ones.
//!
//! The first `warmup` of every run is processed but not measured (first-touch
//! memory, the first windows); the row counts beside the percentiles say
//! how many rows were. Every measurement runs in its own process (`millrace run FILE --json`),
//! so peak RSS is per measurement and no run inherits another's heap or
//! threads. "Events" are the generator's event sequence (persons, auctions
//! and bids; the `bid` source emits the 92% that are bids), as in other
//! engines' Nexmark numbers.

mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use millrace_core::StateSize;
use serde_json::{Value, json};

pub use report::{
    FEW_ROWS, adaptive_table, comparison_table, has_few_rows, query_tables, state_table,
    targets_table,
};

/// How sources and exchanges size their batches in one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SET batch_size = n` without a latency target.
    Fixed(usize),
    /// `SET latency_target = …` with batches of at most `ADAPTIVE_MAX` rows:
    /// sources linger and exchanges merge as the load needs.
    Adaptive,
    /// As `Adaptive`, with exchanges that never merge
    /// (`exchange_batching = off`): what merging in exchanges adds.
    AdaptiveSources,
}

/// Largest batch the adaptive controller may choose in a benchmark: the
/// engine's default `batch_size`, so `adaptive` is what `SET latency_target`
/// alone gives a user (docs/benchmarks.md, "Adaptive read size maximum").
pub const ADAPTIVE_MAX: usize = millrace_runtime::DEFAULT_BATCH_SIZE;

impl Policy {
    /// `1`, `64`, …, `adaptive` or `adaptive-src`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "adaptive" => Ok(Policy::Adaptive),
            "adaptive-src" => Ok(Policy::AdaptiveSources),
            n => n
                .replace('_', "")
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .map(Policy::Fixed)
                .ok_or_else(|| {
                    format!(
                        "batch policy '{n}': expected a size of at least 1, 'adaptive' or 'adaptive-src'"
                    )
                }),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Policy::Fixed(n) => n.to_string(),
            Policy::Adaptive => "adaptive".into(),
            Policy::AdaptiveSources => "adaptive-src".into(),
        }
    }

    /// A fixed batch size.
    pub fn is_fixed(&self) -> bool {
        matches!(self, Policy::Fixed(_))
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// SQL files to measure.
    pub queries: Vec<PathBuf>,
    pub policies: Vec<Policy>,
    /// Offered loads for the latency runs, as fractions of the maximum rate.
    pub fractions: Vec<f64>,
    /// The aim for each throughput run, and the length of each run of the
    /// sustained-rate search.
    pub seconds: f64,
    /// Length of each latency run. Longer than `seconds`: a p99 means
    /// something only over many results, a query measured on its window
    /// results yields few per second, and a backlog left by a host stall
    /// must weigh little in a run (evidence: docs/benchmarks.md, "The
    /// machine's own tails").
    pub latency_seconds: f64,
    /// Runs of every measurement (throughput, and each policy at each
    /// load), in rounds that take every policy in turn; tables show the
    /// median.
    pub repeat: usize,
    /// The adaptive policy's `latency_target`.
    pub latency_target: Duration,
    /// Rows that enter this early in a run are not measured (warm-up).
    pub warmup: Duration,
    /// The table whose `events` and `rate` options the bench sets.
    pub source: String,
    /// Further `--set NAME=VALUE` for every run (e.g. `parallelism=1`).
    pub settings: Vec<String>,
    /// A query whose keyed state is measured (run once, as fast as
    /// possible, with the pipeline settings of `settings`).
    pub state_query: Option<PathBuf>,
    /// The `millrace` binary that runs each measurement.
    pub exe: PathBuf,
}

/// The peak state of one stateful operator of the state query.
#[derive(Debug, Clone)]
pub struct StateResult {
    pub query: String,
    pub operator: String,
    pub state: StateSize,
}

/// One measured run.
#[derive(Debug, Clone, Default)]
pub struct Point {
    pub events: u64,
    pub elapsed_ns: u64,
    pub workers: u64,
    pub sink_rows: u64,
    /// Latency percentiles (ns) and the number of rows they are over.
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub peak_rss_bytes: Option<u64>,
}

impl Point {
    /// Generator events per second over the run.
    pub fn throughput(&self) -> f64 {
        self.events as f64 / (self.elapsed_ns.max(1) as f64 / 1e9)
    }

    pub fn per_core(&self) -> f64 {
        self.throughput() / self.workers.max(1) as f64
    }
}

/// The median of each number of `runs` (not empty), each on its own: the
/// p99 of this point is the median p99, whichever run it came from.
pub fn median_point(runs: &[Point]) -> Point {
    fn median(mut v: Vec<u64>) -> u64 {
        v.sort_unstable();
        v[(v.len() - 1) / 2]
    }
    let of = |f: fn(&Point) -> u64| median(runs.iter().map(f).collect());
    Point {
        events: of(|p| p.events),
        elapsed_ns: of(|p| p.elapsed_ns),
        workers: of(|p| p.workers),
        sink_rows: of(|p| p.sink_rows),
        count: of(|p| p.count),
        p50: of(|p| p.p50),
        p99: of(|p| p.p99),
        p999: of(|p| p.p999),
        max: of(|p| p.max),
        peak_rss_bytes: runs
            .iter()
            .all(|p| p.peak_rss_bytes.is_some())
            .then(|| of(|p| p.peak_rss_bytes.unwrap_or(0))),
    }
}

/// Open-loop runs at a fraction of the query's maximum rate.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    pub fraction: f64,
    /// Offered events/s.
    pub rate: f64,
    /// The median of `runs`.
    pub point: Point,
    pub runs: Vec<Point>,
    /// The median run took noticeably longer than its events were due: the
    /// pipeline did not keep up and a backlog grew.
    pub behind: bool,
}

impl LatencyRun {
    /// Not run: the policy fell behind at a lower load (then `behind`, and
    /// `point` measured nothing). Every load that ran has `repeat` runs.
    pub fn skipped(&self) -> bool {
        self.runs.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct PolicyResult {
    pub policy: Policy,
    /// The median of `throughput_runs`.
    pub throughput: Point,
    pub throughput_runs: Vec<Point>,
    pub latency: Vec<LatencyRun>,
}

#[derive(Debug, Clone)]
pub struct QueryResult {
    pub name: String,
    pub file: PathBuf,
    /// The best as-fast-as-possible throughput over the policies.
    pub closed_loop_max: f64,
    /// The largest open-loop rate found to run without falling behind (with
    /// `search_policy`): the rate the fractions are of.
    pub max_rate: f64,
    /// Whether `max_rate` kept up `SEARCH_CONFIRM` times in a row; false
    /// when the search ran out of tries first (then it is the rate the
    /// search had stepped down to, which may never have run).
    pub max_rate_confirmed: bool,
    pub search_policy: Policy,
    pub policies: Vec<PolicyResult>,
}

/// Generator events per second of `--seconds` in the short run that sizes
/// each throughput run (at most `MAX_PROBE_EVENTS`).
const PROBE_EVENTS_PER_S: f64 = 250_000.0;
const MAX_PROBE_EVENTS: u64 = 1_000_000;
/// Bounds on the events of one run.
const MIN_EVENTS: u64 = 200_000;
const MAX_EVENTS: u64 = 1_000_000_000;
/// An open-loop run counts as behind when it lasts this much longer than
/// its schedule (plus `BEHIND_SLACK_S` for start-up and the final drain).
const BEHIND_RATIO: f64 = 1.05;
const BEHIND_SLACK_S: f64 = 0.1;
/// An open-loop run is stopped after this multiple of its schedule.
const STOP_RATIO: f64 = 1.5;
/// The search for the sustained rate steps down by this factor.
const SEARCH_STEP: f64 = 0.9;
/// Open-loop runs the search may make in all.
const SEARCH_TRIES: usize = 16;
/// Runs in a row that must keep up before the search accepts a rate: on a
/// shared VM one run can land in a fast minute, and every load of the bench
/// is a fraction of the rate accepted here.
const SEARCH_CONFIRM: usize = 2;

/// Runs every measurement; `progress` gets a line per finished run.
pub fn run(o: &BenchOptions, mut progress: impl FnMut(&str)) -> Result<Vec<QueryResult>, String> {
    let mut results = Vec::new();
    let repeat = o.repeat.max(1);
    for file in &o.queries {
        let name = query_name(file);
        // A short probe per policy sizes its throughput runs to `seconds`.
        let mut sized = Vec::new();
        for &policy in &o.policies {
            let probe_events =
                ((PROBE_EVENTS_PER_S * o.seconds) as u64).clamp(MIN_EVENTS / 4, MAX_PROBE_EVENTS);
            let probe = run_point(o, file, policy, probe_events, None)?;
            let events = ((probe.throughput() * o.seconds) as u64).clamp(MIN_EVENTS, MAX_EVENTS);
            sized.push((policy, events, Vec::new()));
        }
        for round in 0..repeat {
            for (policy, events, runs) in &mut sized {
                let point = run_point(o, file, *policy, *events, None)?;
                progress(&format!(
                    "{name} batch {} (run {}/{repeat}): {} events/s ({} per core), peak RSS {}",
                    policy.label(),
                    round + 1,
                    report::count(point.throughput()),
                    report::count(point.per_core()),
                    report::bytes(point.peak_rss_bytes),
                ));
                runs.push(point);
            }
        }
        let mut policies: Vec<PolicyResult> = sized
            .into_iter()
            .map(|(policy, _, runs)| PolicyResult {
                policy,
                throughput: median_point(&runs),
                throughput_runs: runs,
                latency: Vec::new(),
            })
            .collect();
        let closed_loop_max = policies
            .iter()
            .map(|p| p.throughput.throughput())
            .fold(0.0, f64::max);
        // The open-loop search runs with the adaptive policy when it is
        // measured (it is what a user gets), else with the fastest one.
        let search_policy = if o.policies.contains(&Policy::Adaptive) {
            Policy::Adaptive
        } else {
            policies
                .iter()
                .max_by(|a, b| {
                    a.throughput
                        .throughput()
                        .total_cmp(&b.throughput.throughput())
                })
                .map_or(Policy::Adaptive, |p| p.policy)
        };
        let (max_rate, max_rate_confirmed) =
            sustained_rate(o, file, search_policy, closed_loop_max, &mut progress)?;
        for &fraction in &o.fractions {
            let rate = max_rate * fraction;
            let events = ((rate * o.latency_seconds) as u64).max(1000);
            let skip: Vec<bool> = policies
                .iter()
                .map(|p| behind_at_a_lower_load(&p.latency, fraction))
                .collect();
            let mut runs: Vec<Vec<Point>> = vec![Vec::new(); policies.len()];
            for round in 0..repeat {
                for ((p, runs), skip) in policies.iter().zip(&mut runs).zip(&skip) {
                    if *skip {
                        continue;
                    }
                    let point = run_point(o, file, p.policy, events, Some(rate))?;
                    progress(&format!(
                        "{name} batch {} at {:.0}% ({} events/s, run {}/{repeat}): p50 {} p99 {} p99.9 {} max {} over {} rows{}",
                        p.policy.label(),
                        fraction * 100.0,
                        report::count(rate),
                        round + 1,
                        report::ns(point.p50),
                        report::ns(point.p99),
                        report::ns(point.p999),
                        report::ns(point.max),
                        point.count,
                        if is_behind(&point, events, rate) {
                            " (behind)"
                        } else {
                            ""
                        },
                    ));
                    runs.push(point);
                }
            }
            for ((p, runs), skipped) in policies.iter_mut().zip(runs).zip(skip) {
                let point = if skipped {
                    Point::default()
                } else {
                    median_point(&runs)
                };
                p.latency.push(LatencyRun {
                    fraction,
                    rate,
                    behind: skipped || is_behind(&point, events, rate),
                    point,
                    runs,
                });
            }
        }
        results.push(QueryResult {
            name,
            file: file.clone(),
            closed_loop_max,
            max_rate,
            max_rate_confirmed,
            search_policy,
            policies,
        });
    }
    Ok(results)
}

/// Runs the state query once and reads each stateful operator's peak.
pub fn measure_state(o: &BenchOptions, file: &Path) -> Result<Vec<StateResult>, String> {
    let mut cmd = Command::new(&o.exe);
    // Measurements run without the live endpoint (its cost is measured on
    // its own: docs/observability.md).
    cmd.arg("run")
        .arg(file)
        .arg("--json")
        .args(["--set", "http=off"]);
    // Pipeline settings only: table options name the benchmark's own tables.
    for s in o
        .settings
        .iter()
        .filter(|s| !s.split('=').next().unwrap_or("").contains('.'))
    {
        cmd.arg("--set").arg(s);
    }
    let summary = run_child(cmd, &file.display().to_string())?;
    let operators = summary["operators"].as_array().cloned().unwrap_or_default();
    Ok(operators
        .iter()
        .filter_map(|op| {
            let st = op.get("state")?;
            let field = |name: &str| st[name].as_u64().map(|v| v as usize);
            Some(StateResult {
                query: query_name(file),
                operator: op["name"].as_str()?.to_string(),
                state: StateSize {
                    bytes: field("bytes")?,
                    keys: field("keys")?,
                    key_bytes: field("key_bytes")?,
                },
            })
        })
        .filter(|s| s.state.keys > 0)
        .collect())
}

/// Runs a prepared `millrace run … --json` and reads its summary.
fn run_child(mut cmd: Command, what: &str) -> Result<Value, String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "{what}: cannot start {}: {e}",
            cmd.get_program().to_string_lossy()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .map_err(|e| format!("{what}: unreadable summary ({e}): {text}"))
}

/// Open-loop runs from `start` down in steps of `SEARCH_STEP` until one rate
/// keeps up `SEARCH_CONFIRM` times in a row; returns that rate and whether
/// it did (see [`RateSearch::outcome`]).
fn sustained_rate(
    o: &BenchOptions,
    file: &Path,
    policy: Policy,
    start: f64,
    progress: &mut impl FnMut(&str),
) -> Result<(f64, bool), String> {
    let mut search = RateSearch::new(start);
    for _ in 0..SEARCH_TRIES {
        let rate = search.rate();
        let events = ((rate * o.seconds) as u64).max(1000);
        let point = run_point(o, file, policy, events, Some(rate))?;
        let behind = is_behind(&point, events, rate);
        progress(&format!(
            "{} search, batch {}: {} events/s {}",
            query_name(file),
            policy.label(),
            report::count(rate),
            if behind { "falls behind" } else { "keeps up" }
        ));
        if search.record(behind) {
            break;
        }
    }
    let (rate, confirmed) = search.outcome();
    if !confirmed {
        progress(&format!(
            "{} search: out of tries; the loads are fractions of {} events/s, not confirmed",
            query_name(file),
            report::count(rate)
        ));
    }
    Ok((rate, confirmed))
}

/// The sustained-rate search's decisions, apart from the runs: a rate that
/// falls behind steps down; one that keeps up is run again until it has
/// kept up `SEARCH_CONFIRM` times in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RateSearch {
    rate: f64,
    kept_up: usize,
}

impl RateSearch {
    fn new(start: f64) -> Self {
        RateSearch {
            rate: start,
            kept_up: 0,
        }
    }

    /// The rate of the next run.
    fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes the outcome of a run at `rate()`; true once that rate has kept
    /// up `SEARCH_CONFIRM` times in a row (the search is over).
    fn record(&mut self, behind: bool) -> bool {
        if behind {
            self.rate *= SEARCH_STEP;
            self.kept_up = 0;
            return false;
        }
        self.kept_up += 1;
        self.confirmed()
    }

    /// Whether `rate()` has kept up `SEARCH_CONFIRM` times in a row.
    fn confirmed(&self) -> bool {
        self.kept_up >= SEARCH_CONFIRM
    }

    /// The rate found, and whether it was confirmed. Out of tries, it is
    /// the rate the search had reached: after a fall-behind one that never
    /// ran, after a keep-up one that kept up fewer times than asked.
    fn outcome(&self) -> (f64, bool) {
        (self.rate, self.confirmed())
    }
}

/// Whether a policy fell behind at a load below `fraction`: it would fall
/// behind at this one too, and its runs would only wait out their stop time.
fn behind_at_a_lower_load(latency: &[LatencyRun], fraction: f64) -> bool {
    latency.iter().any(|r| r.behind && r.fraction < fraction)
}

fn is_behind(point: &Point, events: u64, rate: f64) -> bool {
    let due_s = events as f64 / rate;
    point.elapsed_ns as f64 / 1e9 > due_s * BEHIND_RATIO + BEHIND_SLACK_S
}

/// `q7` for `queries/nexmark/q7.sql`.
pub fn query_name(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string())
}

/// The `--set` arguments of one run.
fn run_settings(o: &BenchOptions, policy: Policy, events: u64, rate: Option<f64>) -> Vec<String> {
    let src = &o.source;
    let mut sets = vec![
        format!("{src}.events={events}"),
        format!("latency_warmup={}us", o.warmup.as_micros()),
    ];
    if let Some(rate) = rate {
        sets.push(format!("{src}.rate={rate:.0}"));
    }
    match policy {
        Policy::Fixed(n) => {
            sets.push(format!("batch_size={n}"));
            sets.push("latency_target=none".into());
        }
        Policy::Adaptive | Policy::AdaptiveSources => {
            sets.push(format!("batch_size={ADAPTIVE_MAX}"));
            sets.push(format!(
                "latency_target={}us",
                o.latency_target.as_micros().max(1)
            ));
            if policy == Policy::AdaptiveSources {
                sets.push("exchange_batching=off".into());
            }
        }
    }
    sets.extend(o.settings.iter().cloned());
    sets
}

/// Runs one measurement in a child process and reads its JSON summary.
fn run_point(
    o: &BenchOptions,
    file: &Path,
    policy: Policy,
    events: u64,
    rate: Option<f64>,
) -> Result<Point, String> {
    let mut cmd = Command::new(&o.exe);
    cmd.arg("run")
        .arg(file)
        .arg("--json")
        .args(["--set", "http=off"]);
    if let Some(rate) = rate {
        // A run that falls behind is stopped (and drained) well after its
        // schedule: it already counts as behind, and waiting for a backlog of
        // minutes would tell nothing more.
        let due_s = events as f64 / rate;
        cmd.arg("--max-seconds")
            .arg(format!("{:.3}", due_s * STOP_RATIO + BEHIND_SLACK_S));
    }
    for s in run_settings(o, policy, events, rate) {
        cmd.arg("--set").arg(s);
    }
    let what = format!("{} (batch {})", file.display(), policy.label());
    let summary = run_child(cmd, &what)?;
    parse_point(&summary, events).ok_or_else(|| format!("{what}: summary lacks a field: {summary}"))
}

/// The point of a child's summary; `events` is the generator events the run
/// was given (the summary counts source rows, i.e. only the bids).
fn parse_point(v: &Value, events: u64) -> Option<Point> {
    let l = &v["latency_ns"];
    Some(Point {
        events,
        elapsed_ns: v["elapsed_ns"].as_u64()?,
        workers: v["workers"].as_u64()?,
        sink_rows: v["sink_rows"].as_u64()?,
        count: l["count"].as_u64()?,
        p50: l["p50"].as_u64()?,
        p99: l["p99"].as_u64()?,
        p999: l["p999"].as_u64()?,
        max: l["max"].as_u64()?,
        peak_rss_bytes: v["peak_rss_bytes"].as_u64(),
    })
}

/// The whole report as JSON.
pub fn to_json(
    o: &BenchOptions,
    results: &[QueryResult],
    state: &[StateResult],
    machine: &Value,
) -> Value {
    let point = |p: &Point| {
        json!({
            "events": p.events,
            "elapsed_ns": p.elapsed_ns,
            "workers": p.workers,
            "events_per_s": p.throughput(),
            "events_per_s_per_core": p.per_core(),
            "sink_rows": p.sink_rows,
            "latency_ns": {"count": p.count, "p50": p.p50, "p99": p.p99, "p999": p.p999, "max": p.max},
            "peak_rss_bytes": p.peak_rss_bytes,
        })
    };
    json!({
        "machine": machine,
        "settings": {
            "seconds": o.seconds,
            "latency_seconds": o.latency_seconds,
            "repeat": o.repeat,
            "fractions": o.fractions,
            "latency_target_ns": o.latency_target.as_nanos() as u64,
            "latency_warmup_ns": o.warmup.as_nanos() as u64,
            "source": o.source,
            "extra_settings": o.settings,
        },
        "state": state.iter().map(|s| json!({
            "query": s.query,
            "operator": s.operator,
            "bytes": s.state.bytes,
            "keys": s.state.keys,
            "key_bytes": s.state.key_bytes,
            "bytes_per_key_beyond_key": s.state.bytes_per_key_beyond_key(),
        })).collect::<Vec<_>>(),
        "queries": results.iter().map(|q| json!({
            "query": q.name,
            "file": q.file.display().to_string(),
            "closed_loop_max_events_per_s": q.closed_loop_max,
            "sustained_max_events_per_s": q.max_rate,
            "sustained_confirmed": q.max_rate_confirmed,
            "sustained_search_batch": q.search_policy.label(),
            "policies": q.policies.iter().map(|p| json!({
                "batch": p.policy.label(),
                "throughput": point(&p.throughput),
                "throughput_runs": p.throughput_runs.iter().map(point).collect::<Vec<_>>(),
                "latency": p.latency.iter().map(|r| json!({
                    "fraction": r.fraction,
                    "offered_events_per_s": r.rate,
                    "behind": r.behind,
                    "skipped": r.skipped(),
                    "median": point(&r.point),
                    "runs": r.runs.iter().map(point).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// CPU model and core count, as the OS reports them.
pub fn machine() -> Value {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({"cpu": model, "cores": cores, "profile": if cfg!(debug_assertions) { "debug" } else { "release" }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_accepts_a_rate_only_after_it_keeps_up_often_enough_in_a_row() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        let mut search = RateSearch::new(1000.0);
        // Behind at 1000: one step down.
        assert!(!search.record(true));
        assert!(close(search.rate(), 900.0));
        // 900 keeps up all but once (a fast minute), then falls behind: not
        // accepted, and the next try is a step lower.
        for _ in 1..SEARCH_CONFIRM {
            assert!(!search.record(false));
            assert!(close(search.rate(), 900.0));
        }
        assert!(!search.record(true));
        assert!(close(search.rate(), 810.0));
        assert_eq!(
            search.outcome(),
            (search.rate(), false),
            "not confirmed yet"
        );
        // 810 keeps up SEARCH_CONFIRM times in a row: accepted.
        for _ in 1..SEARCH_CONFIRM {
            assert!(!search.record(false));
        }
        assert!(search.record(false));
        let (rate, confirmed) = search.outcome();
        assert!(close(rate, 810.0) && confirmed);
    }

    #[test]
    fn policies_parse_and_label() {
        assert_eq!(Policy::parse("64"), Ok(Policy::Fixed(64)));
        assert_eq!(Policy::parse("8_192"), Ok(Policy::Fixed(8192)));
        assert_eq!(Policy::parse("adaptive"), Ok(Policy::Adaptive));
        assert_eq!(Policy::parse("adaptive-src"), Ok(Policy::AdaptiveSources));
        assert_eq!(Policy::AdaptiveSources.label(), "adaptive-src");
        assert!(Policy::parse("0").is_err());
        assert!(Policy::parse("big").unwrap_err().contains("'big'"));
        assert_eq!(Policy::Fixed(1).label(), "1");
    }

    #[test]
    fn each_policy_sets_its_batching_and_the_load() {
        let o = BenchOptions {
            queries: vec![],
            policies: vec![],
            fractions: vec![],
            seconds: 1.0,
            latency_seconds: 1.0,
            repeat: 1,
            latency_target: Duration::from_millis(1),
            warmup: Duration::from_millis(500),
            source: "bid".into(),
            settings: vec!["parallelism=1".into()],
            state_query: None,
            exe: PathBuf::new(),
        };
        assert_eq!(
            run_settings(&o, Policy::Fixed(64), 1000, None),
            [
                "bid.events=1000",
                "latency_warmup=500000us",
                "batch_size=64",
                "latency_target=none",
                "parallelism=1"
            ]
        );
        assert_eq!(
            run_settings(&o, Policy::Adaptive, 1000, Some(2500.4)),
            [
                "bid.events=1000",
                "latency_warmup=500000us",
                "bid.rate=2500",
                "batch_size=1024",
                "latency_target=1000us",
                "parallelism=1"
            ]
        );
        let sets = run_settings(&o, Policy::AdaptiveSources, 1000, None);
        assert!(sets.contains(&"latency_target=1000us".to_string()));
        assert!(sets.contains(&"exchange_batching=off".to_string()));
    }

    fn point(p50: u64, p99: u64, elapsed_ns: u64) -> Point {
        Point {
            events: 100,
            elapsed_ns,
            workers: 2,
            sink_rows: 10,
            count: 10,
            p50,
            p99,
            p999: p99,
            max: p99,
            peak_rss_bytes: Some(p50),
        }
    }

    #[test]
    fn a_policy_behind_at_a_load_is_not_run_at_higher_ones() {
        let at = |fraction: f64, behind: bool| LatencyRun {
            fraction,
            rate: fraction * 1000.0,
            point: point(1, 1, 1),
            runs: vec![point(1, 1, 1)],
            behind,
        };
        let kept_up = [at(0.1, false), at(0.5, false)];
        assert!(!behind_at_a_lower_load(&kept_up, 0.8));
        let behind_at_half = [at(0.1, false), at(0.5, true)];
        assert!(behind_at_a_lower_load(&behind_at_half, 0.8));
        // Only lower loads count (a load is never compared with itself).
        assert!(!behind_at_a_lower_load(&behind_at_half, 0.5));
        assert!(!behind_at_a_lower_load(&behind_at_half, 0.2));
    }

    #[test]
    fn the_median_point_takes_each_number_on_its_own() {
        let runs = [point(5, 90, 3), point(1, 10, 2), point(3, 30, 1)];
        let m = median_point(&runs);
        assert_eq!(
            (m.p50, m.p99, m.elapsed_ns, m.peak_rss_bytes),
            (3, 30, 2, Some(3))
        );
        // An even count takes the lower middle.
        let m = median_point(&runs[..2]);
        assert_eq!((m.p50, m.p99), (1, 10));
    }
}
