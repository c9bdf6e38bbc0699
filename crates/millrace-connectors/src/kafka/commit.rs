//! How a Kafka sink takes part in checkpoints (the two-phase contract of
//! `millrace_core::sink`).
//!
//! # At least once ([`AcknowledgedCommitter`])
//!
//! Writers produce as rows come. Preparing a checkpoint waits until every
//! writer's producer has had each message sent so far acknowledged, so a
//! completed checkpoint never covers a row the broker does not hold. There
//! is nothing to commit.
//!
//! # Exactly once ([`TransactionalCommitter`])
//!
//! A Kafka transaction cannot outlive its producer: librdkafka has no way to
//! commit, after a crash, a transaction another process opened. So nothing
//! is produced before a checkpoint is durable:
//!
//! 1. writers encode their rows into messages and keep them
//!    (`StagingWriter`); at the barrier of epoch `e` they hand them over as
//!    their token, without copying;
//! 2. `prepare` puts every writer's messages into the prepared commit,
//!    which the checkpoint stores: the epoch's output is durable with it;
//! 3. `commit` produces them, and a progress record `{"epoch": e}` keyed by
//!    the transactional id to the progress topic, in one transaction, on the
//!    checkpoint thread.
//!
//! Recovery (`recover`) first fences the crashed run's producer (same
//! transactional id: `init_transactions` aborts whatever it left open), then
//! reads the progress topic with `read_committed`. The last record with its
//! key says which epoch committed last, `c`. Restoring checkpoint `e`:
//!
//! | found   | meaning                                           | recovery does               |
//! |---------|---------------------------------------------------|-----------------------------|
//! | `c = e` | the crash came after `e`'s transaction committed  | nothing                     |
//! | `c < e` | the crash came before (or during) it: aborted     | produces `e` again, commits |
//! | `c > e` | a checkpoint older than the output was restored   | refuses, naming both        |
//!
//! A fresh start (no checkpoint) commits a progress record of epoch 0, so
//! the epochs of an earlier run with the same transactional id are never
//! mistaken for this run's.
//!
//! The cost of this design: the output is written twice (into the
//! checkpoint, then to Kafka), and an epoch becomes visible one checkpoint
//! write plus its own production after its barrier, produced by one thread.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use millrace_core::state::scalars;
use millrace_core::{Epoch, Error, Result, SinkCommitter, SinkWriter, Snapshot};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::client::REQUEST_TIMEOUT;
use super::sink::{
    COMMIT_TIMEOUT, DeliveryCheck, SinkSettings, StagingWriter, flush, messages_schema, send,
    send_all,
};

/// Prepared-commit table holding the epoch's messages.
const MESSAGES: &str = "messages";
/// Prepared-commit table naming the epoch (always there, so a checkpoint
/// without output still holds a commit).
const EPOCH: &str = "epoch";

/// The at-least-once sink's side of checkpoints: wait for acknowledgements.
pub(crate) struct AcknowledgedCommitter {
    settings: SinkSettings,
    producers: Mutex<Vec<Arc<ThreadedProducer<DeliveryCheck>>>>,
}

impl AcknowledgedCommitter {
    pub fn new(settings: SinkSettings) -> Self {
        AcknowledgedCommitter {
            settings,
            producers: Mutex::new(Vec::new()),
        }
    }
}

impl SinkCommitter for AcknowledgedCommitter {
    fn create(
        &self,
        _instance: usize,
        _parallelism: usize,
        schema: SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        let writer = self.settings.writer(&schema)?;
        self.producers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(writer.producer.clone());
        Ok(Box::new(writer))
    }

    fn prepare(&self, epoch: Epoch, _tokens: &[Snapshot]) -> Result<Snapshot> {
        let producers = self
            .producers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for producer in &producers {
            flush(producer, &self.settings.topic)?;
        }
        Ok(Snapshot::none().with(EPOCH, scalars(&[("epoch", Some(epoch as i64))])))
    }

    fn commit(&self, _epoch: Epoch, _prepared: &Snapshot) -> Result<()> {
        Ok(())
    }

