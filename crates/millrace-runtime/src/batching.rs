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
//! Fixed policies never linger. The adaptive policy reads up to its maximum
//! and sets the linger from the measured busy fraction `u`: of the source's
//! task (time reading and processing, plus time held back by a full
//! downstream channel, over wall time), or of the busiest worker thread if
//! that is higher — tiny batches cost most where they are received. With per-batch overhead `o`,
//! per-row cost `c` and arrival rate `r`, a linger `L` makes batches of
//! about `max(1, r·L)` rows and `u(L) = r·c + o·r / max(1, r·L)`. The
//! controller keeps `u` in a band:
//!
//! * `u > HIGH` (falling behind soon): double the linger (from 0 to
//!   `budget / 32`), up to the budget, `LINGER_SHARE` of the latency target
//!   — a row never waits longer than that for its batch;
//! * `u < LOW`: halve it (below `budget / 32`, back to 0: rows alone).
//!
//! Halving the linger at most doubles the batches, so at most doubles the
//! overhead part of `u`; doubling it at most halves it. With `LOW < HIGH /
//! 2`, one step can therefore never cross the band: after a step change of
//! the load the linger moves monotonically and then holds — it cannot
//! oscillate. Utilization is smoothed (EWMA) over decision intervals of
//! several latency targets, so a short burst, or a downstream operator
//! that stalls for a moment to fire its windows, does not move it; after a
//! change the smoothing starts afresh, so the new linger is judged by what
//! it does rather than by the old one's history.

use std::sync::Arc;
use std::time::Duration;

use crate::worker::WorkerLoad;

/// Busy fraction above which the linger doubles.
pub const HIGH: f64 = 0.8;
/// Busy fraction below which the linger halves (must stay below `HIGH / 2`).
pub const LOW: f64 = 0.35;
/// Weight of the newest interval in the smoothed utilization.
const ALPHA: f64 = 0.3;
/// The most of the latency target a row may wait for its batch to fill.
pub const LINGER_SHARE: f64 = 0.1;
/// The smallest non-zero linger is the budget divided by this.
const LINGER_STEPS: i64 = 32;
/// Decision intervals last this many latency targets, within bounds.
const INTERVAL_TARGETS: i64 = 10;
const MIN_INTERVAL_NS: i64 = 2_000_000;
const MAX_INTERVAL_NS: i64 = 100_000_000;

/// How a source sizes its batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchPolicy {
    /// Always ask for this many rows; never linger.
    Fixed(usize),
    /// Ask for up to `max` rows; linger as load requires, never more than
    /// `LINGER_SHARE` of `latency_target`.
    Adaptive {
        latency_target: Duration,
        max: usize,
    },
}

#[derive(Debug, Clone)]
pub struct BatchController {
    policy: BatchPolicy,
    size: usize,
    linger_ns: i64,
    /// Longest linger allowed (0 for fixed policies).
    budget_ns: i64,
    utilization: Option<f64>,
    /// The workers' load and its reading at the start of the interval.
    load: Option<(Arc<WorkerLoad>, Vec<u64>)>,
    /// Measurements of the current interval.
    busy_ns: u64,
    interval_start_ns: i64,
    interval_ns: i64,
}

impl BatchController {
    pub fn new(policy: BatchPolicy, now_ns: i64) -> Self {
        let (size, budget_ns, interval_ns) = match policy {
            BatchPolicy::Fixed(n) => (n.max(1), 0, i64::MAX),
            BatchPolicy::Adaptive {
                latency_target,
                max,
            } => {
                let target = i64::try_from(latency_target.as_nanos()).unwrap_or(i64::MAX);
                (
                    max.max(1),
                    (target as f64 * LINGER_SHARE) as i64,
                    target
                        .saturating_mul(INTERVAL_TARGETS)
                        .clamp(MIN_INTERVAL_NS, MAX_INTERVAL_NS),
                )
            }
        };
        BatchController {
            policy,
            size,
            linger_ns: 0,
            budget_ns,
            utilization: None,
            load: None,
            busy_ns: 0,
            interval_start_ns: now_ns,
            interval_ns,
        }
    }

