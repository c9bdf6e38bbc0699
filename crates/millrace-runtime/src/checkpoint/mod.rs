//! Checkpoints: the coordinator that starts them, what tasks hand it at a
//! barrier, the store that keeps them, and the restore of a run from one.
//!
//! An epoch starts when the coordinator raises [`Barriers::requested`]:
//! every source instance injects the barrier on its next step, tasks align
//! it, and each task, as the barrier leaves its last stage, sends one
//! [`Ack`] with the snapshots of its source position, operators and sink
//! tokens. The coordinator's own thread writes them (never a worker), then
//! the manifest, then commits the sinks (`store.rs`, `coordinator.rs`).
//!
//! A task that has ended acknowledges once more with its final state,
//! which stands for it in every later checkpoint: it will see no more
//! barriers. When every source ended on its own (bounded input), a last,
//! *finished* checkpoint covers the output written after the last barrier.
//! When the run is stopped, the sources end right after one last barrier
//! (`stop_at`) and the output after it is left uncommitted: a resumed run
//! writes it again, whole.

mod coordinator;
mod restore;
mod runtime_state;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use millrace_core::{Epoch, Snapshot};

pub use coordinator::CheckpointStats;
pub(crate) use coordinator::Coordinator;
pub(crate) use restore::Restored;
pub(crate) use runtime_state::{SourceProgress, counters, late_rows};
pub use store::{Checkpoint, CheckpointStore};
pub(crate) use store::{Owner, Role};

/// Where a run starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// The latest complete checkpoint in the directory, if there is one.
    Latest,
    /// Nothing: earlier checkpoints are ignored (and replaced as new ones
    /// are retained), sinks start their output over.
    Fresh,
    /// This checkpoint (its epoch); an error if it is not there.
    Checkpoint(Epoch),
}

impl StartFrom {
    /// Where a restart after a failed attempt starts: the latest checkpoint
    /// once the attempt took one of its own (the latest is then its own),
    /// else where the attempt started, so that a fresh run or one from an
    /// older checkpoint never falls back on checkpoints it chose not to use.
    pub(crate) fn after_failure(self, checkpointed: bool) -> StartFrom {
        if checkpointed {
            StartFrom::Latest
        } else {
            self
        }
    }
}

impl std::fmt::Display for StartFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFrom::Latest => write!(f, "the latest checkpoint"),
            StartFrom::Fresh => write!(f, "the start (fresh)"),
            StartFrom::Checkpoint(epoch) => write!(f, "checkpoint {epoch}"),
        }
    }
}

/// How a pipeline checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Time between the starts of two checkpoints.
    pub interval: Duration,
    /// Where this pipeline's checkpoints are kept.
    pub dir: PathBuf,
    /// Complete checkpoints kept; older ones are deleted.
    pub retain: usize,
    /// A checkpoint not complete this long after it started is aborted
    /// (counted; the pipeline goes on, the next one covers its output).
    pub timeout: Duration,
    /// Least time between the end of one checkpoint and the start of the
    /// next.
    pub min_pause: Duration,
    /// Checkpoints started and not yet complete, at most.
    pub max_in_flight: usize,
    pub start_from: StartFrom,
    /// Whether and when a run that fails is started again, from its latest
    /// checkpoint, in the same process.
    pub restart: RestartStrategy,
    /// Told, before each run starts, which checkpoint it continues (one
    /// line: "restored checkpoint 41 from …" or "no checkpoint …"), and
    /// why a run is started again.
    pub announce: Option<Announce>,
}

/// How a checkpointing pipeline recovers, in-process, from a failure that
/// running again may cure ([`millrace_core::Error::is_transient`]: a sink
/// that cannot write, a source that cannot read). Other failures (bad
/// records under `fail`, panics) and failures before the run started end
/// the pipeline at once.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Fail at the first error.
    None,
    /// Up to `attempts` restarts, `delay` apart.
    FixedDelay { attempts: u32, delay: Duration },
    /// Up to `attempts` restarts, the first after `delay`, each next one
    /// twice as long after, at most `max_delay`.
    Exponential {
        attempts: u32,
        delay: Duration,
        max_delay: Duration,
    },
}

impl RestartStrategy {
    /// The pause before restart `attempt` (1-based), or `None` when the
    /// strategy allows no more.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (attempt <= attempts).then_some(delay)
            }
            RestartStrategy::Exponential {
                attempts,
                delay,
                max_delay,
            } => (attempt <= attempts).then(|| {
                let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
                delay.saturating_mul(factor).min(max_delay)
            }),
        }
    }
}

