//! What a source is to the runtime.
//!
//! A [`SourceFactory`] describes a source (schema, event-time column and
//! watermark bound) and creates one [`SourceReader`] per parallel instance.
//! Readers never block for long: a reader with nothing to give right now says
//! when to ask again ([`SourcePoll::Pending`]), so a worker thread can run other
//! tasks or park meanwhile. The runtime's source task (not the reader) turns
//! event times into watermarks, injects barriers, declares idleness and sends
//! `End` — that logic lives in one place for every source.

use std::time::Duration;

use crate::{Error, Result, Snapshot};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

/// How a source's event time and watermarks are defined.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTime {
    /// Column holding event time (`Timestamp(_)` or `Int64` milliseconds).
    pub column: String,
    /// Bounded out-of-orderness: watermark = max event time seen − this.
    pub max_out_of_orderness_ms: i64,
    /// After this long without data, the instance declares itself idle so it
    /// does not hold back the watermark of the pipeline.
    pub idle_timeout: Option<Duration>,
}

impl EventTime {
    pub fn new(column: impl Into<String>, max_out_of_orderness_ms: i64) -> Self {
        EventTime {
            column: column.into(),
            max_out_of_orderness_ms,
            idle_timeout: Some(Duration::from_secs(1)),
        }
    }

    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }
}

/// Counters of input a reader did not turn into rows (never silently lost).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceStats {
    /// Bad records skipped under the `skip` policy.
    pub skipped: u64,
    /// Bad records written to the dead-letter output.
    pub dead_lettered: u64,
}

/// One answer of [`SourceReader::poll_batch`].
#[derive(Debug)]
pub enum SourcePoll {
    /// Rows, with the user columns of [`SourceFactory::schema`] followed by
    /// the entered column (`crate::batch::attach_entered`): for a
    /// generator each row's *scheduled* time, for other sources the read time.
    /// A batch with no rows means "worked, nothing to show yet, poll again
    /// now" (e.g. a reader that skipped a long run of bad lines).
    Batch(RecordBatch),
    /// Nothing available now. `wake_at_ns` (on `crate::time::now_ns`'s
    /// clock) is when the next row is due, if the reader knows; `None` means
    /// "poll again soon" (the runtime asks again within about a millisecond).
    Pending { wake_at_ns: Option<i64> },
    /// A bounded input has been read completely.
    Exhausted,
}

pub trait SourceFactory: Send + Sync {
    /// Short name shown in plans, summaries and errors (e.g. `nexmark-bids`).
    fn name(&self) -> String;
    /// The user columns (without the entered column).
    fn schema(&self) -> SchemaRef;
    /// The default event-time declaration; `None` if the source has none.
    fn event_time(&self) -> Option<EventTime>;
    /// The reader of instance `instance` of `parallelism`. Instances split the
    /// input between them: together they produce every row exactly once.
    fn create(&self, instance: usize, parallelism: usize) -> Result<Box<dyn SourceReader>>;

    /// The positions of `parallelism` new readers continuing from `old`,
    /// the positions ([`SourceReader::position`]) every reader of a run at
    /// another parallelism had at one barrier (`old[i]` is instance `i` of
    /// `old.len()`'s). The result has one position per new instance, in
    /// instance order, each for [`SourceReader::seek`] on a reader made by
    /// `create(j, parallelism)`.
    ///
    /// What an implementer must guarantee: the new readers together return
    /// exactly the rows the old readers had not returned yet, each once
    /// (within one input unit — a file, a partition — in the order the old
    /// reader would have returned them). A source that cannot (a generator
    /// whose cursor cannot say which numbers another instance already
    /// emitted) keeps the default.
    ///
    /// The default: when every old position is empty, `parallelism` empty
    /// ones; otherwise an error naming the source.
    fn rescale(&self, old: &[Snapshot], parallelism: usize) -> Result<Vec<Snapshot>> {
        crate::state::rescale_nothing(&format!("source '{}'", self.name()), old, parallelism)
    }
}

pub trait SourceReader: Send {
    /// At most `max_rows` rows, or why there are none.
    fn poll_batch(&mut self, max_rows: usize) -> Result<SourcePoll>;
    /// Bad-input counters so far.
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }

    /// For a reader that interleaves inputs each in its own event-time
    /// order (a Kafka instance reading several partitions): the event time
    /// every one of its inputs that is not idle has reached, i.e. the least
    /// of their largest event times (`i64::MIN` while one of them has shown
    /// none). The instance's watermark is this minus the bound, instead of
    /// the largest event time of its batches, so a partition behind the
    /// others keeps its rows on time. The runtime also asks while the
    /// reader is pending: an input turning idle can advance it.
    ///
    /// `None` (the default): the reader's rows are one input.
    fn event_time_reached(&self) -> Option<i64> {
        None
    }

    /// Where this reader is: enough for [`SourceReader::seek`] on a fresh
    /// reader of the same instance to continue with exactly the rows that
    /// would have come next (a generator's event count, a file and byte
    /// offset, a partition's offset). Taken when the runtime injects a
    /// barrier after the reader's last batch, so it must not block.
    ///
    /// `None` says the input cannot be read again from here (a socket
    /// without replay): a pipeline that checkpoints refuses such a source
    /// by name rather than promise what it cannot keep. That is the
    /// default.
    fn position(&self) -> Result<Option<Snapshot>> {
        Ok(None)
    }

    /// Moves a fresh reader to `position`, taken from the same instance of
    /// the same source by [`SourceReader::position`]. After it, the reader
    /// returns exactly the rows that followed that position, in order; rows
    /// before it never again. A position it cannot reach (the file is
    /// shorter, the offset expired) is an error naming it, never a silent
    /// start from elsewhere.
    fn seek(&mut self, position: &Snapshot) -> Result<()> {
        let _ = position;
        Err(Error::Other(
            "this source cannot be moved to a checkpointed position".into(),
        ))
    }
}
