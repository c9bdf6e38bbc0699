//! The batch controller: how many rows a source reads at most, and how long
//! it lets a batch fill, so that under light load a row travels alone and
//! under heavy load batches grow just enough to keep up.
//!
//! A source asks its reader for up to `size()` rows and takes whatever is
//! there: after a stall the backlog goes out in a few large batches, and a
//! source that keeps up sends rows as they come. That alone leaves a
//! moderately loaded pipeline with a stream of tiny batches, each paying the
//! per-message costs of every hop (channel hand-offs, wake-ups, watermarks).
//! So a read that comes back short (the input had fewer rows than asked) may
//! be followed by a pause, the **linger**, before the next read: a batch
//! then closes on the size or on the linger deadline, whichever comes first.
//!
//! Fixed policies read their size and never linger. The adaptive policy
//! runs two control loops, both re-deciding at the end of each decision
//! interval (several latency targets long):
//!
//! * `linger`: how long to pause after a short read, from the measured
//!   busy and backpressured fractions of the source's task;
//! * `read_size`: how many rows to ask for, so that a full read costs at
//!   most its share of the latency target; `catch_up` lets reads grow past
//!   that while the source is behind its input.
//!
//! `cost` fits a batch's cost to its rows, to tell per-batch overhead
//! (what bigger batches save) from per-row cost; the exchanges' merging
//! (`coalesce`) uses it too.

mod catch_up;
mod cost;
mod linger;
mod read_size;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub(crate) use cost::CostFit;
use linger::LINGER_SHARE;
pub(crate) use linger::LINGER_STEPS;
use read_size::READ_SHARE;

/// Weight of the newest interval in the smoothed fractions.
const ALPHA: f64 = 0.3;
/// Decision intervals last this many latency targets, within bounds.
pub(crate) const INTERVAL_TARGETS: i64 = 10;
pub(crate) const MIN_INTERVAL_NS: i64 = 2_000_000;
pub(crate) const MAX_INTERVAL_NS: i64 = 100_000_000;

/// How a source sizes its batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchPolicy {
    /// Always ask for this many rows; never linger.
    Fixed(usize),
    /// Ask for up to `max` rows, fewer when a full read would cost more
    /// than `READ_SHARE` of `latency_target` (unless the source is behind
    /// its input); linger as load requires, never more than `LINGER_SHARE`
    /// of it.
    Adaptive {
        latency_target: Duration,
        max: usize,
    },
}

/// Decides one source instance's read size and linger from what its reads
/// cost and how long it was held back (module docs).
#[derive(Debug, Clone)]
pub struct BatchController {
    policy: BatchPolicy,
    /// Rows a full read may hold by the latency rule (`READ_SHARE`; the
    /// size itself for a fixed policy).
    share_size: usize,
    /// Rows a read may hold while the source is behind its input, when
    /// above `share_size` (0: not catching up).
    catch_up_size: usize,
    /// Whether reads may grow past `share_size` (not `without_hops`).
    catches_up: bool,
    /// What one read's rows may cost this task, in ns (0 for fixed policies).
    read_budget_ns: i64,
    /// Smoothed cost of a row here, ns, once measured.
    per_row_ns: Option<f64>,
    linger_ns: i64,
    /// Longest linger allowed (0 for fixed policies).
    budget_ns: i64,
    /// Smoothed (busy, backpressured) fractions.
    smoothed: Option<(f64, f64)>,
    /// Smoothed share of busy time that is per-batch overhead, once known.
    share: Option<f64>,
    /// Smoothed arrival rate, rows per second.
    rate: Option<f64>,
    /// The largest linger seen backpressured, while it still matters.
    pressured_at_ns: Option<i64>,
    /// Measurements of the current interval.
    rows: u64,
    busy_ns: u64,
    pressure_ns: u64,
    /// Rows and busy time of the interval's full reads (`size` rows).
    full_rows: u64,
    full_busy_ns: u64,
    /// The interval's batches, for fitting `busy = o + c·rows`.
    fit: CostFit,
    interval_start_ns: i64,
    interval_ns: i64,
}

