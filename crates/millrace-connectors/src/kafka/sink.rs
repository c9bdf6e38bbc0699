//! The Kafka sink: rows to messages, produced at least once or exactly
//! once (see the module doc of `kafka`, and `commit.rs`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch};
use arrow::compute::cast;
use arrow::csv::WriterBuilder;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use millrace_core::{Error, Result, SinkCommitter, SinkFactory, SinkWriter, Snapshot};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::ValueFormat;
use super::client::Connection;
use super::commit::{AcknowledgedCommitter, TransactionalCommitter};
use crate::sinks::jsonl::encode_json_lines;

/// What a Kafka sink promises about its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every row at least once: an idempotent producer (no duplicates from
    /// its own retries), and with checkpoints, a checkpoint completes only
    /// once every row before its barrier is acknowledged. A restore may
    /// write rows after the checkpoint again.
    AtLeastOnce,
    /// Every row exactly once for `read_committed` readers: each epoch in
    /// one transaction, committed with its checkpoint. Needs checkpoints.
    ExactlyOnce,
}

/// Default producer linger: how long rows wait to share a request, when
/// neither the sink (`linger`) nor the pipeline (its latency target) says.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);

/// The share of the pipeline's latency target a producer may linger: the
/// rest is for processing and the broker's acknowledgement.
const LINGER_SHARE_OF_TARGET: u32 = 4;

/// How long a flush or a transaction commit may take before it is an error.
pub(crate) const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A Kafka topic as a sink.
#[derive(Clone)]
pub struct KafkaSink {
    connection: Connection,
    topic: String,
    format: ValueFormat,
    key: Option<String>,
    delivery: Delivery,
    linger: Duration,
    /// `linger` was given, so the latency target does not change it.
    linger_given: bool,
    transactional_id: Option<String>,
    progress_topic: Option<String>,
}

impl KafkaSink {
    /// Writes each row to `topic` as one message whose value is the row in
    /// `format` (JSON object, CSV record, or the one column's raw value).
    pub fn new(connection: Connection, topic: impl Into<String>, format: ValueFormat) -> Self {
        KafkaSink {
            connection,
            topic: topic.into(),
            format,
            key: None,
            delivery: Delivery::AtLeastOnce,
            linger: DEFAULT_LINGER,
            linger_given: false,
            transactional_id: None,
            progress_topic: None,
        }
    }

    /// Keys each message with this column's value (as text), which also
    /// picks its partition (Kafka's default murmur2 partitioner). Without
    /// a key, messages spread over the partitions.
    pub fn with_key(mut self, column: impl Into<String>) -> Self {
        self.key = Some(column.into());
        self
    }

    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// How long rows may wait in the producer to share a request
    /// (librdkafka's `linger.ms`). Without it: a quarter of the pipeline's
    /// latency target, or [`DEFAULT_LINGER`].
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self.linger_given = true;
        self
    }

    /// The transactional id of an exactly-once sink (default
    /// `millrace-<topic>`): one per pipeline writing the topic.
    pub fn with_transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }

    /// Where an exactly-once sink records the epochs it committed (default
    /// `<topic>.millrace-progress`; created, compacted, if missing).
    pub fn with_progress_topic(mut self, topic: impl Into<String>) -> Self {
        self.progress_topic = Some(topic.into());
        self
    }

    pub fn transactional_id(&self) -> String {
        self.transactional_id
            .clone()
            .unwrap_or_else(|| format!("millrace-{}", self.topic))
    }

    pub fn progress_topic(&self) -> String {
        self.progress_topic
            .clone()
            .unwrap_or_else(|| format!("{}.millrace-progress", self.topic))
    }

    /// This sink with the linger `target` implies, unless one was given.
    fn tuned_for(&self, target: Duration) -> Option<KafkaSink> {
        if self.linger_given {
            return None;
        }
        let mut tuned = self.clone();
        tuned.linger = target / LINGER_SHARE_OF_TARGET;
        Some(tuned)
    }

    /// librdkafka's `linger.ms`, which takes fractions.
    fn linger_ms(&self) -> String {
        format!("{}", self.linger.as_secs_f64() * 1000.0)
    }
}

