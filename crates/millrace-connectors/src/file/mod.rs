//! File sources: newline-delimited JSON and CSV with a declared schema and an
//! error policy for bad records.
//!
//! What a [`FileSource`] guarantees:
//!
//! * **Streaming, bounded memory.** Files are read through a buffer, a chunk of
//!   lines at a time; no line is held beyond `max_line_bytes`.
//! * **One record per physical line.** Blank lines are ignored. Line numbers in
//!   errors and dead letters are 1-based physical lines of the file (a CSV
//!   header is line 1). A CSV quoted field therefore may **not** contain a
//!   newline; such a record is reported as bad ("unterminated quoted field").
//! * **Nothing is lost silently.** A record is bad if it does not parse, has a
//!   value of the wrong type for a declared column, lacks a non-nullable column,
//!   has a missing or null event time, or is longer than `max_line_bytes`. Bad
//!   records stop the source ([`OnError::Fail`]), are counted
//!   ([`OnError::Skip`]) or are written to a dead-letter file
//!   ([`OnError::DeadLetter`]): good rows + bad records = records in the file.
//! * **Exact split.** Instance `i` of `p` reads the files whose index is
//!   `i mod p`, in order, so together the instances read each file once.
//! * **Resumable.** A reader's position says, for each of its files, that it
//!   is done, or the byte offset just past the last line returned from it
//!   and that line's number; and the bad-record counters (`position.rs`,
//!   `reader.rs`). A fresh reader of the same instance moved there returns
//!   exactly the rows that followed, with the same line numbers in errors
//!   and dead letters. Dead letters are at least once: those written after
//!   the position are written again when a restore replays their lines.
//! * **Rescalable.** The positions of every reader of a run split for
//!   another parallelism file by file ([`SourceFactory::rescale`]): each new
//!   reader continues each of its files where the old reader that had it
//!   left it.
//!
//! Decoding uses arrow-json (fields not in the schema are ignored) and arrow-csv
//! (columns by position; the header line, if declared, is skipped, not checked;
//! an empty CSV field is null, also for text columns).
//!
//! ```no_run
//! use std::sync::Arc;
//! use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
//! use millrace_connectors::file::{FileSource, OnError};
//! use millrace_core::EventTime;
//!
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
//!     Field::new("price", DataType::Float64, true),
//! ]));
//! let source = FileSource::json("trades.jsonl", schema)
//!     .with_event_time(EventTime::new("ts", 2_000))
//!     .with_on_error(OnError::DeadLetter("bad-trades.jsonl".into()));
//! source.validate().expect("valid source");
//! ```

mod decode;
pub(crate) use decode::ChunkDecoder;
pub use decode::MAX_JSON_DEPTH;
mod lines;
mod position;
mod shape;
pub use shape::TIMESTAMP_NUMBER_UNIT;
mod reader;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use millrace_core::batch::ENTERED_COLUMN;
use millrace_core::time::is_event_time_type;
use millrace_core::{Error, EventTime, Result, Snapshot, SourceFactory, SourceReader};

use crate::dead_letter::DeadLetter;
use position::{FilePosition, files_of};
use reader::Policy;
use reader::{Config, FileReader};

/// How the lines of a file are encoded.
#[derive(Debug, Clone)]
pub enum FileFormat {
    /// One JSON object per line; fields not in the schema are ignored.
    Json,
    /// Delimited values, one record per line, columns matched by position.
    Csv { has_header: bool, delimiter: u8 },
}

/// What a source does with a bad record.
#[derive(Debug, Clone)]
pub enum OnError {
    /// Stop with [`Error::BadRecord`] naming the file, line and reason.
    Fail,
    /// Drop the record and count it (`SourceReader::stats().skipped`).
    Skip,
    /// Append `{"source","line","reason","raw"}` as one JSON line to this file
    /// and count it (`stats().dead_lettered`). The raw text of an oversize line
    /// is truncated to `max_line_bytes` (and the reason says so).
    DeadLetter(PathBuf),
}

/// Default limit on the length of one line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Default bound on how far an event time may be ahead of the wall clock.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(24 * 3600);

/// A bounded source reading newline-delimited JSON or CSV files.
pub struct FileSource {
    paths: Vec<PathBuf>,
    format: FileFormat,
    schema: SchemaRef,
    event_time: Option<EventTime>,
    on_error: OnError,
    max_line_bytes: usize,
    max_future: Option<Duration>,
    /// Shared by every instance, so their dead letters go through one writer.
    dead_letter: Option<Arc<DeadLetter>>,
}

