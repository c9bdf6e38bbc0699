//! Stopping and killing the binary of a checkpointing pipeline, and
//! restarting it at other parallelisms: what it committed equals what a run
//! without interruptions commits, no row lost, none twice.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::{Moments, millrace, run_to_end};

const BIDS: &str = "400000";
const SINKS: [&str; 3] = ["counts", "joined", "top"];

/// The pipeline over `bids`, writing its three outputs into `out`.
fn pipeline(bids: &Path, out: &Path, parallelism: usize) -> String {
    let sink = |name: &str| {
        format!(
            "CREATE TABLE {name} WITH (connector = 'file', path = '{}', delivery = 'exactly_once');",
            out.join(format!("{name}.jsonl")).display()
        )
    };
    format!(
        "SET parallelism = {parallelism};
SET checkpoint_interval = '50ms';
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,
                  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
    WITH (connector = 'file', path = '{bids}', format = 'json');
{counts}
{joined}
{top}
CREATE VIEW per_auction AS
SELECT auction, tumble(date_time, INTERVAL '2' SECOND) AS window, count(*) AS num
FROM bid GROUP BY auction, tumble(date_time, INTERVAL '2' SECOND);
CREATE VIEW spend AS
SELECT auction, tumble(date_time, INTERVAL '2' SECOND) AS window, sum(price) AS total
FROM bid GROUP BY auction, tumble(date_time, INTERVAL '2' SECOND);
INSERT INTO counts SELECT auction, num, window['start'] AS start FROM per_auction;
INSERT INTO joined
SELECT p.auction, p.num, s.total, p.window['start'] AS start
FROM per_auction p JOIN spend s ON p.auction = s.auction AND p.window = s.window;
INSERT INTO top
SELECT auction, num, start FROM (
  SELECT auction, num, window['start'] AS start,
         RANK() OVER (PARTITION BY window ORDER BY num DESC) AS rk
  FROM per_auction)
WHERE rk <= 3;
",
        bids = bids.display(),
        counts = sink("counts"),
        joined = sink("joined"),
        top = sink("top"),
    )
}

/// Every committed line of each output, sorted.
fn outputs(out: &Path) -> Vec<Vec<String>> {
    SINKS
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(out.join(format!("{name}.jsonl")))
                .unwrap_or_else(|e| panic!("{name}.jsonl: {e}"));
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            lines.sort();
            lines
        })
        .collect()
}

fn write_pipeline(dir: &Path, name: &str, bids: &Path, parallelism: usize) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let sql = dir.join(format!("{name}.sql"));
    std::fs::write(&sql, pipeline(bids, &out, parallelism)).unwrap();
    (sql, out)
}

