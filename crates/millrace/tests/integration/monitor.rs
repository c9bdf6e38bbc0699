//! The live endpoint: `/metrics` scraped and read by the Prometheus
//! project's own text parser (Python `prometheus_client`), compared with the
//! run's own counts; live while a run runs; a taken address refused.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use millrace::monitor::Monitor;
use millrace::sql::SqlPipeline;

use crate::common::{millrace, output_with_stdin};

/// One parsed sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// `None` after saying why a test skips; a failure instead under
/// `MILLRACE_REQUIRE_SERVICES=1` (as `.ci/run` sets), so CI never passes
/// without running it.
fn missing_tool<T>(why: &str) -> Option<T> {
    if std::env::var("MILLRACE_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("{why}, and MILLRACE_REQUIRE_SERVICES=1");
    }
    eprintln!("skipped: {why}");
    None
}

/// A Python with `prometheus_client` (`scripts/test-tools.sh install`):
/// `$MILLRACE_PYTHON`, `python3`, or Debian's own. `None` (and a message)
/// when there is none; under `MILLRACE_REQUIRE_SERVICES=1` that fails.
fn prometheus_parser() -> Option<String> {
    let candidates = std::env::var("MILLRACE_PYTHON")
        .into_iter()
        .chain(["python3".to_string(), "/usr/bin/python3".to_string()]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import prometheus_client.parser"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(python);
        }
    }
    missing_tool("no Python with prometheus_client (scripts/test-tools.sh install)")
}

/// Parses an exposition with `prometheus_client.parser`: a malformed one
/// fails the test.
fn parse(python: &str, text: &str) -> Vec<Sample> {
    const SCRIPT: &str = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = [[s.name, s.labels, s.value]\n\
               for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]\n\
        print(json.dumps(out))";
    let out = output_with_stdin(Command::new(python).args(["-c", SCRIPT]), text.as_bytes());
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|(name, labels, value)| Sample {
            name,
            labels,
            value,
        })
        .collect()
}

/// GET /metrics: its body, checked to be the Prometheus text format.
fn scrape(addr: SocketAddr) -> String {
    let (head, body) = fetch(addr, "/metrics");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// GET `path` over plain HTTP/1.1: the head and the body of a 200 answer.
fn fetch(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: millrace\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    (head.to_string(), body.to_string())
}

/// The sum of `name` over the samples whose `operator` label starts with
/// `operator` (every instance).
fn total(samples: &[Sample], name: &str, operator: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            s.labels
                .get("operator")
                .is_some_and(|o| o.starts_with(operator))
        })
        .map(|s| s.value)
        .sum()
}

fn one(samples: &[Sample], name: &str) -> f64 {
    let found: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found[0].value
}

