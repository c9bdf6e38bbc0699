//! Watermark alignment: the instances of one source may not run ahead of
//! each other by more than a bound of event time.
//!
//! An operator that combines inputs keeps rows until the slowest input's
//! watermark passes them. A source instance whose worker has less to do runs
//! ahead of its siblings, and nothing stops it: the operators after it
//! buffer, they never refuse input. That state then grows without limit: a
//! window join keeps every window the fastest instance opened until the
//! slowest one's watermark closes it, so memory grows with the drift
//! (docs/benchmarks.md, "Source alignment"). With alignment an instance
//! more than `max_drift_ms` ahead of the slowest sibling waits before
//! reading more, as Flink's watermark alignment does.
//!
//! An instance that has nothing to read, has ended or has not produced yet
//! holds nobody back: it publishes `i64::MAX` until it produces rows.

use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;

/// The watermarks of the instances of one source.
#[derive(Debug)]
pub struct SourceAlignment {
    watermarks: Vec<AtomicI64>,
    max_drift_ms: i64,
}

impl SourceAlignment {
    pub fn new(instances: usize, max_drift_ms: i64) -> Self {
        Self {
            watermarks: (0..instances).map(|_| AtomicI64::new(i64::MAX)).collect(),
            max_drift_ms,
        }
    }

    /// Instance `instance` is at watermark `wm` (`i64::MAX`: holds nobody back).
    pub fn publish(&self, instance: usize, wm: i64) {
        self.watermarks[instance].store(wm, Relaxed);
    }

    /// Whether `instance`, at `wm`, is more than the drift ahead of the
    /// slowest other instance and should wait before reading more.
    pub fn is_ahead(&self, instance: usize, wm: i64) -> bool {
        let slowest = self
            .watermarks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != instance)
            .map(|(_, w)| w.load(Relaxed))
            .min()
            .unwrap_or(i64::MAX);
        wm > slowest.saturating_add(self.max_drift_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_waits_only_while_it_is_more_than_the_drift_ahead() {
        let a = SourceAlignment::new(3, 100);
        // Nobody has produced: nobody waits.
        assert!(!a.is_ahead(0, 5_000));
        a.publish(0, 5_000);
        a.publish(1, 4_950);
        a.publish(2, 4_900);
        assert!(!a.is_ahead(0, 5_000), "exactly the drift ahead of 2");
        assert!(a.is_ahead(0, 5_001));
        // The slowest one does not wait for anybody.
        assert!(!a.is_ahead(2, 4_900));
        // The slowest catches up: the leader may go on.
        a.publish(2, 4_990);
        assert!(!a.is_ahead(0, 5_050));
        // An instance with nothing to read (or ended) holds nobody back.
        a.publish(1, i64::MAX);
        a.publish(2, i64::MAX);
        assert!(!a.is_ahead(0, i64::MAX - 1));
    }

    #[test]
    fn a_single_instance_never_waits() {
        let a = SourceAlignment::new(1, 0);
        a.publish(0, 10);
        assert!(!a.is_ahead(0, i64::MAX));
    }
}
