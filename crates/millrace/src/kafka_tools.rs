//! `millrace kafka …`: the broker-side tools the Kafka benchmark needs.
//!
//! * `produce` writes a file's lines to a topic, as fast as it can or
//!   open-loop at a rate. A paced message's timestamp is the time it was
//!   *scheduled*, not sent, so a latency measured from it includes any delay
//!   of the producer itself (no coordinated omission). It can also write that
//!   time into an event-time field of each (JSON) line, so that event time
//!   follows the wall clock as in a live stream, and a window's results are
//!   due a known time after the window ends.
//! * `latency` reads a topic with `read_committed` for a while (or until it
//!   has read the messages it expects) and reports, as HDR percentiles, how
//!   long after the time in a field of each message it became visible.

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

/// Writes every line of `file` to `topic`; `rate` (messages/s) paces them,
/// and with `event_time` each line's field of that name is set to the time
/// the line was due (ms since 1970). Returns the messages written and the
/// seconds it took.
pub fn produce_file(
    bootstrap: &str,
    topic: &str,
    file: &Path,
    rate: Option<f64>,
    event_time: Option<&str>,
) -> Result<(u64, f64), String> {
    if event_time.is_some() && rate.is_none() {
        return Err("an event-time field needs a rate (it is set to when a line was due)".into());
    }
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
    let mut unstamped = None;
    let paced = messages.enumerate().map_while(|(i, line)| {
        let timestamp = rate.map(|r| {
            let due = Duration::from_secs_f64(i as f64 / r);
            // Never before it is due. Waking at most once a millisecond
            // (sending all that is due then) keeps the pacing's own CPU
            // low; a message leaves at most ~1 ms late, which its stamp
            // counts against the latency measured.
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait.max(Duration::from_millis(1)));
            }
            start_ms + due.as_millis() as i64
        });
        let value = match (event_time, timestamp) {
            (Some(field), Some(ms)) => match with_number(&line, field, ms) {
                Some(stamped) => stamped,
                None => {
                    unstamped = Some(format!(
                        "{} line {}: no field '{field}' to set",
                        file.display(),
                        i + 1
                    ));
                    return None;
                }
            },
            _ => line,
        };
        sent += 1;
        Some(Outgoing {
            partition: None,
            key: None,
            value: value.into_bytes(),
            timestamp,
        })
    });
    produce(&conn, topic, paced).map_err(|e| e.to_string())?;
    if let Some(e) = unstamped {
        return Err(e);
    }
    if let Some(e) = failed {
        return Err(format!("{}: {e}", file.display()));
    }
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// `line` (a flat JSON object) with the value of `"field":` replaced by
/// `value`; `None` when the line has no such field. The value replaced runs
/// to its closing quote if it is a string, else to the next `,` or `}`.
fn with_number(line: &str, field: &str, value: i64) -> Option<String> {
    let key = format!("\"{field}\":");
    let start = line.find(&key)? + key.len();
    let rest = &line[start..];
    let value_len = match rest.strip_prefix('"') {
        Some(quoted) => quoted.find('"')? + 2,
        None => rest.find([',', '}'])?,
    };
    Some(format!("{}{value}{}", &line[..start], &rest[value_len..]))
}

/// Watches `topic` for at most `seconds`, or until `expected` messages;
/// prints percentiles of visible − `field`.
pub fn print_latency(
    bootstrap: &str,
    topic: &str,
    field: &str,
    seconds: f64,
    expected: Option<u64>,
) -> Result<(), String> {
    let conn = Connection::new(bootstrap);
    let started = Instant::now();
    let watched = watch(
        &conn,
        topic,
        field,
        Duration::from_secs_f64(seconds),
        expected,
    )
    .map_err(|e| e.to_string())?;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut negative = 0u64;
    for &ms in &watched.latencies_ms {
        if ms < 0 {
            negative += 1;
        }
        hist.saturating_record(ms.max(0) as u64);
    }
    let expected = expected.map_or(String::new(), |n| format!(" of {n} expected"));
    println!(
        "{} messages{expected} in {:.1} s ({} without '{field}', {negative} stamped in the future)",
        watched.messages,
        started.elapsed().as_secs_f64(),
        watched.without_field
    );
    if hist.is_empty() {
        return Ok(());
    }
    // A handful (q7 gives one result a window) is too few for percentiles.
    if watched.latencies_ms.len() <= 20 {
        let each: Vec<String> = watched.latencies_ms.iter().map(i64::to_string).collect();
        println!(
            "visible − {field}, in arrival order: {} ms",
            each.join(", ")
        );
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

#[cfg(test)]
mod tests {
    use super::with_number;

    #[test]
    fn sets_a_string_or_number_field() {
        let line = r#"{"a":1,"date_time":"2026-01-01T00:00:00","b":"x"}"#;
        assert_eq!(
            with_number(line, "date_time", 17).as_deref(),
            Some(r#"{"a":1,"date_time":17,"b":"x"}"#)
        );
        assert_eq!(
            with_number(r#"{"t":5}"#, "t", 6).as_deref(),
            Some(r#"{"t":6}"#)
        );
        assert_eq!(
            with_number(r#"{"a":1,"t":5,"b":2}"#, "t", 60).as_deref(),
            Some(r#"{"a":1,"t":60,"b":2}"#)
        );
        assert_eq!(with_number(r#"{"a":1}"#, "t", 6), None);
        assert_eq!(with_number(r#"{"t":"open"#, "t", 6), None);
    }
}
