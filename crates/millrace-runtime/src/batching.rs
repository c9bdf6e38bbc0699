//! The batch-size controller: picks how many rows a source reads per batch
//! from what it measures, so that under light load a row travels alone and
//! under heavy load batches grow just enough to keep up.
//!
//! The model: processing a batch of `s` rows costs about `o + c·s` (a fixed
//! per-batch overhead plus a per-row cost), so at arrival rate `r` the task
//! is busy a fraction `u(s) = r·(o/s + c)` of the time. Larger batches only
//! amortize `o`; they also make rows wait for their batch. The controller
//! keeps `u` inside a band:
//!
//! * `u > HIGH` (falling behind soon): double the size;
//! * `u < LOW` and the size is above the floor: halve it.
//!
//! `LOW < HIGH / 2`, so one step can never cross the band: doubling from a
//! size with `u > HIGH` gives `u > HIGH / 2 > LOW` (no halving back), and
//! halving from `u < LOW` gives `u < 2·LOW < HIGH` (no doubling back). After a
//! step change of the load the size moves monotonically and then holds: it
//! cannot oscillate. Utilization is smoothed (EWMA) over decision intervals
//! so a short burst does not move the size at all. The latency target sets
//! how often the controller decides (a few times per target).

use std::time::Duration;

/// Busy fraction above which the size doubles.
pub const HIGH: f64 = 0.8;
/// Busy fraction below which the size halves (must stay below `HIGH / 2`).
pub const LOW: f64 = 0.35;
/// Weight of the newest interval in the smoothed utilization.
const ALPHA: f64 = 0.3;

/// How a source sizes its batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchPolicy {
    /// Always ask for this many rows.
    Fixed(usize),
    /// Size from measured load, within `[1, max]`, aiming at `latency_target`.
    Adaptive {
        latency_target: Duration,
        max: usize,
    },
}

#[derive(Debug, Clone)]
pub struct BatchController {
    policy: BatchPolicy,
    size: usize,
    utilization: Option<f64>,
    /// Measurements of the current interval.
    rows: u64,
    busy_ns: u64,
    interval_start_ns: i64,
    interval_ns: i64,
}

impl BatchController {
    pub fn new(policy: BatchPolicy, now_ns: i64) -> Self {
        let size = match policy {
            BatchPolicy::Fixed(n) => n.max(1),
            BatchPolicy::Adaptive { .. } => 1,
        };
        let interval_ns = match policy {
            // Decide a few times per latency target, but not absurdly often.
            BatchPolicy::Adaptive { latency_target, .. } => {
                (latency_target.as_nanos() as i64).clamp(100_000, 10_000_000)
            }
            BatchPolicy::Fixed(_) => i64::MAX,
        };
        BatchController {
            policy,
            size,
            utilization: None,
            rows: 0,
            busy_ns: 0,
            interval_start_ns: now_ns,
            interval_ns,
        }
    }

    /// Rows to ask for next.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Smoothed busy fraction, once one interval has been measured.
    pub fn utilization(&self) -> Option<f64> {
        self.utilization
    }

    /// Records one batch: `rows` rows took `busy_ns` to read and process.
    /// Re-decides the size at the end of each interval.
    pub fn observe(&mut self, rows: usize, busy_ns: u64, now_ns: i64) {
        self.rows += rows as u64;
        self.busy_ns += busy_ns;
        let elapsed = now_ns - self.interval_start_ns;
        if elapsed >= self.interval_ns {
            self.decide(elapsed);
            self.rows = 0;
            self.busy_ns = 0;
            self.interval_start_ns = now_ns;
        }
    }