#[test]
fn metrics_equal_the_runs_own_counts() {
    let Some(python) = prometheus_parser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 20,000 readings of 7 keys, 10 ms apart (20 windows of 10 s), 5 far
    // behind the watermark (late), and 7 lines that are not JSON (skipped).
    let mut lines = Vec::new();
    let base = 1_700_000_000_000i64;
    for i in 0..20_000i64 {
        lines.push(format!(r#"{{"k":{},"ts":{}}}"#, i % 7, base + i * 10));
        if i % 4_000 == 3_999 {
            lines.push(format!(r#"{{"k":1,"ts":{base}}}"#));
        }
        if i % 3_000 == 1_500 {
            lines.push("{not json".to_string());
        }
    }
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let sql = format!(
        "SET parallelism = 2;
         CREATE TABLE r (k BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH (connector = 'file', path = '{}', format = 'json', on_error = 'skip');
         CREATE TABLE out WITH (connector = 'file', path = '{}', format = 'json');
         INSERT INTO out SELECT k, count(*) AS n FROM r GROUP BY k, tumble(ts, INTERVAL '10' SECOND);",
        input.display(),
        dir.path().join("out.jsonl").display()
    );
    let job = SqlPipeline::plan(&sql).unwrap();
    let monitor = Monitor::start("127.0.0.1:0", "counts", job.live(), Default::default()).unwrap();
    let summary = job.run().unwrap();
    // The run is over; the endpoint still serves its final counts.
    let samples = parse(&python, &scrape(monitor.addr()));

    assert!(samples.iter().all(|s| s.labels["pipeline"] == "counts"));
    let source = summary.operator("source").unwrap();
    assert_eq!(source.source_stats.skipped, 7);
    assert_eq!(summary.events, 20_005);
    let rows_out = "millrace_operator_rows_out_total";
    assert_eq!(total(&samples, rows_out, "source") as u64, summary.events);
    assert_eq!(
        total(&samples, "millrace_source_skipped_records_total", "source") as u64,
        7
    );
    for op in &summary.operators {
        if op.kind != millrace::runtime::metrics::NodeKind::Source {
            let rows_in = total(&samples, "millrace_operator_rows_in_total", &op.name);
            assert_eq!(rows_in as u64, op.rows_in, "{}", op.name);
        }
        if op.kind != millrace::runtime::metrics::NodeKind::Sink {
            assert_eq!(
                total(&samples, rows_out, &op.name) as u64,
                op.rows_out,
                "{}",
                op.name
            );
        }
        if op.kind == millrace::runtime::metrics::NodeKind::Operator {
            let late = total(&samples, "millrace_operator_late_rows_total", &op.name);
            assert_eq!(late as u64, op.late_rows, "{}", op.name);
        }
    }
    let late: u64 = summary.operators.iter().map(|o| o.late_rows).sum();
    assert_eq!(late, 5, "the five readings far behind are late");
    let channel_rows: u64 = summary.channels.iter().map(|c| c.rows).sum();
    let scraped_rows: f64 = samples
        .iter()
        .filter(|s| s.name == "millrace_channel_rows_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(scraped_rows as u64, channel_rows);
    assert_eq!(
        one(&samples, "millrace_latency_seconds_count") as u64,
        summary.latency.count
    );
    // Buckets are cumulative and end at the count.
    let buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == "millrace_latency_seconds_bucket")
        .map(|s| (s.labels["le"].parse::<f64>().unwrap(), s.value))
        .collect();
    assert!(buckets.len() > 20);
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
    );
    assert_eq!(buckets.last().unwrap().1 as u64, summary.latency.count);
    assert!(summary.latency.count > 0);
    assert_eq!(one(&samples, "millrace_restarts_total"), 0.0);
}

/// `millrace run sql --json` with the endpoint on a free port: the
/// process, the address it printed, and the rest of its stderr.
// The caller waits for the child it is handed.
#[allow(clippy::zombie_processes)]
fn run_with_endpoint(sql: &std::path::Path) -> (Child, SocketAddr, BufReader<ChildStderr>) {
    let mut child = millrace()
        .args([
            "run",
            sql.to_str().unwrap(),
            "--json",
            "--http",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.wait();
            panic!("no address printed");
        }
        if let Some(url) = line.trim().strip_prefix("live metrics: http://") {
            let addr = url.trim_end_matches("/metrics").parse().unwrap();
            return (child, addr, stderr);
        }
    }
}

#[test]
fn metrics_move_while_the_pipeline_runs() {
    let Some(python) = prometheus_parser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("live.sql");
    std::fs::write(
        &sql,
        "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', rate = '20000', events = '1000000000');
         CREATE TABLE out WITH (connector = 'discard');
         INSERT INTO out SELECT auction, price FROM bid;",
    )
    .unwrap();
    let (child, addr, _stderr) = run_with_endpoint(&sql);
    // Read until the source has counted rows and the sink latencies, then
    // until the count has moved on: the numbers are live, not final.
    let deadline = Instant::now() + Duration::from_secs(120);
    let read = |samples: &[Sample]| {
        (
            total(samples, "millrace_operator_rows_out_total", "source"),
            samples
                .iter()
                .find(|s| s.name == "millrace_latency_seconds_count")
                .map_or(0.0, |s| s.value),
        )
    };
    // Polled every 100 ms: the endpoint answers whenever asked.
    let poll = || std::thread::sleep(Duration::from_millis(100));
    let mut first = (0.0, 0.0);
    while first.0 == 0.0 || first.1 == 0.0 {
        assert!(Instant::now() < deadline, "no rows counted live");
        poll();
        first = read(&parse(&python, &scrape(addr)));
    }
    let mut later = first;
    while later.0 <= first.0 || later.1 <= first.1 {
        assert!(Instant::now() < deadline, "the counts did not move");
        poll();
        later = read(&parse(&python, &scrape(addr)));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["events"].as_f64().unwrap() >= later.0);
}

#[test]
fn a_taken_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("p.sql");
    std::fs::write(
        &sql,
        "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '1000');
         CREATE TABLE out WITH (connector = 'discard');
         INSERT INTO out SELECT auction FROM bid;",
    )
    .unwrap();
    let out = millrace()
        .args(["run", sql.to_str().unwrap(), "--http", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot serve the live endpoint on {addr}")),
        "{stderr}"
    );
    // The same through the file's own setting.
    std::fs::write(
        &sql,
        format!(
            "SET http = '{addr}';
             CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '1000');
             CREATE TABLE out WITH (connector = 'discard');
             INSERT INTO out SELECT auction FROM bid;"
        ),
    )
    .unwrap();
    let out = millrace()
        .env_remove("MILLRACE_HTTP")
        .args(["run", sql.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot serve the live endpoint"));
}

/// Headless Chromium (`scripts/test-tools.sh install`), or `None` (and a
/// message; a failure under `MILLRACE_REQUIRE_SERVICES=1`).
fn chromium() -> Option<String> {
    for browser in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new(browser)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(browser.to_string());
        }
    }
    missing_tool("no Chromium (scripts/test-tools.sh install)")
}

/// The text of the first element after `marker` in `dom`, up to the next
/// tag.
fn text_after(dom: &str, marker: &str) -> Option<String> {
    let at = dom.find(marker)? + marker.len();
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')? + start;
    Some(rest[start..end].to_string())
}

/// An attribute value as Chromium serializes it.
fn html_escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;")
}

#[test]
fn the_dashboard_in_a_browser_shows_the_dataflow_and_the_counts_of_metrics() {
    let (Some(python), Some(browser)) = (prometheus_parser(), chromium()) else {
        return;
    };
    let job = SqlPipeline::plan(
        "SET parallelism = 2;
         CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
             WITH (connector = 'nexmark', kind = 'bid', events = '300000');
         CREATE TABLE out WITH (connector = 'discard');
         CREATE VIEW m AS SELECT tumble(date_time, INTERVAL '10' SECOND) AS window, max(price) AS price
             FROM bid GROUP BY tumble(date_time, INTERVAL '10' SECOND);
         INSERT INTO out SELECT b.auction, b.price FROM bid b JOIN m
             ON tumble(b.date_time, INTERVAL '10' SECOND) = m.window AND b.price = m.price;",
    )
    .unwrap();
    let live = job.live();
    let monitor =
        Monitor::start("127.0.0.1:0", "browser", live.clone(), Default::default()).unwrap();
    let summary = job.run().unwrap();
    // The sampler reads once a second: wait for its reading of the ended
    // run, after which nothing it shows changes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state: serde_json::Value =
            serde_json::from_str(&fetch(monitor.addr(), "/api/state").1).unwrap();
        let last = state["readings"].as_array().unwrap().last().cloned();
        if state["ended"] == true {
            assert_eq!(last.unwrap()["events"].as_u64(), Some(summary.events));
            break;
        }
        assert!(Instant::now() < deadline, "no reading of the ended run");
        // The sampler reads once a second; no need to ask much more often.
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("http://{}/", monitor.addr()),
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("id=\"events-total\""),
        "the page did not draw: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operator of the run is a node of the drawn graph and a row of
    // the table.
    for op in &summary.operators {
        let name = html_escaped(&op.name);
        assert!(
            dom.contains(&format!("data-operator=\"{name}\" transform=")),
            "no graph node for {}",
            op.name
        );
    }
    // The page's numbers are /metrics' numbers.
    let samples = parse(&python, &scrape(monitor.addr()));
    let events = total(&samples, "millrace_operator_rows_out_total", "source");
    let shown = text_after(&dom, "id=\"events-total\"").unwrap();
    assert_eq!(shown.parse::<f64>().unwrap(), events);
    for op in &summary.operators {
        let row = format!("<tr data-operator=\"{}\">", html_escaped(&op.name));
        let at = dom
            .find(&row)
            .unwrap_or_else(|| panic!("no table row for {}", op.name));
        let field = if op.kind == millrace::runtime::metrics::NodeKind::Sink {
            ("rows_in", "millrace_operator_rows_in_total")
        } else {
            ("rows_out", "millrace_operator_rows_out_total")
        };
        let cell = text_after(&dom[at..], &format!("data-field=\"{}\"", field.0)).unwrap();
        let exact: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == field.1 && s.labels.get("operator") == Some(&op.name))
            .collect();
        let metric: f64 = exact.iter().map(|s| s.value).sum();
        assert_eq!(cell.parse::<f64>().unwrap(), metric, "{}", op.name);
    }
    // The latency breakdown: the page's stages are /metrics' stages, and
    // every row that reached a sink traced is counted.
    let traced = live.attempt().unwrap().traces.as_ref().unwrap().finished();
    assert!(traced > 0);
    assert_eq!(
        one(&samples, "millrace_latency_traced_rows_total") as u64,
        traced
    );
    let breakdown = "millrace_latency_breakdown_seconds";
    let mut metric_stages: Vec<(String, String)> = (samples.iter())
        .filter(|s| s.name == breakdown)
        .map(|s| (s.labels["stage_id"].clone(), s.labels["kind"].clone()))
        .collect();
    metric_stages.sort();
    metric_stages.dedup();
    assert!(
        metric_stages.iter().any(|s| s.1 == "sink"),
        "{metric_stages:?}"
    );
    let mut page_stages: Vec<(String, String)> = dom
        .match_indices("data-stage-id=\"")
        .map(|(at, marker)| {
            let rest = &dom[at + marker.len()..];
            let id = &rest[..rest.find('"').unwrap()];
            let kind = text_between(rest, "data-kind=\"", "\"");
            (id.to_string(), kind.to_string())
        })
        .collect();
    page_stages.sort();
    assert_eq!(page_stages, metric_stages);
}

/// The text of `dom` after the first `start` up to the next `end`.
fn text_between<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let from = dom.find(start).unwrap() + start.len();
    &dom[from..from + dom[from..].find(end).unwrap()]
}

