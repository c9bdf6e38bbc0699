//! One instance of a Kafka source: its partitions, read from the offsets
//! its position names, a batch of messages decoded at a time.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, SchemaRef};
use millrace_core::batch::attach_entered_now;
use millrace_core::time::{event_times_ms, now_ns};
use millrace_core::{Error, Result, Snapshot, SourcePoll, SourceReader, SourceStats};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::ValueFormat;
use super::client::Connection;
use super::metadata::{Metadata, MetadataField};
use super::position::{KafkaPosition, PartitionProgress};
use super::sink::{DeliveryCheck, flush, send};
use crate::dead_letter::{DeadLetter, DeadRecord, Place, encode};
use crate::file::ChunkDecoder;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

/// What every instance of one source shares.
pub(crate) struct Shared {
    pub name: String,
    pub connection: Connection,
    pub topic: String,
    pub format: ValueFormat,
    /// The columns decoded from values, then the metadata columns.
    pub value_schema: SchemaRef,
    pub metadata: Metadata,
    pub schema: SchemaRef,
    /// The event-time column's index in `schema` and the idle timeout of
    /// a partition.
    pub event_time: Option<(usize, String, Option<Duration>)>,
    /// The event time is the message timestamp (a metadata column): a
    /// message without one is bad.
    pub event_time_is_timestamp: bool,
    /// Builds each reader's decoder (JSON and CSV; `None` for raw).
    pub decoder: Option<Box<dyn Fn() -> Result<ChunkDecoder> + Send + Sync>>,
    pub policy: BadMessages,
}

/// Where bad messages go (`OnError`, resolved).
pub(crate) enum BadMessages {
    Fail,
    Skip,
    File(Arc<DeadLetter>),
    /// Produced to a topic, at least once: acknowledged before the
    /// reader's next position is taken.
    Topic {
        producer: ThreadedProducer<DeliveryCheck>,
        topic: String,
    },
}

/// Bad messages of one poll: (index into the poll's rows, reason), in order.
type BadRows = Vec<(usize, String)>;

/// A partition this instance reads.
struct Partition {
    progress: PartitionProgress,
    /// Its earliest offset when the reader was created.
    earliest: i64,
    /// When its last message (or its assignment) was seen, for idleness.
    last_message_ns: i64,
    /// A bounded read reached its stop offset.
    done: bool,
}

/// One polled message, before decoding.
struct Row {
    slot: usize,
    offset: i64,
    /// Its value's bytes in `KafkaReader::values` (empty without a value).
    value: (usize, usize),
    timestamp: Option<i64>,
    key: Option<Result<String, ()>>,
    headers: Option<String>,
}

pub(crate) struct KafkaReader {
    shared: Arc<Shared>,
    consumer: BaseConsumer,
    /// This instance's partitions, by partition number.
    partitions: Vec<Partition>,
    /// Partition number → index in `partitions`.
    slot_of: Vec<Option<usize>>,
    assigned: bool,
    decoder: Option<ChunkDecoder>,
    /// Scratch of one poll: values, each followed by `\n` (the decoder's
    /// record terminator), and the messages.
    values: Vec<u8>,
    rows: Vec<Row>,
    stats: SourceStats,
    /// Offset-out-of-range answers rechecked so far (`recheck_offsets`).
    offset_resets: u32,
}

/// How many offset-out-of-range answers a reader rechecks before it gives up.
const MAX_OFFSET_RECHECKS: u32 = 10;

/// Consumer errors librdkafka recovers from by itself (a broker restarting,
/// a leader moving): reading goes on once it has.
fn is_transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | Resolve
            | OperationTimedOut
            | RequestTimedOut
            | NotLeaderForPartition
            | LeaderNotAvailable
            | NetworkException
            | NotCoordinator
            | CoordinatorNotAvailable
            | FencedLeaderEpoch
            | UnknownLeaderEpoch
    )
}

impl KafkaReader {
    /// A reader of `progress` (this instance's partitions of a topic with
    /// `partition_count` partitions, with their earliest offsets), not yet
    /// assigned: `seek` may still move it.
    pub fn new(
        shared: Arc<Shared>,
        consumer: BaseConsumer,
        partition_count: usize,
        progress: Vec<(PartitionProgress, i64)>,
    ) -> Result<Self> {
        let decoder = shared.decoder.as_ref().map(|make| make()).transpose()?;
        let mut reader = KafkaReader {
            shared,
            consumer,
            partitions: Vec::new(),
            slot_of: vec![None; partition_count],
            assigned: false,
            decoder,
            values: Vec::new(),
            rows: Vec::new(),
            stats: SourceStats::default(),
            offset_resets: 0,
        };
        reader.set_partitions(progress);
        Ok(reader)
    }