impl SinkFactory for KafkaSink {
    fn name(&self) -> String {
        format!("kafka:{}", self.topic)
    }

    fn create(
        &self,
        _instance: usize,
        _parallelism: usize,
        schema: SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        if self.delivery == Delivery::ExactlyOnce {
            return Err(Error::plan(format!(
                "{}: delivery = 'exactly_once' commits with checkpoints; turn them on \
                 (SET checkpoint_interval = '1s') or use at_least_once",
                self.name()
            )));
        }
        let settings = self.settings();
        settings
            .writer(&schema)
            .map(|w| Box::new(w) as Box<dyn SinkWriter>)
    }

    fn for_latency_target(&self, target: Duration) -> Option<Arc<dyn SinkFactory>> {
        self.tuned_for(target)
            .map(|tuned| Arc::new(tuned) as Arc<dyn SinkFactory>)
    }

    fn committer(&self) -> Option<Arc<dyn SinkCommitter>> {
        Some(match self.delivery {
            Delivery::AtLeastOnce => Arc::new(AcknowledgedCommitter::new(self.settings())),
            Delivery::ExactlyOnce => Arc::new(TransactionalCommitter::new(self.settings())),
        })
    }
}

/// What the committers need of a sink's declaration.
#[derive(Clone)]
pub(crate) struct SinkSettings {
    pub name: String,
    pub connection: Connection,
    pub topic: String,
    pub format: ValueFormat,
    pub key: Option<String>,
    pub linger_ms: String,
    pub transactional_id: String,
    pub progress_topic: String,
}

impl SinkSettings {
    pub fn encoder(&self, schema: &SchemaRef) -> Result<Encoder> {
        Encoder::new(&self.name, self.format, self.key.as_deref(), schema)
    }

    /// An at-least-once writer, after checking the topic exists.
    pub fn writer(&self, schema: &SchemaRef) -> Result<DirectWriter> {
        self.connection.partitions(&self.topic)?;
        Ok(DirectWriter {
            encoder: self.encoder(schema)?,
            producer: self.producer()?,
            topic: self.topic.clone(),
        })
    }

    /// The idempotent producer of an at-least-once writer.
    fn producer(&self) -> Result<Arc<ThreadedProducer<DeliveryCheck>>> {
        Ok(Arc::new(self.connection.producer(&self.linger_ms, None)?))
    }
}

impl KafkaSink {
    pub(crate) fn settings(&self) -> SinkSettings {
        SinkSettings {
            name: self.name(),
            connection: self.connection.clone(),
            topic: self.topic.clone(),
            format: self.format,
            key: self.key.clone(),
            linger_ms: self.linger_ms(),
            transactional_id: self.transactional_id(),
            progress_topic: self.progress_topic(),
        }
    }
}

/// Counts the messages the broker refused after retries, and keeps the
/// first reason: a writer fails on it rather than lose rows.
#[derive(Default)]
pub(crate) struct DeliveryCheck {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl DeliveryCheck {
    /// An error if any message failed since the producer was created.
    pub fn check(&self, topic: &str) -> Result<()> {
        let failed = self.failed.load(Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let reason = self
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        Err(Error::Other(format!(
            "kafka topic '{topic}': {failed} message(s) could not be delivered: {reason}"
        )))
    }
}

impl ClientContext for DeliveryCheck {}

impl ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Relaxed);
            let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(e.to_string());
            }
        }
    }
}

/// Rows turned into messages: a batch of `key` (Binary, null for none)
/// and `value` (Binary).
pub(crate) struct Encoder {
    name: String,
    format: ValueFormat,
    key: Option<usize>,
}

/// The schema of encoded messages, as staged in checkpoints.
pub(crate) fn messages_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, false),
    ]))
}

