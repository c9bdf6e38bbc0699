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
//! yet. The position (`SourceReader::position`, format in `position.rs`)
//! says, per file of the reader, whether it is done or how far it was read:
//! the files before the one being read are done, that one is read up to the
//! place just described, and the ones after are where a seek put them (not
//! started, unless a rescale gave this reader files another reader had
//! begun).
//!
//! A seek opens no file: the reader opens each file not done at its place
//! when it gets to it and goes on with the line after it, numbering lines
//! from there (so a CSV header, line 1, is neither read as data nor skipped
//! twice); what was appended to the file meanwhile is read too, as the
//! uninterrupted reader would have. A file now shorter than its place is
//! an error naming both, at the seek.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use millrace_core::batch::attach_entered_now;
use millrace_core::time::now_ns;
use millrace_core::{Error, Result, Snapshot, SourcePoll, SourceReader, SourceStats};

use super::FileFormat;
use super::decode::ChunkDecoder;
use super::lines::LineReader;
use super::position::{FilePosition, FileProgress, Progress};
use crate::dead_letter::{DeadLetter, DeadRecord, Place};

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
    /// Event times further ahead of the wall clock than this are bad records.
    pub max_future: Option<Duration>,
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
    instance: usize,
    parallelism: usize,
    /// This instance's files, in reading order.
    files: Vec<PathBuf>,
    /// Where reading each file starts: not started, unless a seek said
    /// otherwise. A done file is not opened.
    starts: Vec<Progress>,
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
        )?
        .with_max_future(config.max_future);
        Ok(FileReader {
            config,
            instance,
            parallelism,
            starts: vec![Progress::NOT_STARTED; files.len()],
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

    /// This instance's files as the source lists them: (index, path).
    fn indexed_files(&self) -> Vec<(usize, &Path)> {
        self.files
            .iter()
            .enumerate()
            .map(|(k, p)| (self.instance + k * self.parallelism, p.as_path()))
            .collect()
    }

    /// Where this reader is, file by file (see the module doc).
    fn file_position(&self) -> FilePosition {
        let reading = self.current.as_ref().map(|f| (self.next_file - 1, f));
        let files = self
            .indexed_files()
            .into_iter()
            .enumerate()
            .map(|(k, (index, path))| {
                let progress = match reading {
                    Some((r, file)) if r == k => Progress::At {
                        offset: file.lines.offset(),
                        line: file.line_no,
                    },
                    _ if k < self.next_file => Progress::Done,
                    _ => self.starts[k],
                };
                FileProgress {
                    index,
                    path: path.to_string_lossy().into_owned(),
                    progress,
                }
            })
            .collect();
        FilePosition {
            instance: self.instance,
            parallelism: self.parallelism,
            files,
            exhausted: self.exhausted,
            stats: self.stats,
        }
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
        // Only a dead letter carries raw text, cut to the limit.
        let truncated = match self.config.policy {
            Policy::DeadLetter(_) => " (raw text truncated to the limit)",
            _ => "",
        };
        let oversize_reasons: Vec<String> = self
            .oversize
            .iter()
            .map(|o| {
                format!(
                    "line is {} bytes, longer than max_line_bytes {limit}{truncated}",
                    o.len
                )
            })
            .collect();
        let source = path.to_string_lossy();
        let mut all: Vec<DeadRecord<'_>> = bad
            .iter()
            .map(|(i, reason)| {
                let (start, end) = self.records[*i];
                DeadRecord {
                    source: &source,
                    place: Place::Line(self.record_lines[*i]),
                    reason,
                    raw: &self.chunk[start..end],
                }
            })
            .chain(
                self.oversize
                    .iter()
                    .zip(&oversize_reasons)
                    .map(|(o, reason)| DeadRecord {
                        source: &source,
                        place: Place::Line(o.line),
                        reason,
                        raw: &o.prefix,
                    }),
            )
            .collect();
        if all.is_empty() {
            return Ok(());
        }
        all.sort_by_key(|r| r.place);
        match &self.config.policy {
            Policy::Fail => {
                let first = &all[0];
                // A file's records are all placed by line.
                let line = match first.place {
                    Place::Line(line) => line,
                    Place::Message { offset, .. } => offset as u64,
                };
                let failure = (path.to_path_buf(), line, first.reason.to_string());
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

/// Opens `path` for streaming. Only a regular file is accepted: a
/// directory, a named pipe, a device or a socket is refused by what it is
/// (a file source resumes from byte offsets, which a stream does not have).
/// The path is opened once and without blocking, so a pipe without a
/// writer is refused at once instead of hanging the run.
pub(crate) fn open(path: &Path) -> Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let kind = file.metadata().map_err(|e| Error::io(path, e))?.file_type();
    let what = if kind.is_file() {
        return Ok(file);
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "is {what}, not a regular file: the file source reads regular files \
                 (write the stream to a file first)"
            ),
        ),
    ))
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
        let position = self
            .file_position()
            .to_snapshot()
            .map_err(|e| Error::Other(format!("file source '{}': {e}", self.config.name)))?;
        Ok(Some(position))
    }

    fn seek(&mut self, position: &Snapshot) -> Result<()> {
        let position = FilePosition::from_snapshot(position).map_err(|e| self.refuse_seek(e))?;
        position
            .check_owner(self.instance, self.parallelism, &self.indexed_files())
            .map_err(|e| self.refuse_seek(e))?;
        let starts: Vec<Progress> = position.files.iter().map(|f| f.progress).collect();
        for (k, start) in starts.iter().enumerate() {
            // Only reachability is checked here; the file is opened again
            // when the reader gets to it.
            if let Progress::At { offset, line } = *start
                && offset > 0
            {
                self.open_at(k, offset, line)?;
            }
        }
        self.starts = starts;
        self.current = None;
        self.next_file = 0;
        self.exhausted = position.exhausted;
        self.stats = position.stats;
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
                while self.starts.get(self.next_file) == Some(&Progress::Done) {
                    self.next_file += 1;
                }
                let Some(&Progress::At { offset, line }) = self.starts.get(self.next_file) else {
                    self.exhausted = true;
                    self.flush_dead_letter()?;
                    return Ok(SourcePoll::Exhausted);
                };
                self.current = Some(self.open_at(self.next_file, offset, line)?);
                self.decoder.start_file();
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
