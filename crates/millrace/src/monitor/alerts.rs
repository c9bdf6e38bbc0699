//! Alert rules (`SET alert.<name> = '<rule>'`, docs/observability.md),
//! evaluated by the sampler once a second against what it read. Each rule
//! is a small state machine: its condition must hold for the rule's
//! duration before it fires, and it resolves as soon as the condition stops
//! holding. Firing and resolving are events: logged, counted in `/metrics`,
//! listed on the dashboard and posted to a webhook.
//!
//! Rules:
//!
//! * `SIGNAL > LIMIT [for DURATION]` (or `<`), SIGNAL one of
//!   `p50`, `p99`, `p999` (end-to-end latency over the sampler's recent
//!   window, `monitor::RECENT_WINDOW`; LIMIT a
//!   duration, or `target` for the pipeline's latency target),
//!   `watermark_lag` (a duration), `input_rate`, `late_rate`,
//!   `skipped_rate`, `dead_letter_rate`, `backpressure_rate` (per second);
//! * `SIGNAL growing for DURATION`: every reading over DURATION at least the
//!   one before, and the last above the first;
//! * `watermark stalled for DURATION`: rows arrive but the watermark does
//!   not move;
//! * `checkpoint failing`: a checkpoint failed or timed out since the last
//!   one completed;
//! * `anomaly SIGNAL`: the stream-health detector. It keeps an
//!   exponentially weighted mean and deviation of the signal (`BAND_WEIGHT`
//!   a reading, after `BAND_WARMUP` readings) and flags a reading outside
//!   the mean ± `BAND_DEVIATIONS` deviations that is also `BAND_MIN_SHARE`
//!   of the mean away from it: a sudden drop or burst of input, a latency
//!   jump. The band widens and moves with every reading, so a lasting
//!   change stops being an anomaly and the alert resolves.

use std::collections::VecDeque;
use std::time::Duration;

/// What the sampler read, once a second; `None` where there is nothing yet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Seconds since the attempt started.
    pub t: f64,
    /// Recent end-to-end latency percentiles, seconds.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub watermark_lag: Option<f64>,
    /// The slowest source instance's watermark, ms since 1970.
    pub watermark_ms: Option<i64>,
    /// Per second, over the last interval.
    pub input_rate: Option<f64>,
    pub late_rate: Option<f64>,
    pub skipped_rate: Option<f64>,
    pub dead_letter_rate: Option<f64>,
    pub backpressure_rate: Option<f64>,
    /// Checkpoints failed or timed out, and completed, so far.
    pub checkpoints_bad: u64,
    pub checkpoints_done: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    P50,
    P99,
    P999,
    WatermarkLag,
    InputRate,
    LateRate,
    SkippedRate,
    DeadLetterRate,
    BackpressureRate,
}

impl Signal {
    fn parse(word: &str) -> Option<Signal> {
        Some(match word {
            "p50" => Signal::P50,
            "p99" => Signal::P99,
            "p999" | "p99.9" => Signal::P999,
            "watermark_lag" => Signal::WatermarkLag,
            "input_rate" => Signal::InputRate,
            "late_rate" => Signal::LateRate,
            "skipped_rate" => Signal::SkippedRate,
            "dead_letter_rate" => Signal::DeadLetterRate,
            "backpressure_rate" => Signal::BackpressureRate,
            _ => return None,
        })
    }

    /// Durations (latency, lag) or counts per second.
    fn is_duration(self) -> bool {
        matches!(
            self,
            Signal::P50 | Signal::P99 | Signal::P999 | Signal::WatermarkLag
        )
    }

    fn read(self, s: &Signals) -> Option<f64> {
        match self {
            Signal::P50 => s.p50,
            Signal::P99 => s.p99,
            Signal::P999 => s.p999,
            Signal::WatermarkLag => s.watermark_lag,
            Signal::InputRate => s.input_rate,
            Signal::LateRate => s.late_rate,
            Signal::SkippedRate => s.skipped_rate,
            Signal::DeadLetterRate => s.dead_letter_rate,
            Signal::BackpressureRate => s.backpressure_rate,
        }
    }

