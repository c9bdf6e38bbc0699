//! Reaching a Kafka cluster: the bootstrap servers and the client options
//! passed through to librdkafka, the clients built from them, and the
//! admin calls the connectors need (partition count, topic creation).

use std::time::Duration;

use millrace_core::{Error, Result};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::ThreadedProducer;
use rdkafka::{Offset, TopicPartitionList};

use super::block_on::block_on;
use super::sink::DeliveryCheck;

/// How long a metadata or admin request may take before it is an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster and the client settings every client of a table uses.
#[derive(Debug, Clone)]
pub struct Connection {
    bootstrap: String,
    /// librdkafka settings as given (`fetch.min.bytes` = `1`), applied
    /// last so they override the connector's defaults.
    options: Vec<(String, String)>,
}

impl Connection {
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Connection {
            bootstrap: bootstrap.into(),
            options: Vec::new(),
        }
    }

    /// Adds a librdkafka setting (see librdkafka's CONFIGURATION.md).
    pub fn with_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The user's value of a librdkafka setting, if given.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A client configuration: `defaults`, then the user's options.
    pub(crate) fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.options {
            config.set(k, v);
        }
        config
    }

    /// A producer that never duplicates a message by its own retries
    /// (idempotent), partitions by key as Kafka's Java clients do (murmur2;
    /// no key: a random partition), and records failed deliveries; with a
    /// `transactional_id`, a transactional one (not yet initialized).
    pub(crate) fn producer(
        &self,
        linger_ms: &str,
        transactional_id: Option<&str>,
    ) -> Result<ThreadedProducer<DeliveryCheck>> {
        let mut config = self.config(&[
            ("enable.idempotence", "true"),
            ("linger.ms", linger_ms),
            ("partitioner", "murmur2_random"),
        ]);
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
        }
        config
            .create_with_context(DeliveryCheck::default())
            .map_err(|e| self.error("cannot create a producer", e))
    }

    /// A consumer for metadata and offset lookups.
    pub(crate) fn lookup_consumer(&self) -> Result<BaseConsumer> {
        self.config(&[("enable.auto.commit", "false")])
            .create()
            .map_err(|e| self.error("cannot create a client", e))
    }

    /// For each of `partitions`, in order, the offset a `read_committed`
    /// ListOffsets request answers for `which`: the earliest
    /// (`Offset::Beginning`), the next to be written (`Offset::End`), or
    /// the first at or after a time (`Offset::Offset(ms)`; `None` when no
    /// message is that late). Every offset is named in the answer; a
    /// partition-level error the broker asks clients to retry (a leader
    /// settling after an election) is retried for a while, any other is an
    /// error naming the partition.
    pub(crate) fn list_offsets(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        partitions: &[i32],
        which: Offset,
    ) -> Result<Vec<Option<i64>>> {
        use rdkafka::error::RDKafkaErrorCode::*;
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let err = |doing: &str, e| self.error(&format!("topic '{topic}': {doing}"), e);
        let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
        'ask: loop {
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                tpl.add_partition_offset(topic, p, which)
                    .map_err(|e| err("cannot name a partition", e))?;
            }
            let found = consumer
                .offsets_for_times(tpl, REQUEST_TIMEOUT)
                .map_err(|e| err("cannot read the partitions' offsets", e))?;
            let mut offsets = Vec::with_capacity(partitions.len());
            for &p in partitions {
                let Some(entry) = found.find_partition(topic, p) else {
                    return Err(Error::Other(format!(
                        "kafka {}: topic '{}': the broker did not answer for partition {p}",
                        self.bootstrap, topic
                    )));
                };
                match entry.error() {
                    Ok(()) => {}
                    Err(KafkaError::OffsetFetch(
                        OffsetNotAvailable
                        | LeaderNotAvailable
                        | NotLeaderForPartition
                        | FencedLeaderEpoch
                        | UnknownLeaderEpoch
                        | RequestTimedOut,
                    )) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue 'ask;
                    }
                    Err(e) => return Err(err(&format!("no offset for partition {p}"), e)),
                }
                offsets.push(match entry.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                });
            }
            return Ok(offsets);
        }
    }

    /// The offsets `list_offsets` must answer for every partition.
    pub(crate) fn required_offsets(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        partitions: &[i32],
        which: Offset,
    ) -> Result<Vec<i64>> {
        self.list_offsets(consumer, topic, partitions, which)?
            .into_iter()
            .zip(partitions)
            .map(|(o, p)| {
                o.ok_or_else(|| {
                    Error::Other(format!(
                        "kafka {}: topic '{}': the broker gave no offset for partition {p}",
                        self.bootstrap, topic
                    ))
                })
            })
            .collect()
    }

    /// The number of partitions of `topic`; an error naming the topic if
    /// it does not exist (topics are never created by reading them).
    pub fn partitions(&self, topic: &str) -> Result<usize> {
        let consumer = self.lookup_consumer()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| self.error(&format!("cannot read the metadata of topic '{topic}'"), e))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(self.missing(topic));
        };
        match t.error() {
            None if !t.partitions().is_empty() => Ok(t.partitions().len()),
            None => Err(self.missing(topic)),
            Some(code)
                if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition =>
            {
                Err(self.missing(topic))
            }
            Some(code) => Err(Error::Other(format!(
                "kafka {}: topic '{topic}': {}",
                self.bootstrap,
                RDKafkaErrorCode::from(code)
            ))),
        }
    }

    /// Creates `topic` with `partitions` partitions (replication 1 or the
    /// broker's default when `replication` is `None`) and `configs`; an
    /// existing topic is left as it is.
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: usize,
        replication: Option<i32>,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .config(&[])
            .create()
            .map_err(|e| self.error("cannot create an admin client", e))?;
        let replication = match replication {
            Some(r) => TopicReplication::Fixed(r),
            None => TopicReplication::Fixed(-1),
        };
        let mut new = NewTopic::new(topic, partitions as i32, replication);
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = block_on(admin.create_topics([&new], &options))
            .map_err(|e| self.error(&format!("cannot create topic '{topic}'"), e))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Other(format!(
                        "kafka {}: cannot create topic '{name}': {code}",
                        self.bootstrap
                    )));
                }
            }
        }
        Ok(())
    }

    fn missing(&self, topic: &str) -> Error {
        Error::Other(format!(
            "kafka {}: topic '{topic}' does not exist (create it first, e.g. \
             scripts/services/kafka.sh topic-create {topic} 4)",
            self.bootstrap
        ))
    }

    /// An error naming the cluster, what was being done and Kafka's reason.
    pub(crate) fn error(&self, doing: &str, e: KafkaError) -> Error {
        Error::Other(format!("kafka {}: {doing}: {e}", self.bootstrap))
    }
}
