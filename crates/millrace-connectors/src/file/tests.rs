//! Behaviour tests of the file sources: input lines → expected rows, bad
//! records under each policy, splitting across instances.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::util::pretty::pretty_format_batches;
use millrace_core::batch::{ENTERED_COLUMN, entered_column, strip_entered};
use millrace_core::state::scalar;
use millrace_core::{Error, EventTime, Snapshot, SourceFactory, SourcePoll, SourceStats};
use tempfile::TempDir;

use super::{FileFormat, FileSource, OnError};
use crate::resume_check::{check_resume_everywhere, cut_and_resume, drain_reader, row_strings};

fn json_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

fn csv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ts", DataType::Int64, true),
    ]))
}

fn write(dir: &TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write fixture");
    path
}

/// Everything one instance produces, polled with `max_rows`.
struct Drained {
    batches: Vec<RecordBatch>,
    stats: SourceStats,
}

fn drain(
    source: &FileSource,
    instance: usize,
    parallelism: usize,
    max_rows: usize,
) -> Result<Drained, Error> {
    let mut reader = source.create(instance, parallelism)?;
    let mut batches = Vec::new();
    // Bounded so a reader that never ends fails the test instead of hanging it.
    for _ in 0..10_000 {
        match reader.poll_batch(max_rows)? {
            SourcePoll::Batch(b) => {
                assert!(b.num_rows() > 0, "empty batch returned");
                assert!(
                    b.num_rows() <= max_rows,
                    "{} rows > max_rows {max_rows}",
                    b.num_rows()
                );
                batches.push(b);
            }
            SourcePoll::Pending { .. } => {}
            SourcePoll::Exhausted => {
                // Exhausted is final.
                assert!(matches!(
                    reader.poll_batch(max_rows)?,
                    SourcePoll::Exhausted
                ));
                return Ok(Drained {
                    batches,
                    stats: reader.stats(),
                });
            }
        }
    }
    panic!("reader did not finish");
}

fn table(batches: &[RecordBatch]) -> String {
    let stripped: Vec<RecordBatch> = batches.iter().map(strip_entered).collect();
    pretty_format_batches(&stripped)
        .expect("format")
        .to_string()
}

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name("id").expect("id column");
            col.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

/// Everything `path` gives as JSON of [`json_schema`] with bad records skipped.
fn skip_json(path: &Path) -> Drained {
    drain(
        &FileSource::json(path, json_schema()).with_on_error(OnError::Skip),
        0,
        1,
        100,
    )
    .expect("skip never fails")
}

fn expect_bad_record(result: Result<Drained, Error>) -> (PathBuf, u64, String) {
    match result {
        Err(Error::BadRecord { path, line, reason }) => (path, line, reason),
        Err(other) => panic!("expected BadRecord, got {other}"),
        Ok(d) => panic!("expected BadRecord, got {} rows", ids(&d.batches).len()),
    }
}

const GOOD_JSON: &str = r#"{"id":1,"name":"apple","price":1.5,"ts":1000}
{"id":2,"name":null,"price":2.25,"ts":2000,"unknown":"ignored"}

{"ts":3000,"price":-3.0,"name":"cherry","id":3}
{"id":4,"ts":4000}
"#;

const GOOD_TABLE: &str = "\
+----+--------+-------+---------------------+
| id | name   | price | ts                  |
+----+--------+-------+---------------------+
| 1  | apple  | 1.5   | 1970-01-01T00:00:01 |
| 2  |        | 2.25  | 1970-01-01T00:00:02 |
| 3  | cherry | -3.0  | 1970-01-01T00:00:03 |
| 4  |        |       | 1970-01-01T00:00:04 |
+----+--------+-------+---------------------+";

#[test]
fn json_rows_equal_the_hand_written_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "trades.jsonl", GOOD_JSON.as_bytes());
    let source = FileSource::json(&path, json_schema()).with_event_time(EventTime::new("ts", 0));
    assert_eq!(source.name(), "file:trades.jsonl");
    assert_eq!(source.schema(), json_schema());
    assert_eq!(source.event_time(), Some(EventTime::new("ts", 0)));

    let out = drain(&source, 0, 1, 100).expect("drain");
    assert_eq!(table(&out.batches), GOOD_TABLE);
    assert_eq!(out.stats, SourceStats::default());

    // Declared columns, then the entered column last, filled for every row.
    let batch = &out.batches[0];
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["id", "name", "price", "ts", ENTERED_COLUMN]);
    assert_eq!(
        batch.schema_ref().field(0),
        json_schema().field(0),
        "declared nullability kept"
    );
    let entered = entered_column(batch).expect("entered column");
    assert_eq!(entered.len(), 4);
    assert_eq!(entered.null_count(), 0);
    assert!(entered.values().iter().all(|&t| t >= 0));
}

#[test]
fn csv_rows_equal_the_hand_written_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = "id,name,price,ts\r\n1,apple,1.5,1000\r\n2,,2.25,2000\r\n\r\n3,\"cherry, red\",-3.0,3000\r\n4,,,4000";
    let path = write(&dir, "trades.csv", csv.as_bytes());
    let source =
        FileSource::csv(&path, csv_schema(), true).with_event_time(EventTime::new("ts", 0));
    let out = drain(&source, 0, 1, 100).expect("drain");
    let expected = "\
+----+-------------+-------+------+
| id | name        | price | ts   |
+----+-------------+-------+------+
| 1  | apple       | 1.5   | 1000 |
| 2  |             | 2.25  | 2000 |
| 3  | cherry, red | -3.0  | 3000 |
| 4  |             |       | 4000 |
+----+-------------+-------+------+";
    assert_eq!(table(&out.batches), expected);
    assert!(entered_column(&out.batches[0]).is_some());
}

#[test]
fn csv_without_header_and_with_another_delimiter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "t.csv", b"1;a;0.5;10\n2;b;1.5;20\n");
    let format = FileFormat::Csv {
        has_header: false,
        delimiter: b';',
    };
    let source = FileSource::new(vec![path], format, csv_schema());
    let out = drain(&source, 0, 1, 100).expect("drain");
    let expected = "\
+----+------+-------+----+
| id | name | price | ts |
+----+------+-------+----+
| 1  | a    | 0.5   | 10 |
| 2  | b    | 1.5   | 20 |
+----+------+-------+----+";
    assert_eq!(table(&out.batches), expected);
}

#[test]
fn max_rows_is_respected_across_many_polls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines: String = (1..=10)
        .map(|i| format!("{{\"id\":{i},\"ts\":{i}}}\n"))
        .collect();
    let path = write(&dir, "ten.jsonl", lines.as_bytes());
    let source = FileSource::json(&path, json_schema());
    let out = drain(&source, 0, 1, 3).expect("drain");
    let sizes: Vec<usize> = out.batches.iter().map(|b| b.num_rows()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(ids(&out.batches), (1..=10).collect::<Vec<_>>());
}