#[test]
fn killed_twenty_times_the_committed_output_equals_a_run_without_failures() {
    let dir = tempfile::tempdir().unwrap();
    let bids = dir.path().join("bids.jsonl");
    let status = millrace()
        .args(["gen", "nexmark", "--kind", "bid", "--events", BIDS])
        .arg("--out")
        .arg(&bids)
        .status()
        .unwrap();
    assert!(status.success());

    let (clean_sql, clean_out) = write_pipeline(dir.path(), "clean", &bids, 2);
    let full = run_to_end(&clean_sql);
    let expected = outputs(&clean_out);
    assert!(expected.iter().all(|lines| !lines.is_empty()));

    let (sql, out) = write_pipeline(dir.path(), "chaos", &bids, 2);
    let checkpoints = dir.path().join(".millrace").join("chaos");
    let has_checkpoint = || {
        std::fs::read_dir(&checkpoints).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().join("MANIFEST.json").exists())
        })
    };
    // Right after the first checkpoint, one run at parallelism 1 and one
    // at 3 (popped from the back): their state comes from a checkpoint
    // taken at another parallelism, and goes on to the next one.
    let mut rescales = vec![3, 1];
    let mut rescaled = Vec::new();
    let mut moments = Moments(0x9e37_79b9_7f4a_7c15);
    let mut killed = 0;
    let mut restored = 0;
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
        let mut first_line = String::new();
        if let Some(p) = parallelism {
            // The run says where it starts before it reads anything.
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            stderr.read_line(&mut first_line).unwrap();
            assert!(
                first_line.starts_with("restored checkpoint")
                    && !first_line.contains("end of the input"),
                "at parallelism {p}: {first_line}"
            );
            rescaled.push(p);
            restored += 1;
        }
        // Anywhere in the first quarter of a whole run, startup included:
        // each run gets a little further than the one before.
        std::thread::sleep(moments.next_below(full / 4));
        match child.try_wait().unwrap() {
            Some(status) => {
                // Finished before the kill: the next run restores the
                // final checkpoint and has nothing left to do.
                let output = child.wait_with_output().unwrap();
                assert!(
                    status.success(),
                    "{first_line}{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                let output = child.wait_with_output().unwrap();
                let stderr = String::from_utf8_lossy(&output.stderr);
                restored += usize::from(
                    stderr.contains("restored checkpoint") && !stderr.contains("end of the input"),
                );
                killed += 1;
            }
        }
    }
    run_to_end(&sql);
    eprintln!("clean run {full:?}; {killed} kills, {restored} of them mid-way after a restore");
    assert!(restored > 2, "only {restored} runs restored a checkpoint");
    assert_eq!(rescaled, vec![1, 3], "the runs at other parallelisms");
    let got = outputs(&out);
    for ((name, want), have) in SINKS.iter().zip(&expected).zip(&got) {
        assert_eq!(
            have.len(),
            want.len(),
            "{name}: {} committed lines, {} without failures",
            have.len(),
            want.len()
        );
        assert_eq!(have, want, "{name}: committed lines differ");
    }
}

/// A generator pipeline paced so that it runs for a few seconds.
fn paced_pipeline(out: &Path) -> String {
    format!(
        "SET parallelism = 2;
SET checkpoint_interval = '100ms';
CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '300000', rate = '100000');
CREATE TABLE counts WITH (connector = 'file', path = '{}');
INSERT INTO counts
SELECT auction, count(*) AS num, tumble(date_time, INTERVAL '1' SECOND)['start'] AS start
FROM bid GROUP BY auction, tumble(date_time, INTERVAL '1' SECOND);
",
        out.join("counts.jsonl").display()
    )
}

/// The committed lines of `counts.jsonl` in `out`, sorted.
fn counts(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("counts.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn sigterm_stops_at_a_checkpoint_and_the_next_run_continues_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str| {
        let out = dir.path().join(name);
        std::fs::create_dir_all(&out).unwrap();
        let sql = dir.path().join(format!("{name}.sql"));
        std::fs::write(&sql, paced_pipeline(&out)).unwrap();
        (sql, out)
    };
    let (clean_sql, clean_out) = write("clean");
    run_to_end(&clean_sql);
    let expected = counts(&clean_out);
    assert!(!expected.is_empty());

    let (sql, out) = write("stopped");
    let checkpoints = dir.path().join(".millrace").join("stopped");
    let child = millrace()
        .args(["run", sql.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once a checkpoint is complete, the run is well under way.
    let has_checkpoint = || {
        std::fs::read_dir(&checkpoints).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().join("MANIFEST.json").exists())
        })
    };
    while !has_checkpoint() {
        std::thread::park_timeout(Duration::from_millis(5));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: `kill` only sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    assert!(stdout.contains("run summary"), "{stdout}");
    // Stopped before the end: some windows are not committed yet, and
    // none that is committed is partial.
    let committed = counts(&out);
    assert!(committed.len() < expected.len(), "the stop came too late");
    for line in &committed {
        assert!(
            expected.contains(line),
            "not in a run without stops: {line}"
        );
    }

    let resumed = millrace()
        .args(["run", sql.to_str().unwrap()])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.starts_with("restored checkpoint "), "{stderr}");
    assert_eq!(counts(&out), expected);
}