    fn set_partitions(&mut self, mut progress: Vec<(PartitionProgress, i64)>) {
        progress.sort_by_key(|(p, _)| p.partition);
        self.slot_of.iter_mut().for_each(|s| *s = None);
        self.partitions = progress
            .into_iter()
            .enumerate()
            .map(|(i, (p, earliest))| {
                if let Some(slot) = self.slot_of.get_mut(p.partition as usize) {
                    *slot = Some(i);
                }
                Partition {
                    done: p.stop.is_some_and(|stop| p.next >= stop),
                    progress: p,
                    earliest,
                    last_message_ns: 0,
                }
            })
            .collect();
    }

    fn tpl(&self, partitions: impl Iterator<Item = (i32, Offset)>) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in partitions {
            tpl.add_partition_offset(&self.shared.topic, p, offset)
                .map_err(|e| self.error("cannot name a partition", e))?;
        }
        Ok(tpl)
    }

    fn error(&self, doing: &str, e: KafkaError) -> Error {
        self.shared
            .connection
            .error(&format!("topic '{}': {doing}", self.shared.topic), e)
    }

    /// Starts fetching every partition not done from its next offset.
    fn assign(&mut self) -> Result<()> {
        let now = now_ns();
        for p in &mut self.partitions {
            p.last_message_ns = now;
        }
        self.assign_from_next()
    }

    fn assign_from_next(&mut self) -> Result<()> {
        let tpl = self.tpl(
            self.partitions
                .iter()
                .filter(|p| !p.done)
                .map(|p| (p.progress.partition, Offset::Offset(p.progress.next))),
        )?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| self.error("cannot assign partitions", e))?;
        self.assigned = true;
        Ok(())
    }

    /// A bounded read of partition `slot` is complete: stop fetching it.
    fn finish_partition(&mut self, slot: usize) -> Result<()> {
        let p = &mut self.partitions[slot];
        if p.done {
            return Ok(());
        }
        p.done = true;
        if let Some(stop) = p.progress.stop {
            p.progress.next = p.progress.next.max(stop);
        }
        let partition = p.progress.partition;
        let tpl = self.tpl(std::iter::once((partition, Offset::Invalid)))?;
        self.consumer
            .pause(&tpl)
            .map_err(|e| self.error("cannot pause a finished partition", e))
    }

    /// The consumer reached the end of `partition`: a bounded read is
    /// complete there once the position passed the stop offset (the last
    /// offsets may be transaction markers, never delivered as messages).
    fn reached_end(&mut self, partition: i32) -> Result<()> {
        let Some(slot) = self.slot_of.get(partition as usize).copied().flatten() else {
            return Ok(());
        };
        let Some(stop) = self.partitions[slot].progress.stop else {
            return Ok(());
        };
        let position = self
            .consumer
            .position()
            .map_err(|e| self.error("cannot read the consumer's position", e))?;
        let at = position
            .find_partition(&self.shared.topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        if at.is_some_and(|at| at >= stop) {
            self.finish_partition(slot)?;
        }
        Ok(())
    }

    /// A fetch found an offset out of range (librdkafka does not say which
    /// partition's). An offset the partition no longer holds is an error
    /// naming it, never a jump elsewhere; one it does hold (a broker that
    /// answered while a new topic's leadership settled) is fetched again.
    fn recheck_offsets(&mut self) -> Result<()> {
        self.offset_resets += 1;
        if self.offset_resets > MAX_OFFSET_RECHECKS {
            return Err(Error::Other(format!(
                "kafka topic '{}': fetches keep failing with offsets out of range",
                self.shared.topic
            )));
        }
        let open: Vec<(i32, i64)> = (self.partitions.iter())
            .filter(|p| !p.done)
            .map(|p| (p.progress.partition, p.progress.next))
            .collect();
        let numbers: Vec<i32> = open.iter().map(|&(partition, _)| partition).collect();
        let (conn, topic) = (&self.shared.connection, &self.shared.topic);
        let low = conn.required_offsets(&self.consumer, topic, &numbers, Offset::Beginning)?;
        let high = conn.required_offsets(&self.consumer, topic, &numbers, Offset::End)?;
        for (((partition, next), low), high) in open.into_iter().zip(low).zip(high) {
            if next < low || next > high {
                return Err(Error::Other(format!(
                    "kafka topic '{topic}' partition {partition}: offset {next} is no longer there \
                     (the partition holds {low}..{high}, retention removed the rest); reading on \
                     from elsewhere would lose or repeat messages"
                )));
            }
        }
        // Fetch everything again from this reader's own positions: what
        // librdkafka had queued but not handed over is dropped with the
        // old assignment, so nothing is skipped or read twice.
        self.consumer
            .unassign()
            .map_err(|e| self.error("cannot drop the assignment", e))?;
        self.assign_from_next()
    }

    fn all_done(&self) -> bool {
        self.partitions.iter().all(|p| p.done)
    }

    fn bounded(&self) -> bool {
        self.partitions.iter().all(|p| p.progress.stop.is_some())
    }

    /// Polls up to `max_rows` messages into `rows` and `values`.
    fn fetch(&mut self, max_rows: usize) -> Result<()> {
        self.values.clear();
        self.rows.clear();
        let now = now_ns();
        while self.rows.len() < max_rows {
            let Some(polled) = self.consumer.poll(Duration::ZERO) else {
                break;
            };
            let message = match polled {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(partition)) => {
                    self.reached_end(partition)?;
                    continue;
                }
                Err(KafkaError::MessageConsumption(code)) if is_transient(code) => continue,
                Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                    self.recheck_offsets()?;
                    continue;
                }
                Err(e) => return Err(self.error("cannot read", e)),
            };
            let Some(slot) = self
                .slot_of
                .get(message.partition() as usize)
                .copied()
                .flatten()
            else {
                continue;
            };
            let partition = &mut self.partitions[slot];
            if partition.done {
                continue;
            }
            let offset = message.offset();
            // Already returned (a fetch restarted from an older offset):
            // never twice.
            if offset < partition.progress.next {
                continue;
            }
            if partition.progress.stop.is_some_and(|stop| offset >= stop) {
                self.finish_partition(slot)?;
                continue;
            }
            partition.progress.next = offset + 1;
            partition.last_message_ns = now;
            let start = self.values.len();
            if let Some(payload) = message.payload() {
                self.values.extend_from_slice(payload.trim_ascii_end());
            }
            let value = (start, self.values.len());
            self.values.push(b'\n');
            let metadata = &self.shared.metadata;
            let key = metadata.wants(MetadataField::Key).then(|| {
                message
                    .key()
                    .map(|k| std::str::from_utf8(k).map(str::to_string).map_err(|_| ()))
            });
            let headers = if metadata.wants(MetadataField::Headers) {
                message.headers().map(|h| {
                    let mut object = serde_json::Map::new();
                    for header in h.iter() {
                        let value = header.value.map_or(serde_json::Value::Null, |v| {
                            serde_json::Value::String(String::from_utf8_lossy(v).into_owned())
                        });
                        object.insert(header.key.to_string(), value);
                    }
                    serde_json::Value::Object(object).to_string()
                })
            } else {
                None
            };
            self.rows.push(Row {
                slot,
                offset,
                value,
                timestamp: message.timestamp().to_millis(),
                key: key.flatten(),
                headers,
            });
        }
        Ok(())
    }

    /// Why a message is bad before its value is decoded, if it is.
    fn early_reason(&self, row: &Row) -> Option<String> {
        let value = &self.values[row.value.0..row.value.1];
        if matches!(row.key, Some(Err(()))) {
            return Some("the message key is not UTF-8 (the key column is text)".into());
        }
        if self.shared.event_time_is_timestamp && row.timestamp.is_none() {
            return Some("the message has no timestamp, which is the event time".into());
        }
        match self.shared.format {
            ValueFormat::Json | ValueFormat::Csv { .. } if row.value.0 == row.value.1 => {
                Some("the message has no value".into())
            }
            ValueFormat::Csv { .. } if memchr::memchr(b'\n', value).is_some() => {
                Some("the value holds a line break; a CSV message is one record".into())
            }
            ValueFormat::Raw
                if self.shared.value_schema.field(0).data_type() == &DataType::Utf8
                    && std::str::from_utf8(value).is_err() =>
            {
                Some("the value is not UTF-8 (the column is text)".into())
            }
            _ => None,
        }
    }

    /// Decodes the fetched messages: the good rows as a batch of the
    /// table's columns, and the bad ones as (row, reason), in order.
    fn decode(&mut self) -> Result<(Option<RecordBatch>, BadRows)> {
        let mut bad: BadRows = Vec::new();
        let mut candidates = Vec::with_capacity(self.rows.len());
        for (i, row) in self.rows.iter().enumerate() {
            match self.early_reason(row) {
                Some(reason) => bad.push((i, reason)),
                None => candidates.push(i),
            }
        }
        let (values, good): (Option<RecordBatch>, Vec<usize>) = match &mut self.decoder {
            Some(decoder) => {
                let records: Vec<(usize, usize)> =
                    candidates.iter().map(|&i| self.rows[i].value).collect();
                let decoded = decoder.decode(&self.values, &records)?;
                let mut refused = vec![false; candidates.len()];
                for (k, reason) in decoded.bad {
                    refused[k] = true;
                    bad.push((candidates[k], reason));
                }
                let good = candidates
                    .iter()
                    .zip(&refused)
                    .filter(|(_, r)| !**r)
                    .map(|(i, _)| *i)
                    .collect();
                (decoded.batch, good)
            }
            None => {
                let column: ArrayRef = match self.shared.value_schema.field(0).data_type() {
                    DataType::Utf8 => {
                        Arc::new(StringArray::from_iter_values(candidates.iter().map(|&i| {
                            let (s, e) = self.rows[i].value;
                            // Checked in `early_reason`.
                            std::str::from_utf8(&self.values[s..e]).unwrap_or_default()
                        })))
                    }
                    _ => Arc::new(BinaryArray::from_iter_values(candidates.iter().map(|&i| {
                        let (s, e) = self.rows[i].value;
                        &self.values[s..e]
                    }))),
                };
                let batch = RecordBatch::try_new(self.shared.value_schema.clone(), vec![column])?;
                ((!candidates.is_empty()).then_some(batch), candidates)
            }
        };
        bad.sort_by_key(|(i, _)| *i);
        let Some(values) = values else {
            return Ok((None, bad));
        };
        let mut columns = values.columns().to_vec();
        for (_, field) in self.shared.metadata.columns() {
            let rows = good.iter().map(|&i| &self.rows[i]);
            let column: ArrayRef = match field {
                MetadataField::Key => Arc::new(StringArray::from_iter(
                    rows.map(|r| r.key.as_ref().and_then(|k| k.as_deref().ok())),
                )),
                MetadataField::Partition => Arc::new(Int32Array::from_iter_values(
                    rows.map(|r| self.partitions[r.slot].progress.partition),
                )),
                MetadataField::Offset => {
                    Arc::new(Int64Array::from_iter_values(rows.map(|r| r.offset)))
                }
                MetadataField::Timestamp => Arc::new(TimestampMillisecondArray::from_iter(
                    rows.map(|r| r.timestamp),
                )),
                MetadataField::Headers => {
                    Arc::new(StringArray::from_iter(rows.map(|r| r.headers.as_deref())))
                }
            };
            columns.push(column);
        }
        let batch = RecordBatch::try_new(self.shared.schema.clone(), columns)?;
        if let Some((index, column, _)) = &self.shared.event_time {
            let times = event_times_ms(batch.column(*index), column)?;
            for (&i, t) in good.iter().zip(times) {
                let p = &mut self.partitions[self.rows[i].slot].progress;
                p.max_event_time = p.max_event_time.max(t);
            }
        }
        Ok((Some(batch), bad))
    }

    /// Applies the error policy to the bad messages of this poll.
    fn handle_bad(&mut self, bad: &[(usize, String)]) -> Result<()> {
        if bad.is_empty() {
            return Ok(());
        }
        let place = |i: usize| {
            let row = &self.rows[i];
            (self.partitions[row.slot].progress.partition, row.offset)
        };
        match &self.shared.policy {
            BadMessages::Fail => {
                let (i, reason) = &bad[0];
                let (partition, offset) = place(*i);
                Err(Error::BadMessage {
                    input: format!("kafka topic '{}'", self.shared.topic),
                    at: format!("partition {partition} offset {offset}"),
                    reason: reason.clone(),
                })
            }
            BadMessages::Skip => {
                self.stats.skipped += bad.len() as u64;
                Ok(())
            }
            BadMessages::File(_) | BadMessages::Topic { .. } => {
                let records: Vec<DeadRecord<'_>> = bad
                    .iter()
                    .map(|(i, reason)| {
                        let (partition, offset) = place(*i);
                        let (s, e) = self.rows[*i].value;
                        DeadRecord {
                            source: &self.shared.topic,
                            place: Place::Message { partition, offset },
                            reason,
                            raw: &self.values[s..e],
                        }
                    })
                    .collect();
                match &self.shared.policy {
                    BadMessages::File(out) => out.write_all(&records)?,
                    BadMessages::Topic { producer, topic } => {
                        let mut text = String::new();
                        for record in &records {
                            text.clear();
                            encode(record, &mut text);
                            let line = text.trim_end().as_bytes();
                            send(producer, BaseRecord::to(topic).payload(line)).map_err(|e| {
                                Error::Other(format!(
                                    "kafka dead-letter topic '{topic}': cannot produce: {e}"
                                ))
                            })?;
                        }
                        producer.context().check(topic)?;
                    }
                    BadMessages::Fail | BadMessages::Skip => {}
                }
                self.stats.dead_lettered += bad.len() as u64;
                Ok(())
            }
        }
    }
}

