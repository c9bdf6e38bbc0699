//! The Kafka source: a topic read by the instances of a source, partition
//! by partition (see the module doc of `kafka`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use millrace_core::batch::ENTERED_COLUMN;
use millrace_core::time::is_event_time_type;
use millrace_core::{Error, EventTime, Result, Snapshot, SourceFactory, SourceReader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::ValueFormat;
use super::client::{Connection, REQUEST_TIMEOUT};
use super::metadata::{Metadata, MetadataField};
use super::position::{self, KafkaPosition, PartitionProgress};
use super::reader::{BadMessages, KafkaReader, Shared};
use crate::dead_letter::DeadLetter;
use crate::file::{ChunkDecoder, DEFAULT_MAX_FUTURE, FileFormat, OnError, csv_supports};

/// Where a fresh run starts reading each partition (a restored one
/// continues from its checkpoint, whatever this says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest message kept.
    Earliest,
    /// After the last message written before the run started.
    Latest,
    /// The consumer group's committed offset; the earliest where it has none.
    Group,
    /// The first message with a timestamp at or after this (ms since 1970).
    Timestamp(i64),
}

/// Where reading ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    /// Never: the source is unbounded.
    Never,
    /// At the end of each partition as it was when the run first started
    /// (a bounded read; the stop offsets are kept in checkpoints, so a
    /// restored run stops at the same place).
    Latest,
}

/// Default consumer group, used for committed offsets (lag monitoring and
/// `StartFrom::Group`), never for assigning partitions.
pub const DEFAULT_GROUP_ID: &str = "millrace";

/// A Kafka topic as a source.
pub struct KafkaSource {
    connection: Connection,
    topic: String,
    format: ValueFormat,
    value_schema: SchemaRef,
    metadata: Metadata,
    start: StartFrom,
    stop: StopAt,
    group_id: String,
    event_time: Option<EventTime>,
    on_error: OnError,
    /// Shared by every instance, so their dead letters go through one writer.
    dead_letter: Option<Arc<DeadLetter>>,
    /// Bad messages go to this topic instead (`with_dead_letter_topic`).
    dead_letter_topic: Option<String>,
    max_future: Option<Duration>,
}

impl KafkaSource {
    /// Reads `topic`, decoding each message value in `format` into the
    /// columns of `value_schema`.
    pub fn new(
        connection: Connection,
        topic: impl Into<String>,
        format: ValueFormat,
        value_schema: SchemaRef,
    ) -> Self {
        KafkaSource {
            connection,
            topic: topic.into(),
            format,
            value_schema,
            metadata: Metadata::none(),
            start: StartFrom::Earliest,
            stop: StopAt::Never,
            group_id: DEFAULT_GROUP_ID.into(),
            event_time: None,
            on_error: OnError::Fail,
            dead_letter: None,
            dead_letter_topic: None,
            max_future: Some(DEFAULT_MAX_FUTURE),
        }
    }