impl FileSource {
    pub fn new(paths: Vec<PathBuf>, format: FileFormat, schema: SchemaRef) -> Self {
        FileSource {
            paths,
            format,
            schema,
            event_time: None,
            on_error: OnError::Fail,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_future: Some(DEFAULT_MAX_FUTURE),
            dead_letter: None,
        }
    }

    /// One newline-delimited JSON file.
    pub fn json(path: impl Into<PathBuf>, schema: SchemaRef) -> Self {
        Self::new(vec![path.into()], FileFormat::Json, schema)
    }

    /// One comma-separated file.
    pub fn csv(path: impl Into<PathBuf>, schema: SchemaRef, has_header: bool) -> Self {
        Self::new(
            vec![path.into()],
            FileFormat::Csv {
                has_header,
                delimiter: b',',
            },
            schema,
        )
    }

    /// Declares the event-time column. It is checked (exists, `Timestamp` or
    /// `Int64`) by [`FileSource::validate`] and by `create`; rows where it is
    /// missing or null are bad records.
    pub fn with_event_time(mut self, et: EventTime) -> Self {
        self.event_time = Some(et);
        self
    }

    /// What to do with bad records (default [`OnError::Fail`]).
    pub fn with_on_error(mut self, policy: OnError) -> Self {
        self.dead_letter = match &policy {
            OnError::DeadLetter(path) => Some(Arc::new(DeadLetter::new(path.clone()))),
            _ => None,
        };
        self.on_error = policy;
        self
    }

    /// Longest accepted line in bytes (default 1 MiB); longer lines are bad records.
    pub fn with_max_line_bytes(mut self, n: usize) -> Self {
        self.max_line_bytes = n;
        self
    }

    /// How far ahead of the wall clock an event time may be (default
    /// [`DEFAULT_MAX_FUTURE`]); rows further ahead are bad records, so one
    /// absurd time cannot push the watermark past every row that follows.
    /// `None` accepts any (synthetic time). Old times are never refused.
    pub fn with_max_future(mut self, bound: Option<Duration>) -> Self {
        self.max_future = bound;
        self
    }

    /// The input files, in the order they are assigned to instances.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Checks the declaration; every message names the source and what to fix.
    pub fn validate(&self) -> Result<()> {
        let name = self.name();
        let fail = |msg: String| Err(Error::plan(format!("file source '{name}': {msg}")));
        if self.paths.is_empty() {
            return fail("no input files given".into());
        }
        if self.schema.fields().is_empty() {
            return fail("the schema has no columns".into());
        }
        let mut seen = HashSet::new();
        for field in self.schema.fields() {
            if field.name() == ENTERED_COLUMN {
                return fail(format!(
                    "column name '{ENTERED_COLUMN}' is reserved by the engine; rename the column"
                ));
            }
            if !seen.insert(field.name().as_str()) {
                return fail(format!("column '{}' is declared twice", field.name()));
            }
        }
        if self.max_line_bytes == 0 {
            return fail("max_line_bytes must be at least 1".into());
        }
        if let Some(et) = &self.event_time {
            let Ok(field) = self.schema.field_with_name(&et.column) else {
                let columns: Vec<&str> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                return fail(format!(
                    "event-time column '{}' is not in the schema (columns: {})",
                    et.column,
                    columns.join(", ")
                ));
            };
            if !is_event_time_type(field.data_type()) {
                return fail(format!(
                    "event-time column '{}' has type {}; declare it as a Timestamp or as Int64 milliseconds",
                    et.column,
                    field.data_type()
                ));
            }
        }
        if let FileFormat::Csv { delimiter, .. } = &self.format {
            if matches!(delimiter, b'\n' | b'\r' | b'"') {
                return fail(format!(
                    "CSV delimiter {:?} is not allowed (it is a line terminator or the quote)",
                    char::from(*delimiter)
                ));
            }
            for field in self.schema.fields() {
                if !csv_supports(field.data_type()) {
                    return fail(format!(
                        "column '{}' has type {}, which CSV cannot hold; use JSON for nested data",
                        field.name(),
                        field.data_type()
                    ));
                }
            }
        }
        // Building a decoder is the authoritative check that Arrow can decode
        // every declared type in this format.
        if let Err(e) = ChunkDecoder::new(
            self.format.clone(),
            self.schema.clone(),
            self.event_time.as_ref().map(|et| et.column.as_str()),
        ) {
            return fail(format!("the schema cannot be decoded: {e}"));
        }
        if let OnError::DeadLetter(out) = &self.on_error
            && let Some(input) = self.paths.iter().find(|p| same_file(p, out))
        {
            return fail(format!(
                "the dead-letter file {} is also an input; choose another path",
                input.display()
            ));
        }
        Ok(())
    }