/// A local webhook receiver: every POST body, answered 200.
fn webhook_receiver() -> (SocketAddr, std::sync::mpsc::Receiver<serde_json::Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if let Ok(json) = serde_json::from_slice(&body)
                && sent.send(json).is_err()
            {
                return;
            }
        }
    });
    (addr, received)
}

#[test]
fn alerts_fire_and_resolve_to_the_log_metrics_and_a_webhook() {
    let Some(python) = prometheus_parser() else {
        return;
    };
    let (hook, posted) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("alerts.sql");
    // A fast source that runs well past the detector's warm-up, then only
    // a slow second source: a sudden drop it must flag.
    std::fs::write(
        &sql,
        format!(
            "SET alert.health = 'anomaly input_rate';
             SET alert.flowing = 'input_rate > 0';
             SET alert.never = 'p99 > 1h for 5s';
             SET alert_webhook = 'http://{hook}/hook';
             CREATE TABLE fast WITH (connector = 'nexmark', kind = 'bid', rate = '20000', events = '500000');
             CREATE TABLE slow WITH (connector = 'nexmark', kind = 'bid', rate = '500', seed = '7');
             CREATE TABLE out WITH (connector = 'discard');
             INSERT INTO out SELECT auction FROM fast UNION ALL SELECT auction FROM slow;"
        ),
    )
    .unwrap();
    let (mut child, addr, mut stderr) = run_with_endpoint(&sql);
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let mut events = Vec::new();
    let mut health = (false, false);
    while !(health.0 && health.1) {
        let event = posted
            .recv_timeout(Duration::from_secs(120))
            .expect("the health alert did not fire and resolve");
        assert_eq!(event["pipeline"], "alerts");
        if event["alert"] == "health" {
            match event["state"].as_str() {
                Some("firing") => health.0 = true,
                Some("resolved") => health.1 = health.0,
                other => panic!("state {other:?}"),
            }
        }
        events.push(event);
    }
    assert!(
        events
            .iter()
            .any(|e| e["alert"] == "flowing" && e["state"] == "firing"),
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["alert"] != "never"), "{events:?}");
    let samples = parse(&python, &scrape(addr));
    let firing = |alert: &str| {
        samples
            .iter()
            .find(|s| s.name == "millrace_alerts_firing" && s.labels["alert"] == alert)
            .map(|s| s.value)
    };
    assert_eq!(firing("flowing"), Some(1.0), "input still flows");
    assert_eq!(firing("never"), Some(0.0));
    let state: serde_json::Value = serde_json::from_str(&fetch(addr, "/api/state").1).unwrap();
    let listed = state["alerts"]["events"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e["alert"] == "health" && e["state"] == "firing")
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap();
    assert!(
        log.contains("alert firing: health (anomaly input_rate)"),
        "{log}"
    );
    assert!(log.contains("alert resolved: health"), "{log}");
}
