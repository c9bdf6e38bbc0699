//! The run's counters in the Prometheus text format (version 0.0.4):
//! `millrace_…` names, `_total` for counters, seconds and bytes as units,
//! labels `pipeline`, and `operator`, `operator_id`, `instance` on what one
//! operator instance counts. docs/observability.md lists every metric.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::runtime::LiveAttempt;
use crate::runtime::metrics::NodeKind;
use hdrhistogram::Histogram;

use super::RecentLatency;

/// Upper bounds of the latency histogram's buckets, seconds: 1, 2.5 and 5
/// per decade from 1 µs to 100 s.
const LATENCY_BUCKETS_S: [f64; 25] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0,
];

/// Writes one metric family at a time: `# HELP`, `# TYPE`, then samples.
struct Exposition {
    text: String,
    pipeline: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A family of one sample without labels of its own.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One sample; `labels` come after `pipeline`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        self.text.push_str("{pipeline=\"");
        escape_into(&mut self.text, &self.pipeline);
        self.text.push('"');
        for (k, v) in labels {
            let _ = write!(self.text, ",{k}=\"");
            escape_into(&mut self.text, v);
            self.text.push('"');
        }
        self.text.push_str("} ");
        if value.is_infinite() {
            self.text
                .push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(self.text, "{value}");
        }
        self.text.push('\n');
    }

    /// A histogram of nanosecond values in seconds, with `LATENCY_BUCKETS_S`.
    /// Bucket counts come from the HDR histogram, whose values are exact to
    /// 0.1%; so is `_sum`, added up from them. One pass over the recorded
    /// values: a scrape costs what the histogram holds, not its range.
    fn histogram_ns(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram<u64>) {
        let mut counts = [0u64; LATENCY_BUCKETS_S.len()];
        let mut sum_ns = 0f64;
        for v in h.iter_recorded() {
            let (value, count) = (v.value_iterated_to(), v.count_at_value());
            sum_ns += value as f64 * count as f64;
            let seconds = value as f64 / 1e9;
            if let Some(first) = LATENCY_BUCKETS_S.iter().position(|le| seconds <= *le) {
                counts[first] += count;
            }
        }
        let mut cumulative = 0;
        for (le, count) in LATENCY_BUCKETS_S.iter().zip(counts) {
            cumulative += count;
            let le = format!("{le}");
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with_le, cumulative as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with_le, h.len() as f64);
        self.sample(&format!("{name}_sum"), labels, sum_ns / 1e9);
        self.sample(&format!("{name}_count"), labels, h.len() as f64);
    }
}

/// Prometheus label values escape `\`, `"` and newlines.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The exposition of `attempt` (the run so far), its restarts, and the
/// latency percentiles over the recent window.
pub fn render(
    pipeline: &str,
    attempt: Option<&LiveAttempt>,
    restarts: u32,
    recent: &RecentLatency,
    alerts: &[(String, String, bool)],
) -> String {
    let mut out = Exposition {
        text: String::new(),
        pipeline: pipeline.to_string(),
    };
    if !alerts.is_empty() {
        out.family(
            "millrace_alerts_firing",
            "gauge",
            "1 while the alert rule (label alert, its text in rule) fires, else 0.",
        );
        for (name, rule, firing) in alerts {
            let labels = [("alert", name.as_str()), ("rule", rule.as_str())];
            out.sample(
                "millrace_alerts_firing",
                &labels,
                f64::from(u8::from(*firing)),
            );
        }
    }
    out.single(
        "millrace_restarts_total",
        "counter",
        "Times the pipeline was started again after a failure (counters below restart with it).",
        restarts as f64,
    );
    let Some(attempt) = attempt else {
        return out.text;
    };
    let now_ns = crate::core::time::now_ns();
    out.single(
        "millrace_run_seconds",
        "gauge",
        "Seconds since the pipeline's tasks started (until they ended).",
        seconds(attempt.elapsed_ns()),
    );
    out.single(
        "millrace_workers",
        "gauge",
        "Worker threads of the run.",
        attempt.workers as f64,
    );
    operators(&mut out, attempt);
    channels(&mut out, attempt);
    checkpoints(&mut out, attempt, now_ns);
    latency(&mut out, attempt, recent);
    out.text
}

