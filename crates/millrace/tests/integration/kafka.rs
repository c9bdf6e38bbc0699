//! Pipelines from Kafka to Kafka against a real broker
//! (`scripts/services/kafka.sh start`; skipped without one unless
//! `MILLRACE_REQUIRE_SERVICES=1`): results equal an independent
//! computation, and exactly-once output survives `kill -9`, restarts at
//! other parallelisms and a broker restart.
//!
//! The tests of this module run one at a time: one restarts the broker.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use millrace_connectors::kafka::Connection;
use millrace_connectors::kafka::testing::{
    Outgoing, broker, fresh_topic, produce, read_all, script_bootstrap, wait_until_readable,
};

use crate::common::{Moments, millrace, run_to_end};

static SERIAL: Mutex<()> = Mutex::new(());

const PARTITIONS: i64 = 4;
const AUCTIONS: i64 = 7;
/// Event time of message `i`: partition `p = i mod 4` starts `p` × 2 s
/// late and advances 5 ms a message, so the partitions' times interleave
/// and only a per-partition watermark keeps every row on time.
fn event_time(i: i64) -> i64 {
    (i % PARTITIONS) * 2_000 + (i / PARTITIONS) * 5
}

/// `n` bids, message `i` in partition `i mod 4`.
fn produce_bids(conn: &Connection, topic: &str, n: i64) {
    conn.create_topic(topic, PARTITIONS as usize, None, &[])
        .unwrap();
    produce(
        conn,
        topic,
        (0..n).map(|i| Outgoing {
            partition: Some((i % PARTITIONS) as i32),
            key: None,
            value: format!(
                r#"{{"auction":{},"price":{},"ts":{}}}"#,
                i % AUCTIONS,
                i % 100,
                event_time(i)
            )
            .into_bytes(),
            timestamp: None,
        }),
    )
    .unwrap();
    wait_until_readable(conn, topic, n).unwrap();
}

/// (auction, window start ms) → (count, sum of prices), computed directly.
fn expected_windows(n: i64) -> BTreeMap<(i64, i64), (i64, i64)> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let start = event_time(i) / 1000 * 1000;
        let e = out.entry((i % AUCTIONS, start)).or_insert((0, 0));
        e.0 += 1;
        e.1 += i % 100;
    }
    out
}

/// Milliseconds of a `1970-01-01THH:MM:SS[.fff]` timestamp.
fn ms_of(text: &str) -> i64 {
    let time = text
        .strip_prefix("1970-01-01")
        .unwrap_or_else(|| panic!("{text}"));
    let time = &time[1..];
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let parts: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let frac_ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + frac_ms
}

/// The windows a topic holds for a `read_committed` reader; a window
/// written twice is a failure.
fn windows_in(conn: &Connection, topic: &str) -> BTreeMap<(i64, i64), (i64, i64)> {
    let mut out = BTreeMap::new();
    for m in read_all(conn, topic, true).unwrap() {
        let v: serde_json::Value = serde_json::from_slice(&m.value.unwrap()).unwrap();
        let auction = v["auction"].as_i64().unwrap();
        assert_eq!(m.key.as_deref(), Some(auction.to_string().as_bytes()));
        let key = (auction, ms_of(v["start"].as_str().unwrap()));
        let value = (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap());
        assert!(
            out.insert(key, value).is_none(),
            "window {key:?} written twice"
        );
    }
    out
}

/// Fails, with a short account of the differences, unless `got` = `want`.
fn assert_same_windows(
    got: &BTreeMap<(i64, i64), (i64, i64)>,
    want: &BTreeMap<(i64, i64), (i64, i64)>,
    what: &str,
) {
    if got == want {
        return;
    }
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(k)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| got.get(k).filter(|g| *g != v).map(|g| (k, v, g)))
        .collect();
    let rows = |m: &BTreeMap<(i64, i64), (i64, i64)>| m.values().map(|v| v.0).sum::<i64>();
    panic!(
        "{what}: {} windows ({} rows), expected {} ({} rows); {} missing (first {:?}), {} \
         unexpected (first {:?}), {} with other values (first {:?}: expected, got)",
        got.len(),
        rows(got),
        want.len(),
        rows(want),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>(),
        differ.len(),
        differ.iter().take(5).collect::<Vec<_>>(),
    );
}

fn pipeline(
    conn: &Connection,
    input: &str,
    output: &str,
    parallelism: usize,
    checkpoints: Option<&str>,
) -> String {
    let (set, delivery) = match checkpoints {
        Some(interval) => (
            format!("SET checkpoint_interval = '{interval}';"),
            "exactly_once",
        ),
        None => (String::new(), "at_least_once"),
    };
    format!(
        "SET parallelism = {parallelism};
{set}
CREATE TABLE bid (auction BIGINT, price BIGINT, ts BIGINT,
                  WATERMARK FOR ts AS ts - INTERVAL '0' SECOND)
    WITH (connector = 'kafka', topic = '{input}', bootstrap_servers = '{b}',
          scan_bounded = 'latest', idle_timeout = '60s', max_future = 'none',
          'kafka.fetch.wait.max.ms' = '20');
CREATE TABLE out WITH (connector = 'kafka', topic = '{output}', bootstrap_servers = '{b}',
                       key = 'auction', delivery = '{delivery}');
CREATE VIEW per_second AS
SELECT auction, tumble(ts, INTERVAL '1' SECOND) AS window, count(*) AS n, sum(price) AS total
FROM bid GROUP BY auction, tumble(ts, INTERVAL '1' SECOND);
INSERT INTO out SELECT auction, window['start'] AS start, n, total FROM per_second;
",
        b = conn.bootstrap()
    )
}