/// Receives the line that says where a run starts from.
#[derive(Clone)]
pub struct Announce(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for Announce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Announce")
    }
}

impl std::ops::Deref for Announce {
    type Target = dyn Fn(&str) + Send + Sync;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl CheckpointConfig {
    /// Checkpoints every `interval` into `dir`, with the defaults.
    pub fn new(interval: Duration, dir: impl Into<PathBuf>) -> Self {
        CheckpointConfig {
            interval,
            dir: dir.into(),
            retain: 3,
            timeout: Duration::from_secs(60),
            min_pause: Duration::ZERO,
            max_in_flight: 1,
            start_from: StartFrom::Latest,
            restart: RestartStrategy::None,
            announce: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restart_keeps_the_start_until_the_attempt_checkpointed() {
        for start in [
            StartFrom::Latest,
            StartFrom::Fresh,
            StartFrom::Checkpoint(3),
        ] {
            assert_eq!(start.clone().after_failure(true), StartFrom::Latest);
            assert_eq!(start.clone().after_failure(false), start);
        }
    }

    use super::*;

    #[test]
    fn restart_delays_follow_the_strategy_and_stop_after_the_attempts() {
        let s = Duration::from_secs;
        assert_eq!(RestartStrategy::None.delay(1), None);
        let fixed = RestartStrategy::FixedDelay {
            attempts: 2,
            delay: s(1),
        };
        assert_eq!(
            (fixed.delay(1), fixed.delay(2), fixed.delay(3)),
            (Some(s(1)), Some(s(1)), None)
        );
        let exp = RestartStrategy::Exponential {
            attempts: 5,
            delay: s(1),
            max_delay: s(5),
        };
        let delays: Vec<_> = (1..=6).map(|a| exp.delay(a)).collect();
        assert_eq!(
            delays,
            vec![
                Some(s(1)),
                Some(s(2)),
                Some(s(4)),
                Some(s(5)),
                Some(s(5)),
                None
            ]
        );
    }
}

/// The barrier requests sources follow, shared by every source instance
/// and the coordinator.
#[derive(Debug, Default)]
pub(crate) struct Barriers {
    /// Every source instance injects each barrier up to this one.
    requested: AtomicU64,
    /// When not 0: the run is stopping, and sources end right after
    /// injecting this barrier.
    stop_at: AtomicU64,
}

impl Barriers {
    pub(crate) fn starting_after(epoch: Epoch) -> Self {
        Barriers {
            requested: AtomicU64::new(epoch),
            stop_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn requested(&self) -> Epoch {
        self.requested.load(Ordering::Acquire)
    }

    /// Asks for every barrier up to `epoch`.
    pub(crate) fn request(&self, epoch: Epoch) {
        self.requested.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Asks for barrier `epoch` as the last one: sources end after it.
    pub(crate) fn request_last(&self, epoch: Epoch) {
        self.request(epoch);
        self.stop_at.store(epoch, Ordering::Release);
    }

    /// The last barrier of a stopping run, once the coordinator chose it.
    pub(crate) fn stop_at(&self) -> Option<Epoch> {
        match self.stop_at.load(Ordering::Acquire) {
            0 => None,
            e => Some(e),
        }
    }
}

/// What one sink instance staged in one epoch.
#[derive(Debug)]
pub(crate) struct SinkToken {
    /// The sink's graph node.
    pub node: usize,
    pub instance: usize,
    pub epoch: Epoch,
    pub token: Snapshot,
    /// A sample of the staged rows' entered times (`task::EnteredSample`),
    /// each standing for `weight` rows: their latency to committed output
    /// is measured when the commit is done.
    pub entered: Vec<i64>,
    pub weight: u64,
}

/// One task's part of a checkpoint.
#[derive(Debug)]
pub(crate) struct Ack {
    /// The task's index among all task instances of the run.
    pub task: usize,
    /// The barrier it acknowledges; for a final ack, the last one it saw.
    pub epoch: Epoch,
    /// Sent when the task ended: this state stands for it from now on.
    pub finished: bool,
    pub snapshots: Vec<(Owner, Snapshot)>,
    pub tokens: Vec<SinkToken>,
}

/// What a task needs to take part in checkpoints.
#[derive(Clone)]
pub(crate) struct TaskCheckpoint {
    pub task: usize,
    pub acks: std::sync::mpsc::Sender<Ack>,
}