fn operators(out: &mut Exposition, attempt: &LiveAttempt) {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    use crate::runtime::metrics::OperatorMetrics;
    type Read = fn(&OperatorMetrics) -> f64;
    type Applies = fn(NodeKind) -> bool;
    let counters: [(&str, &str, Read, Applies); 8] = [
        (
            "millrace_operator_rows_in_total",
            "Rows an operator instance received.",
            |m| m.rows_in.load(Relaxed) as f64,
            |k| k != NodeKind::Source,
        ),
        (
            "millrace_operator_rows_out_total",
            "Rows an operator instance emitted (a source: rows read).",
            |m| m.rows_out.load(Relaxed) as f64,
            |k| k != NodeKind::Sink,
        ),
        (
            "millrace_operator_busy_seconds_total",
            "Seconds spent inside the operator instance's own calls.",
            |m| seconds(m.busy_ns.load(Relaxed)),
            |_| true,
        ),
        (
            "millrace_operator_task_busy_seconds_total",
            "Seconds the task the instance runs in (its fused chain) was busy.",
            |m| seconds(m.task.busy_ns.load(Relaxed)),
            |_| true,
        ),
        (
            "millrace_operator_backpressured_seconds_total",
            "Seconds the instance's task waited for room downstream (ended waits).",
            |m| seconds(m.task.backpressured_ns.load(Relaxed)),
            |_| true,
        ),
        (
            "millrace_operator_late_rows_total",
            "Rows that arrived behind the watermark.",
            |m| m.late_rows.load(Relaxed) as f64,
            |k| k == NodeKind::Operator,
        ),
        (
            "millrace_source_skipped_records_total",
            "Bad input records a source skipped (on_error = 'skip').",
            |m| m.skipped.load(Relaxed) as f64,
            |k| k == NodeKind::Source,
        ),
        (
            "millrace_source_dead_lettered_records_total",
            "Bad input records a source wrote to its dead letters.",
            |m| m.dead_lettered.load(Relaxed) as f64,
            |k| k == NodeKind::Source,
        ),
    ];
    for (name, help, read, applies) in counters {
        out.family(name, "counter", help);
        for_each_instance(attempt, |node, kind, id, instance, m| {
            if applies(kind) {
                let labels = [
                    ("operator", node),
                    ("operator_id", id),
                    ("instance", instance),
                ];
                out.sample(name, &labels, read(m));
            }
        });
    }
    type ReadAt = fn(&OperatorMetrics, i64) -> Option<f64>;
    let event_time: [(&str, &str, ReadAt); 3] = [
        (
            "millrace_source_watermark_seconds",
            "The source instance's watermark, seconds since 1970.",
            |m, _| ms_seconds(m.watermark_ms.load(Relaxed)),
        ),
        (
            "millrace_source_max_event_time_seconds",
            "The largest event time the source instance read, seconds since 1970.",
            |m, _| ms_seconds(m.max_event_time_ms.load(Relaxed)),
        ),
        (
            "millrace_source_watermark_lag_seconds",
            "The wall clock minus the source instance's watermark.",
            |m, unix_ms| {
                ms_seconds(m.watermark_ms.load(Relaxed)).map(|wm| unix_ms as f64 / 1e3 - wm)
            },
        ),
    ];
    for (name, help, read) in event_time {
        out.family(name, "gauge", help);
        for_each_instance(attempt, |node, kind, id, instance, m| {
            if kind == NodeKind::Source
                && let Some(value) = read(m, unix_ms)
            {
                let labels = [
                    ("operator", node),
                    ("operator_id", id),
                    ("instance", instance),
                ];
                out.sample(name, &labels, value);
            }
        });
    }
}

