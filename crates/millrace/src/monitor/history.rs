//! What the sampler keeps for the dashboard: one reading of the run a
//! second (cumulative counts, as the run summary has them), for the last
//! `KEEP` readings. Rates are differences of two readings, taken by the
//! page; nothing here runs on a worker.

use std::collections::VecDeque;

use serde_json::{Value, json};

use crate::runtime::metrics::NodeKind;
use crate::runtime::{LiveAttempt, RunSummary};

/// Readings kept: five minutes at one a second.
pub const KEEP: usize = 300;

/// One reading: the run summary's counts at `t` seconds into the attempt.
pub struct Reading {
    json: Value,
}

/// The readings of the current attempt, oldest first.
#[derive(Default)]
pub struct History {
    readings: VecDeque<Reading>,
}

impl History {
    pub fn clear(&mut self) {
        self.readings.clear();
    }

    pub fn push(&mut self, reading: Reading) {
        if self.readings.len() == KEEP {
            self.readings.pop_front();
        }
        self.readings.push_back(reading);
    }

    /// The readings as a JSON array.
    pub fn to_json(&self) -> Value {
        Value::Array(self.readings.iter().map(|r| r.json.clone()).collect())
    }
}

/// Seconds the wall clock is past `watermark_ms`.
pub fn lag_s(watermark_ms: i64) -> f64 {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    (unix_ms - watermark_ms) as f64 / 1e3
}

fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Source => "source",
        NodeKind::Operator => "operator",
        NodeKind::Sink => "sink",
    }
}

/// The dataflow: every node with its inputs, in graph order.
pub fn graph(attempt: &LiveAttempt) -> Value {
    let nodes: Vec<Value> = (attempt.nodes.iter().zip(&attempt.inputs))
        .enumerate()
        .map(|(id, (node, inputs))| {
            json!({
                "id": id,
                "name": node.name,
                "kind": kind_name(node.kind),
                "parallelism": node.parallelism,
                "inputs": inputs,
            })
        })
        .collect();
    json!({ "nodes": nodes, "workers": attempt.workers })
}

/// A reading of `summary` (of `attempt`, now); `latency` are the recent
/// percentiles (quantile, ns).
pub fn read(attempt: &LiveAttempt, summary: &RunSummary, latency: &[(f64, u64)]) -> Reading {
    let operators: Vec<Value> = summary
        .operators
        .iter()
        .map(|o| {
            json!({
                "rows_in": o.rows_in,
                "rows_out": o.rows_out,
                "busy_ns": o.busy_ns,
                "task_busy_ns": o.task_busy_ns,
                "backpressured_ns": o.backpressured_ns,
                "wall_ns": o.wall_ns,
                "late_rows": o.late_rows,
                "skipped": o.source_stats.skipped,
                "dead_lettered": o.source_stats.dead_lettered,
            })
        })
        .collect();
    let exchanges: Vec<Value> = summary
        .exchanges()
        .iter()
        .map(|e| {
            json!({
                "edge": e.edge,
                "rows": e.rows,
                "batches": e.batches,
                "refused_sends": e.refused_sends,
            })
        })
        .collect();
    let watermark_lag_s = attempt.slowest_watermark_ms().map(lag_s);
    let latency: Vec<Value> = latency
        .iter()
        .map(|&(q, ns)| json!({ "quantile": q, "seconds": ns as f64 / 1e9 }))
        .collect();
    Reading {
        json: json!({
            "t": summary.elapsed_ns as f64 / 1e9,
            "events": summary.events,
            "sink_rows": summary.sink_rows,
            "refused_sends": summary.backpressure_events(),
            "operators": operators,
            "exchanges": exchanges,
            "latency": latency,
            "watermark_lag_s": watermark_lag_s,
        }),
    }
}
