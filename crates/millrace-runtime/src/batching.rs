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
//! Fixed policies never linger. The adaptive policy reads up to its read
//! size (below) and sets the linger from two measured fractions of wall
//! time: `u`, the source task busy reading and processing, and `p`, the
//! source held back by a full downstream channel (its batches cost more
//! downstream than there is time for: tiny batches cost most where they
//! are received).
//! With per-batch overhead `o`, per-row cost `c` and arrival rate `r`, a
//! linger `L` makes batches of about `max(1, r·L)` rows (at most the read
//! size) and `u(L) = r·c + o·r / max(1, r·L)`; downstream load has the
//! same shape. The controller:
//!
//! * `u > HIGH` or `p > PRESSURE_HIGH` (falling behind soon): double the
//!   linger (from 0 to `budget / 32`), up to the budget, `LINGER_SHARE` of
//!   the latency target — a row never waits longer than that for its batch.
//!   Busy time counts only when batching can relieve it: a least-squares
//!   fit of `busy = o + c·rows` over the interval's batches must put at
//!   least `MIN_OVERHEAD_SHARE` of it in `o` (a source busy generating or
//!   decoding rows gains nothing from waiting; when every batch had the
//!   same size the fit cannot tell, and busy time counts);
//! * `p < PRESSURE_LOW`, and `u < LOW` or the overhead share is below half
//!   of `MIN_OVERHEAD_SHARE` (the linger is not buying anything): halve it
//!   (below `budget / 32`, back to 0: rows alone);
//! * but while rows arrive faster than one per `budget / 32`, never below
//!   that: batches of the rows read since the worker last polled the
//!   source would otherwise go out every few microseconds, and their
//!   per-message costs in every downstream task queue up window results
//!   long before any channel is full.
//!
//! Halving the linger at most doubles the batches, so at most doubles the
//! overhead part of `u`; doubling it at most halves it. With `LOW < HIGH /
//! 2`, one step on `u` can therefore never cross the band: after a step
//! change of the load the linger moves monotonically and then holds — it
//! cannot oscillate. Pressure has no such bound: it appears only once the
//! downstream is saturated, and a linger that relieved it would, halved,
//! bring it straight back. What saturates a consumer is mostly the number
//! of batches, and with a linger `L` a source sends at most `1/L` batches
//! per second whatever the rate. So the controller remembers the largest
//! linger that was backpressured and does not halve down to it while rows
//! still arrive faster than one per that linger (`r·L ≥ 1`, when batching
//! is what keeps the batch rate down); slower input releases it. Both are
//! smoothed (EWMA) over decision intervals of several latency targets, so a
//! short burst, or a downstream operator that stalls for a moment to fire
//! its windows, does not move the linger; after a change the smoothing
//! starts afresh, so the new linger is judged by what it does rather than
//! by the old one's history.
//!
//! **Read size.** The adaptive policy also chooses how many rows to ask
//! for. Every row of a batch waits until the whole batch has been
//! processed, so a full read may cost the source's task at most
//! `READ_SHARE` of the latency target: the controller measures what a row
//! of a full read costs there and halves or doubles the size (between
//! `MIN_READ` and the policy's maximum) to fit. A row costs more after the
//! task has idled (caches gone cold) than at full speed: q0 at 10% load
//! read its backlog after a stall at 150-250 ns a row, 8192 rows taking ~2
//! ms, where at full speed a row costs ~60 ns; reading up to 8192 rows its
//! p99 was 5-12 ms in half the runs, at 256-512 rows 0.04-0.19 ms
//! (docs/benchmarks.md, profile table). q5 as fast as possible settled on
//! 1024 rows (60-80 ns a row), the best fixed size on the benchmark page
//! for q0, q5 and q7 alike.
//!
//! **Catching up.** That rule prices the wait of a row for the rest of its
//! batch, and a row that finds a backlog waits for the backlog instead.
//! When every read of an interval came back full (at least
//! `MIN_BEHIND_READS` of them), the input stayed ahead of the source for
//! the whole interval: smaller reads only made every row dearer (each
//! pays its share of the per-batch costs at every hop) and the backlog
//! longer. The read size then doubles, one step an interval up to the
//! maximum, above what the rule allows, and halves back once the reads of
//! an interval took on average under `CATCH_UP_RELEASE` of it, never below
//! the rule's size. After such a halving the reads still take under half
//! the size, far from all full, and while reads near capacity take more
//! than a quarter the size holds: it settles instead of oscillating. A
//! stall followed by the read of its backlog does not count: the reads
//! after it come back short within the interval. What bigger reads save is
//! per-message costs at the hops after the source (q7's window join pays
//! ~4 µs a message); a source without hops never catches up
//! (`without_hops`). q7 as fast as possible on a slow VM read 256-512 rows
//! by the rule alone (rows at 140-240 ns) and ran at 0.61-0.86× the best
//! fixed size (docs/benchmarks.md).
//!
//! **Behind.** For the same reason, while the source is behind (every
//! read full) the rule itself never halves the size, and it doubles it up
//! to the largest size within its slack (`ideal · SIZE_SLACK`, the bound
//! that halving keeps; alone it stops at `ideal / SIZE_SLACK`). A source
//! without hops gets this too: it never reads past what the rule
//! tolerates. q0 at 80% on a slow host read 1024 rows at ~100 ns a row,
//! where 512 and 1024 both lie within the slack; it halved to 512 in a slow
//! phase with every read full and then read fewer rows than arrived, behind
//! for 0.66 s. The first estimate is exempt: the size it meets is the
//! policy's maximum, not a choice of the rule.