    /// Metadata columns after the value's.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    pub fn with_start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    pub fn with_stop(mut self, stop: StopAt) -> Self {
        self.stop = stop;
        self
    }

    pub fn with_group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = group.into();
        self
    }

    /// Declares the event-time column: a value column, or the `timestamp`
    /// metadata column.
    pub fn with_event_time(mut self, et: EventTime) -> Self {
        self.event_time = Some(et);
        self
    }

    /// What to do with bad messages (default [`OnError::Fail`]).
    pub fn with_on_error(mut self, policy: OnError) -> Self {
        self.dead_letter = match &policy {
            OnError::DeadLetter(path) => Some(Arc::new(DeadLetter::new(path.clone()))),
            _ => None,
        };
        self.on_error = policy;
        self
    }

    /// Bad messages are produced to `topic` (at least once), each a JSON
    /// object as a dead-letter file's line: source, partition, offset,
    /// reason, raw value.
    pub fn with_dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self.dead_letter = None;
        self.on_error = OnError::Skip;
        self
    }

    /// How far ahead of the wall clock an event time in a value may be
    /// (as the file source's).
    pub fn with_max_future(mut self, bound: Option<Duration>) -> Self {
        self.max_future = bound;
        self
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn decoder_format(&self) -> Option<FileFormat> {
        match self.format {
            ValueFormat::Json => Some(FileFormat::Json),
            ValueFormat::Csv { delimiter } => Some(FileFormat::Csv {
                has_header: false,
                delimiter,
            }),
            ValueFormat::Raw => None,
        }
    }

    /// The event-time column when it is one of the value's.
    fn value_event_time(&self) -> Option<&str> {
        self.event_time
            .as_ref()
            .map(|et| et.column.as_str())
            .filter(|c| self.value_schema.field_with_name(c).is_ok())
    }

    /// Checks the declaration; every message names the source and what to fix.
    pub fn validate(&self) -> Result<()> {
        let name = self.name();
        let fail = |msg: String| Err(Error::plan(format!("{name}: {msg}")));
        if self.topic.is_empty() {
            return fail("no topic given".into());
        }
        let schema = self.schema();
        let mut seen = HashSet::new();
        for field in schema.fields() {
            if field.name() == ENTERED_COLUMN {
                return fail(format!(
                    "column name '{ENTERED_COLUMN}' is reserved by the engine; rename the column"
                ));
            }
            if !seen.insert(field.name().as_str()) {
                return fail(format!(
                    "column '{}' is declared twice (metadata columns are added after the \
                     value's; rename one with 'field AS column')",
                    field.name()
                ));
            }
        }
        match self.format {
            ValueFormat::Raw => {
                let ok = self.value_schema.fields().len() == 1
                    && matches!(
                        self.value_schema.field(0).data_type(),
                        DataType::Utf8 | DataType::Binary
                    );
                if !ok {
                    return fail(
                        "format 'raw' reads the value into one column of VARCHAR or BYTEA; \
                         declare exactly one"
                            .into(),
                    );
                }
            }
            ValueFormat::Json | ValueFormat::Csv { .. } => {
                if self.value_schema.fields().is_empty() {
                    return fail("the value has no columns; declare them".into());
                }
            }
        }
        if let ValueFormat::Csv { delimiter } = self.format {
            if matches!(delimiter, b'\n' | b'\r' | b'"') {
                return fail(format!(
                    "CSV delimiter {:?} is not allowed (it is a line terminator or the quote)",
                    char::from(delimiter)
                ));
            }
            if let Some(f) = self
                .value_schema
                .fields()
                .iter()
                .find(|f| !csv_supports(f.data_type()))
            {
                return fail(format!(
                    "column '{}' has type {}, which CSV cannot hold; use JSON for nested data",
                    f.name(),
                    f.data_type()
                ));
            }
        }
        if let Some(et) = &self.event_time {
            let Ok(field) = schema.field_with_name(&et.column) else {
                let columns: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                return fail(format!(
                    "event-time column '{}' is not in the schema (columns: {})",
                    et.column,
                    columns.join(", ")
                ));
            };
            if !is_event_time_type(field.data_type()) {
                return fail(format!(
                    "event-time column '{}' has type {}; declare it as a Timestamp or as Int64 milliseconds",
                    et.column,
                    field.data_type()
                ));
            }
            let is_metadata = self.metadata.columns().iter().any(|(c, _)| *c == et.column);
            if is_metadata
                && !self
                    .metadata
                    .columns()
                    .iter()
                    .any(|(c, f)| *c == et.column && *f == MetadataField::Timestamp)
            {
                return fail(format!(
                    "event-time column '{}' is metadata other than the timestamp",
                    et.column
                ));
            }
        }
        if let Some(format) = self.decoder_format()
            && let Err(e) =
                ChunkDecoder::new(format, self.value_schema.clone(), self.value_event_time())
        {
            return fail(format!("the schema cannot be decoded: {e}"));
        }
        Ok(())
    }

    fn shared(&self) -> Result<Shared> {
        let schema = self.schema();
        let event_time = self.event_time.as_ref().and_then(|et| {
            let (index, _) = schema.fields().find(&et.column)?;
            Some((index, et.column.clone(), et.idle_timeout))
        });
        let event_time_is_timestamp = self.event_time.as_ref().is_some_and(|et| {
            self.metadata
                .columns()
                .iter()
                .any(|(c, f)| *c == et.column && *f == MetadataField::Timestamp)
        });
        let decoder = self.decoder_format().map(|format| {
            let value_schema = self.value_schema.clone();
            let column = self.value_event_time().map(str::to_string);
            let max_future = self.max_future;
            Box::new(move || {
                Ok(
                    ChunkDecoder::new(format.clone(), value_schema.clone(), column.as_deref())?
                        .with_max_future(max_future)
                        .for_messages(),
                )
            }) as Box<dyn Fn() -> Result<ChunkDecoder> + Send + Sync>
        });
        let policy = match (&self.dead_letter_topic, &self.on_error, &self.dead_letter) {
            (Some(topic), _, _) => {
                self.connection.partitions(topic)?;
                let producer = self.connection.producer("5", None)?;
                BadMessages::Topic {
                    producer,
                    topic: topic.clone(),
                }
            }
            (None, OnError::Fail, _) => BadMessages::Fail,
            (None, OnError::Skip, _) => BadMessages::Skip,
            (None, OnError::DeadLetter(_), Some(out)) => BadMessages::File(out.clone()),
            (None, OnError::DeadLetter(path), None) => {
                BadMessages::File(Arc::new(DeadLetter::new(path.clone())))
            }
        };
        Ok(Shared {
            name: self.name(),
            connection: self.connection.clone(),
            topic: self.topic.clone(),
            format: self.format,
            value_schema: self.value_schema.clone(),
            metadata: self.metadata.clone(),
            schema,
            event_time,
            event_time_is_timestamp,
            decoder,
            policy,
        })
    }

    /// The consumer of one reader. Offsets out of range are errors, never
    /// a silent jump (`auto.offset.reset = error`).
    fn consumer(&self) -> Result<BaseConsumer> {
        self.connection
            .config(&[
                ("group.id", &self.group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "error"),
            ])
            .create()
            .map_err(|e| self.connection.error("cannot create a consumer", e))
    }

    /// Where each of `partitions` starts and stops in a fresh run, and
    /// its earliest offset.
    fn resolve(
        &self,
        consumer: &BaseConsumer,
        partitions: &[i32],
    ) -> Result<Vec<(PartitionProgress, i64)>> {
        let err = |doing: &str, e| {
            self.connection
                .error(&format!("topic '{}': {doing}", self.topic), e)
        };
        // Each end in a request of its own, every partition's offset named
        // in the answer (a ListOffsets by the special times -2 and -1). Not
        // `fetch_watermarks`: it pairs two answers by arrival and, when one
        // lacks an offset, reports the partition as empty.
        let earliest = self.connection.required_offsets(
            consumer,
            &self.topic,
            partitions,
            Offset::Beginning,
        )?;
        let latest =
            self.connection
                .required_offsets(consumer, &self.topic, partitions, Offset::End)?;
        let ends: Vec<(i64, i64)> = earliest.into_iter().zip(latest).collect();
        let starts: Vec<i64> = match self.start {
            StartFrom::Earliest => ends.iter().map(|(low, _)| *low).collect(),
            StartFrom::Latest => ends.iter().map(|(_, high)| *high).collect(),
            // No message at or after the time: from the end.
            StartFrom::Timestamp(ms) => self
                .connection
                .list_offsets(consumer, &self.topic, partitions, Offset::Offset(ms))?
                .into_iter()
                .zip(&ends)
                .map(|(o, &(low, high))| o.map_or(high, |o| o.clamp(low, high)))
                .collect(),
            StartFrom::Group => {
                let mut tpl = TopicPartitionList::new();
                for &p in partitions {
                    tpl.add_partition_offset(&self.topic, p, Offset::Invalid)
                        .map_err(|e| err("cannot name a partition", e))?;
                }
                let found = consumer
                    .committed_offsets(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| err("cannot read the group's committed offsets", e))?;
                partitions
                    .iter()
                    .zip(&ends)
                    .map(|(&p, &(low, high))| {
                        match found.find_partition(&self.topic, p).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) => o.clamp(low, high),
                            // No committed offset: from the start.
                            _ => low,
                        }
                    })
                    .collect()
            }
        };
        Ok(partitions
            .iter()
            .zip(starts)
            .zip(&ends)
            .map(|((&partition, next), &(low, high))| {
                let progress = PartitionProgress {
                    partition,
                    next,
                    stop: match self.stop {
                        StopAt::Never => None,
                        StopAt::Latest => Some(high.max(next)),
                    },
                    max_event_time: i64::MIN,
                };
                (progress, low)
            })
            .collect())
    }
}