impl BatchController {
    pub fn new(policy: BatchPolicy, now_ns: i64) -> Self {
        let (size, budget_ns, read_budget_ns, interval_ns) = match policy {
            BatchPolicy::Fixed(n) => (n.max(1), 0, 0, i64::MAX),
            BatchPolicy::Adaptive {
                latency_target,
                max,
            } => {
                let target = i64::try_from(latency_target.as_nanos()).unwrap_or(i64::MAX);
                (
                    max.max(1),
                    (target as f64 * LINGER_SHARE) as i64,
                    (target as f64 * READ_SHARE) as i64,
                    target
                        .saturating_mul(INTERVAL_TARGETS)
                        .clamp(MIN_INTERVAL_NS, MAX_INTERVAL_NS),
                )
            }
        };
        BatchController {
            policy,
            share_size: size,
            catch_up_size: 0,
            catches_up: true,
            read_budget_ns,
            per_row_ns: None,
            linger_ns: 0,
            budget_ns,
            smoothed: None,
            share: None,
            rate: None,
            pressured_at_ns: None,
            rows: 0,
            busy_ns: 0,
            pressure_ns: 0,
            full_rows: 0,
            full_busy_ns: 0,
            fit: CostFit::default(),
            interval_start_ns: now_ns,
            interval_ns,
        }
    }

    /// The controller of a source whose rows never leave its task (every
    /// consumer is fused into it; no channel, no exchange): it reads what is
    /// there, up to its read size, and never lingers. A linger exists to
    /// spare the hops after a source the per-message costs of tiny batches;
    /// without hops it could only spare the task its own per-batch cost, and
    /// that regulates itself: a task too busy for small batches finds more
    /// rows waiting at its next read. Waiting would only add its length to
    /// every row's latency (docs/benchmarks.md, "Source linger"). For the
    /// same reason its reads never grow past the latency rule to catch up:
    /// the rule already counts the task's share of a read's overhead, and a
    /// bigger read only makes every row of it wait longer
    /// (docs/benchmarks.md, "Catching up when behind").
    /// Call it on a new controller: the linger is 0 until a decision moves
    /// it, and none will.
    pub fn without_hops(mut self) -> Self {
        self.budget_ns = 0;
        self.catches_up = false;
        self
    }

    /// Rows to ask for next: the latency rule's size, or more while
    /// catching up.
    pub fn size(&self) -> usize {
        self.share_size.max(self.catch_up_size)
    }

    /// How long to pause after a short read before reading again, in ns
    /// (0: read again right away).
    pub fn linger_ns(&self) -> i64 {
        self.linger_ns
    }

    /// Smoothed busy fraction, once one interval has been measured.
    #[cfg(test)]
    pub fn utilization(&self) -> Option<f64> {
        self.smoothed.map(|(u, _)| u)
    }

    /// Records one batch of `rows` that took `busy_ns` to read and process,
    /// after its output was held back `pressure_ns` by a full channel.
    /// Re-decides at the end of each interval.
    pub fn observe(&mut self, rows: usize, busy_ns: u64, pressure_ns: u64, now_ns: i64) {
        self.rows += rows as u64;
        self.busy_ns += busy_ns;
        self.fit.add(rows as f64, busy_ns as f64);
        self.pressure_ns += pressure_ns;
        // A read cut short by a barrier (`barrier_every_rows`) is not full:
        // while barriers cap every read below the size, the size does not
        // matter.
        if rows >= self.size() {
            self.full_rows += rows as u64;
            self.full_busy_ns += busy_ns;
        }
        let elapsed = now_ns - self.interval_start_ns;
        if elapsed >= self.interval_ns {
            self.decide(elapsed);
            self.fit = CostFit::default();
            self.rows = 0;
            self.busy_ns = 0;
            self.pressure_ns = 0;
            self.full_rows = 0;
            self.full_busy_ns = 0;
            self.interval_start_ns = now_ns;
        }
    }

    fn decide(&mut self, elapsed_ns: i64) {
        if matches!(self.policy, BatchPolicy::Fixed(_)) {
            return;
        }
        let (u, p, rate) = self.measure_load(elapsed_ns);
        self.resize();
        self.catch_up();
        self.adjust_linger(u, p, rate);
    }
}

/// The EWMA of `prev` with the newest value `now` (just `now` at first).
pub(crate) fn smooth(prev: Option<f64>, now: f64) -> f64 {
    prev.map_or(now, |prev| prev + ALPHA * (now - prev))
}
