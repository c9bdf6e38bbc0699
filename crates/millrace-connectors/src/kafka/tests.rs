//! Behaviour tests of the Kafka source and sink against a real broker
//! (`scripts/services/kafka.sh start`). Without one they skip, saying so;
//! with `MILLRACE_REQUIRE_SERVICES=1` (set by `.ci/run`) a missing broker
//! fails them instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use millrace_core::batch::strip_entered;
use millrace_core::{
    Error, EventTime, SinkCommitter, SinkFactory, Snapshot, SourceFactory, SourcePoll, SourceReader,
};

use super::testing::{Outgoing, broker, fresh_topic, produce, read_all, wait_until_readable};
use super::{
    Connection, Delivery, KafkaSink, KafkaSource, Metadata, OnError, StartFrom, StopAt, ValueFormat,
};

fn value_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

/// `n` JSON messages `{"id": i, "ts": 1000 + i}`, message `i` in partition
/// `i mod partitions`, keyed `k<i>`.
/// Returns the timestamp of message 0: recent, so that the broker's
/// time-based retention (7 days) never deletes what a test is reading.
fn produce_ids(conn: &Connection, topic: &str, n: i64, partitions: i32) -> i64 {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
        - 60_000;
    produce(
        conn,
        topic,
        (0..n).map(|i| Outgoing {
            partition: Some((i % partitions as i64) as i32),
            key: Some(format!("k{i}").into_bytes()),
            value: format!(r#"{{"id":{i},"ts":{}}}"#, 1000 + i).into_bytes(),
            timestamp: Some(base + i),
        }),
    )
    .expect("produce");
    settle(conn, topic, n);
    base
}

/// Waits until the broker reports the `n` messages just written, saying so
/// when it had to (`wait_until_readable`).
fn settle(conn: &Connection, topic: &str, n: i64) {
    let waited = wait_until_readable(conn, topic, n).unwrap();
    if waited > Duration::from_millis(100) {
        eprintln!("topic {topic}: the broker reported all {n} messages only after {waited:?}");
    }
}

/// Everything `reader` returns until exhausted; waits (bounded) while it
/// is pending, as data arrives over the network.
fn drain(reader: &mut dyn SourceReader, max_rows: usize) -> Result<Vec<RecordBatch>, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut batches = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "the reader did not finish in 60 s"
        );
        match reader.poll_batch(max_rows)? {
            SourcePoll::Batch(b) => batches.push(strip_entered(&b)),
            SourcePoll::Exhausted => return Ok(batches),
            SourcePoll::Pending { .. } => std::thread::yield_now(),
        }
    }
}

fn ints(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).expect("column");
            match c.data_type() {
                DataType::Int32 => c
                    .as_primitive::<Int32Type>()
                    .values()
                    .iter()
                    .map(|v| *v as i64)
                    .collect::<Vec<_>>(),
                _ => c.as_primitive::<Int64Type>().values().to_vec(),
            }
        })
        .collect()
}

/// Fails naming what is missing or repeated unless `ids` is 0..n, each once.
fn assert_each_once(mut ids: Vec<i64>, n: i64, what: &str) {
    ids.sort_unstable();
    let mut counts = BTreeMap::new();
    for id in &ids {
        *counts.entry(*id).or_insert(0) += 1;
    }
    let missing: Vec<i64> = (0..n).filter(|i| !counts.contains_key(i)).collect();
    let repeated: Vec<(i64, i32)> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(i, c)| (*i, *c))
        .collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && ids.len() as i64 == n,
        "{what}: {} ids; missing {} (first {:?}), repeated {} (first {:?})",
        ids.len(),
        missing.len(),
        &missing[..missing.len().min(10)],
        repeated.len(),
        &repeated[..repeated.len().min(10)]
    );
}

fn source(conn: &Connection, topic: &str) -> KafkaSource {
    KafkaSource::new(conn.clone(), topic, ValueFormat::Json, value_schema())
        .with_stop(StopAt::Latest)
        .with_max_future(None)
}