/// A watermark or event time, in seconds, once there is one.
fn ms_seconds(ms: i64) -> Option<f64> {
    (ms != i64::MIN && ms != i64::MAX).then(|| ms as f64 / 1e3)
}

/// Calls `f(operator, kind, operator_id, instance, metrics)` for every
/// operator instance, in graph order.
fn for_each_instance(
    attempt: &LiveAttempt,
    mut f: impl FnMut(&str, NodeKind, &str, &str, &crate::runtime::metrics::OperatorMetrics),
) {
    for (index, node) in attempt.nodes.iter().enumerate() {
        let id = index.to_string();
        let instances = node.instances.lock().unwrap_or_else(|e| e.into_inner());
        for (i, m) in instances.iter().enumerate() {
            f(&node.name, node.kind, &id, &i.to_string(), m);
        }
    }
}

fn channels(out: &mut Exposition, attempt: &LiveAttempt) {
    let stats = attempt.channels();
    type Read = fn(&crate::runtime::ChannelStats) -> f64;
    let families: [(&str, &str, &str, Read); 6] = [
        (
            "millrace_channel_refused_sends_total",
            "counter",
            "Sends a full channel refused (backpressure events).",
            |c| c.refused_sends as f64,
        ),
        (
            "millrace_channel_batches_total",
            "counter",
            "Data batches sent through the channel.",
            |c| c.batches as f64,
        ),
        (
            "millrace_channel_rows_total",
            "counter",
            "Rows sent through the channel.",
            |c| c.rows as f64,
        ),
        (
            "millrace_channel_queued_rows",
            "gauge",
            "Rows queued in the channel now.",
            |c| c.queued_rows as f64,
        ),
        (
            "millrace_channel_queued_bytes",
            "gauge",
            "Bytes queued in the channel now.",
            |c| c.queued_bytes as f64,
        ),
        (
            "millrace_channel_capacity_rows",
            "gauge",
            "Rows the channel holds at most.",
            |c| c.capacity.rows as f64,
        ),
    ];
    for (name, kind, help, read) in families {
        out.family(name, kind, help);
        for (i, c) in stats.iter().enumerate() {
            let i = i.to_string();
            let labels = [
                ("edge", c.edge.as_str()),
                ("from", &c.from),
                ("to", &c.to),
                ("channel", &i),
            ];
            out.sample(name, &labels, read(c));
        }
    }
}

fn checkpoints(out: &mut Exposition, attempt: &LiveAttempt, now_ns: i64) {
    let Some(c) = &attempt.checkpoints else {
        return;
    };
    let counters = [
        (
            "millrace_checkpoints_completed_total",
            "Checkpoints completed.",
            &c.completed,
        ),
        (
            "millrace_checkpoints_aborted_total",
            "Checkpoints that timed out.",
            &c.aborted,
        ),
        (
            "millrace_checkpoints_failed_total",
            "Checkpoints that could not be written.",
            &c.failed,
        ),
        (
            "millrace_checkpoint_written_bytes_total",
            "Bytes all checkpoints wrote.",
            &c.written_bytes,
        ),
    ];
    for (name, help, value) in counters {
        out.single(name, "counter", help, value.load(Relaxed) as f64);
    }
    out.single(
        "millrace_checkpoint_latest_id",
        "gauge",
        "Epoch of the latest complete checkpoint (0: none).",
        c.latest.load(Relaxed) as f64,
    );
    out.single(
        "millrace_checkpoint_latest_size_bytes",
        "gauge",
        "State bytes in the latest complete checkpoint.",
        c.latest_bytes.load(Relaxed) as f64,
    );
    let committed = c.latest_committed_ns.load(Relaxed);
    if committed > 0 {
        out.single(
            "millrace_checkpoint_latest_age_seconds",
            "gauge",
            "Seconds since the latest complete checkpoint committed.",
            seconds((now_ns - committed).max(0) as u64),
        );
    }
    let duration_ns = {
        let us = c.duration_us.lock().unwrap_or_else(|e| e.into_inner());
        let mut ns = crate::runtime::metrics::new_latency_histogram();
        for v in us.iter_recorded() {
            let _ = ns.record_n(
                v.value_iterated_to().saturating_mul(1000),
                v.count_at_value(),
            );
        }
        ns
    };
    out.family(
        "millrace_checkpoint_duration_seconds",
        "histogram",
        "From a checkpoint's start to its sinks' commit.",
    );
    out.histogram_ns("millrace_checkpoint_duration_seconds", &[], &duration_ns);
}

