//! What the fuzz targets (`fuzz/`, cargo fuzz) run on each input, here so
//! that the regular tests run the same code on the committed seeds
//! (`fuzz/seeds/<target>/`, `tests/integration/fuzz_seeds.rs`).
//!
//! Each function must return normally for every input: a panic, a hang or
//! an abort is the bug a fuzzer reports. Errors are fine; they are what
//! bad input should produce.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use millrace_connectors::file::{FileSource, OnError};
use millrace_core::{Error, EventTime, SourceFactory, SourcePoll};
use millrace_runtime::checkpoint::CheckpointStore;
use millrace_sql::SqlPipeline;

/// A directory of this thread for the inputs written to files (tests run
/// the targets on several threads at once).
fn scratch() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static DIR: PathBuf = {
            let base = Path::new("/dev/shm");
            let base = if base.is_dir() { base.to_path_buf() } else { std::env::temp_dir() };
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("millrace-fuzz-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("scratch directory");
            dir
        };
    }
    DIR.with(Clone::clone)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("n", DataType::Int32, true),
    ]))
}

/// `data` as a file read by a file source that skips bad records: every
/// line ends as a row or a skip, and reading ends.
fn file_lines(data: &[u8], name: &str, source: impl Fn(&Path) -> FileSource) {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("write the input");
    let source = source(&path)
        .with_event_time(EventTime::new("ts", 1000))
        .with_on_error(OnError::Skip)
        .with_max_line_bytes(4096);
    let mut reader = source.create(0, 1).expect("a regular file opens");
    let lines = data.split(|b| *b == b'\n').count() as u64;
    let mut rows = 0u64;
    // Each poll reads at least one line: more polls than lines is a hang.
    for _ in 0..=2 * lines + 10 {
        match reader.poll_batch(64) {
            Ok(SourcePoll::Batch(b)) => rows += b.num_rows() as u64,
            Ok(SourcePoll::Pending { .. }) => {}
            Ok(SourcePoll::Exhausted) => {
                let skipped = reader.stats().skipped;
                assert!(
                    rows + skipped <= lines,
                    "{rows} rows and {skipped} skipped from {lines} lines"
                );
                return;
            }
            Err(Error::BadRecord { .. }) => panic!("a bad record under skip"),
            Err(e) => panic!("reading failed: {e}"),
        }
    }
    panic!("the reader did not end after {lines} lines");
}

/// The JSON-lines decoder on arbitrary bytes.
pub fn json_lines(data: &[u8]) {
    file_lines(data, "in.jsonl", |p| FileSource::json(p, schema()));
}

/// The CSV decoder on arbitrary bytes (with a header line).
pub fn csv_lines(data: &[u8]) {
    file_lines(data, "in.csv", |p| FileSource::csv(p, schema(), true));
}

/// The SQL front end: parse and plan (never run) arbitrary text.
pub fn sql_plan(data: &[u8]) {
    let sql = String::from_utf8_lossy(data);
    if let Ok(pipeline) = SqlPipeline::plan(&sql) {
        let _ = pipeline.explain();
    }
}

/// The checkpoint reader on an arbitrary manifest and state file: the
/// input is the manifest's length (4 bytes, little-endian), the manifest,
/// then the state file. Reading may fail, naming the file; it must not
/// panic.
pub fn checkpoint_read(data: &[u8]) {
    let (manifest, state) = match data.split_first_chunk::<4>() {
        Some((len, rest)) => {
            let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
            rest.split_at(len)
        }
        None => (data, &[][..]),
    };
    let dir = scratch().join("checkpoints");
    let chk = dir.join(format!("chk-{:020}", 1));
    std::fs::create_dir_all(&chk).expect("checkpoint directory");
    std::fs::write(chk.join("MANIFEST.json"), manifest).expect("write the manifest");
    std::fs::write(chk.join("state.arrows"), state).expect("write the state");
    let store = CheckpointStore::open(&dir).expect("open the store");
    if let Err(e) = store.read(1) {
        let text = e.to_string();
        assert!(text.contains("chk-"), "an error that names no file: {text}");
    }
}