/// Every message once, whatever the parallelism (fewer or more instances
/// than partitions), with its metadata.
#[test]
fn partitions_are_split_over_instances_and_each_message_read_once() {
    let Some(conn) = broker() else { return };
    let topic = fresh_topic("split");
    conn.create_topic(&topic, 4, None, &[]).unwrap();
    let base = produce_ids(&conn, &topic, 1000, 4);
    let src = source(&conn, &topic).with_metadata(
        Metadata::parse("partition, offset AS off, key, timestamp AS kts, headers").unwrap(),
    );
    for parallelism in [1, 2, 3, 5] {
        let mut ids = Vec::new();
        for instance in 0..parallelism {
            let mut reader = src.create(instance, parallelism).unwrap();
            let batches = drain(reader.as_mut(), 100).unwrap();
            let (id, partition, offset) = (
                ints(&batches, "id"),
                ints(&batches, "partition"),
                ints(&batches, "off"),
            );
            for k in 0..id.len() {
                assert_eq!(partition[k], id[k] % 4, "message {} partition", id[k]);
                assert_eq!(partition[k] as usize % parallelism, instance);
                assert_eq!(offset[k], id[k] / 4, "message {} offset", id[k]);
            }
            for b in &batches {
                let keys = b.column_by_name("key").unwrap().as_string::<i32>();
                let ts = b
                    .column_by_name("kts")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
                let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
                for r in 0..b.num_rows() {
                    assert_eq!(keys.value(r), format!("k{}", id.value(r)));
                    assert_eq!(ts.value(r), base + id.value(r));
                }
                assert_eq!(
                    b.column_by_name("headers").unwrap().null_count(),
                    b.num_rows()
                );
            }
            ids.extend(id);
        }
        assert_each_once(ids, 1000, &format!("parallelism {parallelism}"));
    }
}

/// A position taken mid-read, restored at another parallelism, continues
/// each partition where it stopped: nothing twice, nothing lost.
#[test]
fn positions_resume_and_rescale_by_partition() {
    let Some(conn) = broker() else { return };
    let topic = fresh_topic("rescale");
    conn.create_topic(&topic, 4, None, &[]).unwrap();
    let _ = produce_ids(&conn, &topic, 2000, 4);
    let src = source(&conn, &topic);
    let mut seen = Vec::new();
    let mut positions = Vec::new();
    for instance in 0..2 {
        let mut reader = src.create(instance, 2).unwrap();
        // Read some, wherever the fetches happen to stop.
        let mut read = 0;
        while read < 300 {
            if let SourcePoll::Batch(b) = reader.poll_batch(50).unwrap() {
                read += b.num_rows();
                seen.extend(ints(&[b], "id"));
            }
        }
        positions.push(reader.position().unwrap().unwrap());
    }
    for parallelism in [3, 1] {
        let restored = src.rescale(&positions, parallelism).unwrap();
        let mut ids = seen.clone();
        for (instance, position) in restored.iter().enumerate() {
            let mut reader = src.create(instance, parallelism).unwrap();
            reader.seek(position).unwrap();
            ids.extend(ints(&drain(reader.as_mut(), 64).unwrap(), "id"));
        }
        assert_each_once(ids, 2000, &format!("restored at {parallelism}"));
    }
}

