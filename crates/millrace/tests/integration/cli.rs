//! The `millrace` binary as a user runs it: exit codes and what it prints.

use std::process::Command;

fn millrace(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(args)
        .output()
        .expect("run millrace");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_runs_a_window_pipeline_and_prints_the_summary() {
    let (ok, stdout, stderr) =
        millrace(&["demo", "--events", "50000", "--explain", "--max-rows", "3"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("window(tumble 10s by [channel]"),
        "{stdout}"
    );
    assert!(stdout.contains("more rows not shown"), "{stdout}");
    // 50,000 events of which 92% are bids.
    assert!(stdout.contains("events       46000 in"), "{stdout}");
    for field in [
        "throughput",
        "per core",
        "p50",
        "p95",
        "p99",
        "p99.9",
        "max",
        "busy",
        "idle",
        "bp",
    ] {
        assert!(stdout.contains(field), "summary lacks {field}: {stdout}");
    }
}

#[test]
fn demo_writes_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bids.jsonl");
    let (ok, _, stderr) = millrace(&[
        "demo",
        "--query",
        "passthrough",
        "--events",
        "1000",
        "--sink",
        "jsonl",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 920);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(
        first["auction"].is_i64() && first["price"].is_i64(),
        "{first}"
    );
}

#[test]
fn bad_settings_exit_non_zero_with_one_clear_line() {
    let (ok, _, stderr) = millrace(&["demo", "--events", "1000", "--event-rate", "0"]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: operator 'source nexmark-bids' failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (ok, _, stderr) = millrace(&["demo", "--batch-size", "0"]);
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "error: invalid pipeline: batch_size must be at least 1"
    );
}

#[test]
fn gen_output_read_back_through_a_file_source_equals_the_generator() {
    use millrace_connectors::file::FileSource;
    use millrace_connectors::nexmark::{NexmarkConfig, NexmarkKind, NexmarkSource};
    use millrace_core::{CollectSink, SourceFactory, SourcePoll, strip_entered};
    use millrace_runtime::{Pipeline, PipelineConfig};

    let dir = tempfile::tempdir().unwrap();
    for (format, name) in [("json", "bids.jsonl"), ("csv", "bids.csv")] {
        let path = dir.path().join(name);
        let (ok, _, stderr) = millrace(&[
            "gen",
            "nexmark",
            "--events",
            "5000",
            "--seed",
            "7",
            "--format",
            format,
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(ok, "{stderr}");
        assert_eq!(
            stderr.trim(),
            format!("wrote 4600 rows to {}", path.display())
        );

        let schema = NexmarkSource::schema_of(NexmarkKind::Bid);
        let file = match format {
            "json" => FileSource::json(&path, schema),
            _ => FileSource::csv(&path, schema, true),
        };
        let pipeline = Pipeline::new(PipelineConfig::default());
        let out = CollectSink::new();
        pipeline.source(file).sink(out.clone()).unwrap();
        pipeline.run().unwrap();
        let got =
            arrow::compute::concat_batches(&out.batches()[0].schema(), &out.batches()).unwrap();

        let source = NexmarkSource::bids(NexmarkConfig {
            seed: 7,
            events: Some(5000),
            ..NexmarkConfig::default()
        });
        let mut reader = source.create(0, 1).unwrap();
        let mut want = Vec::new();
        while let SourcePoll::Batch(b) = reader.poll_batch(10_000).unwrap() {
            want.push(strip_entered(&b));
        }
        let want = arrow::compute::concat_batches(&want[0].schema(), &want).unwrap();
        assert_eq!(got, want, "{format}");
    }
}

fn nexmark_query(name: &str) -> String {
    format!(
        "{}/../../queries/nexmark/{name}.sql",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn run_executes_a_sql_file_with_overrides() {
    let q7 = nexmark_query("q7");
    let (ok, stdout, stderr) = millrace(&[
        "run",
        &q7,
        "--set",
        "bid.events=20000",
        "--set",
        "parallelism=1",
    ]);
    assert!(ok, "{stderr}");
    // 92% of 20,000 events are bids.
    assert!(stdout.contains("events       18400 in"), "{stdout}");
    assert!(stdout.contains("window_join"), "{stdout}");
}

#[test]
fn explain_prints_the_dataflow_without_running() {
    let (ok, stdout, stderr) = millrace(&["explain", &nexmark_query("q5")]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("watermark = max(date_time) - 4000 ms"),
        "{stdout}"
    );
    assert!(stdout.contains("window_agg[hop 10s every 2s]"), "{stdout}");
    assert!(!stdout.contains("run summary"), "{stdout}");
}

#[test]
fn sql_errors_name_file_line_and_column_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.sql");
    std::fs::write(
        &path,
        "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid');\nINSERT INTO out SELEC 1;\n",
    )
    .unwrap();
    let file = path.display().to_string();
    let (ok, _, stderr) = millrace(&["run", &file]);
    assert!(!ok);
    assert!(
        stderr.starts_with(&format!("error: {file}:2:17: syntax error")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    std::fs::write(
        &path,
        "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid');\nCREATE TABLE out WITH (connector = 'discard');\nINSERT INTO out SELECT auction, count(*) FROM bid GROUP BY auction;\n",
    )
    .unwrap();
    let (ok, _, stderr) = millrace(&["explain", &file]);
    assert!(!ok);
    assert!(
        stderr.contains(":3: INSERT INTO out: an aggregate over a stream needs a window"),
        "{stderr}"
    );
}

#[test]
fn run_json_prints_the_summary_as_one_object() {
    let (ok, stdout, stderr) = millrace(&[
        "run",
        "../../queries/nexmark/q0.sql",
        "--json",
        "--set",
        "bid.events=10000",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    // 10,000 generator events of which 92% are bids, each passed through.
    assert_eq!(v["events"], 9200);
    assert_eq!(v["sink_rows"], 9200);
    assert_eq!(v["latency_ns"]["count"], 9200);
    assert!(v["latency_ns"]["p99"].as_u64().unwrap() <= v["latency_ns"]["max"].as_u64().unwrap());
    assert!(v["operators"].as_array().unwrap().len() >= 2);
}

#[test]
fn bench_measures_each_policy_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    // A small state query: 500 devices in 10 s windows.
    let state = dir.path().join("state.sql");
    std::fs::write(
        &state,
        "CREATE TABLE readings WITH (connector = 'iot', devices = '500', events = '20000', event_rate = '1000');
         CREATE TABLE out WITH (connector = 'discard');
         INSERT INTO out SELECT device_id, count(*) AS n FROM readings
         GROUP BY device_id, tumble(ts, INTERVAL '10' SECOND);",
    )
    .unwrap();
    let (ok, stdout, stderr) = millrace(&[
        "bench",
        "--state-query",
        state.to_str().unwrap(),
        "--dir",
        "../../queries/nexmark",
        "--queries",
        "q0",
        "--batch",
        "64,adaptive",
        "--fractions",
        "0.5",
        "--seconds",
        "0.2",
        "--warmup",
        "1ms",
        "--repeat",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    for heading in [
        "## Targets",
        "## Batch policies compared",
        "### q0: sustains",
    ] {
        assert!(stdout.contains(heading), "no {heading}: {stdout}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // 20 s of event time from 500 devices, one reading each per 2 s: each
    // window holds every device (and the next window starts before the
    // previous fires), so the peak is at least one entry per device.
    let st = &v["state"][0];
    assert!(
        st["operator"].as_str().unwrap().starts_with("window_agg"),
        "{st}"
    );
    assert!(st["keys"].as_u64().unwrap() >= 500, "{st}");
    assert!(st["bytes"].as_u64().unwrap() > st["key_bytes"].as_u64().unwrap());
    let q0 = &v["queries"][0];
    assert_eq!(q0["query"], "q0");
    let policies = q0["policies"].as_array().unwrap();
    let labels: Vec<&str> = policies
        .iter()
        .map(|p| p["batch"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["64", "adaptive"]);
    let sustained = q0["sustained_max_events_per_s"].as_f64().unwrap();
    assert!(q0["sustained_confirmed"].is_boolean(), "{q0}");
    for p in policies {
        assert!(p["throughput"]["events_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(p["throughput_runs"].as_array().unwrap().len(), 2);
        let runs = p["latency"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0]["runs"].as_array().unwrap().len(), 2);
        // The open-loop run is offered half the sustained rate.
        let offered = runs[0]["offered_events_per_s"].as_f64().unwrap();
        assert!(
            (offered - sustained / 2.0).abs() < 1.0,
            "{offered} vs {sustained}"
        );
    }
}

#[test]
fn bench_help_says_how_long_the_default_run_takes() {
    let (ok, stdout, stderr) = millrace(&["bench", "--help"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("about 45 minutes"), "{stdout}");
}

#[test]
fn bench_rejects_a_missing_query() {
    let (ok, _, stderr) = millrace(&[
        "bench",
        "--queries",
        "q99",
        "--dir",
        "../../queries/nexmark",
    ]);
    assert!(!ok);
    assert!(stderr.contains("q99.sql: no such query file"), "{stderr}");
}

/// A run that stops on a bad record says what its sinks had written: an
/// at-least-once file has rows out there; an exactly-once one shows only
/// committed checkpoints (none here: the failure comes before the first).
#[test]
fn a_run_that_fails_says_what_its_sinks_had_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut lines: Vec<String> = (0..5000).map(|i| format!("{{\"id\": {i}}}")).collect();
    lines.push("not json".into());
    std::fs::write(&input, lines.join("\n")).unwrap();
    let chk = dir.path().join("chk");
    let checkpoints = format!(
        "SET checkpoint_interval = '10s';\nSET checkpoint_dir = '{}';",
        chk.display()
    );
    for (delivery, settings, says) in [
        (
            "at_least_once",
            "",
            "rows already written and visible (at-least-once)",
        ),
        (
            "exactly_once",
            checkpoints.as_str(),
            "only those of committed checkpoints are visible",
        ),
    ] {
        let out = dir.path().join(format!("{delivery}.jsonl"));
        let sql = dir.path().join(format!("{delivery}.sql"));
        std::fs::write(
            &sql,
            format!(
                "SET parallelism = 1;
SET batch_size = 100;
{settings}
CREATE TABLE src (id BIGINT) WITH (connector = 'file', path = '{}', format = 'json');
CREATE TABLE out WITH (connector = 'file', path = '{}', delivery = '{delivery}');
INSERT INTO out SELECT id FROM src;
",
                input.display(),
                out.display()
            ),
        )
        .unwrap();
        let (ok, _, stderr) = millrace(&["run", sql.to_str().unwrap()]);
        assert!(!ok);
        assert!(
            stderr.contains("not json") || stderr.contains(":5001"),
            "{stderr}"
        );
        assert!(stderr.contains("output before the failure"), "{stderr}");
        assert!(stderr.contains(says), "{delivery}: {stderr}");
    }
}

/// One row with an event time far in the future used to push the watermark
/// past every row after it (all late). With the default `max_future` it is
/// a bad record; every other row is counted in its window.
#[test]
fn one_absurd_event_time_does_not_make_the_rest_late() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base = now_ms - now_ms % 10_000 - 3_600_000;
    let mut lines = Vec::new();
    for i in 0..5000i64 {
        lines.push(format!(r#"{{"ts":{},"k":{}}}"#, base + i * 100, i % 7));
        if i == 1000 {
            lines.push(format!(r#"{{"ts":{},"k":0}}"#, now_ms + 400 * 86_400_000));
        }
    }
    std::fs::write(dir.path().join("in.jsonl"), lines.join("\n")).unwrap();
    let sql = dir.path().join("q.sql");
    let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(
        &sql,
        format!(
            "CREATE TABLE src (ts BIGINT, k BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
             WITH (connector = 'file', path = '{}', on_error = 'skip');\n\
             CREATE TABLE out WITH (connector = 'file', path = '{}');\n\
             INSERT INTO out SELECT count(*) AS n FROM src GROUP BY tumble(ts, INTERVAL '10' SECOND);\n",
            input.display(),
            output.display()
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = millrace(&["run", sql.to_str().unwrap(), "--json"]);
    assert!(ok, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let ops = summary["operators"].as_array().unwrap();
    let late: u64 = ops.iter().map(|o| o["late_rows"].as_u64().unwrap()).sum();
    let skipped: u64 = ops.iter().map(|o| o["skipped"].as_u64().unwrap()).sum();
    assert_eq!((late, skipped), (0, 1), "{stdout}");
    let out = std::fs::read_to_string(&output).unwrap();
    let counted: i64 = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .sum();
    // An independent count: 5000 rows, 100 ms apart, in 10 s windows.
    assert_eq!(counted, 5000);
    assert_eq!(out.lines().count(), 50);
}

#[test]
fn run_shows_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("p.sql");
    std::fs::write(
        &sql,
        "CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
             WITH (connector = 'nexmark', kind = 'bid', events = '20000');
         CREATE TABLE out WITH (connector = 'discard');
         INSERT INTO out SELECT auction FROM bid;",
    )
    .unwrap();
    let sql = sql.to_str().unwrap();
    let (ok, _, stderr) = millrace(&["run", sql, "--http", "off"]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("rows read"), "not a terminal: {stderr}");
    // A terminal: util-linux `script` runs it on a pseudo-terminal.
    let Ok(out) = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} run {sql} --http off",
            env!("CARGO_BIN_EXE_millrace")
        ))
        .arg("/dev/null")
        .output()
    else {
        eprintln!("skipped the terminal half: no `script` (util-linux)");
        return;
    };
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("rows read 18.4 K") && shown.contains("watermark 2025-12-31 23:59:57"),
        "{shown}"
    );
    let quiet = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} run {sql} --http off --quiet",
            env!("CARGO_BIN_EXE_millrace")
        ))
        .arg("/dev/null")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stdout).contains("rows read"));
}

/// `millrace … | head`: once the reader of its output has gone, it ends as
/// other command-line tools do (by SIGPIPE), without a panic.
#[test]
fn a_closed_output_pipe_ends_the_run_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["demo", "--query", "passthrough", "--events", "2000000"])
        .args(["--max-rows", "10000000", "--sink", "console"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with('+'), "{first}");
    // What `head` does once it has its lines; far more output follows
    // than a pipe holds.
    drop(out);
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        done.status.success() || done.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        done.status
    );
}

/// `millrace run -` and `explain -` read the SQL from standard input; an
/// error names it `<stdin>`.
#[test]
fn the_sql_can_come_on_standard_input() {
    let with_stdin = |args: &[&str], sql: &str| {
        let out =
            crate::common::output_with_stdin(crate::common::millrace().args(args), sql.as_bytes());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let sql = "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '1000');
               CREATE TABLE out WITH (connector = 'console', max_rows = '2');
               INSERT INTO out SELECT auction, price FROM bid;";
    let (ok, stdout, stderr) = with_stdin(&["run", "-"], sql);
    assert!(ok, "{stderr}");
    // 92% of 1,000 events are bids.
    assert!(stdout.contains("events       920 in"), "{stdout}");
    assert!(stdout.contains("| auction"), "{stdout}");
    let (ok, stdout, stderr) = with_stdin(&["explain", "-"], sql);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("source nexmark-bids"), "{stdout}");
    let (ok, _, stderr) = with_stdin(&["run", "-"], "SELEC 1;");
    assert!(!ok);
    assert!(stderr.starts_with("error: <stdin>:1:"), "{stderr}");
}