    fn show(self, value: f64) -> String {
        if self.is_duration() {
            format!("{:.3} ms", value * 1e3)
        } else {
            format!("{value:.1}/s")
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Above(Signal, f64),
    Below(Signal, f64),
    Growing(Signal),
    Stalled,
    CheckpointFailing,
    Anomaly(Signal),
}

/// One declared rule and where it stands.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub text: String,
    condition: Condition,
    hold: Duration,
    /// When the condition started to hold (attempt seconds).
    since: Option<f64>,
    firing: bool,
    /// Readings of the signal over `hold`, for `growing`.
    recent: VecDeque<(f64, f64)>,
    /// `stalled`: the watermark and when it last moved.
    last_move: Option<(i64, f64)>,
    /// `checkpoint failing`: counts at the last reading.
    checkpoints: (u64, u64),
    band: Band,
}

/// A firing or a resolving.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub rule: String,
    pub text: String,
    pub firing: bool,
    /// What was read when it happened.
    pub observed: String,
    /// Attempt seconds.
    pub t: f64,
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.trim().parse().ok().filter(|n: &f64| *n >= 0.0)?;
    let seconds = match unit.trim() {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

impl Rule {
    /// Parses `text`; `target` is the pipeline's latency target, if any.
    pub fn parse(name: &str, text: &str, target: Option<Duration>) -> Result<Rule, String> {
        let bad = |why: &str| format!("alert.{name} = '{text}': {why}");
        let lower = text.trim().to_lowercase();
        let (head, hold) = match lower.rsplit_once(" for ") {
            Some((head, d)) => (
                head.trim().to_string(),
                parse_duration(d).ok_or_else(|| bad(&format!("'{d}' is not a duration")))?,
            ),
            None => (lower.clone(), Duration::ZERO),
        };
        let words: Vec<&str> = head.split_whitespace().collect();
        let signal = |w: &str| {
            Signal::parse(w).ok_or_else(|| {
                bad(&format!(
                    "unknown signal '{w}' (p50, p99, p999, watermark_lag, input_rate, late_rate, \
                     skipped_rate, dead_letter_rate, backpressure_rate)"
                ))
            })
        };
        let condition = match words.as_slice() {
            ["checkpoint", "failing"] if hold == Duration::ZERO => Condition::CheckpointFailing,
            ["checkpoint", "failing"] => {
                return Err(bad(
                    "'checkpoint failing' fires at the failure: it takes no 'for'",
                ));
            }
            ["watermark", "stalled"] if hold > Duration::ZERO => Condition::Stalled,
            ["anomaly", s] => Condition::Anomaly(signal(s)?),
            [s, "growing"] if hold > Duration::ZERO => Condition::Growing(signal(s)?),
            [s, op @ (">" | "<"), limit] => {
                let signal = signal(s)?;
                let limit = if signal.is_duration() {
                    match *limit {
                        "target" => target
                            .ok_or_else(|| bad("no latency_target is set"))?
                            .as_secs_f64(),
                        d => parse_duration(d)
                            .ok_or_else(|| bad(&format!("'{d}' is not a duration")))?
                            .as_secs_f64(),
                    }
                } else {
                    limit
                        .trim_end_matches("/s")
                        .parse()
                        .map_err(|_| bad(&format!("'{limit}' is not a number per second")))?
                };
                if *op == ">" {
                    Condition::Above(signal, limit)
                } else {
                    Condition::Below(signal, limit)
                }
            }
            _ => {
                return Err(bad(
                    "expected 'SIGNAL > LIMIT [for DURATION]', 'SIGNAL growing for DURATION', \
                     'watermark stalled for DURATION', 'checkpoint failing' or 'anomaly SIGNAL'",
                ));
            }
        };
        Ok(Rule {
            name: name.to_string(),
            text: text.trim().to_string(),
            condition,
            hold,
            since: None,
            firing: false,
            recent: VecDeque::new(),
            last_move: None,
            checkpoints: (0, 0),
            band: Band::default(),
        })
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    /// Forgets what it saw (a restart begins new counters and clocks); a
    /// firing rule stays firing until the new readings resolve it.
    pub fn reset(&mut self) {
        self.since = None;
        self.recent.clear();
        self.last_move = None;
        self.checkpoints = (0, 0);
        self.band = Band::default();
    }

    /// Whether the condition holds at `s`, and what was read.
    fn holds(&mut self, s: &Signals) -> (bool, String) {
        match self.condition.clone() {
            Condition::Above(signal, limit) | Condition::Below(signal, limit) => {
                let above = matches!(self.condition, Condition::Above(..));
                match signal.read(s) {
                    Some(v) => (if above { v > limit } else { v < limit }, signal.show(v)),
                    None => (false, "no reading".into()),
                }
            }
            Condition::Growing(signal) => {
                let Some(v) = signal.read(s) else {
                    self.recent.clear();
                    return (false, "no reading".into());
                };
                self.recent.push_back((s.t, v));
                while self
                    .recent
                    .front()
                    .is_some_and(|(t, _)| s.t - t > self.hold.as_secs_f64())
                {
                    self.recent.pop_front();
                }
                let rising = self
                    .recent
                    .iter()
                    .zip(self.recent.iter().skip(1))
                    .all(|(a, b)| b.1 >= a.1);
                let up = self.recent.len() > 1
                    && self.recent.back().map(|b| b.1) > self.recent.front().map(|a| a.1);
                (rising && up, signal.show(v))
            }
            Condition::Stalled => {
                let (Some(wm), Some(rate)) = (s.watermark_ms, s.input_rate) else {
                    return (false, "no watermark".into());
                };
                let moved_at = match self.last_move {
                    Some((last, at)) if last == wm => at,
                    _ => s.t,
                };
                self.last_move = Some((wm, moved_at));
                // `since` counts from the last move, not from when it was seen.
                let still = s.t > moved_at && rate > 0.0;
                if still && self.since.is_none() {
                    self.since = Some(moved_at);
                }
                (
                    still,
                    format!("watermark unchanged for {:.0} s", s.t - moved_at),
                )
            }
            Condition::CheckpointFailing => {
                let (bad, done) = self.checkpoints;
                self.checkpoints = (s.checkpoints_bad, s.checkpoints_done);
                let failed_now = s.checkpoints_bad > bad;
                let recovered = s.checkpoints_done > done;
                let holds = failed_now || (self.firing && !recovered);
                (holds, format!("{} failed or timed out", s.checkpoints_bad))
            }
            Condition::Anomaly(signal) => match signal.read(s) {
                Some(v) => {
                    let out = self.band.outside(v);
                    (
                        out,
                        format!("{} (usual {})", signal.show(v), signal.show(self.band.mean)),
                    )
                }
                None => (false, "no reading".into()),
            },
        }
    }

    /// Evaluates the rule on a reading: an event when it fires or resolves.
    pub fn observe(&mut self, s: &Signals) -> Option<Event> {
        let (holds, observed) = self.holds(s);
        if !holds {
            self.since = None;
            return self.firing.then(|| {
                self.firing = false;
                self.event(false, observed, s.t)
            });
        }
        let since = *self.since.get_or_insert(s.t);
        if !self.firing && s.t - since >= self.hold.as_secs_f64() {
            self.firing = true;
            return Some(self.event(true, observed, s.t));
        }
        None
    }

    fn event(&self, firing: bool, observed: String, t: f64) -> Event {
        Event {
            rule: self.name.clone(),
            text: self.text.clone(),
            firing,
            observed,
            t,
        }
    }
}

/// The stream-health band: exponentially weighted mean and deviation.
#[derive(Debug, Clone, Default)]
struct Band {
    mean: f64,
    variance: f64,
    readings: u32,
}

const BAND_WEIGHT: f64 = 0.1;
const BAND_WARMUP: u32 = 10;
const BAND_DEVIATIONS: f64 = 4.0;
const BAND_MIN_SHARE: f64 = 0.2;

impl Band {
    /// Whether `v` is outside the band (after the warm-up); then adds it.
    fn outside(&mut self, v: f64) -> bool {
        let diff = v - self.mean;
        let outside = self.readings >= BAND_WARMUP
            && diff.abs() > BAND_DEVIATIONS * self.variance.sqrt()
            && diff.abs() > BAND_MIN_SHARE * self.mean.abs();
        if self.readings == 0 {
            self.mean = v;
        } else {
            self.mean += BAND_WEIGHT * diff;
            self.variance = (1.0 - BAND_WEIGHT) * (self.variance + BAND_WEIGHT * diff * diff);
        }
        self.readings += 1;
        outside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64) -> Signals {
        Signals {
            t,
            ..Signals::default()
        }
    }

    #[test]
    fn a_limit_must_hold_for_its_duration_then_resolves() {
        let mut r = Rule::parse("slow", "p99 > 5ms for 3s", None).unwrap();
        let p99 = |t: f64, ms: f64| Signals {
            p99: Some(ms / 1e3),
            ..at(t)
        };
        assert_eq!(r.observe(&p99(0.0, 9.0)), None);
        assert_eq!(r.observe(&p99(1.0, 9.0)), None);
        assert_eq!(r.observe(&p99(2.0, 4.0)), None, "dipped: starts over");
        assert_eq!(r.observe(&p99(3.0, 9.0)), None);
        assert_eq!(r.observe(&p99(5.0, 9.0)), None);
        let fired = r.observe(&p99(6.0, 9.0)).unwrap();
        assert!(fired.firing && fired.observed == "9.000 ms", "{fired:?}");
        assert_eq!(r.observe(&p99(7.0, 9.0)), None, "fires once");
        let resolved = r.observe(&p99(8.0, 1.0)).unwrap();
        assert!(!resolved.firing);
    }

    #[test]
    fn target_growing_stalled_and_checkpoints() {
        let target = Some(Duration::from_millis(2));
        let mut r = Rule::parse("t", "p50 > target", target).unwrap();
        assert!(
            r.observe(&Signals {
                p50: Some(0.003),
                ..at(0.0)
            })
            .unwrap()
            .firing
        );
        assert!(Rule::parse("t", "p50 > target", None).is_err());

        let mut g = Rule::parse("g", "watermark_lag growing for 3s", None).unwrap();
        let lag = |t: f64, v: f64| Signals {
            watermark_lag: Some(v),
            ..at(t)
        };
        let fired: Vec<bool> = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 4.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| g.observe(&lag(i as f64, v)).map(|e| e.firing))
            .map(|e| e.unwrap_or(false))
            .collect();
        assert_eq!(fired, [false, false, false, false, true, false, false]);
        assert!(!g.firing(), "resolved when the lag fell");

        let mut s = Rule::parse("s", "watermark stalled for 2s", None).unwrap();
        let wm = |t: f64, w: i64| Signals {
            watermark_ms: Some(w),
            input_rate: Some(10.0),
            ..at(t)
        };
        assert_eq!(s.observe(&wm(0.0, 100)), None);
        assert_eq!(s.observe(&wm(1.0, 100)), None);
        assert!(s.observe(&wm(2.0, 100)).unwrap().firing);
        assert!(!s.observe(&wm(3.0, 200)).unwrap().firing);

        let mut c = Rule::parse("c", "checkpoint failing", None).unwrap();
        let ck = |t: f64, bad: u64, done: u64| Signals {
            checkpoints_bad: bad,
            checkpoints_done: done,
            ..at(t)
        };
        assert_eq!(c.observe(&ck(0.0, 0, 1)), None);
        assert!(c.observe(&ck(1.0, 1, 1)).unwrap().firing);
        assert_eq!(c.observe(&ck(2.0, 1, 1)), None, "still failing");
        assert!(!c.observe(&ck(3.0, 1, 2)).unwrap().firing);
    }

    #[test]
    fn the_detector_flags_a_sudden_drop_of_input_and_adapts() {
        let mut r = Rule::parse("health", "anomaly input_rate", None).unwrap();
        // A steady rate with a little noise, then a tenth of it for good.
        let rate = |t: usize| {
            if t < 60 {
                10_000.0 * (1.0 + 0.02 * ((t * 7919 % 13) as f64 / 6.0 - 1.0))
            } else {
                1_000.0
            }
        };
        let mut events = Vec::new();
        for t in 0..120 {
            if let Some(e) = r.observe(&Signals {
                input_rate: Some(rate(t)),
                ..at(t as f64)
            }) {
                events.push((t, e.firing));
            }
        }
        assert_eq!(events.first(), Some(&(60, true)), "{events:?}");
        assert!(
            events.iter().any(|&(t, firing)| !firing && t > 60),
            "the band follows the new rate: {events:?}"
        );
        assert!(!r.firing());
    }

    #[test]
    fn bad_rules_say_why() {
        for (text, why) in [
            ("p99 > 5 for 3s", "'5' is not a duration"),
            ("p98 > 5ms", "unknown signal 'p98'"),
            ("input_rate > lots", "not a number per second"),
            ("p99 above 5ms", "expected"),
            ("p99 > 5ms for ever", "'ever' is not a duration"),
            ("checkpoint failing for 10s", "takes no 'for'"),
        ] {
            let err = Rule::parse("x", text, None).unwrap_err();
            assert!(
                err.contains(why) && err.contains("alert.x"),
                "{text}: {err}"
            );
        }
    }
}