    fn config(&self) -> Config {
        Config {
            name: self.name(),
            format: self.format.clone(),
            schema: self.schema.clone(),
            event_time_column: self.event_time.as_ref().map(|et| et.column.clone()),
            max_future: self.max_future,
            policy: match (&self.on_error, &self.dead_letter) {
                (OnError::Fail, _) => Policy::Fail,
                (OnError::Skip, _) => Policy::Skip,
                (OnError::DeadLetter(_), Some(out)) => Policy::DeadLetter(out.clone()),
                // `with_on_error` always sets the writer; rebuild it if not.
                (OnError::DeadLetter(path), None) => {
                    Policy::DeadLetter(Arc::new(DeadLetter::new(path.clone())))
                }
            },
            max_line_bytes: self.max_line_bytes,
        }
    }
}

/// True if `a` and `b` name the same file (by path, or by identity if both exist).
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Types arrow-csv can parse (its reader rejects the rest at decode time).
pub(crate) fn csv_supports(dt: &DataType) -> bool {
    use DataType::*;
    match dt {
        Null
        | Boolean
        | Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | UInt64
        | Float16
        | Float32
        | Float64
        | Date32
        | Date64
        | Utf8
        | Utf8View
        | Timestamp(_, _)
        | Decimal32(_, _)
        | Decimal64(_, _)
        | Decimal128(_, _)
        | Decimal256(_, _) => true,
        Time32(unit) => matches!(unit, TimeUnit::Second | TimeUnit::Millisecond),
        Time64(unit) => matches!(unit, TimeUnit::Microsecond | TimeUnit::Nanosecond),
        Dictionary(key, value) => key.is_dictionary_key_type() && value.as_ref() == &Utf8,
        _ => false,
    }
}

impl SourceFactory for FileSource {
    fn name(&self) -> String {
        let first = self
            .paths
            .first()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.display().to_string())
            })
            .unwrap_or_default();
        match self.paths.len() {
            0 | 1 => format!("file:{first}"),
            n => format!("file:{first}+{}", n - 1),
        }
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn event_time(&self) -> Option<EventTime> {
        self.event_time.clone()
    }

    fn create(&self, instance: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        self.validate()?;
        if parallelism == 0 || instance >= parallelism {
            return Err(Error::plan(format!(
                "file source '{}': instance {instance} of parallelism {parallelism} does not exist",
                self.name()
            )));
        }
        let mine: Vec<PathBuf> = files_of(&self.paths, instance, parallelism)
            .into_iter()
            .map(|(_, p)| p.to_path_buf())
            .collect();
        // Fail before the pipeline starts if an input is missing or unreadable;
        // the reader opens each file again when it gets to it.
        for path in &mine {
            reader::open(path)?;
        }
        Ok(Box::new(FileReader::new(
            Arc::new(self.config()),
            instance,
            parallelism,
            mine,
        )?))
    }

    /// Each file's progress goes to the new reader of the file (see
    /// `position.rs`); the bad-record counters, added up, to instance 0.
    fn rescale(&self, old: &[Snapshot], parallelism: usize) -> Result<Vec<Snapshot>> {
        let fail = |e: String| {
            Error::Other(format!(
                "file source '{}' cannot be restored at parallelism {parallelism}: {e}",
                self.name()
            ))
        };
        if old.iter().all(Snapshot::is_empty) {
            return Ok(vec![Snapshot::none(); parallelism]);
        }
        let old = old
            .iter()
            .enumerate()
            .map(|(i, s)| {
                FilePosition::from_snapshot(s)
                    .map_err(|e| fail(format!("the position of old instance {i}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        position::rescale(&self.paths, &old, parallelism)
            .map_err(fail)?
            .iter()
            .map(|p| p.to_snapshot().map_err(fail))
            .collect()
    }
}
