//! `millrace run`'s progress line on a terminal: rows read, their rate,
//! rows written, the watermark and how far it trails the wall clock,
//! rewritten in place twice a second on stderr by a thread of its own; its
//! last state stays when the run ends. Nothing is written when stderr is
//! not a terminal (or with `--quiet`).

use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::runtime::LiveRun;
use crate::runtime::metrics::fmt_count;

const EVERY: Duration = Duration::from_millis(500);

/// The running line; dropping it draws it a last time and stops it.
pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the line for `live` on stderr, if stderr is a terminal.
    pub fn start(live: LiveRun) -> Option<Progress> {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("millrace-progress".into())
            .spawn(move || draw(&live, &stopped))
            .ok()?;
        Some(Progress {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn draw(live: &LiveRun, stopped: &mpsc::Receiver<()>) {
    let mut last: Option<(Instant, u64)> = None;
    loop {
        let done = !matches!(stopped.recv_timeout(EVERY), Err(RecvTimeoutError::Timeout));
        let Some(attempt) = live.attempt() else {
            if done {
                return;
            }
            continue;
        };
        let summary = attempt.summary();
        let now = Instant::now();
        let rate = last.and_then(|(at, rows)| {
            let dt = now.duration_since(at).as_secs_f64();
            (dt > 0.0).then(|| summary.events.saturating_sub(rows) as f64 / dt)
        });
        last = Some((now, summary.events));
        let watermark = attempt.slowest_watermark_ms();
        let line = line(summary.events, rate, summary.sink_rows, watermark);
        let mut err = std::io::stderr().lock();
        // The last line stays, above the summary.
        let end = if done { "\n" } else { "" };
        let _ = write!(err, "\r\x1b[2K{line}{end}");
        let _ = err.flush();
        if done {
            return;
        }
    }
}

/// The progress line: rows read (and their rate), rows written, and the
/// slowest source instance's watermark with its lag behind the wall clock.
fn line(read: u64, rate: Option<f64>, written: u64, watermark_ms: Option<i64>) -> String {
    let mut line = format!("rows read {}", fmt_count(read as f64));
    if let Some(rate) = rate {
        line += &format!(" ({}/s)", fmt_count(rate));
    }
    line += &format!(" · written {}", fmt_count(written as f64));
    if let Some(wm) = watermark_ms {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let lag = (unix_ms - wm) as f64 / 1e3;
        line += &format!(" · watermark {} (lag {lag:.1} s)", timestamp(wm));
    }
    line
}

/// ms since 1970 as `YYYY-MM-DD HH:MM:SS` (UTC).
fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_rows_rate_and_watermark() {
        assert_eq!(
            line(1_234_567, Some(91_800.0), 12, None),
            "rows read 1.23 M (91.8 K/s) · written 12"
        );
        assert!(
            line(5, None, 0, Some(1_767_225_600_000)).contains("watermark 2026-01-01 00:00:00")
        );
        assert_eq!(timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(
            timestamp(951_782_400_000 + 3_723_000),
            "2000-02-29 01:02:03"
        );
    }
}