    fn recover(&self, _restored: Option<(Epoch, &Snapshot)>) -> Result<()> {
        Ok(())
    }
}

/// The exactly-once sink's side of checkpoints (see the module doc).
pub(crate) struct TransactionalCommitter {
    settings: SinkSettings,
    /// The transactional producer and the last epoch committed, once
    /// `recover` has run.
    state: Mutex<Option<Transactions>>,
}

struct Transactions {
    producer: ThreadedProducer<DeliveryCheck>,
    committed: Epoch,
}

impl TransactionalCommitter {
    pub fn new(settings: SinkSettings) -> Self {
        TransactionalCommitter {
            settings,
            state: Mutex::new(None),
        }
    }

    fn error(&self, doing: &str, e: KafkaError) -> Error {
        self.settings.connection.error(
            &format!(
                "topic '{}' (transactional id '{}'): {doing}",
                self.settings.topic, self.settings.transactional_id
            ),
            e,
        )
    }

    /// A producer with the sink's transactional id, its transactions
    /// initialized: any transaction an earlier producer with that id left
    /// open is aborted, and that producer fenced.
    fn transactional_producer(&self) -> Result<ThreadedProducer<DeliveryCheck>> {
        let s = &self.settings;
        let producer = s
            .connection
            .producer(&s.linger_ms, Some(&s.transactional_id))?;
        producer
            .init_transactions(COMMIT_TIMEOUT)
            .map_err(|e| self.error("cannot initialize transactions", e))?;
        Ok(producer)
    }

    /// The last epoch committed under the transactional id, as the
    /// progress topic says to a `read_committed` reader (`None`: never).
    fn committed_epoch(&self) -> Result<Option<Epoch>> {
        let s = &self.settings;
        s.connection
            .create_topic(&s.progress_topic, 1, None, &[("cleanup.policy", "compact")])?;
        let consumer: BaseConsumer = s
            .connection
            .config(&[
                ("group.id", "millrace-progress"),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
                // The end is found by an empty fetch: do not wait for data.
                ("fetch.wait.max.ms", "10"),
            ])
            .create()
            .map_err(|e| self.error("cannot create a consumer of the progress topic", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&s.progress_topic, 0, Offset::Beginning)
            .map_err(|e| self.error("cannot name the progress partition", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| self.error("cannot read the progress topic", e))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut last = None;
        loop {
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "kafka {}: the progress topic '{}' could not be read to its end within {}s",
                    s.connection.bootstrap(),
                    s.progress_topic,
                    REQUEST_TIMEOUT.as_secs()
                )));
            }
            match consumer.poll(Duration::from_millis(10)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(last),
                Some(Err(KafkaError::MessageConsumption(_))) => continue,
                Some(Err(e)) => return Err(self.error("cannot read the progress topic", e)),
                Some(Ok(m)) => {
                    if m.key() != Some(s.transactional_id.as_bytes()) {
                        continue;
                    }
                    let epoch = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                        .and_then(|v| v.get("epoch").and_then(serde_json::Value::as_u64));
                    match epoch {
                        Some(e) => last = Some(e),
                        None => {
                            return Err(Error::Other(format!(
                                "kafka topic '{}' offset {}: not a progress record of millrace",
                                s.progress_topic,
                                m.offset()
                            )));
                        }
                    }
                }
            }
        }
    }

    /// Produces `messages` and the progress record of `epoch` in one
    /// transaction.
    fn transact(
        &self,
        txn: &mut Transactions,
        epoch: Epoch,
        messages: &[&RecordBatch],
    ) -> Result<()> {
        let s = &self.settings;
        txn.producer
            .begin_transaction()
            .map_err(|e| self.error("cannot begin a transaction", e))?;
        let produced = (|| {
            for batch in messages {
                send_all(&txn.producer, &s.topic, batch)?;
            }
            let progress = format!("{{\"epoch\":{epoch}}}");
            let record = BaseRecord::to(&s.progress_topic)
                .partition(0)
                .key(s.transactional_id.as_bytes())
                .payload(progress.as_bytes());
            send(&txn.producer, record)
                .map_err(|e| self.error("cannot produce the progress record", e))?;
            txn.producer
                .commit_transaction(COMMIT_TIMEOUT)
                .map_err(|e| self.error(&format!("cannot commit epoch {epoch}"), e))
        })();
        if let Err(e) = produced {
            // Whatever was sent is discarded; the run fails and its restart
            // produces the epoch again (`recover`).
            let _ = txn.producer.abort_transaction(COMMIT_TIMEOUT);
            return Err(e);
        }
        txn.producer.context().check(&s.topic)?;
        txn.committed = epoch;
        Ok(())
    }
}