#[test]
fn instances_split_files_and_read_every_row_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths: Vec<PathBuf> = (0..3)
        .map(|f| {
            let rows: String = (0..5)
                .map(|r| format!("{{\"id\":{}}}\n", f * 100 + r))
                .collect();
            write(&dir, &format!("part-{f}.jsonl"), rows.as_bytes())
        })
        .collect();
    let source = FileSource::new(paths, FileFormat::Json, json_schema());
    assert_eq!(source.name(), "file:part-0.jsonl+2");

    let first = drain(&source, 0, 2, 2).expect("instance 0");
    let second = drain(&source, 1, 2, 2).expect("instance 1");
    // Instance 0 reads files 0 and 2 in order; instance 1 reads file 1.
    assert_eq!(
        ids(&first.batches),
        [0, 1, 2, 3, 4, 200, 201, 202, 203, 204]
    );
    assert_eq!(ids(&second.batches), [100, 101, 102, 103, 104]);

    let mut all = [ids(&first.batches), ids(&second.batches)].concat();
    all.sort_unstable();
    let mut expected: Vec<i64> = (0..3)
        .flat_map(|f| (0..5).map(move |r| f * 100 + r))
        .collect();
    expected.sort_unstable();
    assert_eq!(all, expected);
}

#[test]
fn an_instance_without_files_is_exhausted_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "only.jsonl", b"{\"id\":1}\n");
    let source = FileSource::json(&path, json_schema());
    let mut reader = source.create(1, 2).expect("create");
    assert!(matches!(
        reader.poll_batch(10).expect("poll"),
        SourcePoll::Exhausted
    ));
    assert!(matches!(source.create(2, 2), Err(Error::Plan(_))));
}

#[test]
fn empty_and_blank_files_yield_no_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = write(&dir, "empty.jsonl", b"");
    let blank = write(&dir, "blank.jsonl", b"\n  \n\r\n\t\n");
    let source = FileSource::new(vec![empty, blank], FileFormat::Json, json_schema());
    let out = drain(&source, 0, 1, 10).expect("drain");
    assert!(out.batches.is_empty());
    assert_eq!(out.stats, SourceStats::default());
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.jsonl");
    let source = FileSource::json(&missing, json_schema());
    match source.create(0, 1) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        Err(other) => panic!("expected Io, got {other}"),
        Ok(_) => panic!("expected Io, got a reader"),
    }
    let as_dir = FileSource::json(dir.path(), json_schema());
    assert!(matches!(as_dir.create(0, 1), Err(Error::Io { .. })));
}

fn plan_error(source: &FileSource) -> String {
    match source.validate() {
        Err(Error::Plan(msg)) => {
            // create() refuses the same declaration.
            assert!(matches!(source.create(0, 1), Err(Error::Plan(_))));
            msg
        }
        Err(other) => panic!("expected Plan error, got {other}"),
        Ok(()) => panic!("expected Plan error, validation passed"),
    }
}

#[test]
fn validate_explains_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "in.jsonl", b"{\"id\":1}\n");

    let msg = plan_error(
        &FileSource::json(&path, json_schema()).with_event_time(EventTime::new("when", 0)),
    );
    assert!(
        msg.contains("event-time column 'when' is not in the schema"),
        "{msg}"
    );
    assert!(msg.contains("id, name, price, ts"), "{msg}");

    let msg = plan_error(
        &FileSource::json(&path, json_schema()).with_event_time(EventTime::new("name", 0)),
    );
    assert!(msg.contains("'name' has type Utf8"), "{msg}");

    let reserved = Arc::new(Schema::new(vec![Field::new(
        ENTERED_COLUMN,
        DataType::Int64,
        false,
    )]));
    let msg = plan_error(&FileSource::json(&path, reserved));
    assert!(msg.contains("reserved"), "{msg}");

    let dup = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("a", DataType::Utf8, true),
    ]));
    assert!(plan_error(&FileSource::json(&path, dup)).contains("declared twice"));

    let nested = Arc::new(Schema::new(vec![Field::new(
        "tags",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    )]));
    let msg = plan_error(&FileSource::csv(&path, nested.clone(), false));
    assert!(msg.contains("'tags'") && msg.contains("CSV"), "{msg}");
    // JSON can hold the same column.
    FileSource::json(&path, nested)
        .validate()
        .expect("lists are fine in JSON");

    let msg = plan_error(
        &FileSource::json(&path, json_schema()).with_on_error(OnError::DeadLetter(path.clone())),
    );
    assert!(msg.contains("also an input"), "{msg}");

    assert!(
        plan_error(&FileSource::json(&path, json_schema()).with_max_line_bytes(0))
            .contains("max_line_bytes")
    );
    assert!(
        plan_error(&FileSource::new(vec![], FileFormat::Json, json_schema()))
            .contains("no input files")
    );

    FileSource::json(&path, json_schema())
        .with_event_time(EventTime::new("ts", 0))
        .validate()
        .expect("valid declaration");
    FileSource::csv(&path, csv_schema(), true)
        .with_event_time(EventTime::new("ts", 0))
        .validate()
        .expect("Int64 event time is valid");
}

// ---- bad records ----------------------------------------------------------

/// Line limit of the bad-record fixtures.
const LIMIT: usize = 80;

fn long_json_line() -> String {
    format!("{{\"id\":6,\"name\":\"{}\",\"ts\":6000}}", "x".repeat(100))
}