impl SourceReader for KafkaReader {
    fn poll_batch(&mut self, max_rows: usize) -> Result<SourcePoll> {
        if !self.assigned {
            self.assign()?;
        }
        if self.bounded() && self.all_done() {
            return Ok(SourcePoll::Exhausted);
        }
        self.fetch(max_rows)?;
        if self.rows.is_empty() {
            return Ok(if self.bounded() && self.all_done() {
                SourcePoll::Exhausted
            } else {
                SourcePoll::Pending { wake_at_ns: None }
            });
        }
        let (batch, bad) = self.decode()?;
        self.handle_bad(&bad)?;
        let batch = match batch {
            Some(b) => b,
            None => RecordBatch::new_empty(self.shared.schema.clone()),
        };
        Ok(SourcePoll::Batch(attach_entered_now(&batch, now_ns())?))
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    fn event_time_reached(&self) -> Option<i64> {
        let (_, _, idle_timeout) = self.shared.event_time.as_ref()?;
        let now = now_ns();
        let idle = |p: &Partition| {
            idle_timeout.is_some_and(|t| {
                now.saturating_sub(p.last_message_ns)
                    >= i64::try_from(t.as_nanos()).unwrap_or(i64::MAX)
            })
        };
        let active = self
            .partitions
            .iter()
            .filter(|p| !p.done && !idle(p))
            .map(|p| p.progress.max_event_time)
            .min();
        // Every partition idle or done: the instance is as far as its
        // furthest partition (the runtime declares it idle meanwhile).
        Some(active.unwrap_or_else(|| {
            self.partitions
                .iter()
                .map(|p| p.progress.max_event_time)
                .max()
                .unwrap_or(i64::MIN)
        }))
    }

    fn position(&self) -> Result<Option<Snapshot>> {
        // Dead letters counted in this position must be in their topic
        // before the checkpoint holding it completes. Bad messages are
        // rare: almost always nothing is in flight and this returns at once.
        if let BadMessages::Topic { producer, topic } = &self.shared.policy
            && producer.in_flight_count() > 0
        {
            flush(producer, topic)?;
        }
        let position = KafkaPosition {
            partitions: self.partitions.iter().map(|p| p.progress).collect(),
            skipped: self.stats.skipped,
            dead_lettered: self.stats.dead_lettered,
        };
        // For lag monitoring only (the checkpoint is what a restore reads):
        // committed without waiting, and a failure changes nothing.
        if self.assigned
            && !self.partitions.is_empty()
            && let Ok(tpl) = self.tpl(
                self.partitions
                    .iter()
                    .map(|p| (p.progress.partition, Offset::Offset(p.progress.next))),
            )
        {
            let _ = self.consumer.commit(&tpl, CommitMode::Async);
        }
        Ok(Some(position.to_snapshot()))
    }

    fn seek(&mut self, position: &Snapshot) -> Result<()> {
        if self.assigned {
            return Err(Error::Other(format!(
                "{}: a reader that has started cannot be moved",
                self.shared.name
            )));
        }
        let restored = KafkaPosition::from_snapshot(position).map_err(|e| {
            Error::Other(format!(
                "{}: the checkpointed position: {e}",
                self.shared.name
            ))
        })?;
        let mut progress: Vec<(PartitionProgress, i64)> = self
            .partitions
            .iter()
            .map(|p| {
                // Not in the checkpoint: the partition appeared after it,
                // and is read from its start.
                let mut fresh = p.progress;
                fresh.next = p.earliest;
                fresh.stop = fresh.stop.map(|s| s.max(p.earliest));
                (fresh, p.earliest)
            })
            .collect();
        for r in &restored.partitions {
            let Some((p, _)) = progress
                .iter_mut()
                .find(|(p, _)| p.partition == r.partition)
            else {
                return Err(Error::Other(format!(
                    "{}: the checkpoint has partition {} for an instance that does not read it \
                     (did the topic lose partitions?)",
                    self.shared.name, r.partition
                )));
            };
            *p = *r;
        }
        self.set_partitions(progress);
        self.stats.skipped = restored.skipped;
        self.stats.dead_lettered = restored.dead_lettered;
        Ok(())
    }
}
