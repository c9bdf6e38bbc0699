//! The read size: how many rows the adaptive policy asks a source's
//! reader for. Every row of a batch waits until the whole batch has been
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
//! **Behind.** While the source is behind (every read full; `catch_up`),
//! smaller reads only add per-read costs to its backlog, so the rule itself
//! never halves the size, and it doubles it up to the largest size within
//! its slack (`ideal · SIZE_SLACK`, the bound
//! that halving keeps; alone it stops at `ideal / SIZE_SLACK`). A source
//! without hops gets this too: it never reads past what the rule
//! tolerates. q0 at 80% on a slow host read 1024 rows at ~100 ns a row,
//! where 512 and 1024 both lie within the slack; it halved to 512 in a slow
//! phase with every read full and then read fewer rows than arrived, behind
//! for 0.66 s. The first estimate is exempt: the size it meets is the
//! policy's maximum, not a choice of the rule.

use super::{BatchController, BatchPolicy, smooth};

/// What a full read's rows may cost the source's task, as a share of the
/// latency target: every row of a batch waits for the whole batch.
pub(super) const READ_SHARE: f64 = 0.1;
/// The adaptive read size never goes below this (or the policy's maximum):
/// at ~2 µs per batch, smaller reads would spend more on overhead than
/// they save in waiting.
pub(super) const MIN_READ: usize = 64;
/// Tolerance around the ideal read size before it is halved or doubled.
pub(super) const SIZE_SLACK: f64 = 1.25;

impl BatchController {
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
    pub(super) fn resize(&mut self) {
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
}