/// (physical line, raw text, what the reason must mention); `None` = good line.
fn bad_json_lines() -> Vec<(String, Option<&'static str>)> {
    vec![
        (r#"{"id":1,"name":"a","price":1.5,"ts":1000}"#.into(), None),
        (
            r#"{"id":2,"name":"b","price":"#.into(),
            Some("incomplete JSON record"),
        ),
        ("".into(), None),
        (
            r#"{"id":3,"name":"c","price":"cheap","ts":3000}"#.into(),
            Some("column 'price': the string \"cheap\" where a DOUBLE number is expected"),
        ),
        (
            r#"{"name":"d","price":4.0,"ts":4000}"#.into(),
            Some("non-nullable column 'id'"),
        ),
        (
            r#"{"id":5,"name":"e","price":5.0,"ts":null}"#.into(),
            Some("event-time column 'ts'"),
        ),
        (long_json_line(), Some("longer than max_line_bytes 80")),
        (r#"{"id":7,"name":"g","price":7.0,"ts":7000}"#.into(), None),
        (
            r#"{"id":8,"ts":8000}{"id":9,"ts":9000}"#.into(),
            Some("more than one JSON record"),
        ),
        (r#"not json at all"#.into(), Some("invalid JSON record")),
        (r#"{"id":10,"ts":10000}"#.into(), None),
        (r#"{"id":11}"#.into(), Some("event-time column 'ts'")),
        ("[1,2]".into(), Some("invalid JSON record")),
        (r#"{"id":12,"ts":12000}"#.into(), None),
    ]
}

fn csv_header() -> &'static str {
    "id,name,price,ts"
}

fn bad_csv_lines() -> Vec<(String, Option<&'static str>)> {
    vec![
        (csv_header().into(), None),
        ("1,a,1.5,1000".into(), None),
        ("2,b,2.5".into(), Some("number of fields")),
        (
            "3,c,abc,3000".into(),
            Some("column 'price': cannot parse \"abc\" as Float64"),
        ),
        (",d,4.0,4000".into(), Some("non-nullable column 'id'")),
        ("5,e,5.0,".into(), Some("event-time column 'ts'")),
        // (A quote left open swallows the lines after it: see
        // `csv_lines_continuing_a_quoted_field_are_not_rows`.)
        ("6,f,6.0,x6000".into(), Some("column 'ts'")),
        ("".into(), None),
        ("7,g,7.0,7000".into(), None),
        ("8,h,8.0,8000,extra".into(), Some("number of fields")),
        (
            format!("9,{},9.0,9000", "y".repeat(100)),
            Some("line is 111 bytes, longer than max_line_bytes 80"),
        ),
        (
            "x10,j,10.0,10000".into(),
            Some("column 'id': cannot parse \"x10\" as Int64"),
        ),
        ("11,k,11.0,11000".into(), None),
    ]
}

fn join(lines: &[(String, Option<&'static str>)]) -> String {
    lines.iter().map(|(l, _)| format!("{l}\n")).collect()
}

fn bad_line_numbers(lines: &[(String, Option<&'static str>)]) -> Vec<u64> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, (_, bad))| bad.is_some())
        .map(|(i, _)| i as u64 + 1)
        .collect()
}

fn json_source(path: &Path) -> FileSource {
    FileSource::json(path, json_schema())
        .with_event_time(EventTime::new("ts", 0))
        .with_max_line_bytes(LIMIT)
}

fn csv_source(path: &Path) -> FileSource {
    FileSource::csv(path, csv_schema(), true)
        .with_event_time(EventTime::new("ts", 0))
        .with_max_line_bytes(LIMIT)
}

/// Each kind of bad line alone among good lines: `Fail` names its line and why.
fn check_fail_policy(
    fixture: Vec<(String, Option<&'static str>)>,
    keep_first: usize,
    make: fn(&Path) -> FileSource,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (bad_index, (raw, expect)) in fixture.iter().enumerate() {
        let Some(expect) = expect else { continue };
        // The header (if any), the good lines, and this one bad line in its place.
        let lines: Vec<(String, Option<&'static str>)> = fixture
            .iter()
            .enumerate()
            .filter(|(i, (_, bad))| *i < keep_first || bad.is_none() || *i == bad_index)
            .map(|(_, l)| l.clone())
            .collect();
        let line = lines
            .iter()
            .position(|(l, _)| l == raw)
            .expect("bad line kept") as u64
            + 1;
        let path = write(&dir, &format!("bad-{bad_index}"), join(&lines).as_bytes());
        for max_rows in [1, 2, 100] {
            let (p, got_line, reason) = expect_bad_record(drain(&make(&path), 0, 1, max_rows));
            assert_eq!(p, path);
            assert_eq!(
                got_line, line,
                "line {raw:?} (max_rows {max_rows}): {reason}"
            );
            assert!(!reason.is_empty());
            assert!(
                reason.contains(expect),
                "line {raw:?}: reason {reason:?} should mention {expect:?}"
            );
        }
        // The error is repeated, never turned into a silent end of input.
        let mut reader = make(&path).create(0, 1).expect("create");
        let first = loop {
            match reader.poll_batch(100) {
                Ok(SourcePoll::Batch(_) | SourcePoll::Pending { .. }) => continue,
                Ok(SourcePoll::Exhausted) => panic!("exhausted despite a bad record"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(first.contains(&format!(":{line}: ")), "{first}");
        assert_eq!(
            reader
                .poll_batch(100)
                .expect_err("still failed")
                .to_string(),
            first
        );
    }
}

#[test]
fn fail_policy_names_the_line_and_reason_json() {
    check_fail_policy(bad_json_lines(), 0, json_source);
}

#[test]
fn fail_policy_names_the_line_and_reason_csv() {
    check_fail_policy(bad_csv_lines(), 1, csv_source);
}

#[test]
fn fail_policy_stops_at_the_first_bad_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "bad.jsonl", join(&bad_json_lines()).as_bytes());
    let (_, line, _) = expect_bad_record(drain(&json_source(&path), 0, 1, 100));
    assert_eq!(line, 2);
}

fn check_skip_policy(
    fixture: Vec<(String, Option<&'static str>)>,
    make: fn(&Path) -> FileSource,
    good: &[i64],
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "bad", join(&fixture).as_bytes());
    let bad = bad_line_numbers(&fixture).len() as u64;
    for max_rows in [1, 3, 100] {
        let out = drain(&make(&path).with_on_error(OnError::Skip), 0, 1, max_rows)
            .expect("skip never fails");
        assert_eq!(ids(&out.batches), good, "max_rows {max_rows}");
        assert_eq!(
            out.stats,
            SourceStats {
                skipped: bad,
                dead_lettered: 0
            }
        );
    }
}

#[test]
fn skip_policy_counts_bad_lines_and_keeps_good_rows_json() {
    check_skip_policy(bad_json_lines(), json_source, &[1, 7, 10, 12]);
}

#[test]
fn skip_policy_counts_bad_lines_and_keeps_good_rows_csv() {
    check_skip_policy(bad_csv_lines(), csv_source, &[1, 7, 11]);
}

fn read_dead_letters(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("dead-letter file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each dead letter is one JSON object"))
        .collect()
}

fn check_dead_letter_policy(
    fixture: Vec<(String, Option<&'static str>)>,
    make: fn(&Path) -> FileSource,
    good: &[i64],
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(&dir, "input", join(&fixture).as_bytes());
    for max_rows in [1, 3, 100] {
        let dead = dir.path().join(format!("dead-{max_rows}.jsonl"));
        let source = make(&input).with_on_error(OnError::DeadLetter(dead.clone()));
        let out = drain(&source, 0, 1, max_rows).expect("dead-letter never fails");
        assert_eq!(ids(&out.batches), good);
        let expected_lines = bad_line_numbers(&fixture);
        assert_eq!(
            out.stats,
            SourceStats {
                skipped: 0,
                dead_lettered: expected_lines.len() as u64
            }
        );
        let letters = read_dead_letters(&dead);
        let got_lines: Vec<u64> = letters
            .iter()
            .map(|l| l["line"].as_u64().expect("line"))
            .collect();
        assert_eq!(got_lines, expected_lines, "max_rows {max_rows}");
        for letter in &letters {
            let keys: Vec<&str> = letter
                .as_object()
                .expect("object")
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(keys.len(), 4, "{letter}");
            assert_eq!(
                letter["source"].as_str(),
                Some(input.to_string_lossy().as_ref())
            );
            let line = letter["line"].as_u64().expect("line") as usize;
            let (raw, expect) = &fixture[line - 1];
            let expect = expect.expect("only bad lines are dead-lettered");
            let reason = letter["reason"].as_str().expect("reason");
            assert!(
                reason.contains(expect) && !reason.is_empty(),
                "line {line}: {reason:?}"
            );
            let got_raw = letter["raw"].as_str().expect("raw");
            if raw.len() > LIMIT {
                // Oversize lines keep their first LIMIT bytes, and say so.
                assert_eq!(got_raw, &raw[..LIMIT]);
                assert!(reason.contains("truncated"), "{reason}");
            } else {
                assert_eq!(got_raw, raw);
            }
        }
    }
}

#[test]
fn dead_letter_policy_writes_exactly_the_bad_lines_json() {
    check_dead_letter_policy(bad_json_lines(), json_source, &[1, 7, 10, 12]);
}

#[test]
fn dead_letter_policy_writes_exactly_the_bad_lines_csv() {
    check_dead_letter_policy(bad_csv_lines(), csv_source, &[1, 7, 11]);
}

#[test]
fn dead_letters_of_all_instances_share_one_file_and_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(&dir, "a.jsonl", b"{\"id\":1}\n{\"id\":\"one\"}\n");
    let b = write(&dir, "b.jsonl", b"{\"id\":2}\n\n{oops\n");
    let dead = dir.path().join("dead.jsonl");
    std::fs::write(&dead, "{\"earlier\":true}\n").expect("seed");
    let source = FileSource::new(vec![a.clone(), b.clone()], FileFormat::Json, json_schema())
        .with_on_error(OnError::DeadLetter(dead.clone()));
    // Both readers alive at once, as under the runtime.
    let mut r0 = source.create(0, 2).expect("create");
    let mut r1 = source.create(1, 2).expect("create");
    let mut rows = 0;
    for r in [&mut r0, &mut r1] {
        loop {
            match r.poll_batch(10).expect("poll") {
                SourcePoll::Batch(batch) => rows += batch.num_rows(),
                SourcePoll::Pending { .. } => {}
                SourcePoll::Exhausted => break,
            }
        }
        assert_eq!(r.stats().dead_lettered, 1);
    }
    assert_eq!(rows, 2);
    let letters = read_dead_letters(&dead);
    assert_eq!(letters.len(), 3);
    assert_eq!(letters[0]["earlier"], true);
    assert_eq!(
        letters[1]["source"].as_str(),
        Some(a.to_string_lossy().as_ref())
    );
    assert_eq!(letters[1]["line"], 2);
    assert_eq!(letters[1]["raw"], "{\"id\":\"one\"}");
    assert_eq!(
        letters[2]["source"].as_str(),
        Some(b.to_string_lossy().as_ref())
    );
    assert_eq!(letters[2]["line"], 3);
    assert_eq!(letters[2]["raw"], "{oops");
}

#[test]
fn invalid_utf8_is_a_bad_record_not_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = write(
        &dir,
        "u.jsonl",
        b"{\"id\":1,\"name\":\"ok\"}\n{\"id\":2,\"name\":\"\xff\xfe\"}\n{\"id\":3}\n",
    );
    let out = drain(
        &FileSource::json(&json, json_schema()).with_on_error(OnError::Skip),
        0,
        1,
        10,
    )
    .expect("drain");
    assert_eq!(ids(&out.batches), [1, 3]);
    assert_eq!(out.stats.skipped, 1);

    let csv = write(&dir, "u.csv", b"1,ok,1.0,1\n2,\xff\xfe,2.0,2\n3,x,3.0,3\n");
    let source = FileSource::csv(&csv, csv_schema(), false);
    let (_, line, reason) = expect_bad_record(drain(&source, 0, 1, 10));
    assert_eq!(line, 2);
    assert!(reason.contains("UTF-8"), "{reason}");
}

#[test]
fn a_huge_line_does_not_need_to_fit_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 8 MiB without a newline, then a good record; the limit is 1 KiB.
    let mut data = vec![b'x'; 8 << 20];
    data.extend_from_slice(b"\n{\"id\":1}\n");
    let path = write(&dir, "huge.jsonl", &data);
    let dead = dir.path().join("dead.jsonl");
    let source = FileSource::json(&path, json_schema())
        .with_max_line_bytes(1024)
        .with_on_error(OnError::DeadLetter(dead.clone()));
    let out = drain(&source, 0, 1, 10).expect("drain");
    assert_eq!(ids(&out.batches), [1]);
    let letters = read_dead_letters(&dead);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["raw"].as_str().map(str::len), Some(1024));
    let reason = letters[0]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with(&format!(
            "line is {} bytes, longer than max_line_bytes 1024",
            8 << 20
        )),
        "{reason}"
    );
}

// ---- positions ---------------------------------------------------------------

/// Int64 value `name` of a file position's `file` table.
fn position_value(position: &Snapshot, name: &str) -> i64 {
    let table = position.table("file").expect("file table");
    scalar(table, name).expect("value").expect("not null")
}

/// Per file of a position, in reading order: `None` when it is done, else
/// the byte offset and line it was read up to.
fn file_places(position: &Snapshot) -> Vec<Option<(i64, i64)>> {
    let files = position.table("files").expect("files table");
    let column = |name: &str| files.column_by_name(name).expect(name).clone();
    let (done, offsets, lines) = (column("done"), column("byte_offset"), column("line"));
    let (offsets, lines) = (
        offsets.as_primitive::<Int64Type>(),
        lines.as_primitive::<Int64Type>(),
    );
    (0..files.num_rows())
        .map(|k| (!done.as_boolean().value(k)).then(|| (offsets.value(k), lines.value(k))))
        .collect()
}

/// The byte offset and line of the first file of a position not done.
fn reading_at(position: &Snapshot) -> (i64, i64) {
    file_places(position)
        .into_iter()
        .flatten()
        .next()
        .expect("a file not done")
}

/// `lines` JSON records `{"id":first..}` with a blank line after the third.
fn json_records(first: i64, lines: i64) -> String {
    (first..first + lines)
        .map(|id| {
            let blank = if id == first + 2 { "\n" } else { "" };
            format!("{{\"id\":{id},\"ts\":{id}}}\n{blank}")
        })
        .collect()
}

/// Every number of polls from none to past the end.
fn every_cut(polls: usize) -> Vec<usize> {
    (0..=polls + 1).collect()
}

#[test]
fn a_resumed_reader_continues_with_the_same_rows_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Seven records end a batch of three mid-file and then at the end of the
    // file (seen on the next poll); six end exactly at a batch boundary.
    let paths = vec![
        write(&dir, "a.jsonl", json_records(0, 7).as_bytes()),
        write(&dir, "b.jsonl", json_records(100, 6).as_bytes()),
        write(&dir, "c.jsonl", b""),
        write(&dir, "d.jsonl", json_records(300, 4).as_bytes()),
    ];
    let source = FileSource::new(paths.clone(), FileFormat::Json, json_schema())
        .with_event_time(EventTime::new("ts", 0));
    let outcomes = check_resume_everywhere(&source, &[1, 2], 3, &every_cut(9), &[]);
    // Among the cuts: one inside a file, one at a file boundary (the next
    // file not opened yet), and one past the end.
    let places: Vec<Vec<Option<(i64, i64)>>> =
        outcomes.iter().map(|r| file_places(&r.position)).collect();
    let inside_first = |p: &[Option<(i64, i64)>]| matches!(p[0], Some((o, _)) if o > 0);
    let between_first_two = |p: &[Option<(i64, i64)>]| p[0].is_none() && p[1] == Some((0, 0));
    assert!(places.iter().any(|p| inside_first(p)), "{places:?}");
    assert!(places.iter().any(|p| between_first_two(p)), "{places:?}");
    assert!(outcomes.iter().any(|r| r.exhausted_at_cut));
}

#[test]
fn a_resumed_reader_neither_rereads_nor_reskips_the_csv_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = |first: i64| -> String {
        let rows: String = (first..first + 5)
            .map(|id| format!("{id},n{id},{id}.5,{id}\r\n"))
            .collect();
        format!("id,name,price,ts\r\n{rows}")
    };
    let paths = vec![
        write(&dir, "a.csv", csv(0).as_bytes()),
        write(&dir, "b.csv", csv(10).as_bytes()),
    ];
    let source = FileSource::new(
        paths,
        FileFormat::Csv {
            has_header: true,
            delimiter: b',',
        },
        csv_schema(),
    );
    // A header read again would be a bad record (`fail`: an error); one
    // skipped twice would lose the first row after the position.
    for max_rows in [1, 2, 5] {
        check_resume_everywhere(&source, &[1], max_rows, &every_cut(12), &[]);
    }
    let cut = cut_and_resume(&source, 0, 1, 2, 1);
    assert_eq!(reading_at(&cut.position).1, 3);
    assert_eq!(ids(&cut.resumed), [2, 3, 4, 10, 11, 12, 13, 14]);
}

#[test]
fn a_resumed_reader_keeps_counting_bad_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = write(&dir, "bad.jsonl", join(&bad_json_lines()).as_bytes());
    let csv = write(&dir, "bad.csv", join(&bad_csv_lines()).as_bytes());
    for source in [
        json_source(&json).with_on_error(OnError::Skip),
        csv_source(&csv).with_on_error(OnError::Skip),
    ] {
        // The counters of the resumed reader start from the position's, so
        // it ends with the original's totals.
        for max_rows in [2, 100] {
            check_resume_everywhere(&source, &[1], max_rows, &every_cut(14), &[]);
        }
        // One line a poll: some cuts fall between bad records.
        let outcomes = check_resume_everywhere(&source, &[1], 1, &every_cut(14), &[]);
        let total = outcomes[0].original_stats.skipped;
        let at_cuts: Vec<u64> = outcomes
            .iter()
            .map(|r| position_value(&r.position, "skipped") as u64)
            .collect();
        assert!(
            at_cuts.iter().any(|s| (1..total).contains(s)),
            "{at_cuts:?}"
        );
        assert_eq!(at_cuts.last(), Some(&total));
    }
}

#[test]
fn a_resumed_reader_reports_bad_records_at_their_physical_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lines = bad_csv_lines();
    lines.retain(|(_, bad)| bad.is_none());
    lines.push(("12,l,oops,12000".into(), Some("cannot parse")));
    let path = write(&dir, "late-bad.csv", join(&lines).as_bytes());
    let source = csv_source(&path);
    let mut reader = source.create(0, 1).expect("create");
    assert!(matches!(
        reader.poll_batch(2).expect("poll"),
        SourcePoll::Batch(_)
    ));
    let position = reader.position().expect("position").expect("some");
    let mut resumed = source.create(0, 1).expect("create");
    resumed.seek(&position).expect("seek");
    match drain_reader(resumed.as_mut(), 2) {
        Err(Error::BadRecord { path: p, line, .. }) => {
            assert_eq!(p, path);
            assert_eq!(line, lines.len() as u64);
        }
        Err(other) => panic!("expected BadRecord, got {other}"),
        Ok(_) => panic!("expected BadRecord"),
    }
    // The failed reader has no position to offer.
    assert!(resumed.position().is_err());
}

#[test]
fn a_resumed_reader_reads_what_was_appended_after_the_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "growing.jsonl", json_records(0, 5).as_bytes());
    let source = FileSource::json(&path, json_schema());
    let mut original = source.create(0, 1).expect("create");
    assert!(matches!(
        original.poll_batch(2).expect("poll"),
        SourcePoll::Batch(_)
    ));
    let position = original.position().expect("position").expect("some");

    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open for append");
    file.write_all(json_records(5, 3).as_bytes())
        .expect("append");
    drop(file);

    let rest = drain_reader(original.as_mut(), 2).expect("original");
    let mut resumed = source.create(0, 1).expect("create");
    resumed.seek(&position).expect("seek");
    let resumed = drain_reader(resumed.as_mut(), 2).expect("resumed");
    assert_eq!(ids(&resumed), [2, 3, 4, 5, 6, 7]);
    assert_eq!(row_strings(&resumed, &[]), row_strings(&rest, &[]));
}

#[test]
fn a_resumed_reader_appends_its_dead_letters_at_least_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(&dir, "input.jsonl", join(&bad_json_lines()).as_bytes());
    let dead = dir.path().join("dead.jsonl");
    let make = || json_source(&input).with_on_error(OnError::DeadLetter(dead.clone()));
    let bad = bad_line_numbers(&bad_json_lines());

    let original = make();
    let mut reader = original.create(0, 1).expect("create");
    for _ in 0..3 {
        reader.poll_batch(2).expect("poll");
    }
    let position = reader.position().expect("position").expect("some");
    let before_cut = position_value(&position, "dead_lettered") as usize;
    let cut_line = reading_at(&position).1 as u64;
    drain_reader(reader.as_mut(), 2).expect("original");
    assert_eq!(read_dead_letters(&dead).len(), bad.len());

    // A restore in a new process: a new source, whose writer appends.
    let restored = make();
    let mut resumed = restored.create(0, 1).expect("create");
    resumed.seek(&position).expect("seek");
    drain_reader(resumed.as_mut(), 2).expect("resumed");
    assert_eq!(resumed.stats().dead_lettered, bad.len() as u64);
    let lines: Vec<u64> = read_dead_letters(&dead)
        .iter()
        .map(|l| l["line"].as_u64().expect("line"))
        .collect();
    let replayed: Vec<u64> = bad.iter().copied().filter(|l| *l > cut_line).collect();
    assert_eq!(replayed.len(), bad.len() - before_cut);
    assert_eq!(lines, [bad.clone(), replayed].concat());
}

