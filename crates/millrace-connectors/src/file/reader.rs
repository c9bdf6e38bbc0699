//! One instance of a file source: streams its files chunk by chunk and applies
//! the error policy to bad records.
//!
//! Memory is bounded by the chunk (at most `max_rows` records and about
//! [`CHUNK_BYTES`] bytes, plus one line of at most `max_line_bytes`), never by
//! the file. Every record read ends up in exactly one place: a returned row, the
//! skipped count, the dead-letter file, or the error that stops the pipeline.
//!
//! # Position
//!
//! Every line a poll reads is accounted for before the poll returns (a row of
//! its batch, a skipped or dead-lettered record, a blank line or the CSV
//! header), so between polls the reader stands exactly after the last line it
//! took from the file; bytes the read buffer holds beyond it belong to no line
//! yet. The position is that place (`SourceReader::position`):
//!
//! * table `file`, one row of `Int64`s: `file_index` (in this instance's list;
//!   the number of files once all are read), `byte_offset` just past the last
//!   line taken from that file and `line`, its physical line number (both 0
//!   before the file is opened), `exhausted` (0 or 1), the bad-record counters
//!   `skipped` and `dead_lettered`, and `files`, `instance`, `parallelism`,
//!   which say whose position it is;
//! * table `file_path`, column `path` (`Utf8`): the file at `file_index`,
//!   null past the last, so a position is never applied to another file.
//!
//! A seek opens that file at the offset and goes on with the line after it,
//! numbering lines from `line` (so a CSV header, line 1, is neither read as
//! data nor skipped twice); what was appended to the file meanwhile is read
//! too, as the uninterrupted reader would have. A file now shorter than the
//! offset is an error naming both.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use millrace_core::batch::attach_entered_now;
use millrace_core::state::{scalar, scalars};
use millrace_core::time::now_ns;
use millrace_core::{Error, Result, Snapshot, SourcePoll, SourceReader, SourceStats};

use super::FileFormat;
use super::dead_letter::{DeadLetter, DeadRecord};
use super::decode::ChunkDecoder;
use super::lines::LineReader;

/// A chunk stops growing at about this many bytes even if `max_rows` is not reached.
const CHUNK_BYTES: usize = 4 << 20;
/// Lines (including blank ones) one chunk may scan, so a poll stays short.
const CHUNK_SCAN_LINES: usize = 1 << 16;
/// Chunks one poll may read without finding a good row before it returns an
/// empty batch, so a long run of bad or blank lines does not monopolise a worker.
const CHUNKS_PER_POLL: usize = 64;
/// Read buffer of each open file.
const READ_BUFFER: usize = 256 << 10;

/// What happens to bad records, resolved for the readers.
pub(crate) enum Policy {
    Fail,
    Skip,
    DeadLetter(Arc<DeadLetter>),
}

/// Settings shared by every instance of one source.
pub(crate) struct Config {
    /// The source's name, for errors that are not about one file.
    pub name: String,
    pub format: FileFormat,
    pub schema: arrow::datatypes::SchemaRef,
    pub event_time_column: Option<String>,
    pub policy: Policy,
    pub max_line_bytes: usize,
}

struct OpenFile {
    path: PathBuf,
    lines: LineReader<BufReader<File>>,
    /// Physical lines read so far (1-based number of the last one).
    line_no: u64,
    eof: bool,
}

/// A line longer than the limit; only its first `max_line_bytes` are kept.
struct Oversize {
    line: u64,
    len: usize,
    prefix: Vec<u8>,
}

/// Names of a position's tables and columns (see the module doc).
const POSITION_TABLE: &str = "file";
const PATH_TABLE: &str = "file_path";
const PATH_COLUMN: &str = "path";

pub(crate) struct FileReader {
    config: Arc<Config>,
    instance: usize,
    parallelism: usize,
    /// This instance's files, in reading order.
    files: Vec<PathBuf>,
    /// Index in `files` of the next file to open.
    next_file: usize,
    current: Option<OpenFile>,
    decoder: ChunkDecoder,
    /// Records of the current chunk, each followed by `\n`.
    chunk: Vec<u8>,
    /// Byte range of each record in `chunk` (end is the index of its `\n`).
    records: Vec<(usize, usize)>,
    /// Physical line number of each record.
    record_lines: Vec<u64>,
    oversize: Vec<Oversize>,
    stats: SourceStats,
    /// Set under the `Fail` policy: every later poll repeats the error.
    failed: Option<(PathBuf, u64, String)>,
    /// A poll failed part way through a chunk, so the lines it took are in
    /// no batch: the reader no longer knows a position to resume from.
    position_lost: bool,
    exhausted: bool,
}

