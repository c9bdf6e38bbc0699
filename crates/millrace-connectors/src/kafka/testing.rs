//! Talking to a broker outside a pipeline, for tests, benchmarks and the
//! command line: finding the broker the project's script started, writing
//! messages, and reading a topic whole.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use millrace_core::{Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{Connection, REQUEST_TIMEOUT};
use super::sink::{flush, send};

/// The broker to use: `$MILLRACE_KAFKA_BOOTSTRAP`, else the address
/// `scripts/services/kafka.sh start` recorded in its state directory
/// (`$MILLRACE_SERVICES_DIR`, default `/tmp/millrace-services`), if any.
pub fn bootstrap_from_env() -> Option<String> {
    if let Ok(b) = std::env::var("MILLRACE_KAFKA_BOOTSTRAP")
        && !b.trim().is_empty()
    {
        return Some(b.trim().to_string());
    }
    script_bootstrap()
}

/// The address `scripts/services/kafka.sh start` recorded for the broker
/// it started, if any.
pub fn script_bootstrap() -> Option<String> {
    let dir = std::env::var("MILLRACE_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/tmp/millrace-services"));
    std::fs::read_to_string(dir.join("kafka").join("bootstrap"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The broker tests run against, or `None` (the test then returns early)
/// after saying why on stderr. With `MILLRACE_REQUIRE_SERVICES=1` (as
/// `.ci/run` sets) a missing broker is a panic instead: CI never passes
/// without running the Kafka tests.
pub fn broker() -> Option<Connection> {
    let required = std::env::var("MILLRACE_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let found = bootstrap_from_env().filter(|b| reachable(b, Duration::from_secs(10)));
    match found {
        Some(b) => Some(Connection::new(b)),
        None if required => panic!(
            "MILLRACE_REQUIRE_SERVICES=1 but no Kafka broker answers (set MILLRACE_KAFKA_BOOTSTRAP \
             or run scripts/services/kafka.sh start)"
        ),
        None => {
            eprintln!(
                "skipping: no Kafka broker (start one with scripts/services/kafka.sh start, or \
                 set MILLRACE_KAFKA_BOOTSTRAP)"
            );
            None
        }
    }
}

/// A topic name no other test or run uses.
pub fn fresh_topic(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("test-{name}-{}-{nanos}", std::process::id())
}

/// True if a broker answers at `bootstrap` within `timeout`.
pub fn reachable(bootstrap: &str, timeout: Duration) -> bool {
    let Ok(consumer) = Connection::new(bootstrap).lookup_consumer() else {
        return false;
    };
    consumer.fetch_metadata(None, timeout).is_ok()
}

/// One message to write: partition (`None`: by key, or spread), key, value,
/// timestamp (ms; `None`: now).
pub struct Outgoing {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
}

/// Writes `messages` with an idempotent producer and waits until every one
/// is acknowledged.
pub fn produce(
    connection: &Connection,
    topic: &str,
    messages: impl IntoIterator<Item = Outgoing>,
) -> Result<()> {
    let producer = connection.producer("5", None)?;
    for m in messages {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&m.value[..]);
        if let Some(p) = m.partition {
            record = record.partition(p);
        }
        if let Some(k) = &m.key {
            record = record.key(&k[..]);
        }
        if let Some(ts) = m.timestamp {
            record = record.timestamp(ts);
        }
        send(&producer, record)
            .map_err(|e| connection.error(&format!("cannot produce to '{topic}'"), e))?;
    }
    flush(&producer, topic)
}

/// A message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
}

/// Every message of `topic` up to the end each partition has now, by
/// partition then offset; `read_committed` leaves out aborted transactions
/// (and waits for open ones to end).
pub fn read_all(
    connection: &Connection,
    topic: &str,
    read_committed: bool,
) -> Result<Vec<Incoming>> {
    let partitions = connection.partitions(topic)?;
    let isolation = if read_committed {
        "read_committed"
    } else {
        "read_uncommitted"
    };
    let consumer: BaseConsumer = connection
        .config(&[
            ("group.id", "millrace-read-all"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("isolation.level", isolation),
        ])
        .create()
        .map_err(|e| connection.error("cannot create a consumer", e))?;
    // Every partition from its start until its end is reported (an empty
    // one reports it at once).
    let mut tpl = TopicPartitionList::new();
    let mut open = std::collections::HashSet::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| connection.error("cannot name a partition", e))?;
        open.insert(p);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| connection.error(&format!("cannot read '{topic}'"), e))?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "reading topic '{topic}' did not reach its end within 120 s"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(KafkaError::MessageConsumption(_))) => {}
            Some(Err(e)) => return Err(connection.error(&format!("cannot read '{topic}'"), e)),
            Some(Ok(m)) => out.push(Incoming {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                timestamp: m.timestamp().to_millis(),
            }),
        }
    }
    out.sort_by_key(|m| (m.partition, m.offset));
    Ok(out)
}