#[test]
fn an_exhausted_position_gives_an_exhausted_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "a.jsonl", json_records(0, 4).as_bytes());
    let source = FileSource::json(&path, json_schema()).with_on_error(OnError::Skip);
    let mut reader = source.create(0, 1).expect("create");
    drain_reader(reader.as_mut(), 10).expect("drain");
    let position = reader.position().expect("position").expect("some");
    assert_eq!(position_value(&position, "exhausted"), 1);
    let mut fresh = source.create(0, 1).expect("create");
    fresh.seek(&position).expect("seek");
    assert!(matches!(
        fresh.poll_batch(10).expect("poll"),
        SourcePoll::Exhausted
    ));
}

#[test]
fn a_file_shorter_than_the_position_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "shrinking.jsonl", json_records(0, 5).as_bytes());
    let source = FileSource::json(&path, json_schema());
    let mut reader = source.create(0, 1).expect("create");
    reader.poll_batch(3).expect("poll");
    let position = reader.position().expect("position").expect("some");
    let offset = reading_at(&position).0;
    std::fs::write(&path, b"{\"id\":0}\n").expect("truncate");

    let mut fresh = source.create(0, 1).expect("create");
    let err = fresh.seek(&position).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("byte {offset}")) && err.contains("9 bytes"),
        "{err}"
    );
}

