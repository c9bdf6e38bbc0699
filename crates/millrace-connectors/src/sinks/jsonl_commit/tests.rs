//! Each test stages epochs with real writers in a temporary directory, then
//! commits, replays or recovers and compares the output with the rows of
//! the committed epochs. A crash is simulated by leaving, or putting back,
//! the files an interrupted step would have left.

use super::*;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use millrace_core::{SinkFactory, SinkWriter};
use tempfile::TempDir;

use crate::sinks::JsonLinesSink;

fn ids(values: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))])
        .expect("valid batch")
}

/// The output the rows `values` make, in order.
fn lines(values: &[i64]) -> String {
    values.iter().map(|v| format!("{{\"id\":{v}}}\n")).collect()
}

/// A committer over `dir/out.jsonl`, recovered fresh, with `instances` writers.
struct Fixture {
    _dir: TempDir,
    committer: JsonLinesCommitter,
    writers: Vec<Box<dyn SinkWriter>>,
}

impl Fixture {
    fn new(instances: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let committer = JsonLinesCommitter::new(dir.path().join("out.jsonl"));
        committer.recover(None).expect("fresh recover");
        let mut fx = Fixture {
            _dir: dir,
            committer,
            writers: Vec::new(),
        };
        fx.restart_writers(instances);
        fx
    }

    /// New writers, as a restored run creates them after `recover`.
    fn restart_writers(&mut self, instances: usize) {
        self.writers = (0..instances)
            .map(|i| {
                self.committer
                    .create(i, instances, ids(&[]).schema())
                    .expect("create writer")
            })
            .collect();
    }

    /// Writer `i` writes `rows[i]` (one batch per row slice), then every
    /// writer pre-commits `epoch`; the tokens, in instance order.
    fn stage(&mut self, epoch: Epoch, rows: &[&[i64]]) -> Vec<Snapshot> {
        for (writer, values) in self.writers.iter_mut().zip(rows) {
            writer.write(&ids(values)).expect("write");
        }
        self.writers
            .iter_mut()
            .map(|w| w.pre_commit(epoch).expect("pre_commit"))
            .collect()
    }

    fn prepare(&self, epoch: Epoch, tokens: &[Snapshot]) -> Snapshot {
        self.committer.prepare(epoch, tokens).expect("prepare")
    }

    fn commit(&self, epoch: Epoch, prepared: &Snapshot) {
        self.committer.commit(epoch, prepared).expect("commit");
    }

    fn output(&self) -> String {
        fs::read_to_string(self.committer.output()).expect("read output")
    }

    fn write_output(&self, text: &[u8]) {
        fs::write(self.committer.output(), text).expect("write output");
    }

    /// File name → contents of everything in the staging directory.
    fn staged(&self) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(self.committer.staging_dir())
            .expect("staging dir")
            .map(|entry| {
                let path = entry.expect("entry").path();
                let name = path.file_name().expect("name").to_string_lossy().into();
                (name, fs::read(&path).expect("read part"))
            })
            .collect()
    }

    fn staged_names(&self) -> Vec<String> {
        self.staged().into_keys().collect()
    }

    fn restore_staged(&self, files: &BTreeMap<String, Vec<u8>>) {
        for (name, bytes) in files {
            fs::write(self.committer.staging_dir().join(name), bytes).expect("put part back");
        }
    }
}

#[test]
fn each_commit_appends_its_epoch_and_nothing_is_visible_before() {
    let mut fx = Fixture::new(2);
    let epochs: [(Epoch, [&[i64]; 2]); 3] = [
        (1, [&[1, 2], &[10]]),
        (2, [&[3], &[11, 12, 13]]),
        (3, [&[4, 5], &[14]]),
    ];
    let mut expected = String::new();
    for (epoch, rows) in epochs {
        let tokens = fx.stage(epoch, &rows);
        let prepared = fx.prepare(epoch, &tokens);
        assert_eq!(fx.output(), expected, "epoch {epoch} visible before commit");
        fx.commit(epoch, &prepared);
        expected += &(lines(rows[0]) + &lines(rows[1]));
        assert_eq!(fx.output(), expected, "after commit {epoch}");
        assert!(fx.staged().is_empty(), "parts of {epoch} left staged");
    }
}