use std::time::Duration;
/// Busy fraction above which the linger doubles.
pub const HIGH: f64 = 0.8;
/// Busy fraction below which the linger halves (must stay below `HIGH / 2`).
pub const LOW: f64 = 0.35;
/// Busy time counts as a reason to linger only if at least this share of
/// it is per-batch overhead (estimated from the interval's batches):
/// otherwise the cost is per row and bigger batches would not help.
pub const MIN_OVERHEAD_SHARE: f64 = 0.2;
/// Backpressured fraction above which the linger doubles.
pub const PRESSURE_HIGH: f64 = 0.1;
/// Backpressured fraction below which the linger may halve.
pub const PRESSURE_LOW: f64 = 0.01;
/// Weight of the newest interval in the smoothed fractions.
const ALPHA: f64 = 0.3;
/// The most of the latency target a row may wait for its batch to fill.
pub const LINGER_SHARE: f64 = 0.1;
/// What a full read's rows may cost the source's task, as a share of the
/// latency target: every row of a batch waits for the whole batch.
pub const READ_SHARE: f64 = 0.1;
/// The adaptive read size never goes below this (or the policy's maximum):
/// at ~2 µs per batch, smaller reads would spend more on overhead than
/// they save in waiting.
pub const MIN_READ: usize = 64;
/// A source is behind when every read of an interval came back full, over
/// at least this many reads (fewer say little: one read after a stall).
const MIN_BEHIND_READS: f64 = 8.0;
/// A read size grown to catch up halves when the interval's reads took on
/// average less than this share of it: after the halving they still take
/// under half, far from all full, so it cannot double straight back.
const CATCH_UP_RELEASE: f64 = 0.25;
/// Tolerance around the ideal read size before it is halved or doubled.
const SIZE_SLACK: f64 = 1.25;
/// The smallest non-zero linger is the budget divided by this.
pub(crate) const LINGER_STEPS: i64 = 32;
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
    /// rows waiting at its next read. Waiting would add its length to every
    /// row's latency (q0 at 10% load: p50 4.2-5.7 µs lingering, 3.0-4.1 µs
    /// without; docs/benchmarks.md, profile table). For the same reason its
    /// reads never grow past the latency rule to catch up: the rule already
    /// counts the task's share of a read's overhead, and a bigger read only
    /// makes every row of it wait longer (q0 at 80% load, five runs each:
    /// p99 0.05-2.3 ms catching up, 0.03-1.5 ms with fixed 1024-row reads).
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

    /// The share of this interval's busy time that was per-batch overhead;
    /// `None` when its batch sizes did not vary enough to tell.
    fn overhead_share(&self) -> Option<f64> {
        self.fit.overhead_share()
    }

    fn decide(&mut self, elapsed_ns: i64) {
        if matches!(self.policy, BatchPolicy::Fixed(_)) {
            return;
        }
        let wall = elapsed_ns.max(1) as f64;
        let u_now = (self.busy_ns as f64 / wall).min(1.0);
        let p_now = (self.pressure_ns as f64 / wall).min(1.0);
        let (u, p) = (
            smooth(self.smoothed.map(|s| s.0), u_now),
            smooth(self.smoothed.map(|s| s.1), p_now),
        );
        self.smoothed = Some((u, p));
        let rate = smooth(self.rate, self.rows as f64 / (wall / 1e9));
        self.rate = Some(rate);
        if p > PRESSURE_HIGH {
            self.pressured_at_ns = Some(
                self.pressured_at_ns
                    .map_or(self.linger_ns, |l| l.max(self.linger_ns)),
            );
        }
        // Slow enough that rows come alone at that linger: forget it.
        if let Some(at) = self.pressured_at_ns
            && rate * at as f64 / 1e9 < 1.0
        {
            self.pressured_at_ns = None;
        }
        self.resize();
        self.catch_up();
        if self.budget_ns == 0 {
            return; // nothing to wait for (`without_hops`)
        }
        let step = (self.budget_ns / LINGER_STEPS).max(1);
        let before = self.linger_ns;
        if let Some(now) = self.overhead_share() {
            self.share = Some(smooth(self.share, now));
        }
        // Unknown (every batch the same size) counts as paying: lingering
        // is bounded, falling behind is not.
        let overhead_pays = self.share.is_none_or(|s| s >= MIN_OVERHEAD_SHARE);
        let overhead_idle = self.share.is_some_and(|s| s < MIN_OVERHEAD_SHARE / 2.0);
        if (u > HIGH && overhead_pays) || p > PRESSURE_HIGH {
            self.linger_ns = (self.linger_ns * 2).max(step).min(self.budget_ns);
        } else if (u < LOW || overhead_idle)
            && p < PRESSURE_LOW
            && self
                .pressured_at_ns
                .is_none_or(|at| self.linger_ns / 2 > at)
        {
            self.linger_ns /= 2;
            if self.linger_ns < step {
                self.linger_ns = 0;
            }
        }
        // Rows faster than one per step: a step's linger costs a row at
        // most that (a few µs against a target of milliseconds), and it caps
        // this source's batches at one per step. Without it, each batch of
        // the few rows read since the worker last came round pays every
        // hop's per-message costs, and the consumers queue up well before
        // any channel fills (q7 at 10%: window results p50 ~2 ms at linger
        // 0, ~0.13 ms at one step). The floor follows the arrival rate only,
        // which the linger does not change, so it cannot oscillate.
        if rate * step as f64 >= 1e9 {
            self.linger_ns = self.linger_ns.max(step);
        }
        if self.linger_ns != before {
            // Judge the new linger by what it does, not by the history of
            // the old one (that lag would overshoot, then step back).
            self.smoothed = None;
            self.share = None;
        }
    }

    /// Sizes reads by what a row costs this task: halves or doubles
    /// `share_size` until a full read costs about `read_budget_ns`. With `ideal` the
    /// rows that cost exactly that, halving stops at the first size under
    /// `ideal · SIZE_SLACK`, so above `ideal · SIZE_SLACK / 2`: too large to
    /// double (that needs `2 · size · SIZE_SLACK <= ideal`). Doubling stops
    /// at a size at most `ideal / SIZE_SLACK`: too small to halve. So one
    /// decision moves the size one way, and noise within the band does not
    /// move it at all. Across decisions the measured cost of a row includes
    /// the per-batch overhead shared by fewer rows after a halving (more
    /// after a doubling), which pushes the same way: a step may be followed
    /// by another in its direction, not undone. Which reads come back full
    /// also matters (reads after a stall are colder); the smoothing spreads
    /// that over intervals. While the source is behind (module docs,
    /// "Behind") it only grows, up to the largest size within
    /// `ideal · SIZE_SLACK`, which no later decision halves or doubles:
    /// still one way per decision, and held after.
    fn resize(&mut self) {
        // Only full reads say what a full read costs, and the size governs
        // nothing else. Extrapolating from short reads is guesswork: a slope
        // fitted between reads of two and three rows swung from 0.3 to 0.8
        // µs a row between intervals (q5 at 10% load), and a row costs more
        // the longer the task idled before it (caches gone cold).
        if self.full_rows == 0 {
            return;
        }
        // The first estimate may shrink the policy's maximum even when behind.
        let behind = self.behind() && self.per_row_ns.is_some();
        let now = self.full_busy_ns as f64 / self.full_rows as f64;
        let per_row = smooth(self.per_row_ns, now);
        self.per_row_ns = Some(per_row);
        let BatchPolicy::Adaptive { max, .. } = self.policy else {
            return; // `decide` never runs for a fixed policy
        };
        let max = max.max(1);
        let ideal = self.read_budget_ns as f64 / per_row;
        let floor = MIN_READ.min(max);
        let size = &mut self.share_size;
        // Behind, smaller reads only add per-read costs to the backlog.
        if !behind {
            while *size > floor && *size as f64 > ideal * SIZE_SLACK {
                *size = (*size / 2).max(floor);
            }
        }
        let grow_to = if behind {
            ideal * SIZE_SLACK
        } else {
            ideal / SIZE_SLACK
        };
        while *size < max && size.saturating_mul(2) as f64 <= grow_to {
            *size = size.saturating_mul(2).min(max);
        }
    }

    /// Whether every read of the interval came back full, over at least
    /// `MIN_BEHIND_READS` reads: the input stayed ahead of the source for
    /// the whole interval.
    fn behind(&self) -> bool {
        self.fit.batches() >= MIN_BEHIND_READS && self.rows > 0 && self.full_rows == self.rows
    }

    /// Lets reads grow past the latency rule while the source is behind
    /// (every read of the interval came back full), and shrinks them back
    /// once the input comes in amounts well under them. Called after
    /// `resize`, with the interval's counts.
    fn catch_up(&mut self) {
        let BatchPolicy::Adaptive { max, .. } = self.policy else {
            return;
        };
        if !self.catches_up {
            return;
        }
        let size = self.size();
        let reads = self.fit.batches();
        if self.behind() {
            self.catch_up_size = size.saturating_mul(2).min(max.max(1));
        } else if self.catch_up_size > 0
            && (self.rows as f64) < reads * size as f64 * CATCH_UP_RELEASE
        {
            self.catch_up_size = size / 2;
        }
        if self.catch_up_size <= self.share_size {
            self.catch_up_size = 0;
        }
    }
}

