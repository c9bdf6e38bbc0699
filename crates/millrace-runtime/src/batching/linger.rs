//! The linger: how long a source pauses after a read that came back short
//! before it reads again (fixed policies never linger). The adaptive policy
//! sets it from two measured fractions of wall time: `u`, the source task
//! busy reading and processing, and `p`, the source held back by a full
//! downstream channel (its batches cost more downstream than there is time
//! for: tiny batches cost most where they are received).
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

use super::{BatchController, smooth};

/// Busy fraction above which the linger doubles.
pub(super) const HIGH: f64 = 0.8;
/// Busy fraction below which the linger halves (must stay below `HIGH / 2`).
pub(super) const LOW: f64 = 0.35;
/// Busy time counts as a reason to linger only if at least this share of
/// it is per-batch overhead (estimated from the interval's batches):
/// otherwise the cost is per row and bigger batches would not help.
pub(super) const MIN_OVERHEAD_SHARE: f64 = 0.2;
/// Backpressured fraction above which the linger doubles.
pub(super) const PRESSURE_HIGH: f64 = 0.1;
/// Backpressured fraction below which the linger may halve.
pub(super) const PRESSURE_LOW: f64 = 0.01;
/// The most of the latency target a row may wait for its batch to fill.
pub(super) const LINGER_SHARE: f64 = 0.1;
/// The smallest non-zero linger is the budget divided by this.
pub(crate) const LINGER_STEPS: i64 = 32;

impl BatchController {
    /// Smooths the interval's busy and backpressured fractions and arrival
    /// rate, remembers the largest linger seen backpressured, and forgets it
    /// once rows come alone at that linger. Returns the smoothed `(u, p,
    /// rate)`.
    pub(super) fn measure_load(&mut self, elapsed_ns: i64) -> (f64, f64, f64) {
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
        (u, p, rate)
    }

    /// The share of this interval's busy time that was per-batch overhead;
    /// `None` when its batch sizes did not vary enough to tell.
    fn overhead_share(&self) -> Option<f64> {
        self.fit.overhead_share()
    }

    /// Doubles or halves the linger on the smoothed load (module docs),
    /// within the budget; never below one step while rows arrive faster
    /// than one per step.
    pub(super) fn adjust_linger(&mut self, u: f64, p: f64, rate: f64) {
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
        // any channel fills (docs/benchmarks.md, "Source linger"). The floor
        // follows the arrival rate only, which the linger does not change,
        // so it cannot oscillate.
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
}
