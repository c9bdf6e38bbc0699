//! Processing time as a column: any source, with each row stamped by the
//! wall clock when it is read.
//!
//! Windows over processing time (Nexmark q12) are then ordinary event-time
//! windows over `proc_time`: the stamps never decrease within a reader, so
//! the watermark follows them with no bound and no row is ever late.
//!
//! Checkpoints: the reader's position is the wrapped source's, plus table
//! `proc_time` with the last stamp, so stamps keep never decreasing across a
//! restore even if the wall clock stepped back meanwhile. A wrapped source
//! that cannot be repositioned leaves the wrapper without a position too.
//! At another parallelism the wrapped source splits its positions, and
//! every new reader continues from the latest stamp of any old one.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_core::batch::schema_with_entered;
use millrace_core::state::{scalar, scalars};
use millrace_core::{
    Error, EventTime, Result, Snapshot, SourceFactory, SourcePoll, SourceReader, SourceStats,
};

/// Name of the added column.
pub const PROC_TIME: &str = "proc_time";

/// Table of the wrapper's own part of a position, beside the wrapped
/// source's tables (the sources here name theirs after themselves, or
/// `file` and `file_path`).
const STAMP_TABLE: &str = PROC_TIME;

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

    /// The wrapped source's split (it refuses, by name, what it cannot
    /// split), each with the latest stamp of any old reader: a row read
    /// after the restore, by whichever reader, is never stamped before a
    /// row read earlier.
    fn rescale(&self, old: &[Snapshot], parallelism: usize) -> Result<Vec<Snapshot>> {
        if old.iter().all(Snapshot::is_empty) {
            return Ok(vec![Snapshot::none(); parallelism]);
        }
        let mut last_ms: Option<i64> = None;
        let mut inner = Vec::with_capacity(old.len());
        for position in old {
            let stamps = position
                .table(STAMP_TABLE)
                .map_err(|e| e.context("processing-time source: cannot rescale"))?;
            if let Some(ms) = scalar(stamps, "last_ms")? {
                last_ms = Some(last_ms.map_or(ms, |m| m.max(ms)));
            }
            inner.push(position.clone().without(STAMP_TABLE));
        }
        let stamp = scalars(&[("last_ms", last_ms)]);
        Ok(self
            .inner
            .rescale(&inner, parallelism)?
            .into_iter()
            .map(|p| p.with(STAMP_TABLE, stamp.clone()))
            .collect())
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

    fn position(&self) -> Result<Option<Snapshot>> {
        let Some(inner) = self.inner.position()? else {
            return Ok(None);
        };
        let last_ms = (self.last_ms != i64::MIN).then_some(self.last_ms);
        Ok(Some(
            inner.with(STAMP_TABLE, scalars(&[("last_ms", last_ms)])),
        ))
    }

    fn seek(&mut self, position: &Snapshot) -> Result<()> {
        self.inner.seek(position)?;
        let stamps = position
            .table(STAMP_TABLE)
            .map_err(|e| e.context("processing-time source: cannot seek"))?;
        self.last_ms = scalar(stamps, "last_ms")?.unwrap_or(i64::MIN);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexmark::{NexmarkConfig, NexmarkSource};
    use crate::resume_check::check_resume_everywhere;
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

    /// A source whose input cannot be read again: it keeps the default
    /// position (none).
    struct Unreplayable;

    impl SourceReader for Unreplayable {
        fn poll_batch(&mut self, _max_rows: usize) -> Result<SourcePoll> {
            Ok(SourcePoll::Exhausted)
        }
    }

    impl SourceFactory for Unreplayable {
        fn name(&self) -> String {
            "socket".into()
        }
        fn schema(&self) -> SchemaRef {
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
        }
        fn event_time(&self) -> Option<EventTime> {
            None
        }
        fn create(&self, _: usize, _: usize) -> Result<Box<dyn SourceReader>> {
            Ok(Box::new(Unreplayable))
        }
    }

    fn bids(events: u64) -> Arc<dyn SourceFactory> {
        Arc::new(NexmarkSource::bids(NexmarkConfig {
            events: Some(events),
            ..NexmarkConfig::default()
        }))
    }

    #[test]
    fn a_resumed_reader_continues_the_wrapped_source() {
        let source = ProcessingTime::new(bids(1000)).unwrap();
        // The stamps are the wall clock's, so only the wrapped columns compare.
        check_resume_everywhere(&source, &[1, 2], 50, &[0, 2, 5, 1000], &[PROC_TIME]);
    }

    #[test]
    fn the_position_is_the_wrapped_one_plus_the_last_stamp() {
        let source = ProcessingTime::new(bids(1000)).unwrap();
        let mut reader = source.create(0, 1).unwrap();
        let SourcePoll::Batch(batch) = reader.poll_batch(10).unwrap() else {
            panic!("expected a batch");
        };
        let idx = source.schema().index_of(PROC_TIME).unwrap();
        let stamp = batch
            .column(idx)
            .as_primitive::<TimestampMillisecondType>()
            .value(0);
        let position = reader.position().unwrap().unwrap();
        assert!(position.table("nexmark-bids").is_ok());
        let stamps = position.table(STAMP_TABLE).unwrap();
        assert_eq!(scalar(stamps, "last_ms").unwrap(), Some(stamp));

        // A later stamp than any the wall clock can give now: the resumed
        // reader keeps stamping with it rather than step back.
        let ahead = stamp + 3_600_000;
        let moved = position.with(STAMP_TABLE, scalars(&[("last_ms", Some(ahead))]));
        let mut resumed = source.create(0, 1).unwrap();
        resumed.seek(&moved).unwrap();
        let SourcePoll::Batch(batch) = resumed.poll_batch(10).unwrap() else {
            panic!("expected a batch");
        };
        let stamps = batch.column(idx).as_primitive::<TimestampMillisecondType>();
        assert!(stamps.values().iter().all(|t| *t == ahead));
    }

    #[test]
    fn positions_without_the_wrapper_part_or_the_source_are_refused() {
        let source = ProcessingTime::new(bids(1000)).unwrap();
        let inner_only = source
            .inner
            .create(0, 1)
            .unwrap()
            .position()
            .unwrap()
            .unwrap();
        let mut reader = source.create(0, 1).unwrap();
        let err = reader.seek(&inner_only).unwrap_err().to_string();
        assert!(
            err.contains("processing-time") && err.contains("'proc_time'"),
            "{err}"
        );
        let err = reader.seek(&Snapshot::none()).unwrap_err().to_string();
        assert!(err.contains("nexmark-bids"), "{err}");
    }

    #[test]
    fn an_unreplayable_source_leaves_the_wrapper_without_a_position() {
        let source = ProcessingTime::new(Arc::new(Unreplayable)).unwrap();
        let reader = source.create(0, 1).unwrap();
        assert!(reader.position().unwrap().is_none());
    }

    /// The wrapped file source splits its positions; the stamp is the
    /// latest of the old readers'. A wrapped generator refuses, by name.
    #[test]
    fn a_rescale_splits_the_wrapped_positions_and_keeps_the_latest_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let paths: Vec<_> = (0..3)
            .map(|f| {
                let path = dir.path().join(format!("{f}.jsonl"));
                let lines: String = (0..5)
                    .map(|i| format!("{{\"id\":{}}}\n", f * 10 + i))
                    .collect();
                std::fs::write(&path, lines).unwrap();
                path
            })
            .collect();
        let files = crate::file::FileSource::new(paths, crate::file::FileFormat::Json, schema);
        let source = ProcessingTime::new(Arc::new(files)).unwrap();
        let mut old = Vec::new();
        for instance in 0..2 {
            let mut reader = source.create(instance, 2).unwrap();
            reader.poll_batch(2).unwrap();
            let position = reader.position().unwrap().unwrap();
            let ahead = scalars(&[("last_ms", Some(1000 + instance as i64))]);
            old.push(position.with(STAMP_TABLE, ahead));
        }
        let new = source.rescale(&old, 1).unwrap();
        assert_eq!(
            scalar(new[0].table(STAMP_TABLE).unwrap(), "last_ms").unwrap(),
            Some(1001)
        );
        let mut reader = source.create(0, 1).unwrap();
        reader.seek(&new[0]).unwrap();
        let rest = crate::resume_check::drain_reader(reader.as_mut(), 100).unwrap();
        // 15 rows, of which each old reader had read 2.
        assert_eq!(rest.iter().map(|b| b.num_rows()).sum::<usize>(), 11);

        let generated = ProcessingTime::new(bids(100)).unwrap();
        let position = generated.create(0, 1).unwrap().position().unwrap().unwrap();
        let err = generated.rescale(&[position], 2).unwrap_err().to_string();
        assert!(
            err.contains("source 'nexmark-bids' cannot be restored at another parallelism"),
            "{err}"
        );
    }
}