/// The EWMA of `prev` with the newest value `now` (just `now` at first).
pub(crate) fn smooth(prev: Option<f64>, now: f64) -> f64 {
    prev.map_or(now, |prev| prev + ALPHA * (now - prev))
}

/// A least-squares fit of `cost = o + c·rows` over batches: what a batch
/// costs whatever its size (`o`, what bigger batches save) and what each
/// row adds (`c`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CostFit {
    /// Count, Σrows, Σcost, Σrows², Σrows·cost.
    n: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl CostFit {
    pub(crate) fn add(&mut self, rows: f64, cost: f64) {
        self.add_sums(1.0, rows, cost, rows * rows, rows * cost);
    }

    /// Adds sums kept elsewhere (count, Σrows, Σcost, Σrows², Σrows·cost).
    pub(crate) fn add_sums(&mut self, n: f64, sx: f64, sy: f64, sxx: f64, sxy: f64) {
        self.n += n;
        self.sx += sx;
        self.sy += sy;
        self.sxx += sxx;
        self.sxy += sxy;
    }

    pub(crate) fn merge(&mut self, other: &CostFit) {
        self.add_sums(other.n, other.sx, other.sy, other.sxx, other.sxy);
    }

    pub(crate) fn batches(&self) -> f64 {
        self.n
    }

    /// The summed cost of every batch.
    pub(crate) fn total(&self) -> f64 {
        self.sy
    }

    /// `(o, c)`, the cost per batch (never below 0) and per row; `None`
    /// with fewer than 8 batches, no cost, or sizes too alike to tell.
    pub(crate) fn per_batch_and_row(&self) -> Option<(f64, f64)> {
        let (n, sx, sy, sxx, sxy) = (self.n, self.sx, self.sy, self.sxx, self.sxy);
        let spread = n * sxx - sx * sx;
        if n < 8.0 || sy <= 0.0 || spread <= f64::EPSILON * n * sxx {
            return None;
        }
        let per_row = (n * sxy - sx * sy) / spread;
        let per_batch = (sy - per_row * sx) / n;
        Some((per_batch.max(0.0), per_row))
    }

    /// The share of the total cost that was per-batch overhead.
    pub(crate) fn overhead_share(&self) -> Option<f64> {
        self.per_batch_and_row()
            .map(|(o, _)| (o * self.n / self.sy).min(1.0))
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
        simulate_pipeline(c, rate, (overhead, per_row), (0.0, 0.0), intervals, now)
    }

    /// As `simulate`, with a downstream task whose batches cost
    /// `downstream.0 + downstream.1·s` ns: when its work exceeds the
    /// interval, the source is held back (backpressured) for the excess.
    fn simulate_pipeline(
        c: &mut BatchController,
        rate: f64,
        source: (f64, f64),
        downstream: (f64, f64),
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
            let held =
                (batches as f64 * downstream.0 + rows * downstream.1 - interval as f64).max(0.0);
            for b in 1..=batches {
                // Real batches vary around the mean (arrivals are uneven):
                // alternately a third smaller and larger.
                let n = if b % 2 == 0 {
                    per_batch * 4.0 / 3.0
                } else {
                    per_batch * 2.0 / 3.0
                };
                let n = n.round().max(1.0);
                c.observe(
                    n as usize,
                    (source.0 + n * source.1) as u64,
                    (held / batches as f64) as u64,
                    *now + b * interval / batches,
                );
            }
            *now += interval;
            lingers.push(c.linger_ns());
        }
        lingers
    }

    fn adaptive(target_ms: u64) -> BatchController {
        adaptive_up_to(target_ms, 8192)
    }

    fn adaptive_up_to(target_ms: u64, max: usize) -> BatchController {
        BatchController::new(
            BatchPolicy::Adaptive {
                latency_target: Duration::from_millis(target_ms),
                max,
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
    fn rows_faster_than_one_per_step_wait_one_step() {
        let step = adaptive(1).budget_ns / LINGER_STEPS;
        // Barely busy, no pressure: nothing else asks for a linger. At
        // 800k rows/s (2.5 rows per step) the source lingers one step; at
        // 100k rows/s (0.3 rows per step) waiting would gather nothing.
        for (rate, want) in [(800_000.0, step), (100_000.0, 0)] {
            let mut c = adaptive(1);
            let mut now = 0;
            let lingers = simulate(&mut c, rate, 300.0, 20.0, 50, &mut now);
            assert!(
                lingers[5..].iter().all(|l| *l == want),
                "{rate}: {lingers:?}"
            );
        }
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
    fn a_source_without_hops_never_lingers() {
        // The load under which a source with hops lingers (the test above),
        // and one fast enough for the rate floor: reads take what is there.
        for (rate, overhead) in [(1_000_000.0, 2_000.0), (800_000.0, 300.0)] {
            let mut c = adaptive(1).without_hops();
            let mut now = 0;
            let lingers = simulate(&mut c, rate, overhead, 100.0, 50, &mut now);
            assert!(lingers.iter().all(|l| *l == 0), "{rate}: {lingers:?}");
            assert_eq!(c.size(), 8192);
            assert!(c.utilization().is_some(), "it still measures its load");
        }
    }

    #[test]
    fn a_source_busy_with_its_rows_does_not_linger() {
        let mut c = adaptive(1);
        let mut now = 0;
        // 90% busy, but 0.2 µs per batch against 0.9 µs per row: waiting for
        // bigger batches would save almost nothing. Rows alone all have the
        // same size, so the first step is a probe; once batch sizes vary the
        // fit shows the cost is per row and the linger grows no further.
        let lingers = simulate(&mut c, 1_000_000.0, 200.0, 900.0, 50, &mut now);
        let first_step = c.budget_ns / LINGER_STEPS;
        assert!(lingers.iter().all(|l| *l <= first_step), "{lingers:?}");
    }

    #[test]
    fn a_backpressured_source_lingers_until_downstream_keeps_up() {
        let mut c = adaptive(1);
        let mut now = 0;
        // The source itself is barely busy (0.3 µs per batch), but each
        // batch costs its consumer 5 µs: at 500k rows/s rows alone need 2.5 s
        // of downstream work per second.
        let lingers = simulate_pipeline(
            &mut c,
            500_000.0,
            (300.0, 20.0),
            (5_000.0, 100.0),
            100,
            &mut now,
        );
        assert!(
            lingers.windows(2).all(|w| w[0] <= w[1]),
            "grew monotonically: {lingers:?}"
        );
        let last = *lingers.last().unwrap();
        // Downstream at the final linger: batches of 500k·L rows.
        let per_batch = (500_000.0 * last as f64 / 1e9).max(1.0);
        let downstream = 500_000.0 * (5_000.0 / per_batch + 100.0) / 1e9;
        assert!(downstream <= 1.0, "downstream still saturated at {last} ns");
        assert!(
            last < c.budget_ns,
            "needed only part of the budget: {lingers:?}"
        );
        // At 10k rows/s rows come alone even at that linger: back to none.
        let down = simulate_pipeline(
            &mut c,
            10_000.0,
            (300.0, 20.0),
            (5_000.0, 100.0),
            100,
            &mut now,
        );
        assert!(down.windows(2).all(|w| w[0] >= w[1]), "{down:?}");
        assert_eq!(*down.last().unwrap(), 0);
    }

    #[test]
    fn the_linger_never_exceeds_its_share_of_the_target() {
        for rate in [1.0, 1e3, 1e5, 1e7, 1e8] {
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

    /// A source reading a backlog that it clears once an interval: the
    /// first read of each interval takes half the size, every other one
    /// comes back full, `size()` rows costing `overhead + per_row(i)·rows`
    /// ns in interval `i`, reads back to back. Returns the read size after
    /// each interval.
    fn full_reads(
        c: &mut BatchController,
        overhead: f64,
        per_row: impl Fn(usize) -> f64,
        intervals: usize,
        now: &mut i64,
    ) -> Vec<usize> {
        reads(c, overhead, per_row, intervals, now, true)
    }

    /// A source that is behind its input: every read comes back full.
    fn behind_reads(
        c: &mut BatchController,
        overhead: f64,
        per_row: f64,
        intervals: usize,
        now: &mut i64,
    ) -> Vec<usize> {
        reads(c, overhead, |_| per_row, intervals, now, false)
    }

    fn reads(
        c: &mut BatchController,
        overhead: f64,
        per_row: impl Fn(usize) -> f64,
        intervals: usize,
        now: &mut i64,
        clears_once: bool,
    ) -> Vec<usize> {
        let mut sizes = Vec::new();
        for i in 0..intervals {
            // A fixed policy never decides; simulate it in 10 ms steps.
            let end = *now + c.interval_ns.min(10_000_000);
            let mut first = clears_once;
            while *now < end {
                let rows = if std::mem::take(&mut first) {
                    c.size() / 2
                } else {
                    c.size()
                };
                let busy = (overhead + per_row(i) * rows as f64) as i64;
                *now += busy.max(1);
                c.observe(rows, busy as u64, 0, *now);
            }
            sizes.push(c.size());
        }
        sizes
    }

    /// The read size's rule: at most `SIZE_SLACK` over the rows a budget
    /// buys at what a row of a full read costs (its share of the read's
    /// overhead included), and too small to double.
    fn settled(size: usize, overhead: f64, per_row: f64, budget_ns: i64) -> bool {
        let ideal = budget_ns as f64 / (per_row + overhead / size as f64);
        size as f64 <= ideal * SIZE_SLACK && (size * 2) as f64 * SIZE_SLACK > ideal
    }

    #[test]
    fn full_reads_shrink_until_one_fits_its_share_of_the_target() {
        for (target_ms, per_row) in [(1, 200.0), (1, 60.0), (10, 200.0)] {
            let mut c = adaptive(target_ms);
            let mut now = 0;
            let sizes = full_reads(&mut c, 2_000.0, |_| per_row, 20, &mut now);
            let size = *sizes.last().unwrap();
            assert!(
                settled(size, 2_000.0, per_row, c.read_budget_ns),
                "{target_ms} ms at {per_row} ns a row: {sizes:?}"
            );
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        }
        // 1 ms, 200 ns a row: 100 µs buys 500 rows, and the first decision
        // halves 8192 four times to get there.
        let mut c = adaptive(1);
        let mut now = 0;
        let sizes = full_reads(&mut c, 2_000.0, |_| 200.0, 20, &mut now);
        assert!(sizes.iter().all(|s| *s == 512), "{sizes:?}");
    }

    #[test]
    fn one_dear_interval_does_not_move_the_read_size() {
        let mut c = adaptive(1);
        let mut now = 0;
        // 100 ns a row: 1024 rows. Then one interval at 150 ns (a cold
        // moment), which alone would ask for 512, and back.
        let settled = full_reads(&mut c, 2_000.0, |_| 100.0, 20, &mut now);
        assert_eq!(settled[19], 1024, "{settled:?}");
        let dear = full_reads(
            &mut c,
            2_000.0,
            |i| if i == 0 { 150.0 } else { 100.0 },
            20,
            &mut now,
        );
        assert!(dear.iter().all(|s| *s == 1024), "{dear:?}");
    }

    #[test]
    fn a_source_without_hops_sizes_its_reads_too() {
        let mut c = adaptive(1).without_hops();
        let mut now = 0;
        let sizes = full_reads(&mut c, 2_000.0, |_| 200.0, 5, &mut now);
        assert_eq!(sizes, vec![512; 5]);
        assert_eq!(c.linger_ns(), 0);
    }

    #[test]
    fn the_read_size_moves_one_way_on_a_step_change_and_holds_through_noise() {
        let mut c = adaptive(1);
        let mut now = 0;
        // Rows at 400 ns (±20%, alternating): the size settles and holds.
        let noisy = |base: f64| {
            move |i: usize| {
                if i.is_multiple_of(2) {
                    base * 0.8
                } else {
                    base * 1.2
                }
            }
        };
        let slow = full_reads(&mut c, 2_000.0, noisy(400.0), 60, &mut now);
        assert!(slow[20..].iter().all(|s| *s == slow[20]), "{slow:?}");
        // Rows 8× cheaper: the size only grows, then holds.
        let fast = full_reads(&mut c, 2_000.0, noisy(50.0), 60, &mut now);
        assert!(fast.windows(2).all(|w| w[0] <= w[1]), "{fast:?}");
        assert!(fast[59] > slow[59], "{fast:?}");
        assert!(fast[30..].iter().all(|s| *s == fast[59]), "{fast:?}");
        assert!(
            settled(fast[59], 2_000.0, 50.0, c.read_budget_ns),
            "{fast:?}"
        );
        // And back: it only shrinks.
        let back = full_reads(&mut c, 2_000.0, noisy(400.0), 60, &mut now);
        assert!(back.windows(2).all(|w| w[0] >= w[1]), "{back:?}");
        assert_eq!(back[59], slow[59]);
    }

    #[test]
    fn the_read_size_stays_within_its_bounds() {
        for per_row in [0.01, 1.0, 100.0, 10_000.0, 1e6] {
            let mut c = adaptive(1);
            let mut now = 0;
            for size in full_reads(&mut c, 2_000.0, |_| per_row, 30, &mut now) {
                assert!((MIN_READ..=8192).contains(&size), "{per_row}: {size}");
            }
        }
        // A maximum under the floor is the size, whatever a row costs.
        let mut c = adaptive_up_to(1, 16);
        let mut now = 0;
        let sizes = full_reads(&mut c, 2_000.0, |_| 1e6, 10, &mut now);
        assert!(sizes.iter().all(|s| *s == 16), "{sizes:?}");
    }

    #[test]
    fn short_reads_leave_the_read_size_alone() {
        // Rows alone at 5 µs each (the cost of a row read after an idle
        // moment): no read comes back full, so nothing says what a full
        // read costs, and the size changes nothing anyway.
        let mut c = adaptive(1);
        let mut now = 0;
        simulate(&mut c, 50_000.0, 2_000.0, 5_000.0, 30, &mut now);
        assert_eq!(c.size(), 8192);
    }

    /// A source fed `rate` rows/s that reads back to back whatever has
    /// arrived, up to `size()` rows, each read costing `overhead +
    /// per_row·rows` ns. Returns the read size after each interval.
    fn queue_reads(
        c: &mut BatchController,
        rate: f64,
        overhead: f64,
        per_row: f64,
        intervals: usize,
        now: &mut i64,
    ) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut arrived = 0.0;
        let mut read = 0.0;
        let mut last = *now;
        for _ in 0..intervals {
            let end = *now + c.interval_ns;
            while *now < end {
                arrived += rate * (*now - last) as f64 / 1e9;
                last = *now;
                let rows = (arrived - read).floor().min(c.size() as f64);
                if rows < 1.0 {
                    *now += (1e9 / rate).ceil() as i64; // wait for a row
                    continue;
                }
                read += rows;
                let busy = (overhead + per_row * rows) as i64;
                *now += busy;
                c.observe(rows as usize, busy as u64, 0, *now);
            }
            sizes.push(c.size());
        }
        sizes
    }

    #[test]
    fn a_source_behind_its_input_reads_more_until_it_keeps_up() {
        // 200 ns a row: the latency rule alone allows 512 rows a read, but
        // every read comes back full: the reads double, up to the maximum.
        let mut c = adaptive(1);
        let mut now = 0;
        let sizes = behind_reads(&mut c, 2_000.0, 200.0, 8, &mut now);
        assert_eq!(sizes, vec![512, 1024, 2048, 4096, 8192, 8192, 8192, 8192]);
        assert_eq!(c.share_size, 512);
        // Input that comes in amounts under a quarter of the read (a
        // source that caught up): they halve back to the latency rule's
        // size, and hold there.
        let back = queue_reads(&mut c, 1e6, 2_000.0, 200.0, 10, &mut now);
        assert_eq!(back[..4], [4096, 2048, 1024, 512], "{back:?}");
        assert!(back[4..].iter().all(|s| *s == 512), "{back:?}");
    }

    #[test]
    fn a_source_without_hops_does_not_catch_up() {
        let mut c = adaptive(1).without_hops();
        let mut now = 0;
        let sizes = behind_reads(&mut c, 2_000.0, 200.0, 5, &mut now);
        assert_eq!(sizes, vec![512; 5]);
    }

    /// A source without hops settled by full reads at 100 ns a row: 1024
    /// rows (1024 and 512 both lie within the rule's slack at that cost).
    fn fused_at_1024() -> (BatchController, i64) {
        let mut c = adaptive(1).without_hops();
        let mut now = 0;
        let settled = full_reads(&mut c, 2_000.0, |_| 100.0, 10, &mut now);
        assert_eq!(settled[9], 1024, "{settled:?}");
        (c, now)
    }

    #[test]
    fn a_source_behind_its_input_never_reads_less() {
        // A slow phase at 131 ns a row with every read full: alone, the
        // rule would halve to 512 (1024 rows now cost over 1.25 × its 100
        // µs), which adds per-read costs to the backlog and saves no row
        // any wait. The size holds...
        let (mut c, mut now) = fused_at_1024();
        let slow = behind_reads(&mut c, 2_000.0, 131.0, 10, &mut now);
        assert!(slow.iter().all(|s| *s == 1024), "{slow:?}");
        // ... until the source keeps up at that cost: then it halves.
        let kept_up = full_reads(&mut c, 2_000.0, |_| 131.0, 10, &mut now);
        assert!(kept_up.iter().all(|s| *s == 512), "{kept_up:?}");
    }

    #[test]
    fn a_source_behind_from_its_start_still_sizes_its_reads() {
        // As fast as possible every read is full from the first on, and the
        // size it starts from is the policy's maximum, not the rule's
        // choice: the first estimate sizes the reads (8192 rows at 100 ns
        // cost 8 × the 100 µs).
        let mut c = adaptive(1).without_hops();
        let mut now = 0;
        let sizes = behind_reads(&mut c, 2_000.0, 100.0, 5, &mut now);
        assert_eq!(sizes, vec![1024; 5]);
    }

    #[test]
    fn a_source_behind_its_input_reads_the_most_the_rule_tolerates() {
        // One dear interval (a stall inside the full reads) takes 1024 rows
        // to 512, and reads that keep up at 100 ns a row leave it there.
        let (mut c, mut now) = fused_at_1024();
        let dear = full_reads(&mut c, 2_000.0, |_| 250.0, 1, &mut now);
        assert_eq!(dear, vec![512]);
        let kept_up = full_reads(&mut c, 2_000.0, |_| 100.0, 10, &mut now);
        assert!(kept_up.iter().all(|s| *s == 512), "{kept_up:?}");
        // Behind at that cost, it reads 1024 rows, not past the rule
        // (2048 rows would cost 2 × its 100 µs), and keeps them after.
        let behind = behind_reads(&mut c, 2_000.0, 100.0, 10, &mut now);
        assert!(behind.iter().all(|s| *s == 1024), "{behind:?}");
        let after = full_reads(&mut c, 2_000.0, |_| 100.0, 10, &mut now);
        assert!(after.iter().all(|s| *s == 1024), "{after:?}");
    }

    #[test]
    fn catching_up_settles_near_capacity_without_oscillating() {
        // 20 µs a read, 150 ns a row: the latency rule allows 512 rows
        // (~190 ns a row with the read's share), at most 5.3 M rows/s; 1024
        // rows a read keep up with 5.6 M rows/s.
        let primed = || {
            let mut c = adaptive(1);
            let mut now = 0;
            full_reads(&mut c, 20_000.0, |_| 150.0, 3, &mut now);
            assert_eq!(c.size(), 512);
            (c, now)
        };
        let (mut c, mut now) = primed();
        let sizes = queue_reads(&mut c, 5.6e6, 20_000.0, 150.0, 60, &mut now);
        assert_eq!(c.share_size, 512, "{sizes:?}");
        assert!(sizes[10..].iter().all(|s| *s == sizes[10]), "{sizes:?}");
        assert!(sizes[10] >= 1024, "{sizes:?}");
        // Just under 512's capacity it never grows past the latency rule.
        let (mut c, mut now) = primed();
        let sizes = queue_reads(&mut c, 4.5e6, 20_000.0, 150.0, 60, &mut now);
        assert!(sizes.iter().all(|s| *s == 512), "{sizes:?}");
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
