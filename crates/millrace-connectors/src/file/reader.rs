//! One instance of a file source: streams its files chunk by chunk and applies
//! the error policy to bad records.
//!
//! Memory is bounded by the chunk (at most `max_rows` records and about
//! [`CHUNK_BYTES`] bytes, plus one line of at most `max_line_bytes`), never by
//! the file. Every record read ends up in exactly one place: a returned row, the
//! skipped count, the dead-letter file, or the error that stops the pipeline.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use millrace_core::batch::attach_entered_now;
use millrace_core::time::now_ns;
use millrace_core::{Error, Result, SourcePoll, SourceReader, SourceStats};

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

pub(crate) struct FileReader {
    config: Arc<Config>,
    files: VecDeque<PathBuf>,
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
    exhausted: bool,
}

impl FileReader {
    pub(crate) fn new(config: Arc<Config>, files: Vec<PathBuf>) -> Result<Self> {
        let decoder = ChunkDecoder::new(
            config.format.clone(),
            config.schema.clone(),
            config.event_time_column.as_deref(),
        )?;
        Ok(FileReader {
            config,
            files: files.into(),
            current: None,
            decoder,
            chunk: Vec::new(),
            records: Vec::new(),
            record_lines: Vec::new(),
            oversize: Vec::new(),
            stats: SourceStats::default(),
            failed: None,
            exhausted: false,
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
        if self.failed.is_some() {
            return Err(self.failure_error());
        }
        if self.exhausted {
            return Ok(SourcePoll::Exhausted);
        }
        let max_rows = max_rows.max(1);
        for _ in 0..CHUNKS_PER_POLL {
            if self.current.is_none() {
                let Some(path) = self.files.pop_front() else {
                    self.exhausted = true;
                    self.flush_dead_letter()?;
                    return Ok(SourcePoll::Exhausted);
                };
                let file = open(&path)?;
                self.current = Some(OpenFile {
                    path,
                    lines: LineReader::new(BufReader::with_capacity(READ_BUFFER, file)),
                    line_no: 0,
                    eof: false,
                });
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

    fn stats(&self) -> SourceStats {
        self.stats
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        // Best effort: a reader dropped early (pipeline stopped) still leaves
        // a complete dead-letter file. Errors here have nowhere to go.
        let _ = self.flush_dead_letter();
    }
}
