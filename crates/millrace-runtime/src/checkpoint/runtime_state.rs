//! The runtime's own per-instance state in a checkpoint, beside what
//! sources and operators hand over: a source instance's progress (the
//! largest event time it has seen, its watermark, whether it had declared
//! itself idle) and an operator instance's late-row counter. Written and
//! read only here.

use millrace_core::state::{scalar, scalars};
use millrace_core::{Error, Result, Snapshot};

const PROGRESS: &str = "progress";
const COUNTERS: &str = "counters";

/// Where a source instance's event time stood at a barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SourceProgress {
    pub max_event_time: i64,
    pub watermark: i64,
    /// The instance had told downstream it was idle (no data for its idle
    /// timeout); restored, it says so again at once instead of holding
    /// every downstream watermark back for another timeout.
    pub idle: bool,
}

impl SourceProgress {
    pub(crate) fn to_snapshot(self) -> Snapshot {
        Snapshot::none().with(
            PROGRESS,
            scalars(&[
                ("max_event_time", Some(self.max_event_time)),
                ("watermark", Some(self.watermark)),
                ("idle", Some(i64::from(self.idle))),
            ]),
        )
    }

    /// `None` for an empty snapshot (an instance with nothing recorded).
    pub(crate) fn from_snapshot(snapshot: &Snapshot) -> Result<Option<Self>> {
        if snapshot.is_empty() {
            return Ok(None);
        }
        let table = snapshot.table(PROGRESS)?;
        let value = |name| {
            scalar(table, name)?
                .ok_or_else(|| Error::Other(format!("source progress value '{name}' is null")))
        };
        Ok(Some(SourceProgress {
            max_event_time: value("max_event_time")?,
            watermark: value("watermark")?,
            idle: value("idle")? != 0,
        }))
    }

    /// The least of two: what a source instance that takes over from both
    /// may assume without declaring late a row either would have let in
    /// (idle only if both were).
    pub(crate) fn min(self, other: Self) -> Self {
        SourceProgress {
            max_event_time: self.max_event_time.min(other.max_event_time),
            watermark: self.watermark.min(other.watermark),
            idle: self.idle && other.idle,
        }
    }
}

/// An operator instance's counters; empty when there is nothing to keep.
pub(crate) fn counters(late_rows: u64) -> Snapshot {
    if late_rows == 0 {
        return Snapshot::none();
    }
    let late = i64::try_from(late_rows).unwrap_or(i64::MAX);
    Snapshot::none().with(COUNTERS, scalars(&[("late_rows", Some(late))]))
}

/// The late rows `counters` recorded (0 for an empty snapshot).
pub(crate) fn late_rows(snapshot: &Snapshot) -> Result<u64> {
    if snapshot.is_empty() {
        return Ok(0);
    }
    let late = scalar(snapshot.table(COUNTERS)?, "late_rows")?.unwrap_or(0);
    Ok(late.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_counters_read_back() {
        let p = SourceProgress {
            max_event_time: 9,
            watermark: 5,
            idle: true,
        };
        assert_eq!(
            SourceProgress::from_snapshot(&p.to_snapshot()).unwrap(),
            Some(p)
        );
        assert_eq!(
            SourceProgress::from_snapshot(&Snapshot::none()).unwrap(),
            None
        );
        let q = SourceProgress {
            max_event_time: 7,
            watermark: 6,
            idle: false,
        };
        assert_eq!(
            p.min(q),
            SourceProgress {
                max_event_time: 7,
                watermark: 5,
                idle: false,
            }
        );
        assert_eq!(late_rows(&counters(42)).unwrap(), 42);
        assert!(counters(0).is_empty());
        assert_eq!(late_rows(&Snapshot::none()).unwrap(), 0);
    }
}