impl Encoder {
    fn new(name: &str, format: ValueFormat, key: Option<&str>, schema: &SchemaRef) -> Result<Self> {
        let fail = |msg: String| Err(Error::plan(format!("{name}: {msg}")));
        let key = match key {
            None => None,
            Some(column) => match schema.index_of(column) {
                Ok(i) => Some(i),
                Err(_) => {
                    let names: Vec<&str> =
                        schema.fields().iter().map(|f| f.name().as_str()).collect();
                    return fail(format!(
                        "key column '{column}' is not among the rows' columns ({})",
                        names.join(", ")
                    ));
                }
            },
        };
        if format == ValueFormat::Raw
            && !(schema.fields().len() == 1
                && matches!(
                    schema.field(0).data_type(),
                    DataType::Utf8 | DataType::Binary
                ))
        {
            return fail(
                "format 'raw' writes one VARCHAR or BYTEA column as the value; select exactly one"
                    .into(),
            );
        }
        Ok(Encoder {
            name: name.to_string(),
            format,
            key,
        })
    }

    /// Each row's key and value.
    pub fn encode(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let values: ArrayRef = match self.format {
            ValueFormat::Json => {
                let mut out = Vec::new();
                encode_json_lines(batch, &mut out)?;
                Arc::new(split_records(&out, rows, false, &self.name)?)
            }
            ValueFormat::Csv { delimiter } => {
                let mut out = Vec::new();
                let mut writer = WriterBuilder::new()
                    .with_header(false)
                    .with_delimiter(delimiter)
                    .build(&mut out);
                writer.write(batch)?;
                drop(writer);
                Arc::new(split_records(&out, rows, true, &self.name)?)
            }
            ValueFormat::Raw => match batch.column(0).data_type() {
                DataType::Binary => batch.column(0).clone(),
                _ => cast(batch.column(0), &DataType::Binary)?,
            },
        };
        let keys: ArrayRef = match self.key {
            None => arrow::array::new_null_array(&DataType::Binary, rows),
            Some(i) => {
                let column = batch.column(i);
                let text = match column.data_type() {
                    DataType::Utf8 | DataType::Binary => column.clone(),
                    _ => cast(column, &DataType::Utf8)?,
                };
                cast(&text, &DataType::Binary)?
            }
        };
        // A null value would be a tombstone: a row is never one.
        if values.null_count() > 0 {
            return Err(Error::Other(format!(
                "{}: a row's value is NULL; a message value cannot be (it would delete the key)",
                self.name
            )));
        }
        Ok(RecordBatch::try_new(messages_schema(), vec![keys, values])?)
    }
}

