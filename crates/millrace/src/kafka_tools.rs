//! `millrace kafka …`: the broker-side tools the Kafka benchmark needs.
//!
//! * `produce` writes a file's lines to a topic, as fast as it can or
//!   open-loop at a rate. A paced message's timestamp is the time it was
//!   *scheduled*, not sent, so a latency measured from it includes any delay
//!   of the producer itself (no coordinated omission).
//! * `latency` reads a topic with `read_committed` for a while and reports,
//!   as HDR percentiles, how long after the time in a field of each message
//!   it became visible.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use millrace_connectors::kafka::Connection;
use millrace_connectors::kafka::testing::{Outgoing, produce, watch};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Writes every line of `file` to `topic`; `rate` (messages/s) paces them.
/// Returns the messages written and the seconds it took.
pub fn produce_file(
    bootstrap: &str,
    topic: &str,
    file: &Path,
    rate: Option<f64>,
) -> Result<(u64, f64), String> {
    let conn = Connection::new(bootstrap);
    let input = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let lines = std::io::BufReader::with_capacity(1 << 20, input).lines();
    let started = Instant::now();
    let start_ms = now_ms();
    let mut sent = 0u64;
    let mut failed = None;
    let messages = lines.map_while(|line| match line {
        Ok(line) => Some(line),
        Err(e) => {
            failed = Some(e.to_string());
            None
        }
    });
    let paced = messages.enumerate().map(|(i, line)| {
        let timestamp = rate.map(|r| {
            let due = Duration::from_secs_f64(i as f64 / r);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            start_ms + due.as_millis() as i64
        });
        sent += 1;
        Outgoing {
            partition: None,
            key: None,
            value: line.into_bytes(),
            timestamp,
        }
    });
    produce(&conn, topic, paced).map_err(|e| e.to_string())?;
    if let Some(e) = failed {
        return Err(format!("{}: {e}", file.display()));
    }
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// Watches `topic` for `seconds`; prints percentiles of visible − `field`.
pub fn print_latency(
    bootstrap: &str,
    topic: &str,
    field: &str,
    seconds: f64,
) -> Result<(), String> {
    let conn = Connection::new(bootstrap);
    let watched =
        watch(&conn, topic, field, Duration::from_secs_f64(seconds)).map_err(|e| e.to_string())?;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut negative = 0u64;
    for &ms in &watched.latencies_ms {
        if ms < 0 {
            negative += 1;
        }
        hist.saturating_record(ms.max(0) as u64);
    }
    println!(
        "{} messages in {seconds} s ({} without '{field}', {negative} stamped in the future)",
        watched.messages, watched.without_field
    );
    if hist.is_empty() {
        return Ok(());
    }
    println!(
        "visible − {field}: p50 {} ms  p99 {} ms  p99.9 {} ms  max {} ms",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    Ok(())
}