impl SourceFactory for KafkaSource {
    fn name(&self) -> String {
        format!("kafka:{}", self.topic)
    }

    fn schema(&self) -> SchemaRef {
        let mut fields: Vec<_> = self.value_schema.fields().iter().cloned().collect();
        fields.extend(self.metadata.fields());
        Arc::new(Schema::new(fields))
    }

    fn event_time(&self) -> Option<EventTime> {
        self.event_time.clone()
    }

    fn create(&self, instance: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        self.validate()?;
        if parallelism == 0 || instance >= parallelism {
            return Err(Error::plan(format!(
                "{}: instance {instance} of parallelism {parallelism} does not exist",
                self.name()
            )));
        }
        let count = self.connection.partitions(&self.topic)?;
        let mine: Vec<i32> = (0..count)
            .filter(|p| p % parallelism == instance)
            .map(|p| p as i32)
            .collect();
        let consumer = self.consumer()?;
        let progress = self.resolve(&consumer, &mine)?;
        Ok(Box::new(KafkaReader::new(
            Arc::new(self.shared()?),
            consumer,
            count,
            progress,
        )?))
    }

    /// Each partition's progress goes to the instance that reads it now.
    fn rescale(&self, old: &[Snapshot], parallelism: usize) -> Result<Vec<Snapshot>> {
        let fail = |e: String| {
            Error::Other(format!(
                "{} cannot be restored at parallelism {parallelism}: {e}",
                self.name()
            ))
        };
        if old.iter().all(Snapshot::is_empty) {
            return Ok(vec![Snapshot::none(); parallelism]);
        }
        let old = old
            .iter()
            .enumerate()
            .map(|(i, s)| {
                KafkaPosition::from_snapshot(s)
                    .map_err(|e| fail(format!("the position of old instance {i}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(position::rescale(&old, parallelism)
            .map_err(fail)?
            .iter()
            .map(KafkaPosition::to_snapshot)
            .collect())
    }
}