#[test]
fn an_epoch_without_rows_stages_no_file() {
    let mut fx = Fixture::new(2);
    fx.writers[1].write(&ids(&[])).expect("empty batch");
    let tokens = fx.stage(1, &[&[7], &[]]);
    assert!(!tokens[0].is_empty());
    assert!(tokens[1].is_empty(), "token of a writer without rows");
    assert_eq!(fx.staged_names(), ["0-1.part"]);
    let prepared = fx.prepare(1, &tokens);
    fx.commit(1, &prepared);

    let tokens = fx.stage(2, &[]);
    assert!(tokens.iter().all(Snapshot::is_empty));
    assert!(fx.staged().is_empty());
    let prepared = fx.prepare(2, &tokens);
    fx.commit(2, &prepared);
    assert_eq!(fx.output(), lines(&[7]));
}

#[test]
fn a_replayed_commit_changes_nothing() {
    let mut fx = Fixture::new(2);
    let tokens = fx.stage(1, &[&[1], &[2]]);
    let prepared = fx.prepare(1, &tokens);
    for _ in 0..3 {
        fx.commit(1, &prepared);
        assert_eq!(fx.output(), lines(&[1, 2]));
    }
}

#[test]
fn a_torn_append_is_cut_off_and_done_again() {
    let mut fx = Fixture::new(2);
    let first = fx.stage(1, &[&[1], &[2]]);
    let first = fx.prepare(1, &first);
    fx.commit(1, &first);
    let committed = lines(&[1, 2]);
    let tokens = fx.stage(2, &[&[3, 4], &[5]]);
    let prepared = fx.prepare(2, &tokens);
    let epoch_2 = lines(&[3, 4, 5]);
    // What an attempt interrupted after the truncate, mid-append or before
    // the fsync can leave past `base`: nothing, a prefix, zeros, all of it.
    let tails: [&[u8]; 4] = [b"", &epoch_2.as_bytes()[..7], &[0; 12], epoch_2.as_bytes()];
    for tail in tails {
        fx.write_output(&[committed.as_bytes(), tail].concat());
        fx.commit(2, &prepared);
        assert_eq!(fx.output(), committed.clone() + &epoch_2, "tail {tail:?}");
        // Parts put back: the crash came before the commit deleted them.
        fx.restore_staged(&BTreeMap::from([
            ("0-2.part".to_string(), lines(&[3, 4]).into_bytes()),
            ("1-2.part".to_string(), lines(&[5]).into_bytes()),
        ]));
    }
}

#[test]
fn a_crash_after_the_append_before_deleting_does_not_duplicate() {
    let mut fx = Fixture::new(2);
    let tokens = fx.stage(1, &[&[1], &[2]]);
    let prepared = fx.prepare(1, &tokens);
    let parts = fx.staged();
    fx.commit(1, &prepared);
    fx.restore_staged(&parts);

    fx.commit(1, &prepared);
    assert_eq!(fx.output(), lines(&[1, 2]));
    assert!(fx.staged().is_empty());
}

#[test]
fn a_crash_mid_delete_is_finished_by_the_replay() {
    let mut fx = Fixture::new(2);
    let tokens = fx.stage(1, &[&[1], &[2]]);
    let prepared = fx.prepare(1, &tokens);
    let mut parts = fx.staged();
    fx.commit(1, &prepared);
    parts.remove("0-1.part");
    fx.restore_staged(&parts);

    fx.commit(1, &prepared);
    assert_eq!(fx.output(), lines(&[1, 2]));
    assert!(fx.staged().is_empty());
}