/// Cuts encoded output into its `rows` records, each ended by `\n` (outside
/// quotes when `quoted`, as CSV may hold line breaks in quoted fields).
fn split_records(out: &[u8], rows: usize, quoted: bool, name: &str) -> Result<BinaryArray> {
    let mut records: Vec<&[u8]> = Vec::with_capacity(rows);
    let (mut start, mut inside) = (0, false);
    for (i, &b) in out.iter().enumerate() {
        match b {
            b'"' if quoted => inside = !inside,
            b'\n' if !inside => {
                records.push(&out[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if records.len() != rows || start != out.len() {
        return Err(Error::Other(format!(
            "{name}: encoding {rows} rows gave {} records",
            records.len()
        )));
    }
    Ok(BinaryArray::from_iter_values(records))
}

/// Sends `messages` (a batch of [`messages_schema`]) to `topic`; waits while
/// the producer's queue is full (backpressure, never a drop).
pub(crate) fn send_all(
    producer: &ThreadedProducer<DeliveryCheck>,
    topic: &str,
    messages: &RecordBatch,
) -> Result<()> {
    let keys = messages.column(0).as_binary::<i32>();
    let values = messages.column(1).as_binary::<i32>();
    for i in 0..messages.num_rows() {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(values.value(i));
        if keys.is_valid(i) {
            record = record.key(keys.value(i));
        }
        send(producer, record)
            .map_err(|e| Error::Other(format!("kafka topic '{topic}': cannot produce: {e}")))?;
    }
    producer.context().check(topic)
}

/// Sends one message, waiting while the producer's queue is full
/// (backpressure, never a drop); any other refusal is returned.
pub(crate) fn send(
    producer: &ThreadedProducer<DeliveryCheck>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> std::result::Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                // The producer's thread delivers meanwhile.
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until every message sent is acknowledged (or failed: an error).
pub(crate) fn flush(producer: &ThreadedProducer<DeliveryCheck>, topic: &str) -> Result<()> {
    producer.flush(COMMIT_TIMEOUT).map_err(|e| {
        Error::Other(format!(
            "kafka topic '{topic}': messages not acknowledged within {}s: {e}",
            COMMIT_TIMEOUT.as_secs()
        ))
    })?;
    producer.context().check(topic)
}

/// An at-least-once writer: produces each batch as it comes.
pub(crate) struct DirectWriter {
    pub encoder: Encoder,
    pub producer: Arc<ThreadedProducer<DeliveryCheck>>,
    pub topic: String,
}

impl SinkWriter for DirectWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let messages = self.encoder.encode(batch)?;
        send_all(&self.producer, &self.topic, &messages)
    }

    fn finish(&mut self) -> Result<()> {
        flush(&self.producer, &self.topic)
    }
}

/// An exactly-once writer: keeps each epoch's messages until its barrier
/// hands them to the checkpoint (`commit.rs` produces them).
pub(crate) struct StagingWriter {
    pub encoder: Encoder,
    pub staged: Vec<RecordBatch>,
}

impl SinkWriter for StagingWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() > 0 {
            self.staged.push(self.encoder.encode(batch)?);
        }
        Ok(())
    }

    fn pre_commit(&mut self, _epoch: millrace_core::Epoch) -> Result<Snapshot> {
        if self.staged.is_empty() {
            return Ok(Snapshot::none());
        }
        let staged = std::mem::take(&mut self.staged);
        Snapshot::none().with_chunks("messages", &messages_schema(), &staged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a\nb"), None, Some("q\"x")])),
            ],
        )
        .unwrap()
    }

    fn strings(messages: &RecordBatch, column: usize) -> Vec<Option<String>> {
        let a = messages.column(column).as_binary::<i32>();
        (0..a.len())
            .map(|i| {
                a.is_valid(i)
                    .then(|| String::from_utf8_lossy(a.value(i)).into_owned())
            })
            .collect()
    }

    #[test]
    fn linger_follows_the_latency_target_unless_given() {
        let sink = KafkaSink::new(Connection::new("unused:9092"), "t", ValueFormat::Json);
        assert_eq!(sink.linger_ms(), "5");
        let tuned = sink.tuned_for(Duration::from_millis(2)).unwrap();
        assert_eq!(tuned.linger_ms(), "0.5");
        assert!(sink.for_latency_target(Duration::from_millis(2)).is_some());
        let given = sink.with_linger(Duration::from_millis(20));
        assert!(given.for_latency_target(Duration::from_millis(2)).is_none());
    }

    #[test]
    fn each_row_is_one_message_whatever_it_holds() {
        let b = batch();
        let json = Encoder::new("t", ValueFormat::Json, Some("id"), &b.schema()).unwrap();
        let m = json.encode(&b).unwrap();
        assert_eq!(
            strings(&m, 1),
            vec![
                Some(r#"{"id":1,"text":"a\nb"}"#.to_string()),
                Some(r#"{"id":2,"text":null}"#.to_string()),
                Some(r#"{"id":3,"text":"q\"x"}"#.to_string()),
            ]
        );
        assert_eq!(
            strings(&m, 0),
            vec![Some("1".into()), Some("2".into()), Some("3".into())]
        );

        let csv =
            Encoder::new("t", ValueFormat::Csv { delimiter: b',' }, None, &b.schema()).unwrap();
        let m = csv.encode(&b).unwrap();
        assert_eq!(
            strings(&m, 1),
            vec![
                Some("1,\"a\nb\"".to_string()),
                Some("2,".to_string()),
                Some("3,\"q\"\"x\"".to_string()),
            ]
        );
        assert_eq!(strings(&m, 0), vec![None, None, None]);

        let raw = Encoder::new("t", ValueFormat::Raw, None, &b.schema());
        assert!(raw.err().unwrap().to_string().contains("exactly one"));
        let bad_key = Encoder::new("t", ValueFormat::Json, Some("nope"), &b.schema());
        assert!(bad_key.err().unwrap().to_string().contains("id, text"));
    }
}