#[test]
fn foreign_positions_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(&dir, "a.jsonl", json_records(0, 3).as_bytes());
    let b = write(&dir, "b.jsonl", json_records(10, 3).as_bytes());
    let source = FileSource::new(vec![a.clone(), b.clone()], FileFormat::Json, json_schema());
    let seek_error =
        |source: &FileSource, instance: usize, parallelism: usize, position: &Snapshot| {
            let mut reader = source.create(instance, parallelism).expect("create");
            reader.seek(position).unwrap_err().to_string()
        };

    let err = seek_error(&source, 0, 1, &Snapshot::none());
    assert!(err.contains("no table 'file'"), "{err}");

    let nexmark = crate::nexmark::NexmarkSource::bids(Default::default());
    let of_nexmark = nexmark
        .create(0, 1)
        .expect("create")
        .position()
        .expect("position");
    let err = seek_error(&source, 0, 1, &of_nexmark.expect("some"));
    assert!(
        err.contains("no table 'file'") && err.contains("nexmark-bids"),
        "{err}"
    );

    let of_instance_1 = source
        .create(1, 2)
        .expect("create")
        .position()
        .expect("position");
    let err = seek_error(&source, 0, 2, &of_instance_1.expect("some"));
    assert!(err.contains("instance 1 of 2"), "{err}");

    // The same shape of list, another file: refused by path.
    let other = FileSource::new(vec![b, a], FileFormat::Json, json_schema());
    let of_other = other
        .create(0, 1)
        .expect("create")
        .position()
        .expect("position");
    let err = seek_error(&source, 0, 1, &of_other.expect("some"));
    assert!(err.contains("b.jsonl") && err.contains("a.jsonl"), "{err}");
}