#[test]
fn a_lost_part_whose_rows_are_not_in_the_output_is_an_error_naming_both() {
    let mut fx = Fixture::new(2);
    let tokens = fx.stage(1, &[&[1], &[2]]);
    let prepared = fx.prepare(1, &tokens);
    let lost = fx.committer.staging_dir().join("1-1.part");
    fs::remove_file(&lost).expect("lose a part");

    let err = fx.committer.commit(1, &prepared).unwrap_err().to_string();
    let output = fx.committer.output().display().to_string();
    assert!(err.contains(&output), "{err}");
    assert!(err.contains(&lost.display().to_string()), "{err}");
    assert_eq!(fx.output(), "", "a failed commit must not append");
}

#[test]
fn an_output_shorter_than_base_is_an_error_naming_it() {
    let mut fx = Fixture::new(1);
    let first = fx.stage(1, &[&[1, 2, 3]]);
    let first = fx.prepare(1, &first);
    fx.commit(1, &first);
    let tokens = fx.stage(2, &[&[4]]);
    let prepared = fx.prepare(2, &tokens);
    fx.write_output(b"{\"id\":1}\n");

    let err = fx.committer.commit(2, &prepared).unwrap_err().to_string();
    assert!(
        err.contains(&fx.committer.output().display().to_string()),
        "{err}"
    );
    assert!(err.contains("shorter"), "{err}");
    assert_eq!(
        fx.output(),
        "{\"id\":1}\n",
        "a short output must not grow zeros"
    );
}

#[test]
fn a_timed_out_epoch_is_committed_with_the_next_in_epoch_order() {
    let mut fx = Fixture::new(2);
    let timed_out = fx.stage(1, &[&[1], &[10]]);
    // Prepared, but its checkpoint never completed: no commit.
    fx.prepare(1, &timed_out);
    let next = fx.stage(2, &[&[2], &[20]]);
    // Carried: each writer's tokens, oldest epoch first, in instance order.
    let carried = [
        timed_out[0].clone(),
        next[0].clone(),
        timed_out[1].clone(),
        next[1].clone(),
    ];
    let prepared = fx.prepare(2, &carried);
    assert_eq!(fx.output(), "");
    fx.commit(2, &prepared);
    assert_eq!(fx.output(), lines(&[1, 10, 2, 20]));
}

#[test]
fn recover_commits_the_restored_checkpoint_if_its_commit_never_ran() {
    let mut fx = Fixture::new(2);
    let tokens = fx.stage(1, &[&[1], &[2]]);
    let prepared = fx.prepare(1, &tokens);

    fx.committer.recover(Some((1, &prepared))).expect("recover");
    assert_eq!(fx.output(), lines(&[1, 2]));
    assert!(fx.staged().is_empty());
}

#[test]
fn recover_discards_later_epochs_and_bytes_the_checkpoint_did_not_promise() {
    let mut fx = Fixture::new(2);
    let tokens = fx.stage(1, &[&[1], &[2]]);
    let checkpoint_1 = fx.prepare(1, &tokens);
    fx.commit(1, &checkpoint_1);
    let later = fx.stage(2, &[&[3], &[4]]);
    fx.prepare(2, &later);
    fx.writers[0]
        .write(&ids(&[5]))
        .expect("epoch 3 in progress");
    fx.writers[0].finish().expect("flush");
    let mut output = fx.output().into_bytes();
    output.extend_from_slice(b"{\"id\":3}\n{\"i");
    fx.write_output(&output);
    assert_eq!(fx.staged_names(), ["0-2.part", "0.open", "1-2.part"]);

    fx.committer
        .recover(Some((1, &checkpoint_1)))
        .expect("recover");
    assert_eq!(fx.output(), lines(&[1, 2]));
    assert!(fx.staged().is_empty());

    // The restored run writes epoch 2 again and commits it after epoch 1.
    fx.restart_writers(2);
    let again = fx.stage(2, &[&[3], &[4]]);
    let prepared = fx.prepare(2, &again);
    fx.commit(2, &prepared);
    assert_eq!(fx.output(), lines(&[1, 2, 3, 4]));
}

