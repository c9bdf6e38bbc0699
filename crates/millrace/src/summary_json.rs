//! The run summary as JSON (`millrace run --json`), for scripts and for
//! `millrace bench`, which runs every measurement in its own process and
//! reads this back.

use millrace_runtime::RunSummary;
use millrace_runtime::metrics::NodeKind;
use millrace_runtime::trace::{Breakdown, LatencyBreakdown};
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;

/// Every number of the text summary, plus the process's peak resident set.
pub fn summary_json(s: &RunSummary) -> Value {
    let l = &s.latency;
    let operators: Vec<Value> = s
        .operators
        .iter()
        .map(|o| {
            json!({
                "name": o.name,
                "kind": match o.kind {
                    NodeKind::Source => "source",
                    NodeKind::Operator => "operator",
                    NodeKind::Sink => "sink",
                },
                "parallelism": o.parallelism,
                "rows_in": o.rows_in,
                "rows_out": o.rows_out,
                "late_rows": o.late_rows,
                "busy_pct": o.busy_pct(),
                "idle_pct": o.idle_pct(),
                "backpressured_pct": o.backpressured_pct(),
                "aligning_pct": o.aligning_pct(),
                "skipped": o.source_stats.skipped,
                "dead_lettered": o.source_stats.dead_lettered,
                "state": o.state.map(|st| json!({
                    "bytes": st.bytes,
                    "keys": st.keys,
                    "key_bytes": st.key_bytes,
                })),
            })
        })
        .collect();
    json!({
        "elapsed_ns": s.elapsed_ns,
        "workers": s.workers,
        "events": s.events,
        "sink_rows": s.sink_rows,
        "throughput": s.throughput(),
        "throughput_per_core": s.throughput_per_core(),
        "latency_ns": {
            "count": l.count,
            "p50": l.p50,
            "p95": l.p95,
            "p99": l.p99,
            "p999": l.p999,
            "max": l.max,
        },
        "breakdown": s.breakdown.as_ref().map(breakdown_json),
        "backpressure_events": s.backpressure_events(),
        "restarts": s.restarts,
        "checkpoints": s.checkpoints.as_ref().map(|c| {
            let duration = c.duration_us.lock().unwrap_or_else(|e| e.into_inner());
            let committed = c.committed_latency.lock().unwrap_or_else(|e| e.into_inner());
            json!({
                "completed": c.completed.load(Relaxed),
                "aborted": c.aborted.load(Relaxed),
                "failed": c.failed.load(Relaxed),
                "latest": c.latest.load(Relaxed),
                "latest_bytes": c.latest_bytes.load(Relaxed),
                "written_bytes": c.written_bytes.load(Relaxed),
                "duration_us": {
                    "p50": duration.value_at_quantile(0.5),
                    "p99": duration.value_at_quantile(0.99),
                    "max": duration.max(),
                },
                "committed_latency_ns": {
                    "count": committed.len(),
                    "p50": committed.value_at_quantile(0.5),
                    "p99": committed.value_at_quantile(0.99),
                    "max": committed.max(),
                },
            })
        }),
        "peak_rss_bytes": peak_rss_bytes(),
        "operators": operators,
        "exchanges": s.exchanges().iter().map(|e| json!({
            "edge": e.edge,
            "channels": e.channels,
            "batches": e.batches,
            "rows": e.rows,
            "refused_sends": e.refused_sends,
        })).collect::<Vec<_>>(),
    })
}

/// A latency breakdown: the traced rows so far and, per percentile
/// explained, its latency, the traces used and the range of their totals,
/// and each stage's share (ns) in path order.
pub fn breakdown_json(b: &LatencyBreakdown) -> Value {
    let at = |quantile: &str, e: &Breakdown| {
        let parts: Vec<Value> = (e.parts.iter())
            .map(|(stage, ns)| {
                let s = b.stages.get(*stage);
                json!({
                    "stage": s.map(|s| s.name.as_str()),
                    "stage_id": stage,
                    "kind": s.map(|s| s.kind.as_str()),
                    "ns": ns,
                })
            })
            .collect();
        json!({
            "quantile": quantile,
            "latency_ns": e.latency_ns,
            "traces": e.traces,
            "min_ns": e.min_ns,
            "max_ns": e.max_ns,
            "parts": parts,
        })
    };
    let explained: Vec<Value> = [("p50", &b.p50), ("p99", &b.p99)]
        .into_iter()
        .filter_map(|(q, e)| e.as_ref().map(|e| at(q, e)))
        .collect();
    json!({ "traced": b.traced, "at": explained })
}

/// The most memory this process has held resident (`VmHWM`), where the OS
/// tells (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