// ---- rescaling -------------------------------------------------------------

/// Two readers cut at every pair of progress points (mid-file, between
/// files, done), their positions split for 1 and 3 readers: the new readers
/// together read exactly the rows the old ones had left, each file in its
/// order, and the bad-record counters keep their totals.
#[test]
fn rescaled_readers_read_exactly_what_the_old_ones_had_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_bad = format!("{}not json\n{}", json_records(100, 3), json_records(103, 3));
    let paths = vec![
        write(&dir, "a.jsonl", json_records(0, 7).as_bytes()),
        write(&dir, "b.jsonl", with_bad.as_bytes()),
        write(&dir, "c.jsonl", b""),
        write(&dir, "d.jsonl", json_records(300, 4).as_bytes()),
    ];
    let source = FileSource::new(paths, FileFormat::Json, json_schema())
        .with_event_time(EventTime::new("ts", 0))
        .with_on_error(OnError::Skip);
    let max_rows = 2;
    let mut checked = 0;
    for cut0 in 0..8 {
        for cut1 in 0..8 {
            let mut left = Vec::new();
            let mut old = Vec::new();
            let mut totals = SourceStats::default();
            for (instance, cut) in [cut0, cut1].into_iter().enumerate() {
                let mut reader = source.create(instance, 2).expect("create");
                for _ in 0..cut {
                    reader.poll_batch(max_rows).expect("poll");
                }
                old.push(reader.position().expect("position").expect("some"));
                left.extend(drain_reader(reader.as_mut(), max_rows).expect("rest"));
                totals.skipped += reader.stats().skipped;
            }
            let mut want = row_strings(&left, &[]);
            want.sort();
            for parallelism in [1, 3] {
                let what = format!("cuts {cut0}, {cut1} -> {parallelism} readers");
                let new = source.rescale(&old, parallelism).expect("rescale");
                assert_eq!(new.len(), parallelism, "{what}");
                let mut got = Vec::new();
                let mut skipped = 0;
                for (instance, position) in new.iter().enumerate() {
                    let mut reader = source.create(instance, parallelism).expect("create");
                    reader.seek(position).expect("seek");
                    let rows = drain_reader(reader.as_mut(), max_rows).expect("drain");
                    // Each file's ids rise through it: read in order.
                    let ids = ids(&rows);
                    for file in [0, 100, 300] {
                        let of_file: Vec<i64> = ids
                            .iter()
                            .copied()
                            .filter(|i| i / 100 == file / 100)
                            .collect();
                        assert!(of_file.is_sorted(), "{what}: {of_file:?}");
                    }
                    got.extend(rows);
                    skipped += reader.stats().skipped;
                }
                let mut got = row_strings(&got, &[]);
                got.sort();
                assert_eq!(got, want, "{what}");
                assert_eq!(skipped, totals.skipped, "{what}: skipped");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 128);
}

/// A rescaled position of one instance seeks only there, and positions of
/// another source or of a missing instance are refused, naming why.
#[test]
fn rescales_refuse_positions_that_do_not_cover_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(&dir, "a.jsonl", json_records(0, 3).as_bytes());
    let b = write(&dir, "b.jsonl", json_records(10, 3).as_bytes());
    let source = FileSource::new(vec![a.clone(), b.clone()], FileFormat::Json, json_schema());
    let positions: Vec<Snapshot> = (0..2)
        .map(|i| {
            let reader = source.create(i, 2).expect("create");
            reader.position().expect("position").expect("some")
        })
        .collect();
    let new = source.rescale(&positions, 1).expect("rescale");
    let err = source
        .create(0, 2)
        .expect("create")
        .seek(&new[0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("instance 0 of 1"), "{err}");
    let err = source.rescale(&positions[..1], 1).unwrap_err().to_string();
    assert!(
        err.contains("file:a.jsonl+1") && err.contains("old instance 0"),
        "{err}"
    );
    let other = FileSource::new(vec![b, a], FileFormat::Json, json_schema());
    let err = other.rescale(&positions, 3).unwrap_err().to_string();
    assert!(err.contains("b.jsonl") && err.contains("a.jsonl"), "{err}");
}

/// Arrays and objects nested up to [`super::MAX_JSON_DEPTH`] levels decode as
/// any value does (here a wrong type for `name`: a bad record naming the
/// column); deeper is a bad record saying so, found before any decoder
/// recurses, at depths that used to overflow the stack. Brackets inside
/// strings do not count.
#[test]
fn deeply_nested_json_is_a_bad_record_never_a_crash() {
    use super::MAX_JSON_DEPTH;
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let lines = [
        r#"{"id":1,"ts":1000}"#.to_string(),
        format!(
            r#"{{"id":2,"name":{},"ts":2000}}"#,
            nest(MAX_JSON_DEPTH - 1)
        ),
        format!(r#"{{"id":3,"name":{},"ts":3000}}"#, nest(MAX_JSON_DEPTH)),
        nest(100_000),
        format!(r#"{{"id":4,"name":{},"ts":4000}}"#, nest(100_000)),
        r#"{"id":5,"ts":5000}"#.to_string(),
        format!(r#"{{"id":6,"name":"{}","ts":6000}}"#, "[{".repeat(1000)),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "deep.jsonl", lines.join("\n").as_bytes());
    let source = || {
        FileSource::json(&path, json_schema())
            .with_event_time(EventTime::new("ts", 0))
            .with_max_line_bytes(1 << 20)
    };
    for max_rows in [1, 100] {
        let out = drain(&source().with_on_error(OnError::Skip), 0, 1, max_rows).expect("skip");
        assert_eq!(ids(&out.batches), [1, 5, 6]);
        assert_eq!(out.stats.skipped, 4);
    }
    // Each bad line alone among the good ones: `fail` names it and why.
    for (bad, too_deep) in [(1, false), (2, true), (3, false), (4, true)] {
        let kept: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| [0, 5, 6, bad].contains(i))
            .map(|(_, l)| l.as_str())
            .collect();
        let path = write(
            &dir,
            &format!("deep-{bad}.jsonl"),
            kept.join("\n").as_bytes(),
        );
        let source = FileSource::json(&path, json_schema()).with_max_line_bytes(1 << 20);
        let (_, line, reason) = expect_bad_record(drain(&source, 0, 1, 100));
        assert_eq!(line, 2, "{reason}");
        let says_depth = reason.contains(&format!("nested deeper than {MAX_JSON_DEPTH} levels"));
        assert_eq!(says_depth, too_deep, "line {}: {reason}", bad + 1);
        match bad {
            1 => assert!(reason.contains("'name'"), "{reason}"),
            // A bare array is no record, however deep.
            3 => assert!(reason.contains("one JSON object"), "{reason}"),
            _ => {}
        }
    }
}

/// A timestamp outside the supported range (1677-09-21 to 2262-04-11), and
/// a BIGINT event time of milliseconds outside it, are bad records naming
/// the column: never error text in a field, never a window past the end of
/// time.
#[test]
fn unsupported_timestamps_are_bad_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = [
        r#"{"id":1,"ts":1700000000000}"#,
        r#"{"id":2,"ts":9000000000000000000}"#,
        r#"{"id":3,"ts":-9000000000000000000}"#,
        r#"{"id":4,"ts":9223372036854}"#,
        r#"{"id":5,"ts":9223372036855}"#,
    ];
    let path = write(&dir, "ts.jsonl", lines.join("\n").as_bytes());
    let out = skip_json(&path);
    assert_eq!(ids(&out.batches), [1, 4]);
    assert_eq!(out.stats.skipped, 3);
    let path = write(
        &dir,
        "one.jsonl",
        [lines[0], lines[1]].join("\n").as_bytes(),
    );
    let (_, line, reason) =
        expect_bad_record(drain(&FileSource::json(&path, json_schema()), 0, 1, 100));
    assert_eq!(line, 2);
    assert!(
        reason.contains("column 'ts'") && reason.contains("outside the supported timestamps"),
        "{reason}"
    );

    // A BIGINT event time (milliseconds) is held to the same range.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("ts", DataType::Int64, true),
    ]));
    let path = write(&dir, "ms.jsonl", lines.join("\n").as_bytes());
    let source = || FileSource::json(&path, schema.clone()).with_on_error(OnError::Skip);
    // (Beyond the wall clock too: the range is checked without max_future.)
    let with_time = source()
        .with_event_time(EventTime::new("ts", 0))
        .with_max_future(None);
    assert_eq!(
        ids(&drain(&with_time, 0, 1, 100).expect("skip").batches),
        [1, 4]
    );
    // Not an event time: any BIGINT is a BIGINT.
    assert_eq!(
        ids(&drain(&source(), 0, 1, 100).expect("skip").batches),
        [1, 2, 3, 4, 5]
    );
}