#[test]
fn recover_without_a_checkpoint_starts_from_an_empty_output() {
    let mut fx = Fixture::new(1);
    fx.stage(1, &[&[1]]);
    fx.writers[0].write(&ids(&[2])).expect("write");
    fx.writers[0].finish().expect("flush");
    fx.write_output(b"{\"id\":0}\n");

    fx.committer.recover(None).expect("recover");
    assert_eq!(fx.output(), "");
    assert!(fx.staged().is_empty());
}

#[test]
fn commit_step_appends_until_a_part_is_deleted() {
    let prepared = PreparedCommit {
        base: 10,
        parts: vec![
            PartToAppend {
                file: "0-1.part".into(),
                bytes: 5,
            },
            PartToAppend {
                file: "1-1.part".into(),
                bytes: 7,
            },
        ],
    };
    let end = 22;
    use CommitStep::*;
    use Inconsistent::*;
    let cases: [(u64, [bool; 2], Result<CommitStep, Inconsistent>); 8] = [
        // Every part staged: not (durably) appended yet, whatever the length.
        (10, [true, true], Ok(Append)),
        (15, [true, true], Ok(Append)),
        (end, [true, true], Ok(Append)),
        (end + 4, [true, true], Ok(Append)),
        // A part deleted: the append was durable before the delete began.
        (end, [false, true], Ok(DeleteStaged)),
        (end, [false, false], Ok(DeleteStaged)),
        // Something else changed the files.
        (end - 1, [true, false], Err(PartLost { index: 1 })),
        (9, [true, true], Err(OutputShorterThanBase)),
    ];
    for (output_len, staged, expected) in cases {
        assert_eq!(
            commit_step(&prepared, output_len, &staged),
            expected,
            "output {output_len} bytes, staged {staged:?}"
        );
    }
    let nothing = PreparedCommit {
        base: 10,
        parts: vec![],
    };
    assert_eq!(commit_step(&nothing, 10, &[]), Ok(DeleteStaged));
    assert_eq!(commit_step(&nothing, 9, &[]), Err(OutputShorterThanBase));
}

#[test]
fn records_round_trip_and_name_only_files_in_the_staging_dir() {
    let part = StagedPart {
        file: "3-17.part".into(),
        bytes: 42,
        instance: 3,
        epoch: 17,
    };
    let token = part.to_token().expect("token");
    assert_eq!(StagedPart::from_token(&token).expect("read"), Some(part));
    assert_eq!(
        StagedPart::from_token(&Snapshot::none()).expect("read"),
        None
    );

    let prepared = PreparedCommit {
        base: 9,
        parts: vec![PartToAppend {
            file: "0-1.part".into(),
            bytes: 4,
        }],
    };
    let snapshot = prepared.to_snapshot().expect("snapshot");
    assert_eq!(
        PreparedCommit::from_snapshot(&snapshot).expect("read"),
        prepared
    );

    for bad in ["../out.jsonl", "/etc/passwd", "a/b.part", ".", ""] {
        let escaped = PreparedCommit {
            base: 0,
            parts: vec![PartToAppend {
                file: bad.into(),
                bytes: 1,
            }],
        };
        let snapshot = escaped.to_snapshot().expect("snapshot");
        let err = PreparedCommit::from_snapshot(&snapshot).unwrap_err();
        assert!(err.to_string().contains("not a file name"), "{bad}: {err}");
    }
}

#[test]
fn the_sink_stages_beside_its_output_and_names_what_it_cannot_create() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = JsonLinesSink::new(dir.path().join("out.jsonl"));
    assert!(sink.committer().is_some());
    let committer = JsonLinesCommitter::new(dir.path().join("out.jsonl"));
    assert_eq!(
        committer.staging_dir(),
        dir.path().join(".out.jsonl.staging")
    );

    let missing = JsonLinesCommitter::new(dir.path().join("missing").join("out.jsonl"));
    match missing.create(0, 1, ids(&[]).schema()) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing.staging_dir()),
        Err(other) => panic!("expected an Io error, got {other}"),
        Ok(_) => panic!("expected an Io error, got a writer"),
    }
}
