//! Catching up: the read size rule (`read_size`) prices the wait of a row
//! for the rest of its batch, and a row that finds a backlog waits for the
//! backlog instead. When every read of an interval came back full (at least
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
//! per-message costs at the hops after the source (a window join pays
//! microseconds a message); a source without hops never catches up
//! (`without_hops`). By the rule alone, a source that cannot keep up reads
//! small batches and runs well below the throughput of a large fixed size
//! (docs/benchmarks.md, "Catching up when behind").

use super::{BatchController, BatchPolicy};

/// A source is behind when every read of an interval came back full, over
/// at least this many reads (fewer say little: one read after a stall).
const MIN_BEHIND_READS: f64 = 8.0;
/// A read size grown to catch up halves when the interval's reads took on
/// average less than this share of it: after the halving they still take
/// under half, far from all full, so it cannot double straight back.
const CATCH_UP_RELEASE: f64 = 0.25;

impl BatchController {
    /// Whether every read of the interval came back full, over at least
    /// `MIN_BEHIND_READS` reads: the input stayed ahead of the source for
    /// the whole interval.
    pub(super) fn behind(&self) -> bool {
        self.fit.batches() >= MIN_BEHIND_READS && self.rows > 0 && self.full_rows == self.rows
    }

    /// Lets reads grow past the latency rule while the source is behind
    /// (every read of the interval came back full), and shrinks them back
    /// once the input comes in amounts well under them. Called after
    /// `resize`, with the interval's counts.
    pub(super) fn catch_up(&mut self) {
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
