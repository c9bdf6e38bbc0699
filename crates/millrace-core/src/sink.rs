//! What a sink is to the runtime, and the in-memory sink tests read from.
//!
//! The runtime's sink task records every row's end-to-end latency from the
//! entered column, then strips that column and hands the batch to the
//! [`SinkWriter`]; writers only see user columns.

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
}

pub trait SinkWriter: Send {
    /// Writes one batch (user columns only). Returning an error stops the pipeline.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Flushes at end of input.
    fn finish(&mut self) -> Result<()> {
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