fn latency(out: &mut Exposition, attempt: &LiveAttempt, recent: &RecentLatency) {
    out.family(
        "millrace_latency_seconds",
        "histogram",
        "End-to-end latency of sink rows: from entering at the source to reaching the sink.",
    );
    out.histogram_ns("millrace_latency_seconds", &[], &attempt.latency());
    out.family(
        "millrace_latency_recent_seconds",
        "gauge",
        "Percentiles of the end-to-end latency over the last window (label window).",
    );
    let window = format!("{}s", recent.window.as_secs());
    for (q, value) in &recent.quantiles {
        let q = format!("{q}");
        out.sample(
            "millrace_latency_recent_seconds",
            &[("quantile", &q), ("window", &window)],
            seconds(*value),
        );
    }
    if let Some(log) = &attempt.traces {
        out.single(
            "millrace_latency_traced_rows_total",
            "counter",
            "Sampled rows whose path through the stages reached a sink (the latency breakdown's traces).",
            log.finished() as f64,
        );
    }
    let Some(b) = &recent.breakdown else {
        return;
    };
    out.family(
        "millrace_latency_breakdown_seconds",
        "gauge",
        "Each stage's share of the recent p50 and p99 latency (label quantile): the average over the \
         traced rows of the window nearest that percentile, so the shares add up to it. Labels \
         stage (an operator or an edge), stage_id (its index) and kind (source, exchange, \
         channel, operator, sink).",
    );
    for (q, at) in [("0.5", &b.p50), ("0.99", &b.p99)] {
        let Some(at) = at else { continue };
        for (stage, ns) in &at.parts {
            let Some(s) = b.stages.get(*stage) else {
                continue;
            };
            let id = stage.to_string();
            let labels = [
                ("quantile", q),
                ("window", window.as_str()),
                ("stage", s.name.as_str()),
                ("stage_id", id.as_str()),
                ("kind", s.kind.as_str()),
            ];
            out.sample("millrace_latency_breakdown_seconds", &labels, seconds(*ns));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition {
            text: String::new(),
            pipeline: "p\"1".into(),
        };
        out.sample("m_total", &[("operator", "a\\b\nc")], 3.0);
        assert_eq!(
            out.text,
            "m_total{pipeline=\"p\\\"1\",operator=\"a\\\\b\\nc\"} 3\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_in_seconds() {
        let mut h = crate::runtime::metrics::new_latency_histogram();
        h.record(800).unwrap(); // 0.8 µs
        h.record(3_000_000).unwrap(); // 3 ms
        h.record(2_000_000_000).unwrap(); // 2 s
        let mut out = Exposition {
            text: String::new(),
            pipeline: "p".into(),
        };
        out.histogram_ns("l_seconds", &[], &h);
        let bucket = |le: &str| {
            let prefix = format!("l_seconds_bucket{{pipeline=\"p\",le=\"{le}\"}} ");
            let line = out.text.lines().find(|l| l.starts_with(&prefix)).unwrap();
            line[prefix.len()..].parse::<f64>().unwrap()
        };
        assert_eq!(bucket("0.000001"), 1.0);
        assert_eq!(bucket("0.0025"), 1.0);
        assert_eq!(bucket("0.005"), 2.0);
        assert_eq!(bucket("2.5"), 3.0);
        assert_eq!(bucket("+Inf"), 3.0);
        assert!(out.text.contains("l_seconds_count{pipeline=\"p\"} 3\n"));
    }
}