/// The instance's event time is the least over its partitions that are
/// not idle; an empty partition stops holding it back once idle.
#[test]
fn watermark_time_is_the_slowest_active_partition() {
    let Some(conn) = broker() else { return };
    let topic = fresh_topic("watermark");
    conn.create_topic(&topic, 3, None, &[]).unwrap();
    // Partition 0 far ahead of partition 1; partition 2 stays empty.
    let messages = (0..100).flat_map(|i| {
        [(0, 50_000 + i), (1, 1_000 + i)].map(|(p, ts)| Outgoing {
            partition: Some(p),
            key: None,
            value: format!(r#"{{"id":{i},"ts":{ts}}}"#).into_bytes(),
            timestamp: None,
        })
    });
    produce(&conn, &topic, messages).unwrap();
    let idle = Duration::from_millis(300);
    let src = KafkaSource::new(conn.clone(), &topic, ValueFormat::Json, value_schema())
        .with_max_future(None)
        .with_event_time(EventTime::new("ts", 0).with_idle_timeout(Some(idle)));
    let mut reader = src.create(0, 1).unwrap();
    let mut rows = 0;
    let started = Instant::now();
    while rows < 200 {
        if let SourcePoll::Batch(b) = reader.poll_batch(1000).unwrap() {
            rows += b.num_rows();
        }
    }
    let reached = reader.event_time_reached().unwrap();
    if started.elapsed() < idle {
        // The empty partition is not idle yet: it holds everything back.
        assert_eq!(reached, i64::MIN);
    }
    // Once partition 2 is idle, partition 1 (the slowest with data) rules,
    // then, once all are idle, the furthest.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut history = vec![reached];
    while *history.last().unwrap() != 50_099 {
        assert!(Instant::now() < deadline, "event time stuck at {history:?}");
        let _ = reader.poll_batch(1000).unwrap();
        let now = reader.event_time_reached().unwrap();
        if now != *history.last().unwrap() {
            history.push(now);
        }
    }
    history.retain(|t| *t != i64::MIN);
    assert_eq!(
        history,
        vec![1_099, 50_099][2 - history.len()..].to_vec(),
        "{history:?}"
    );
}

/// 50 malformed messages among 100,000 under each policy: exact counts,
/// dead letters name partition and offset, `fail` names the first.
#[test]
fn bad_messages_follow_the_error_policy() {
    let Some(conn) = broker() else { return };
    let topic = fresh_topic("bad");
    conn.create_topic(&topic, 4, None, &[]).unwrap();
    let total = 100_000i64;
    let bad_every = total / 50;
    let bad_kinds = [
        r#"{"id":"#.to_string(),
        r#"{"id":"seven","ts":1}"#.to_string(),
        r#"{"id":1.5,"ts":1}"#.to_string(),
        r#"{"ts":1}"#.to_string(),
        String::new(),
    ];
    produce(
        &conn,
        &topic,
        (0..total).map(|i| Outgoing {
            partition: Some((i % 4) as i32),
            key: None,
            value: if i % bad_every == 7 {
                bad_kinds[(i / bad_every) as usize % bad_kinds.len()]
                    .clone()
                    .into_bytes()
            } else {
                format!(r#"{{"id":{i},"ts":{}}}"#, 1000 + i).into_bytes()
            },
            timestamp: None,
        }),
    )
    .unwrap();
    settle(&conn, &topic, total);
    let bad_ids: Vec<i64> = (0..total).filter(|i| i % bad_every == 7).collect();
    assert_eq!(bad_ids.len(), 50);

    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    for policy in [OnError::Skip, OnError::DeadLetter(dead.clone())] {
        let src = source(&conn, &topic).with_on_error(policy.clone());
        let mut rows = 0;
        let (mut skipped, mut dead_lettered) = (0, 0);
        for instance in 0..2 {
            let mut reader = src.create(instance, 2).unwrap();
            rows += drain(reader.as_mut(), 4096)
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>();
            skipped += reader.stats().skipped;
            dead_lettered += reader.stats().dead_lettered;
        }
        assert_eq!(rows as i64, total - 50, "{policy:?}");
        match policy {
            OnError::Skip => assert_eq!((skipped, dead_lettered), (50, 0)),
            _ => assert_eq!((skipped, dead_lettered), (0, 50)),
        }
    }
    let letters: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 50);
    let mut placed: Vec<(i64, i64)> = letters
        .iter()
        .map(|l| {
            assert_eq!(l["source"], topic.as_str());
            assert!(!l["reason"].as_str().unwrap().is_empty());
            (
                l["partition"].as_i64().unwrap(),
                l["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    placed.sort_unstable();
    let mut expected: Vec<(i64, i64)> = bad_ids.iter().map(|i| (i % 4, i / 4)).collect();
    expected.sort_unstable();
    assert_eq!(placed, expected);

    // To a topic: the same records, as messages.
    let dead_topic = fresh_topic("dead");
    conn.create_topic(&dead_topic, 1, None, &[]).unwrap();
    let src = source(&conn, &topic).with_dead_letter_topic(&dead_topic);
    let mut dead_lettered = 0;
    for instance in 0..2 {
        let mut reader = src.create(instance, 2).unwrap();
        drain(reader.as_mut(), 4096).unwrap();
        // Taking a position makes the dead letters durable.
        reader.position().unwrap();
        dead_lettered += reader.stats().dead_lettered;
    }
    assert_eq!(dead_lettered, 50);
    let mut in_topic: Vec<(i64, i64)> = read_all(&conn, &dead_topic, false)
        .unwrap()
        .iter()
        .map(|m| {
            let l: serde_json::Value = serde_json::from_slice(m.value.as_ref().unwrap()).unwrap();
            (
                l["partition"].as_i64().unwrap(),
                l["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    in_topic.sort_unstable();
    assert_eq!(in_topic, expected);

    let mut reader = source(&conn, &topic).create(0, 1).unwrap();
    match drain(reader.as_mut(), 4096) {
        Err(Error::BadMessage { input, at, reason }) => {
            assert!(input.contains(&topic), "{input}");
            // The first bad message of whichever partition was read first.
            let named = bad_ids
                .iter()
                .any(|i| at == format!("partition {} offset {}", i % 4, i / 4));
            assert!(named, "{at}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a bad message, got {:?}", other.map(|b| b.len())),
    }
}

fn rows(from: i64, to: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(from..to)),
            Arc::new(StringArray::from_iter_values(
                (from..to).map(|i| format!("n{i}")),
            )),
        ],
    )
    .unwrap()
}

/// The ids of the messages a `read_committed` reader sees, in partition
/// order, and how often each appears.
fn committed_ids(conn: &Connection, topic: &str) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for m in read_all(conn, topic, true).unwrap() {
        let v: serde_json::Value = serde_json::from_slice(&m.value.unwrap()).unwrap();
        *counts.entry(v["id"].as_i64().unwrap()).or_default() += 1;
        assert_eq!(m.key.as_deref(), Some(v["id"].to_string().as_bytes()));
    }
    counts
}

fn once(from: i64, to: i64) -> BTreeMap<i64, usize> {
    (from..to).map(|i| (i, 1)).collect()
}

/// A crash after a checkpoint and before (or during) its transaction's
/// commit: recovery produces the epoch again, exactly once; replaying an
/// epoch already committed writes nothing.
#[test]
fn exactly_once_recovers_an_epoch_whose_commit_was_lost() {
    let Some(conn) = broker() else { return };
    let topic = fresh_topic("eo");
    conn.create_topic(&topic, 3, None, &[]).unwrap();
    let sink = KafkaSink::new(conn.clone(), &topic, ValueFormat::Json)
        .with_key("id")
        .with_delivery(Delivery::ExactlyOnce)
        .with_transactional_id(format!("{topic}-txn"));
    let schema = rows(0, 1).schema();

    // Run 1: epoch 1 commits; epoch 2 is checkpointed, then the run dies.
    let first = sink.committer().unwrap();
    first.recover(None).unwrap();
    let mut writer = first.create(0, 1, schema.clone()).unwrap();
    writer.write(&rows(0, 100)).unwrap();
    let token = writer.pre_commit(1).unwrap();
    let prepared1 = first.prepare(1, &[token]).unwrap();
    first.commit(1, &prepared1).unwrap();
    writer.write(&rows(100, 150)).unwrap();
    writer.write(&rows(150, 200)).unwrap();
    let token = writer.pre_commit(2).unwrap();
    let prepared2 = first.prepare(2, &[token, Snapshot::none()]).unwrap();
    // It died while committing: its transaction is open with part of epoch 2.
    let dangling = super::commit::TransactionalCommitter::new(sink.settings());
    dangling.recover(Some((1, &prepared1))).unwrap();
    let mut w = dangling.create(0, 1, schema.clone()).unwrap();
    w.write(&rows(100, 120)).unwrap();
    let partial = dangling.prepare(2, &[w.pre_commit(2).unwrap()]).unwrap();
    dangling.begin_and_abandon(&partial);
    drop(first);

    // Run 2 restores checkpoint 2: epoch 2 appears once, whole.
    let second = sink.committer().unwrap();
    second.recover(Some((2, &prepared2))).unwrap();
    assert_eq!(committed_ids(&conn, &topic), once(0, 200));
    // The abandoned transaction's messages are in the log, aborted.
    assert_eq!(read_all(&conn, &topic, false).unwrap().len(), 220);

    // Run 3 restores checkpoint 2 again: nothing more.
    let third = sink.committer().unwrap();
    third.recover(Some((2, &prepared2))).unwrap();
    assert_eq!(committed_ids(&conn, &topic), once(0, 200));

    // Restoring checkpoint 1 would write epoch 2 again: refused.
    let err = sink
        .committer()
        .unwrap()
        .recover(Some((1, &prepared1)))
        .unwrap_err();
    assert!(err.to_string().contains("epochs up to 2"), "{err}");

    // A fresh start under the same id begins a new lineage: its epoch 1
    // is not mistaken for the old one.
    let fresh = sink.committer().unwrap();
    fresh.recover(None).unwrap();
    let mut w = fresh.create(0, 1, schema).unwrap();
    w.write(&rows(200, 210)).unwrap();
    let p = fresh.prepare(1, &[w.pre_commit(1).unwrap()]).unwrap();
    fresh.commit(1, &p).unwrap();
    assert_eq!(committed_ids(&conn, &topic), once(0, 210));
}

/// At least once: every row written is in the topic once a checkpoint's
/// prepare (or the end) returns.
#[test]
fn at_least_once_rows_are_acknowledged_by_prepare_and_finish() {
    let Some(conn) = broker() else { return };
    let topic = fresh_topic("alo");
    conn.create_topic(&topic, 2, None, &[]).unwrap();
    let sink = KafkaSink::new(conn.clone(), &topic, ValueFormat::Json).with_key("id");
    let committer = sink.committer().unwrap();
    committer.recover(None).unwrap();
    let mut writer = committer.create(0, 1, rows(0, 1).schema()).unwrap();
    writer.write(&rows(0, 500)).unwrap();
    let token = writer.pre_commit(1).unwrap();
    committer.prepare(1, &[token]).unwrap();
    assert_eq!(read_all(&conn, &topic, false).unwrap().len(), 500);

    let mut direct = sink.create(0, 1, rows(0, 1).schema()).unwrap();
    direct.write(&rows(500, 700)).unwrap();
    direct.finish().unwrap();
    assert_eq!(committed_ids(&conn, &topic), once(0, 700));

    let eo = KafkaSink::new(conn.clone(), &topic, ValueFormat::Json)
        .with_delivery(Delivery::ExactlyOnce);
    let err = eo.create(0, 1, rows(0, 1).schema()).err().unwrap();
    assert!(err.to_string().contains("checkpoint_interval"), "{err}");
}

#[test]
fn a_missing_topic_is_named() {
    let Some(conn) = broker() else { return };
    let err = source(&conn, "no-such-topic-anywhere")
        .create(0, 1)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("'no-such-topic-anywhere' does not exist"),
        "{err}"
    );
}

/// Where a fresh run starts: by timestamp, at the end, or at the start.
#[test]
fn scan_startup_picks_the_first_offsets() {
    let Some(conn) = broker() else { return };
    let topic = fresh_topic("startup");
    conn.create_topic(&topic, 2, None, &[]).unwrap();
    let base = produce_ids(&conn, &topic, 100, 2);
    let read = |start: StartFrom| {
        let src = source(&conn, &topic).with_start(start);
        let mut ids = Vec::new();
        for instance in 0..2 {
            let mut reader = src.create(instance, 2).unwrap();
            ids.extend(ints(&drain(reader.as_mut(), 64).unwrap(), "id"));
        }
        ids.sort_unstable();
        ids
    };
    assert_eq!(read(StartFrom::Earliest), (0..100).collect::<Vec<_>>());
    // Message i is stamped base + i.
    assert_eq!(
        read(StartFrom::Timestamp(base + 60)),
        (60..100).collect::<Vec<_>>()
    );
    assert!(read(StartFrom::Latest).is_empty());
}
