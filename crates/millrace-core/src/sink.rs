//! What a sink is to the runtime, and the in-memory sink tests read from.
//!
//! The runtime's sink task records every row's end-to-end latency from the
//! entered column, then strips that column and hands the batch to the
//! [`SinkWriter`]; writers only see user columns.
//!
//! # Two-phase commit
//!
//! Output is exactly-once when a sink takes part in checkpoints (the state
//! contract, `crate::state`): at the barrier of epoch `e` the writer
//! [`pre_commit`](SinkWriter::pre_commit)s what it wrote since the last
//! barrier (makes it durable, not yet visible); once the checkpoint of `e`
//! is complete the coordinator calls [`commit`](SinkWriter::commit)`(e)`
//! (make it visible); a checkpoint that failed calls
//! [`abort`](SinkWriter::abort)`(e)` (discard it). After a crash, recovery
//! calls `commit(e)` again on a fresh writer for the last complete
//! checkpoint's epoch, since the crash may have come before or after the
//! first commit: **a commit may be replayed and must then be a no-op**
//! (the part file is already renamed; the transaction that recorded `e` is
//! already committed). A sink that cannot promise that says so with
//! [`SinkFactory::exactly_once`] `= false`: its output is at-least-once.

use std::sync::{Arc, Mutex};

use crate::Result;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

pub trait SinkFactory: Send + Sync {
    /// Short name shown in plans, summaries and errors.
    fn name(&self) -> String;
    /// The writer of instance `instance` of `parallelism`; `schema` is the
    /// user schema of the batches it will receive.
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

    /// Whether the writer's two phases make output exactly-once (see the
    /// module doc). The default, `false`: rows written are visible at once,
    /// and a recovery may write some of them again.
    fn exactly_once(&self) -> bool {
        false
    }
}

pub trait SinkWriter: Send {
    /// Writes one batch (user columns only). Returning an error stops the pipeline.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Flushes at end of input.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// Makes what was written since the last barrier durable, not yet
    /// visible, as part of epoch `epoch`. Called at the barrier, on the
    /// worker: slow work belongs to a background thread the writer owns.
    fn pre_commit(&mut self, epoch: crate::Epoch) -> Result<()> {
        let _ = epoch;
        Ok(())
    }

    /// Makes epoch `epoch`'s pre-committed output visible. May be called
    /// again for an epoch already committed (after a crash, on a fresh
    /// writer) and must then do nothing.
    fn commit(&mut self, epoch: crate::Epoch) -> Result<()> {
        let _ = epoch;
        Ok(())
    }

    /// Discards epoch `epoch`'s pre-committed output (its checkpoint
    /// failed); a later epoch will carry those rows again.
    fn abort(&mut self, epoch: crate::Epoch) -> Result<()> {
        let _ = epoch;
        Ok(())
    }
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
