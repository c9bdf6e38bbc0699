//! The read size: how many rows the adaptive policy asks a source's
//! reader for. Every row of a batch waits until the whole batch has been
//! processed, so a full read may cost the source's task at most
//! `READ_SHARE` of the latency target: the controller measures what a row
//! of a full read costs there and halves or doubles the size (between
//! `MIN_READ` and the policy's maximum) to fit. The cost is what a row
//! costs now, not at full speed: reads after an idle stretch cost several
//! times a warm read (caches gone cold), and a full read of the backlog a
//! stall leaves would hold the worker, and every row of the read, for
//! milliseconds (docs/benchmarks.md, "Read size follows the cost of a
//! row").
//!
//! **Behind.** While the source is behind (every read full; `catch_up`),
//! smaller reads only add per-read costs to its backlog, so the rule itself
//! never halves the size, and it doubles it up to the largest size within
//! its slack (`ideal · SIZE_SLACK`, the bound that halving keeps; alone it
//! stops at `ideal / SIZE_SLACK`). A source without hops gets this too: it
//! never reads past what the rule tolerates, and never halves while behind
//! either, since a halving in a slow phase with every read full would leave
//! it reading fewer rows than arrive (docs/benchmarks.md, "Catching up when
//! behind"). The first estimate is exempt: the size it meets is the
//! policy's maximum, not a choice of the rule.

use super::{BatchController, BatchPolicy, smooth};

/// What a full read's rows may cost the source's task, as a share of the
/// latency target: every row of a batch waits for the whole batch.
pub(super) const READ_SHARE: f64 = 0.1;
/// The adaptive read size never goes below this (or the policy's maximum):
/// with a per-batch overhead of microseconds, smaller reads would spend
/// more on overhead than they save in waiting.
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
        // fitted between reads of a few rows is mostly noise, and a row
        // costs more the longer the task idled before it (caches gone cold).
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
