//! Processing time as a column: any source, with each row stamped by the
//! wall clock when it is read.
//!
//! Windows over processing time (Nexmark q12) are then ordinary event-time
//! windows over `proc_time`: the stamps never decrease within a reader, so
//! the watermark follows them with no bound and no row is ever late.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_core::batch::schema_with_entered;
use millrace_core::{
    Error, EventTime, Result, SourceFactory, SourcePoll, SourceReader, SourceStats,
};

/// Name of the added column.
pub const PROC_TIME: &str = "proc_time";

/// Wraps `inner`, appending `proc_time` (TIMESTAMP(3), wall clock at read).
pub struct ProcessingTime {
    inner: Arc<dyn SourceFactory>,
    schema: SchemaRef,
}

impl ProcessingTime {
    pub fn new(inner: Arc<dyn SourceFactory>) -> Result<Self> {
        let user = inner.schema();
        if user.field_with_name(PROC_TIME).is_ok() {
            return Err(Error::plan(format!(
                "source '{}' already has a column named {PROC_TIME}",
                inner.name()
            )));
        }
        let mut fields: Vec<Field> = user.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(
            PROC_TIME,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ));
        Ok(Self {
            inner,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

impl SourceFactory for ProcessingTime {
    fn name(&self) -> String {
        format!("{} (processing time)", self.inner.name())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn event_time(&self) -> Option<EventTime> {
        Some(EventTime::new(PROC_TIME, 0))
    }

    fn create(&self, instance: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(ProcessingTimeReader {
            inner: self.inner.create(instance, parallelism)?,
            schema: schema_with_entered(&self.schema),
            last_ms: i64::MIN,
        }))
    }
}

struct ProcessingTimeReader {
    inner: Box<dyn SourceReader>,
    /// Output schema with the entered column.
    schema: SchemaRef,
    /// The wall clock may step back; stamps never do.
    last_ms: i64,
}

impl SourceReader for ProcessingTimeReader {
    fn poll_batch(&mut self, max_rows: usize) -> Result<SourcePoll> {
        let batch = match self.inner.poll_batch(max_rows)? {
            SourcePoll::Batch(b) => b,
            other => return Ok(other),
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.last_ms = self.last_ms.max(now_ms);
        let n = batch.num_rows();
        // Insert before the trailing entered column.
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let entered = columns
            .pop()
            .ok_or_else(|| Error::Other("source batch without columns".into()))?;
        columns.push(Arc::new(TimestampMillisecondArray::from_value(
            self.last_ms,
            n,
        )));
        columns.push(entered);
        Ok(SourcePoll::Batch(RecordBatch::try_new(
            self.schema.clone(),
            columns,
        )?))
    }

    fn stats(&self) -> SourceStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexmark::{NexmarkConfig, NexmarkSource};
    use arrow::array::AsArray;
    use arrow::datatypes::TimestampMillisecondType;

    #[test]
    fn rows_get_a_non_decreasing_wall_clock_stamp() {
        let bids = NexmarkSource::bids(NexmarkConfig {
            events: Some(5000),
            ..NexmarkConfig::default()
        });
        let source = ProcessingTime::new(Arc::new(bids)).unwrap();
        let idx = source.schema().index_of(PROC_TIME).unwrap();
        let mut reader = source.create(0, 1).unwrap();
        let mut last = i64::MIN;
        let mut rows = 0;
        loop {
            match reader.poll_batch(1000).unwrap() {
                SourcePoll::Batch(b) => {
                    assert_eq!(b.num_columns(), source.schema().fields().len() + 1);
                    for t in b
                        .column(idx)
                        .as_primitive::<TimestampMillisecondType>()
                        .values()
                    {
                        assert!(*t >= last);
                        last = *t;
                    }
                    rows += b.num_rows();
                }
                SourcePoll::Pending { .. } => {}
                SourcePoll::Exhausted => break,
            }
        }
        assert_eq!(rows, 4600); // 92% of 5000 events are bids
        assert!(last > 1_700_000_000_000); // a wall-clock time, not an offset
    }
}