impl FileReader {
    pub(crate) fn new(
        config: Arc<Config>,
        instance: usize,
        parallelism: usize,
        files: Vec<PathBuf>,
    ) -> Result<Self> {
        let decoder = ChunkDecoder::new(
            config.format.clone(),
            config.schema.clone(),
            config.event_time_column.as_deref(),
        )?;
        Ok(FileReader {
            config,
            instance,
            parallelism,
            files,
            next_file: 0,
            current: None,
            decoder,
            chunk: Vec::new(),
            records: Vec::new(),
            record_lines: Vec::new(),
            oversize: Vec::new(),
            stats: SourceStats::default(),
            failed: None,
            position_lost: false,
            exhausted: false,
        })
    }

    /// An error about moving this reader to a checkpointed position.
    fn refuse_seek(&self, why: impl std::fmt::Display) -> Error {
        Error::Other(format!(
            "file source '{}' instance {} of {}: cannot seek to the position: {why}",
            self.config.name, self.instance, self.parallelism
        ))
    }

    /// The path column of a position: the file at `index`, null past the last.
    fn path_table(&self, index: usize) -> Result<RecordBatch> {
        let path = self.files.get(index).map(|p| p.to_string_lossy());
        let schema = Schema::new(vec![Field::new(PATH_COLUMN, DataType::Utf8, true)]);
        Ok(RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(vec![path.as_deref()]))],
        )?)
    }

    /// The path a position's `file_path` table holds (`None` past the last file).
    fn recorded_path(&self, position: &Snapshot) -> Result<Option<String>> {
        let table = position
            .table(PATH_TABLE)
            .map_err(|e| self.refuse_seek(e))?;
        let column = table
            .column_by_name(PATH_COLUMN)
            .and_then(|c| c.as_string_opt::<i32>())
            .filter(|c| c.len() == 1)
            .ok_or_else(|| {
                self.refuse_seek(format!(
                    "table '{PATH_TABLE}' has no one-row Utf8 column '{PATH_COLUMN}'"
                ))
            })?;
        Ok(column.is_valid(0).then(|| column.value(0).to_string()))
    }

    /// Opens file `index` for reading from byte `offset`, whose preceding
    /// line is number `line`.
    fn open_at(&self, index: usize, offset: u64, line: u64) -> Result<OpenFile> {
        let path = self.files[index].clone();
        let mut file = open(&path)?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < offset {
            return Err(self.refuse_seek(format!(
                "{} was read up to byte {offset} (line {line}) but is now {len} bytes long; \
                 it was truncated or replaced since the checkpoint",
                path.display()
            )));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(&path, e))?;
        Ok(OpenFile {
            lines: LineReader::new(BufReader::with_capacity(READ_BUFFER, file), offset),
            path,
            line_no: line,
            eof: false,
        })
    }

    /// Reads the next chunk of the current file into the buffers.
    fn read_chunk(&mut self, max_rows: usize) -> Result<()> {
        self.chunk.clear();
        self.records.clear();
        self.record_lines.clear();
        self.oversize.clear();
        let Some(file) = self.current.as_mut() else {
            return Ok(());
        };
        let limit = self.config.max_line_bytes;
        let skip_header = matches!(
            self.config.format,
            FileFormat::Csv {
                has_header: true,
                ..
            }
        );
        let mut count = 0;
        let mut scanned = 0;
        while count < max_rows && self.chunk.len() < CHUNK_BYTES && scanned < CHUNK_SCAN_LINES {
            let start = self.chunk.len();
            let info = match file.lines.read_line(&mut self.chunk, limit) {
                Ok(Some(info)) => info,
                Ok(None) => {
                    file.eof = true;
                    break;
                }
                Err(e) => return Err(Error::io(&file.path, e)),
            };
            file.line_no += 1;
            scanned += 1;
            if skip_header && file.line_no == 1 {
                self.chunk.truncate(start);
                continue;
            }
            if info.truncated {
                let prefix = self.chunk.split_off(start);
                self.oversize.push(Oversize {
                    line: file.line_no,
                    len: info.len,
                    prefix,
                });
                count += 1;
                continue;
            }
            if self.chunk[start..].iter().all(u8::is_ascii_whitespace) {
                // Blank lines separate nothing and are not records.
                self.chunk.truncate(start);
                continue;
            }
            self.chunk.push(b'\n');
            self.records.push((start, self.chunk.len() - 1));
            self.record_lines.push(file.line_no);
            count += 1;
        }
        Ok(())
    }

    /// Applies the error policy to the chunk's bad records, in line order.
    fn handle_bad(&mut self, path: &Path, bad: &[(usize, String)]) -> Result<()> {
        let limit = self.config.max_line_bytes;
        let oversize_reasons: Vec<String> = self
            .oversize
            .iter()
            .map(|o| {
                format!(
                    "line is {} bytes, limit {limit} (raw text truncated to the limit)",
                    o.len
                )
            })
            .collect();
        let mut all: Vec<DeadRecord<'_>> = bad
            .iter()
            .map(|(i, reason)| {
                let (start, end) = self.records[*i];
                DeadRecord {
                    source: path,
                    line: self.record_lines[*i],
                    reason,
                    raw: &self.chunk[start..end],
                }
            })
            .chain(
                self.oversize
                    .iter()
                    .zip(&oversize_reasons)
                    .map(|(o, reason)| DeadRecord {
                        source: path,
                        line: o.line,
                        reason,
                        raw: &o.prefix,
                    }),
            )
            .collect();
        if all.is_empty() {
            return Ok(());
        }
        all.sort_by_key(|r| r.line);
        match &self.config.policy {
            Policy::Fail => {
                let first = &all[0];
                let failure = (path.to_path_buf(), first.line, first.reason.to_string());
                self.failed = Some(failure);
                Err(self.failure_error())
            }
            Policy::Skip => {
                self.stats.skipped += all.len() as u64;
                Ok(())
            }
            Policy::DeadLetter(out) => {
                out.write_all(&all)?;
                self.stats.dead_lettered += all.len() as u64;
                Ok(())
            }
        }
    }

    fn failure_error(&self) -> Error {
        match &self.failed {
            Some((path, line, reason)) => Error::BadRecord {
                path: path.clone(),
                line: *line,
                reason: reason.clone(),
            },
            None => Error::Other("file source: no failure recorded".to_string()),
        }
    }

    fn flush_dead_letter(&self) -> Result<()> {
        match &self.config.policy {
            Policy::DeadLetter(out) => out.flush(),
            _ => Ok(()),
        }
    }
}