/// What [`watch`] saw: per message, when it became visible to a
/// `read_committed` reader minus the time in its `field` (ms), and how many
/// messages lacked the field.
pub struct Watched {
    pub latencies_ms: Vec<i64>,
    pub messages: u64,
    pub without_field: u64,
}

/// Reads `topic` from its end with `read_committed` for at most `duration`
/// (or until it has read `expected` messages) and, for each message (a JSON
/// object), measures now − its `field` (ms since 1970, a number): how long
/// after that time the message became visible.
pub fn watch(
    connection: &Connection,
    topic: &str,
    field: &str,
    duration: Duration,
    expected: Option<u64>,
) -> Result<Watched> {
    let partitions = connection.partitions(topic)?;
    let consumer: BaseConsumer = connection
        .config(&[
            ("group.id", "millrace-watch"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "5"),
        ])
        .create()
        .map_err(|e| connection.error("cannot create a consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::End)
            .map_err(|e| connection.error("cannot name a partition", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| connection.error(&format!("cannot read '{topic}'"), e))?;
    let mut watched = Watched {
        latencies_ms: Vec::new(),
        messages: 0,
        without_field: 0,
    };
    let end = Instant::now() + duration;
    while Instant::now() < end && expected.is_none_or(|n| watched.messages < n) {
        match consumer.poll(Duration::from_millis(50)) {
            None | Some(Err(KafkaError::MessageConsumption(_))) => {}
            Some(Err(e)) => return Err(connection.error(&format!("cannot read '{topic}'"), e)),
            Some(Ok(m)) => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or_default();
                watched.messages += 1;
                let at = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                    .and_then(|v| v.get(field).and_then(serde_json::Value::as_i64));
                match at {
                    Some(at) => watched.latencies_ms.push(now_ms - at),
                    None => watched.without_field += 1,
                }
            }
        }
    }
    Ok(watched)
}

/// Waits until a `read_committed` reader's end offsets of `topic` add up to
/// `messages`, and returns how long that took. Right after a produce is
/// acknowledged the broker has been seen, under load, to report ends short
/// of it for a moment (a bounded read started then ends early), so tests
/// that read a topic they just wrote wait for it first.
pub fn wait_until_readable(
    connection: &Connection,
    topic: &str,
    messages: i64,
) -> Result<Duration> {
    let partitions = connection.partitions(topic)?;
    let consumer: BaseConsumer = connection
        .config(&[
            ("group.id", "millrace-wait"),
            ("isolation.level", "read_committed"),
        ])
        .create()
        .map_err(|e| connection.error("cannot create a consumer", e))?;
    let started = Instant::now();
    loop {
        let mut readable = 0;
        for p in 0..partitions as i32 {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                .map_err(|e| {
                    connection.error(&format!("cannot read the offsets of '{topic}'"), e)
                })?;
            readable += high - low;
        }
        if readable >= messages {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(Error::Other(format!(
                "topic '{topic}': the broker reports {readable} of {messages} messages after 60 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
