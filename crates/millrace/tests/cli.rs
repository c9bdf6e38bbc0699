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
        stdout.contains("window(tumbling 10000ms by [channel]"),
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
