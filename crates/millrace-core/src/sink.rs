//! What a sink is to the runtime, and the in-memory sink tests read from.
//!
//! The runtime's sink task records every row's end-to-end latency from the
//! entered column, then strips that column and hands the batch to the
//! [`SinkWriter`]; writers only see user columns.
//!
//! # Two-phase commit
//!
//! Output is exactly-once when a sink takes part in checkpoints (the state
//! contract, `crate::state`). Such a sink has a [`SinkCommitter`]
//! ([`SinkFactory::committer`]) whose writers stage what they write:
//!
//! 1. at the barrier of epoch `e` each writer
//!    [`pre_commit`](SinkWriter::pre_commit)s what it wrote since the last
//!    barrier: ends it (closes the part file, say) and returns a *token*
//!    naming it. This runs on the worker with the barrier waiting, so it
//!    must be cheap: no fsync, no network round trip;
//! 2. once every task has acknowledged `e`, the checkpoint's own thread
//!    calls [`SinkCommitter::prepare`] with every writer's tokens: make
//!    them durable (fsync) and decide what the commit will do. Its answer
//!    is stored in the checkpoint;
//! 3. once the checkpoint is durable (its manifest written), the same
//!    thread calls [`SinkCommitter::commit`] with that answer: make the
//!    output visible.
//!
//! After a crash, recovery calls [`SinkCommitter::recover`] with the
//! latest complete checkpoint's prepared commit before any writer is
//! created: the crash may have come before, during or after the first
//! commit, so **a commit may be replayed and must then be a no-op**, and
//! what was staged after that checkpoint is discarded (a restored run
//! writes it again). A checkpoint that does not complete (timed out)
//! commits nothing; its tokens are carried into the next one, so staged
//! output is never lost, only made visible later.
//!
//! A sink without a committer is at-least-once: rows are visible once
//! written, and a recovery may write some of them again.

use std::sync::{Arc, Mutex};

use crate::{Result, Snapshot};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

pub trait SinkFactory: Send + Sync {
    /// Short name shown in plans, summaries and errors.
    fn name(&self) -> String;
    /// The writer of instance `instance` of `parallelism`; `schema` is the
    /// user schema of the batches it will receive. Its rows are visible
    /// once written (at-least-once).
    fn create(
        &self,
        instance: usize,
        parallelism: usize,
        schema: SchemaRef,
    ) -> Result<Box<dyn SinkWriter>>;
    /// A cap on parallelism (the console sink writes from one instance).
    fn max_parallelism(&self) -> Option<usize> {
        None
    }

    /// This sink tuned for a pipeline whose latency target is `target`
    /// (e.g. how long a producer lets rows wait to share a request);
    /// `None` (the default): nothing to tune.
    fn for_latency_target(&self, target: std::time::Duration) -> Option<Arc<dyn SinkFactory>> {
        let _ = target;
        None
    }

    /// The exactly-once form of this sink (see the module doc), used when
    /// the pipeline checkpoints; `None` (the default): at-least-once only.
    fn committer(&self) -> Option<Arc<dyn SinkCommitter>> {
        None
    }
}

pub trait SinkWriter: Send {
    /// Writes one batch (user columns only). Returning an error stops the pipeline.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Flushes at end of input. A staging writer ends its last epoch with
    /// the `pre_commit` the runtime calls after it.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// Ends epoch `epoch`: what was written since the last barrier is
    /// complete and staged, not yet visible; returns the token that names
    /// it for [`SinkCommitter::prepare`]. Called at the barrier, on the
    /// worker: no fsync, no waiting. A writer that does not stage (an
    /// at-least-once sink) returns an empty snapshot.
    fn pre_commit(&mut self, epoch: crate::Epoch) -> Result<Snapshot> {
        let _ = epoch;
        Ok(Snapshot::none())
    }
}

/// The commit side of an exactly-once sink: creates the writers that
/// stage, and makes staged epochs visible. Runs on the checkpoint's own
/// thread, never on a worker, so it may block on I/O.
pub trait SinkCommitter: Send + Sync {
    /// A staging writer of instance `instance` of `parallelism`.
    fn create(
        &self,
        instance: usize,
        parallelism: usize,
        schema: SchemaRef,
    ) -> Result<Box<dyn SinkWriter>>;

    /// Makes the staged output the `tokens` name durable (every writer's,
    /// in instance order; epochs at or before `epoch`, oldest first) and
    /// returns what [`SinkCommitter::commit`] needs to make it visible;
    /// that value is stored in the checkpoint of `epoch`. Nothing becomes
    /// visible yet.
    fn prepare(&self, epoch: crate::Epoch, tokens: &[Snapshot]) -> Result<Snapshot>;

    /// Makes `prepared` visible. May be called again with the same value
    /// (recovery replays the latest checkpoint's commit) and must then do
    /// nothing more.
    fn commit(&self, epoch: crate::Epoch, prepared: &Snapshot) -> Result<()>;

    /// Before a run starts: replays the commit of the checkpoint being
    /// restored (`None`: a fresh start) and discards everything staged but
    /// not covered by it, so the run starts from exactly the visible
    /// output that checkpoint promised.
    fn recover(&self, restored: Option<(crate::Epoch, &Snapshot)>) -> Result<()>;
}

/// Keeps every batch in memory, for tests and examples. Not for unbounded input.
#[derive(Clone, Default)]
pub struct CollectSink {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl CollectSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far, in arrival order (interleaved across instances).
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.batches.lock().expect("collect sink poisoned").clone()
    }

    pub fn rows(&self) -> usize {
        self.batches().iter().map(|b| b.num_rows()).sum()
    }
}

impl SinkFactory for CollectSink {
    fn name(&self) -> String {
        "collect".into()
    }

    fn create(&self, _: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter for CollectSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.batches
            .lock()
            .expect("collect sink poisoned")
            .push(batch.clone());
        Ok(())
    }
}