/// Event times more than `max_future` ahead of the wall clock are bad
/// records; old times never are; `None` accepts any.
#[test]
fn event_times_far_ahead_of_the_wall_clock_are_bad_records() {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    const HOUR: i64 = 3_600_000;
    let lines = [
        format!(r#"{{"id":1,"ts":{}}}"#, now_ms),
        format!(r#"{{"id":2,"ts":{}}}"#, now_ms + 30 * 24 * HOUR),
        format!(r#"{{"id":3,"ts":{}}}"#, now_ms + HOUR),
        r#"{"id":4,"ts":978307200000}"#.to_string(),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "future.jsonl", lines.join("\n").as_bytes());
    let source = || FileSource::json(&path, json_schema()).with_event_time(EventTime::new("ts", 0));
    let (_, line, reason) = expect_bad_record(drain(&source(), 0, 1, 100));
    assert_eq!(line, 2);
    assert!(
        reason.contains("event-time column 'ts'")
            && reason.contains("ahead of the wall clock")
            && reason.contains("max_future (1.0 d)"),
        "{reason}"
    );
    let skipped = drain(&source().with_on_error(OnError::Skip), 0, 1, 100).expect("skip");
    assert_eq!(ids(&skipped.batches), [1, 3, 4]);
    let tight = source()
        .with_max_future(Some(std::time::Duration::from_secs(60)))
        .with_on_error(OnError::Skip);
    assert_eq!(
        ids(&drain(&tight, 0, 1, 100).expect("skip").batches),
        [1, 4]
    );
    let any = source().with_max_future(None);
    assert_eq!(
        ids(&drain(&any, 0, 1, 100).expect("no bound").batches),
        [1, 2, 3, 4]
    );
}

/// A named pipe or a device as `path` is refused by what it is, at once:
/// opening a pipe that has no writer used to block the run forever.
#[test]
fn special_files_are_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pipe");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let cases = [
        (fifo, "a named pipe (FIFO)"),
        (PathBuf::from("/dev/null"), "a device"),
        (dir.path().to_path_buf(), "a directory"),
    ];
    for (path, what) in cases {
        // A watchdog, not a timing assertion: a regression would otherwise
        // hang the suite instead of failing it.
        let (tx, rx) = std::sync::mpsc::channel();
        let source = FileSource::json(&path, json_schema());
        std::thread::spawn(move || {
            let _ = tx.send(source.create(0, 1).map(|_| ()).unwrap_err().to_string());
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("opening {} blocked", path.display()));
        assert!(
            err.contains(what) && err.contains("not a regular file"),
            "{}: {err}",
            path.display()
        );
    }
}

/// Values arrow-json would bend (fractions and out-of-range numbers for
/// integers, strings for numbers, NaN and overflow for floats, a key given
/// twice) are bad records naming the column; a number for a timestamp is
/// milliseconds since the epoch whatever the column's precision.
#[test]
fn bent_json_values_are_bad_records_and_timestamp_numbers_are_ms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = [
        r#"{"id":1,"price":1.5,"ts":1000}"#,
        r#"{"id":-9223372036854775809,"ts":1000}"#,
        r#"{"id":1.5,"ts":1000}"#,
        r#"{"id":"42","ts":1000}"#,
        r#"{"id":5,"price":"NaN","ts":1000}"#,
        r#"{"id":6,"price":1e400,"ts":1000}"#,
        r#"{"id":7,"id":8,"ts":1000}"#,
        r#"{"id":9,"ts":"1970-01-01T00:00:02"}"#,
    ];
    let path = write(&dir, "bent.jsonl", lines.join("\n").as_bytes());
    let out = skip_json(&path);
    assert_eq!(ids(&out.batches), [1, 9]);
    assert_eq!(out.stats.skipped, 6);

    for unit in [
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ] {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(unit, None), true),
        ]));
        let path = write(
            &dir,
            "ms.jsonl",
            b"{\"id\":1,\"ts\":1700000000000}\n{\"id\":2,\"ts\":\"2023-11-14T22:13:20\"}\n",
        );
        let out = drain(&FileSource::json(&path, schema), 0, 1, 100).expect("good");
        let text = table(&out.batches);
        assert_eq!(
            text.matches("2023-11-14T22:13:20").count(),
            2,
            "{unit:?}: {text}"
        );
    }
}