fn write(dir: &Path, name: &str, sql: &str) -> PathBuf {
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, sql).unwrap();
    path
}

/// Multi-partition topic → event-time window aggregate → topic, at
/// parallelism 1 (at least once, no checkpoints) and 2 (exactly once):
/// every window equals the direct computation, none late, none twice.
#[test]
fn window_aggregate_between_topics_equals_a_direct_computation() {
    let Some(conn) = broker() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = 40_000;
    let input = fresh_topic("bids");
    produce_bids(&conn, &input, n);
    let dir = tempfile::tempdir().unwrap();
    for (parallelism, checkpoints) in [(1, None), (2, Some("100ms"))] {
        let output = fresh_topic(&format!("windows-p{parallelism}"));
        conn.create_topic(&output, 3, None, &[]).unwrap();
        let sql = write(
            dir.path(),
            &format!("p{parallelism}"),
            &pipeline(&conn, &input, &output, parallelism, checkpoints),
        );
        let out = millrace()
            .args(["run", sql.to_str().unwrap()])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("late"), "{stderr}");
        assert_same_windows(
            &windows_in(&conn, &output),
            &expected_windows(n),
            &format!("parallelism {parallelism}"),
        );
    }
}

/// `kill -9` at 20 moments while the pipeline reads one topic and writes
/// another exactly once, some runs restored at parallelism 1 and 3: a
/// `read_committed` reader sees exactly the failure-free output. Then once
/// more with the broker restarted mid-run.
#[test]
fn killed_twenty_times_kafka_to_kafka_output_is_exactly_the_clean_run() {
    let Some(conn) = broker() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = 300_000;
    let input = fresh_topic("chaos-bids");
    produce_bids(&conn, &input, n);
    let dir = tempfile::tempdir().unwrap();

    let clean = fresh_topic("chaos-clean");
    conn.create_topic(&clean, 3, None, &[]).unwrap();
    let clean_sql = write(
        dir.path(),
        "clean",
        &pipeline(&conn, &input, &clean, 2, Some("50ms")),
    );
    let full = run_to_end(&clean_sql);
    let expected = windows_in(&conn, &clean);
    assert_same_windows(&expected, &expected_windows(n), "the run without failures");

    let output = fresh_topic("chaos-out");
    conn.create_topic(&output, 3, None, &[]).unwrap();
    let sql = write(
        dir.path(),
        "chaos",
        &pipeline(&conn, &input, &output, 2, Some("50ms")),
    );
    let checkpoints = dir.path().join(".millrace").join("chaos");
    let has_checkpoint = || {
        std::fs::read_dir(&checkpoints).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().join("MANIFEST.json").exists())
        })
    };
    let mut rescales = vec![3, 1];
    let mut moments = Moments(0x2545_f491_4f6c_dd1d);
    let (mut killed, mut restored) = (0, 0);
    while killed < 20 {
        let parallelism = if has_checkpoint() {
            rescales.pop()
        } else {
            None
        };
        let mut command = millrace();
        command.args(["run", sql.to_str().unwrap()]);
        if let Some(p) = parallelism {
            command.args(["--set", &format!("parallelism={p}")]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Every other run is killed anywhere from its start (recovery and
        // its replayed commit included); the others only once recovery is
        // over (the run says where it starts), so that under a loaded
        // machine, where startup is slow, enough kills land mid-stream.
        let mut first_line = String::new();
        // Kept open until the run ends: a closed pipe would fail its writes.
        let mut _announced = None;
        if killed % 2 == 1 {
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            stderr.read_line(&mut first_line).unwrap();
            restored += usize::from(first_line.starts_with("restored checkpoint"));
            _announced = Some(stderr);
        }
        std::thread::sleep(moments.next_below(full));
        match child.try_wait().unwrap() {
            Some(status) => {
                let out = child.wait_with_output().unwrap();
                assert!(
                    status.success(),
                    "{first_line}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                let out = child.wait_with_output().unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                restored += usize::from(stderr.contains("restored checkpoint"));
                killed += 1;
            }
        }
    }
    run_to_end(&sql);
    eprintln!("clean run {full:?}; {killed} kills, {restored} after a restore");
    assert!(restored > 2, "only {restored} runs restored a checkpoint");
    assert!(
        rescales.is_empty(),
        "runs at other parallelisms: {rescales:?} left"
    );
    assert_same_windows(&windows_in(&conn, &output), &expected, "after 20 kills");

    // The broker restarts under a running pipeline (only the broker the
    // project's script started can be restarted here).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services/kafka.sh");
    if script_bootstrap().as_deref() != Some(conn.bootstrap()) {
        eprintln!("skipping the broker restart: the broker is not the one the script started");
        return;
    }
    let output = fresh_topic("restart-out");
    conn.create_topic(&output, 3, None, &[]).unwrap();
    let sql = write(
        dir.path(),
        "restart",
        &pipeline(&conn, &input, &output, 2, Some("50ms")),
    );
    let child = millrace()
        .args(["run", sql.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-run: once it has committed its first checkpoint.
    let checkpoints = dir.path().join(".millrace").join("restart");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_dir(&checkpoints).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("MANIFEST.json").exists())
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint in 60 s"
        );
        std::thread::yield_now();
    }
    let status = std::process::Command::new(&script)
        .arg("restart")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the broker did not restart");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    eprintln!("across the broker restart: {stderr}");
    assert_same_windows(
        &windows_in(&conn, &output),
        &expected,
        "across a broker restart",
    );
}