/// The messages of a prepared commit, in order.
fn messages_of(prepared: &Snapshot) -> Vec<&RecordBatch> {
    prepared
        .tables()
        .filter(|(name, _, _)| *name == MESSAGES)
        .flat_map(|(_, _, chunks)| chunks.iter())
        .collect()
}

impl SinkCommitter for TransactionalCommitter {
    fn create(
        &self,
        _instance: usize,
        _parallelism: usize,
        schema: SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(StagingWriter {
            encoder: self.settings.encoder(&schema)?,
            staged: Vec::new(),
        }))
    }

    /// Every writer's messages, epoch by epoch (the order of `tokens`).
    fn prepare(&self, epoch: Epoch, tokens: &[Snapshot]) -> Result<Snapshot> {
        let chunks: Vec<&RecordBatch> = tokens.iter().flat_map(messages_of).collect();
        Snapshot::none()
            .with(EPOCH, scalars(&[("epoch", Some(epoch as i64))]))
            .with_chunks(MESSAGES, &messages_schema(), chunks)
    }

    fn commit(&self, epoch: Epoch, prepared: &Snapshot) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(txn) = state.as_mut() else {
            return Err(Error::Other(format!(
                "{}: commit before recovery",
                self.settings.name
            )));
        };
        if epoch <= txn.committed {
            return Ok(());
        }
        let messages = messages_of(prepared);
        if messages.is_empty() {
            // Nothing to show; a replay of an empty epoch does nothing either.
            txn.committed = epoch;
            return Ok(());
        }
        self.transact(txn, epoch, &messages)
    }

    fn recover(&self, restored: Option<(Epoch, &Snapshot)>) -> Result<()> {
        let s = &self.settings;
        s.connection.partitions(&s.topic)?;
        let producer = self.transactional_producer()?;
        let committed = self.committed_epoch()?;
        let mut txn = Transactions {
            producer,
            committed: 0,
        };
        match restored {
            None => {
                // A new lineage: epochs count again from 1.
                if committed.is_some_and(|c| c > 0) {
                    self.transact(&mut txn, 0, &[])?;
                }
            }
            Some((epoch, prepared)) => match committed {
                Some(c) if c > epoch => {
                    return Err(Error::Other(format!(
                        "{}: the topic already holds epochs up to {c}, committed after checkpoint \
                         {epoch} being restored; restoring it would write them again (restore the \
                         latest checkpoint, or start fresh into an empty topic)",
                        s.name
                    )));
                }
                Some(c) if c == epoch => txn.committed = epoch,
                _ => {
                    txn.committed = committed.unwrap_or(0);
                    let messages = messages_of(prepared);
                    if messages.is_empty() {
                        txn.committed = epoch;
                    } else {
                        self.transact(&mut txn, epoch, &messages)?;
                    }
                }
            },
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(txn);
        Ok(())
    }
}

#[cfg(test)]
impl TransactionalCommitter {
    /// What a run that dies mid-commit leaves: `prepared`'s messages sent
    /// in a transaction that is never ended (its producer is leaked, so
    /// not even its drop ends it).
    pub(crate) fn begin_and_abandon(&self, prepared: &Snapshot) {
        let txn = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("recovered");
        txn.producer.begin_transaction().expect("begin");
        for batch in messages_of(prepared) {
            send_all(&txn.producer, &self.settings.topic, batch).expect("send");
        }
        txn.producer.flush(COMMIT_TIMEOUT).expect("flush");
        std::mem::forget(txn);
    }
}