    /// Also counts the busiest worker's load as this source's: tiny batches
    /// cost most where they are received, on other tasks and threads.
    pub fn with_worker_load(mut self, load: Arc<WorkerLoad>) -> Self {
        let start = load.busy_ns();
        self.load = Some((load, start));
        self
    }

    /// Rows to ask for next.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How long to pause after a short read before reading again, in ns
    /// (0: read again right away).
    pub fn linger_ns(&self) -> i64 {
        self.linger_ns
    }

    /// Smoothed busy fraction, once one interval has been measured.
    pub fn utilization(&self) -> Option<f64> {
        self.utilization
    }

    /// Records one batch that took `busy_ns` to read and process (plus any
    /// time its output was held back). Re-decides at the end of each
    /// interval.
    pub fn observe(&mut self, busy_ns: u64, now_ns: i64) {
        self.busy_ns += busy_ns;
        let elapsed = now_ns - self.interval_start_ns;
        if elapsed >= self.interval_ns {
            self.decide(elapsed);
            self.busy_ns = 0;
            self.interval_start_ns = now_ns;
        }
    }

    fn decide(&mut self, elapsed_ns: i64) {
        if matches!(self.policy, BatchPolicy::Fixed(_)) {
            return;
        }
        let mut busy = self.busy_ns;
        if let Some((load, last)) = &mut self.load {
            let now = load.busy_ns();
            let busiest = now
                .iter()
                .zip(last.iter())
                .map(|(n, l)| n.saturating_sub(*l))
                .max();
            busy = busy.max(busiest.unwrap_or(0));
            *last = now;
        }
        let u_now = (busy as f64 / elapsed_ns.max(1) as f64).min(1.0);
        let u = match self.utilization {
            Some(prev) => prev + ALPHA * (u_now - prev),
            None => u_now,
        };
        self.utilization = Some(u);
        let step = (self.budget_ns / LINGER_STEPS).max(1);
        let before = self.linger_ns;
        if u > HIGH {
            self.linger_ns = (self.linger_ns * 2).max(step).min(self.budget_ns);
        } else if u < LOW {
            self.linger_ns /= 2;
            if self.linger_ns < step {
                self.linger_ns = 0;
            }
        }
        if self.linger_ns != before {
            // Judge the new linger by what it does, not by the history of
            // the old one (that lag would overshoot, then step back).
            self.utilization = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source fed `rate` rows/s whose batches cost `overhead + per_row·s`
    /// ns: with linger `L` a batch holds the rows that arrive meanwhile,
    /// `max(1, rate·L)`. Runs `intervals` decision intervals and returns the
    /// linger after each.
    fn simulate(
        c: &mut BatchController,
        rate: f64,
        overhead: f64,
        per_row: f64,
        intervals: usize,
        now: &mut i64,
    ) -> Vec<i64> {
        let mut lingers = Vec::new();
        // A fixed policy never decides; simulate it in 10 ms steps.
        let interval = c.interval_ns.min(10_000_000);
        for _ in 0..intervals {
            let rows = (rate * interval as f64 / 1e9).max(1.0);
            let per_batch = (rate * c.linger_ns() as f64 / 1e9).clamp(1.0, c.size() as f64);
            let batches = (rows / per_batch).ceil().max(1.0) as i64;
            let busy = batches as f64 * overhead + rows * per_row;
            for b in 1..=batches {
                c.observe(
                    (busy / batches as f64) as u64,
                    *now + b * interval / batches,
                );
            }
            *now += interval;
            lingers.push(c.linger_ns());
        }
        lingers
    }

    fn adaptive(target_ms: u64) -> BatchController {
        BatchController::new(
            BatchPolicy::Adaptive {
                latency_target: Duration::from_millis(target_ms),
                max: 8192,
            },
            0,
        )
    }

    /// Busy fraction of the simulated source at linger `l`.
    fn utilization(rate: f64, overhead: f64, per_row: f64, l: i64) -> f64 {
        let per_batch = (rate * l as f64 / 1e9).max(1.0);
        rate * (overhead / per_batch + per_row) / 1e9
    }

    #[test]
    fn light_load_keeps_rows_alone() {
        let mut c = adaptive(1);
        let mut now = 0;
        // 10k rows/s, 2 µs per batch + 0.1 µs per row: 2% busy.
        let lingers = simulate(&mut c, 10_000.0, 2_000.0, 100.0, 50, &mut now);
        assert!(lingers.iter().all(|l| *l == 0), "{lingers:?}");
        assert_eq!(c.size(), 8192, "reads take whatever is there");
    }

    #[test]
    fn heavy_load_lingers_until_the_task_keeps_up() {
        let mut c = adaptive(1);
        let mut now = 0;
        // 1M rows/s with 2 µs per batch: rows alone would need 2.1 s of work
        // per second; the linger must grow until utilization is in the band.
        let lingers = simulate(&mut c, 1_000_000.0, 2_000.0, 100.0, 100, &mut now);
        let last = *lingers.last().unwrap();
        let u = utilization(1e6, 2_000.0, 100.0, last);
        assert!(u <= HIGH, "final linger {last} ns leaves utilization {u}");
        assert!(
            lingers.windows(2).all(|w| w[0] <= w[1]),
            "grew monotonically: {lingers:?}"
        );
        // Only as much as needed: 3 rows per batch suffice here, far below
        // the 100 µs budget.
        assert!(last <= 4 * c.budget_ns / LINGER_STEPS, "{lingers:?}");
    }

    #[test]
    fn the_linger_never_exceeds_its_share_of_the_target() {
        for rate in [1.0, 1e3, 1e5, 1e7, 1e9] {
            for target_ms in [1, 10] {
                let mut c = adaptive(target_ms);
                let mut now = 0;
                for l in simulate(&mut c, rate, 5_000.0, 50.0, 60, &mut now) {
                    assert!(
                        (0..=target_ms as i64 * 100_000).contains(&l),
                        "rate {rate}, target {target_ms} ms: linger {l}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_step_change_moves_the_linger_once_and_it_holds() {
        let mut c = adaptive(1);
        let mut now = 0;
        simulate(&mut c, 10_000.0, 7_000.0, 50.0, 20, &mut now);
        assert_eq!(c.linger_ns(), 0);
        // Step up to 1M rows/s with 7 µs per batch.
        let up = simulate(&mut c, 1_000_000.0, 7_000.0, 50.0, 200, &mut now);
        assert!(
            up.windows(2).all(|w| w[0] <= w[1]),
            "oscillated after step up: {up:?}"
        );
        let settled = *up.last().unwrap();
        assert!(settled > 0);
        assert!(up[up.len() - 50..].iter().all(|l| *l == settled), "{up:?}");
        // Step down: the linger may only shrink, back to rows alone.
        let down = simulate(&mut c, 10_000.0, 7_000.0, 50.0, 200, &mut now);
        assert!(
            down.windows(2).all(|w| w[0] >= w[1]),
            "oscillated after step down: {down:?}"
        );
        assert_eq!(*down.last().unwrap(), 0);
    }

    #[test]
    fn a_short_burst_does_not_move_the_linger() {
        let mut c = adaptive(1);
        let mut now = 0;
        simulate(&mut c, 10_000.0, 2_000.0, 100.0, 20, &mut now);
        // One interval at a rate that keeps the task 90% busy with rows
        // alone: the smoothed utilization stays under HIGH.
        let burst = simulate(&mut c, 430_000.0, 2_000.0, 100.0, 1, &mut now);
        assert_eq!(burst, vec![0]);
    }

    #[test]
    fn fixed_policy_never_changes() {
        let mut c = BatchController::new(BatchPolicy::Fixed(64), 0);
        let mut now = 0;
        for rate in [1e3, 1e7] {
            assert!(
                simulate(&mut c, rate, 2_000.0, 100.0, 10, &mut now)
                    .iter()
                    .all(|l| *l == 0)
            );
            assert_eq!(c.size(), 64);
        }
    }
}