    fn decide(&mut self, elapsed_ns: i64) {
        let BatchPolicy::Adaptive { max, .. } = self.policy else {
            return;
        };
        let u_now = (self.busy_ns as f64 / elapsed_ns.max(1) as f64).min(1.0);
        let u = match self.utilization {
            Some(prev) => prev + ALPHA * (u_now - prev),
            None => u_now,
        };
        self.utilization = Some(u);
        if u > HIGH {
            self.size = (self.size * 2).min(max.max(1));
        } else if u < LOW {
            self.size = (self.size / 2).max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task whose batch of `s` rows costs `overhead + per_row·s` ns, fed at
    /// `rate` rows/s: runs the controller through `intervals` decision
    /// intervals and returns the size after each.
    fn simulate(
        c: &mut BatchController,
        rate: f64,
        overhead: f64,
        per_row: f64,
        intervals: usize,
        now: &mut i64,
    ) -> Vec<usize> {
        let mut sizes = Vec::new();
        // A fixed policy never decides; simulate it in 1 s steps.
        let interval = c.interval_ns.min(1_000_000_000);
        for _ in 0..intervals {
            let end = *now + interval;
            // Rows arriving in the interval, served in batches of the current size.
            let rows = (rate * interval as f64 / 1e9) as usize;
            let s = c.size();
            let batches = rows.div_ceil(s).max(1);
            let busy = batches as f64 * overhead + rows as f64 * per_row;
            for b in 0..batches {
                let n = s.min(rows - (b * s).min(rows));
                let t = *now + (b as i64 + 1) * interval / batches as i64;
                c.observe(n, (busy / batches as f64) as u64, t.min(end));
            }
            *now = end;
            sizes.push(c.size());
        }
        sizes
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

    #[test]
    fn light_load_keeps_rows_alone() {
        let mut c = adaptive(1);
        let mut now = 0;
        // 10k rows/s, 2 µs per batch + 0.1 µs per row: 2% busy.
        let sizes = simulate(&mut c, 10_000.0, 2_000.0, 100.0, 50, &mut now);
        assert!(sizes.iter().all(|s| *s == 1), "{sizes:?}");
    }

    #[test]
    fn heavy_load_grows_batches_until_the_task_keeps_up() {
        let mut c = adaptive(1);
        let mut now = 0;
        // 2M rows/s with 2 µs per batch: size 1 would need 4.2 s of work per
        // second; the size must grow until utilization is inside the band.
        let sizes = simulate(&mut c, 2_000_000.0, 2_000.0, 100.0, 100, &mut now);
        let last = *sizes.last().unwrap();
        let u = 2e6 * (2_000.0 / last as f64 + 100.0) / 1e9;
        assert!(u <= HIGH, "final size {last} leaves utilization {u}");
        assert!(last <= 8192);
        assert!(
            sizes.windows(2).all(|w| w[0] <= w[1]),
            "grew monotonically: {sizes:?}"
        );
    }

    #[test]
    fn sizes_stay_within_bounds() {
        for rate in [1.0, 1e3, 1e5, 1e7, 1e9] {
            let mut c = adaptive(5);
            let mut now = 0;
            for s in simulate(&mut c, rate, 5_000.0, 50.0, 60, &mut now) {
                assert!((1..=8192).contains(&s), "rate {rate}: size {s}");
            }
        }
    }

    #[test]
    fn a_step_change_moves_the_size_once_and_it_holds() {
        let mut c = adaptive(1);
        let mut now = 0;
        simulate(&mut c, 10_000.0, 7_000.0, 50.0, 20, &mut now);
        // Step up to 1M rows/s with 7 µs per batch: u(s) = 7/s + 0.05, so
        // size 8 is too busy (0.93) and 16 is comfortable (0.49): a band
        // with LOW above HIGH / 2 would halve back to 8 and flap.
        let up = simulate(&mut c, 1_000_000.0, 7_000.0, 50.0, 200, &mut now);
        assert!(
            up.windows(2).all(|w| w[0] <= w[1]),
            "oscillated after step up: {up:?}"
        );
        let settled = *up.last().unwrap();
        assert_eq!(
            up[up.len() - 50..]
                .iter()
                .filter(|s| **s != settled)
                .count(),
            0
        );
        // Step down: the size may only shrink, back towards rows alone.
        let down = simulate(&mut c, 10_000.0, 7_000.0, 50.0, 200, &mut now);
        assert!(
            down.windows(2).all(|w| w[0] >= w[1]),
            "oscillated after step down: {down:?}"
        );
        assert_eq!(*down.last().unwrap(), 1);
    }

    #[test]
    fn a_short_burst_does_not_move_the_size() {
        let mut c = adaptive(1);
        let mut now = 0;
        simulate(&mut c, 10_000.0, 2_000.0, 100.0, 20, &mut now);
        // One interval at a rate that keeps the task 90% busy at size 1:
        // the smoothed utilization stays under HIGH.
        let burst = simulate(&mut c, 400_000.0, 2_000.0, 100.0, 1, &mut now);
        assert_eq!(burst, vec![1]);
    }

    #[test]
    fn fixed_policy_never_changes() {
        let mut c = BatchController::new(BatchPolicy::Fixed(64), 0);
        let mut now = 0;
        for rate in [1e3, 1e7] {
            assert!(
                simulate(&mut c, rate, 2_000.0, 100.0, 10, &mut now)
                    .iter()
                    .all(|s| *s == 64)
            );
        }
    }
}