/// Messages name the real cause and no more: under `fail` an oversize line
/// is not said to be truncated (only a dead letter carries raw text).
#[test]
fn an_oversize_line_under_fail_is_not_said_to_be_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "long.jsonl",
        format!("{}\n", long_json_line()).as_bytes(),
    );
    let (_, line, reason) = expect_bad_record(drain(&json_source(&path), 0, 1, 10));
    assert_eq!(line, 1);
    assert_eq!(
        reason,
        format!(
            "line is {} bytes, longer than max_line_bytes 80",
            long_json_line().len()
        )
    );
}

/// A quoted CSV field that spans lines is one bad record's lines, every one
/// refused: the continuation lines are never rows of their own. A quote
/// inside an unquoted field opens nothing; `""` inside a quoted one is a
/// quote.
#[test]
fn csv_lines_continuing_a_quoted_field_are_not_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "id,name,price,ts\n\
                1,plain,1.0,1000\n\
                2,\"spans\n\
                3,two lines\",2.0,2000\n\
                4,\"say \"\"hi\"\"\",4.0,4000\n\
                5,\"three\n\
                6,bogus,6.0,6000\n\
                7,lines\",7.0,7000\n\
                8,a\"b,8.0,8000\n\
                9,last,9.0,9000\n";
    let path = write(&dir, "quoted.csv", text.as_bytes());
    for max_rows in [1, 100] {
        let out = drain(
            &csv_source(&path).with_on_error(OnError::Skip),
            0,
            1,
            max_rows,
        )
        .expect("skip");
        assert_eq!(ids(&out.batches), [1, 4, 8, 9], "max_rows {max_rows}");
        assert_eq!(out.stats.skipped, 5);
    }
    let dead = dir.path().join("dead.jsonl");
    let source = csv_source(&path).with_on_error(OnError::DeadLetter(dead.clone()));
    drain(&source, 0, 1, 100).expect("dead letters");
    let letters = read_dead_letters(&dead);
    let lines: Vec<i64> = letters
        .iter()
        .map(|l| l["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 6, 7, 8]);
    assert!(
        letters[1]["reason"]
            .as_str()
            .unwrap()
            .contains("continues a quoted field"),
        "{letters:?}"
    );
}

/// A date alone for a timestamp column is refused: arrow reads it as
/// midnight, so a line cut short right after its date (the torn tail of a
/// file being written) would pass as a record.
#[test]
fn a_date_without_a_time_is_not_read_as_midnight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = json_schema();
    let csv = write(
        &dir,
        "dates.csv",
        b"id,name,price,ts\n1,a,1.0,2024-01-01T00:00:00\n2,b,2.0,2024-01-01\n\
          3,\"c, d\",3.0,\"2024-01-02\"\n4,2024-01-01,4.0,2024-01-01T00:00:00Z\n\
          5,O\"Brien,5.0,2024-01-01T00:00:00\n6,\"say \"\"a,b\"\"\",6.0,2024-01-01\n",
    );
    let json = write(
        &dir,
        "dates.jsonl",
        b"{\"id\":1,\"ts\":\"2024-01-01T00:00:00\"}\n{\"id\":2,\"ts\":\"2024-01-01\"}\n\
          {\"id\":4,\"name\":\"2024-01-01\",\"ts\":\"2024-01-01 00:00:00\"}\n\
          {\"id\":5,\"ts\":\"2024-01-01T00:00:00\"}\n{\"id\":6,\"ts\":\" 2024-01-01\"}\n",
    );
    for (source, refused) in [
        (FileSource::csv(&csv, schema.clone(), true), 3),
        (FileSource::json(&json, schema.clone()), 2),
    ] {
        let dead = dir.path().join("dead.jsonl");
        let _ = std::fs::remove_file(&dead);
        let out = drain(
            &source.with_on_error(OnError::DeadLetter(dead.clone())),
            0,
            1,
            100,
        )
        .expect("dead letters");
        assert_eq!(ids(&out.batches), [1, 4, 5]);
        let letters = read_dead_letters(&dead);
        assert_eq!(letters.len(), refused);
        for letter in letters {
            let reason = letter["reason"].as_str().unwrap();
            assert!(
                reason.contains("column 'ts'") && reason.contains("a date without a time of day"),
                "{reason}"
            );
        }
    }
}

/// Every timestamp form docs/sql.md lists, in JSON and CSV, read as the
/// instant it names (a form without an offset is UTC); in a millisecond
/// column, finer digits are cut. A number is milliseconds in JSON; in CSV a
/// timestamp column takes text only (a BIGINT column holds milliseconds).
#[test]
fn every_documented_timestamp_form_reads_as_its_instant() {
    // 2024-03-01T12:34:56.789Z
    const AT: i64 = 1_709_296_496_789;
    let forms: [(&str, i64); 9] = [
        ("2024-03-01T12:34:56.789", AT),
        ("2024-03-01 12:34:56.789", AT),
        ("2024-03-01T12:34:56", AT - 789),
        ("2024-03-01T12:34:56.789Z", AT),
        ("2024-03-01T12:34:56.789+00:00", AT),
        ("2024-03-01T14:34:56.789+02:00", AT),
        ("2024-03-01T07:34:56.789-05:00", AT),
        ("2024-03-01T12:34:56.789123456Z", AT),
        ("1709296496789", AT),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = json_schema();
    let mut json = String::new();
    let mut csv = String::from("id,name,price,ts\n");
    for (i, (form, _)) in forms.iter().enumerate() {
        if form.contains('-') {
            json.push_str(&format!("{{\"id\":{i},\"ts\":\"{form}\"}}\n"));
            csv.push_str(&format!("{i},,,{form}\n"));
        } else {
            json.push_str(&format!("{{\"id\":{i},\"ts\":{form}}}\n"));
        }
    }
    let json = write(&dir, "forms.jsonl", json.as_bytes());
    let csv = write(&dir, "forms.csv", csv.as_bytes());
    for (source, numbers) in [
        (FileSource::json(&json, schema.clone()), true),
        (FileSource::csv(&csv, schema.clone(), true), false),
    ] {
        let out = drain(&source, 0, 1, 100).expect("every form reads");
        let read: Vec<i64> = out
            .batches
            .iter()
            .flat_map(|b| {
                let ts = b.column_by_name("ts").expect("ts");
                let ts = ts.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
                ts.values().to_vec()
            })
            .collect();
        let expected: Vec<i64> = (forms.iter())
            .filter(|(form, _)| numbers || form.contains('-'))
            .map(|(_, ms)| *ms)
            .collect();
        assert_eq!(read, expected);
    }
    let number = write(&dir, "number.csv", b"id,name,price,ts\n1,,,1709296496789\n");
    let (_, line, reason) =
        expect_bad_record(drain(&FileSource::csv(&number, schema, true), 0, 1, 100));
    assert_eq!(line, 2);
    assert!(reason.contains("column 'ts'"), "{reason}");
}