/// Opens `path` for streaming; a directory is refused here rather than at the first read.
pub(crate) fn open(path: &Path) -> Result<File> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, not a file",
            ),
        ));
    }
    Ok(file)
}

impl SourceReader for FileReader {
    fn poll_batch(&mut self, max_rows: usize) -> Result<SourcePoll> {
        let poll = self.poll_chunks(max_rows);
        if poll.is_err() {
            self.position_lost = true;
        }
        poll
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    fn position(&self) -> Result<Option<Snapshot>> {
        if self.failed.is_some() {
            return Err(self.failure_error());
        }
        if self.position_lost {
            return Err(Error::Other(format!(
                "file source '{}': a read failed part way, so the position is unknown",
                self.config.name
            )));
        }
        let (file_index, byte_offset, line) = match &self.current {
            Some(file) => (self.next_file - 1, file.lines.offset(), file.line_no),
            None => (self.next_file, 0, 0),
        };
        let int = |name: &str, v: u64| {
            i64::try_from(v).map(Some).map_err(|_| {
                Error::Other(format!(
                    "file source '{}': {name} {v} does not fit a checkpoint's Int64",
                    self.config.name
                ))
            })
        };
        let progress = scalars(&[
            ("file_index", int("file_index", file_index as u64)?),
            ("byte_offset", int("byte_offset", byte_offset)?),
            ("line", int("line", line)?),
            ("exhausted", Some(i64::from(self.exhausted))),
            ("skipped", int("skipped", self.stats.skipped)?),
            (
                "dead_lettered",
                int("dead_lettered", self.stats.dead_lettered)?,
            ),
            ("files", int("files", self.files.len() as u64)?),
            ("instance", int("instance", self.instance as u64)?),
            ("parallelism", int("parallelism", self.parallelism as u64)?),
        ]);
        Ok(Some(
            Snapshot::none()
                .with(POSITION_TABLE, progress)
                .with(PATH_TABLE, self.path_table(file_index)?),
        ))
    }

    fn seek(&mut self, position: &Snapshot) -> Result<()> {
        let progress = position
            .table(POSITION_TABLE)
            .map_err(|e| self.refuse_seek(e))?;
        let value = |name: &str| -> Result<u64> {
            match scalar(progress, name) {
                Ok(Some(v)) => u64::try_from(v)
                    .map_err(|_| self.refuse_seek(format!("'{name}' is negative ({v})"))),
                Ok(None) => Err(self.refuse_seek(format!("'{name}' is null"))),
                Err(e) => Err(self.refuse_seek(e)),
            }
        };
        let recorded = (value("instance")?, value("parallelism")?, value("files")?);
        let ours = (
            self.instance as u64,
            self.parallelism as u64,
            self.files.len() as u64,
        );
        if recorded != ours {
            return Err(self.refuse_seek(format!(
                "it is the position of instance {} of {} reading {} files, \
                 this instance reads {} files",
                recorded.0, recorded.1, recorded.2, ours.2
            )));
        }
        let file_index = value("file_index")?;
        let byte_offset = value("byte_offset")?;
        let line = value("line")?;
        let exhausted = value("exhausted")? != 0;
        let stats = SourceStats {
            skipped: value("skipped")?,
            dead_lettered: value("dead_lettered")?,
        };
        let index = usize::try_from(file_index)
            .ok()
            .filter(|i| *i <= self.files.len())
            .ok_or_else(|| {
                self.refuse_seek(format!(
                    "file_index {file_index} is beyond this instance's {} files",
                    self.files.len()
                ))
            })?;
        let recorded_path = self.recorded_path(position)?;
        let our_path = self.files.get(index).map(|p| p.to_string_lossy());
        if recorded_path.as_deref() != our_path.as_deref() {
            let show = |p: Option<&str>| p.map_or("no file".to_string(), str::to_string);
            return Err(self.refuse_seek(format!(
                "file {index} of the position is {}, this instance's is {}",
                show(recorded_path.as_deref()),
                show(our_path.as_deref())
            )));
        }
        self.current = if exhausted || index == self.files.len() {
            if byte_offset != 0 {
                return Err(
                    self.refuse_seek(format!("byte_offset {byte_offset} past the last file"))
                );
            }
            None
        } else {
            Some(self.open_at(index, byte_offset, line)?)
        };
        self.next_file = match (&self.current, exhausted) {
            (Some(_), _) => index + 1,
            (None, true) => self.files.len(),
            (None, false) => index,
        };
        self.exhausted = exhausted;
        self.stats = stats;
        Ok(())
    }
}

impl FileReader {
    /// The body of [`SourceReader::poll_batch`].
    fn poll_chunks(&mut self, max_rows: usize) -> Result<SourcePoll> {
        if self.failed.is_some() {
            return Err(self.failure_error());
        }
        if self.exhausted {
            return Ok(SourcePoll::Exhausted);
        }
        let max_rows = max_rows.max(1);
        for _ in 0..CHUNKS_PER_POLL {
            if self.current.is_none() {
                if self.next_file == self.files.len() {
                    self.exhausted = true;
                    self.flush_dead_letter()?;
                    return Ok(SourcePoll::Exhausted);
                }
                self.current = Some(self.open_at(self.next_file, 0, 0)?);
                self.next_file += 1;
            }
            self.read_chunk(max_rows)?;
            let decoded = self.decoder.decode(&self.chunk, &self.records)?;
            let (path, eof) = match &self.current {
                Some(f) => (f.path.clone(), f.eof),
                None => continue,
            };
            self.handle_bad(&path, &decoded.bad)?;
            if eof {
                self.current = None;
            }
            if let Some(batch) = decoded.batch {
                return Ok(SourcePoll::Batch(attach_entered_now(&batch, now_ns())?));
            }
        }
        // Work was done but no row came of it: an empty batch says "poll me
        // again now" without parking the worker.
        let empty = RecordBatch::new_empty(self.config.schema.clone());
        Ok(SourcePoll::Batch(attach_entered_now(&empty, now_ns())?))
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        // Best effort: a reader dropped early (pipeline stopped) still leaves
        // a complete dead-letter file. Errors here have nowhere to go.
        let _ = self.flush_dead_letter();
    }
}
