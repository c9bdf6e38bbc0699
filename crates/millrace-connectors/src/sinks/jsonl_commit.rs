//! The exactly-once JSON-lines sink: each epoch's rows are staged in part
//! files and appended to the output only once their checkpoint is durable,
//! so the output only ever holds committed epochs, whole and in order. The
//! two-phase contract it implements is `millrace_core::sink`'s.
//!
//! # Files
//!
//! For output `dir/out.jsonl` the parts are staged in `dir/.out.jsonl.staging/`:
//!
//! * `<i>.open`: what writer instance `i` has written since its last
//!   barrier. A writer cannot name the epoch it is writing before the
//!   barrier arrives (barrier ids need not be consecutive, and a writer
//!   restored from checkpoint `N` is not told `N`), so it writes under this
//!   neutral name and `pre_commit(e)` renames it: a rename moves no data and
//!   needs no fsync, which is all the worker may spend at a barrier. The
//!   file is created by the epoch's first row, so an epoch without rows
//!   stages nothing.
//! * `<i>-<e>.part`: instance `i`'s rows of epoch `e`, complete, not visible.
//!
//! # Records
//!
//! A token (one writer, one epoch) is table `part`, one row: `file` (Utf8, a
//! name in the staging directory), `bytes`, `instance`, `epoch` (Int64). An
//! epoch without rows gives the empty snapshot.
//!
//! A prepared commit, stored in the checkpoint, is table `commit`
//! (`scalars`: `base`, the output's committed length when prepared) and
//! table `parts` (`file` Utf8, `bytes` Int64), one row per part in append
//! order: by epoch, then instance. Sorting makes an epoch carried from a
//! checkpoint that timed out land whole before the next one, however the
//! runtime interleaves the writers' tokens.
//!
//! # Durability
//!
//! `prepare` fsyncs every part it names and the staging directory, so the
//! parts a checkpoint names survive a crash; `base` is durable because the
//! last commit or recovery fsynced the output. Commit runs: truncate the
//! output to `base`, append the parts, fsync the output, delete the parts.
//!
//! # Replaying a commit
//!
//! Parts are deleted only after the output's fsync, so one missing part
//! proves the append durable. What a replay finds after a crash of an
//! earlier attempt, and does (`commit_step`):
//!
//! | the earlier attempt stopped                      | replay finds                             | replay does                |
//! |--------------------------------------------------|------------------------------------------|----------------------------|
//! | after the truncate, mid-append, before the fsync | every part; `base` bytes and a torn tail | truncate to `base`, append |
//! | after the fsync, before deleting                 | every part; the whole append             | the same: same bytes again |
//! | mid-delete                                       | some parts; `base + parts` bytes or more | delete the rest            |
//! | after deleting                                   | no part; `base + parts` bytes or more    | nothing                    |
//!
//! With every part present the append is always redone, never trusted by
//! length: a crash can leave a tail of the right length that is zeros. An
//! output shorter than `base`, or a part missing while the output lacks its
//! bytes, cannot come from any attempt of this commit: something else
//! changed the files, and the commit fails naming them rather than guess.
//!
//! # Recovery
//!
//! `recover(Some((e, prepared)))` replays commit `e`, cuts the output to the
//! length `e` promised (`base + parts`: later appends belong to epochs the
//! restored run writes again), fsyncs it, and deletes every file left in
//! the staging directory (parts of later epochs, `.open` files).
//! `recover(None)` starts from an empty output and staging directory.

mod records;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use millrace_core::{Epoch, Error, Result, SinkCommitter, SinkWriter, Snapshot};

use super::jsonl::encode_json_lines;
use records::{PartToAppend, PreparedCommit, StagedPart};

/// The commit side of [`super::JsonLinesSink`]'s exactly-once form (see the
/// module doc). Keeps no state but its paths: everything a commit needs is
/// in the files and the prepared snapshot.
#[derive(Clone, Debug)]
pub struct JsonLinesCommitter {
    output: PathBuf,
    staging: PathBuf,
}

impl JsonLinesCommitter {
    /// Commits to `output`, staging beside it in `.<name>.staging/`.
    pub fn new(output: impl Into<PathBuf>) -> Self {
        let output = output.into();
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let staging = output.with_file_name(format!(".{name}.staging"));
        JsonLinesCommitter { output, staging }
    }

    /// The file readers see: committed epochs only.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// Where writers stage parts until they are committed.
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn part_path(&self, file: &str) -> PathBuf {
        self.staging.join(file)
    }

    /// Creates the staging directory if it is missing, and makes its entry
    /// durable: the parts inside are worth nothing if the directory vanishes.
    fn ensure_staging_dir(&self) -> Result<()> {
        match fs::create_dir(&self.staging) {
            Ok(()) => sync_dir(parent_dir(&self.staging)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io(&self.staging, e)),
        }
    }

    /// The output's length; 0 when it does not exist yet.
    fn output_len(&self) -> Result<u64> {
        match fs::metadata(&self.output) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io(&self.output, e)),
        }
    }

    /// Opens the output for writing, creating it if needed; a created file's
    /// directory entry is made durable, or a crash could lose the file.
    fn open_output(&self) -> Result<File> {
        match OpenOptions::new().write(true).open(&self.output) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.output)
                    .map_err(|e| Error::io(&self.output, e))?;
                sync_dir(parent_dir(&self.output))?;
                Ok(file)
            }
            Err(e) => Err(Error::io(&self.output, e)),
        }
    }

    fn is_staged(&self, file: &str) -> Result<bool> {
        let path = self.part_path(file);
        match fs::metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Truncates the output to `prepared.base`, appends every part in
    /// order, and fsyncs it.
    fn append(&self, epoch: Epoch, prepared: &PreparedCommit) -> Result<()> {
        let mut out = self.open_output()?;
        let out_err = |e| Error::io(&self.output, e);
        out.set_len(prepared.base).map_err(out_err)?;
        out.seek(SeekFrom::Start(prepared.base)).map_err(out_err)?;
        for part in &prepared.parts {
            let path = self.part_path(&part.file);
            let source = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let copied = io::copy(&mut io::Read::take(source, part.bytes), &mut out)
                .map_err(|e| out_err(e).context(&format!("appending {}", path.display())))?;
            if copied != part.bytes {
                return Err(Error::Other(format!(
                    "{}: staged part is {copied} bytes, checkpoint {epoch} recorded {}",
                    path.display(),
                    part.bytes
                )));
            }
        }
        out.sync_all().map_err(out_err)
    }

    /// Deletes the named parts; one already gone is not an error (a replay
    /// finishes an interrupted delete).
    fn delete_parts<'a>(&self, files: impl IntoIterator<Item = &'a str>) -> Result<()> {
        for file in files {
            let path = self.part_path(file);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Ok(())
    }

    fn commit_prepared(&self, epoch: Epoch, prepared: &PreparedCommit) -> Result<()> {
        let output_len = self.output_len()?;
        let staged = prepared
            .parts
            .iter()
            .map(|p| self.is_staged(&p.file))
            .collect::<Result<Vec<bool>>>()?;
        match commit_step(prepared, output_len, &staged) {
            Ok(CommitStep::Append) => {
                self.append(epoch, prepared)?;
                self.delete_parts(prepared.parts.iter().map(|p| p.file.as_str()))
            }
            Ok(CommitStep::DeleteStaged) => self.delete_parts(
                prepared
                    .parts
                    .iter()
                    .zip(&staged)
                    .filter(|(_, staged)| **staged)
                    .map(|(p, _)| p.file.as_str()),
            ),
            Err(Inconsistent::OutputShorterThanBase) => Err(Error::Other(format!(
                "{}: is {output_len} bytes, shorter than the {} bytes committed before \
                 checkpoint {epoch}; the file was changed outside this sink",
                self.output.display(),
                prepared.base
            ))),
            Err(Inconsistent::PartLost { index }) => Err(Error::Other(format!(
                "{}: checkpoint {epoch} appends staged part {}, which is gone, but the \
                 output is {output_len} bytes, short of the {} it has with the part \
                 appended; the files were changed outside this sink",
                self.output.display(),
                self.part_path(&prepared.parts[index].file).display(),
                prepared.end()
            ))),
        }
    }

    /// Cuts the output to `len` bytes (creating it empty if missing) and
    /// makes that durable.
    fn truncate_output(&self, len: u64) -> Result<()> {
        let out = self.open_output()?;
        let out_err = |e| Error::io(&self.output, e);
        if out.metadata().map_err(out_err)?.len() > len {
            out.set_len(len).map_err(out_err)?;
        }
        out.sync_all().map_err(out_err)
    }

    /// Deletes every file in the staging directory.
    fn discard_staged(&self) -> Result<()> {
        let entries = match fs::read_dir(&self.staging) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&self.staging, e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&self.staging, e))?.path();
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

impl SinkCommitter for JsonLinesCommitter {
    fn create(&self, instance: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        self.ensure_staging_dir()?;
        Ok(Box::new(StagingWriter {
            staging: self.staging.clone(),
            instance,
            open: None,
            encoded: Vec::new(),
        }))
    }

    fn prepare(&self, epoch: Epoch, tokens: &[Snapshot]) -> Result<Snapshot> {
        let mut parts = Vec::with_capacity(tokens.len());
        for token in tokens {
            if let Some(part) = StagedPart::from_token(token)? {
                if part.epoch > epoch {
                    return Err(Error::Other(format!(
                        "{}: token of epoch {} given to the prepare of epoch {epoch}",
                        self.part_path(&part.file).display(),
                        part.epoch
                    )));
                }
                parts.push(part);
            }
        }
        parts.sort_by_key(|p| (p.epoch, p.instance));
        for part in &parts {
            let path = self.part_path(&part.file);
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            if len != part.bytes {
                return Err(Error::Other(format!(
                    "{}: staged part is {len} bytes, its writer wrote {}",
                    path.display(),
                    part.bytes
                )));
            }
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        if !parts.is_empty() {
            // The parts' names (created, renamed) live in the directory.
            sync_dir(&self.staging)?;
        }
        let prepared = PreparedCommit {
            base: self.output_len()?,
            parts: parts
                .into_iter()
                .map(|p| PartToAppend {
                    file: p.file,
                    bytes: p.bytes,
                })
                .collect(),
        };
        prepared.to_snapshot()
    }

    fn commit(&self, epoch: Epoch, prepared: &Snapshot) -> Result<()> {
        let prepared = PreparedCommit::from_snapshot(prepared)
            .map_err(|e| e.context(&format!("prepared commit of checkpoint {epoch}")))?;
        self.commit_prepared(epoch, &prepared)
    }

    fn recover(&self, restored: Option<(Epoch, &Snapshot)>) -> Result<()> {
        let promised_len = match restored {
            Some((epoch, prepared)) => {
                let prepared = PreparedCommit::from_snapshot(prepared).map_err(|e| {
                    e.context(&format!("prepared commit of restored checkpoint {epoch}"))
                })?;
                self.commit_prepared(epoch, &prepared)?;
                prepared.end()
            }
            None => 0,
        };
        self.truncate_output(promised_len)?;
        self.ensure_staging_dir()?;
        self.discard_staged()
    }
}

/// What a commit, or its replay, must do, decided from what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommitStep {
    /// Every part is still staged, so the append may be missing or torn:
    /// truncate the output to `base` and append every part.
    Append,
    /// The append is durable (a part is already deleted, or there is none):
    /// delete the parts still staged.
    DeleteStaged,
}

/// Files that no attempt of the commit can have left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inconsistent {
    /// The output lost bytes committed before this commit.
    OutputShorterThanBase,
    /// Part `index` is deleted but its bytes are not in the output.
    PartLost { index: usize },
}

/// The commit decision: `output_len` is the output's length now, `staged[k]`
/// whether part `k` of `prepared` is still in the staging directory.
fn commit_step(
    prepared: &PreparedCommit,
    output_len: u64,
    staged: &[bool],
) -> Result<CommitStep, Inconsistent> {
    if output_len < prepared.base {
        return Err(Inconsistent::OutputShorterThanBase);
    }
    match staged.iter().position(|s| !s) {
        None if prepared.parts.is_empty() => Ok(CommitStep::DeleteStaged),
        None => Ok(CommitStep::Append),
        Some(_) if output_len >= prepared.end() => Ok(CommitStep::DeleteStaged),
        Some(index) => Err(Inconsistent::PartLost { index }),
    }
}

/// Stages one instance's rows: into `<i>.open` until the barrier, which
/// renames it to the epoch's part.
struct StagingWriter {
    staging: PathBuf,
    instance: usize,
    /// The current epoch's part; `None` until the epoch's first row.
    open: Option<OpenPart>,
    /// Reused for every batch, so encoding stops allocating once grown.
    encoded: Vec<u8>,
}

struct OpenPart {
    file: BufWriter<File>,
    bytes: u64,
}

impl StagingWriter {
    fn open_path(&self) -> PathBuf {
        self.staging.join(format!("{}.open", self.instance))
    }
}

impl SinkWriter for StagingWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.encoded.clear();
        encode_json_lines(batch, &mut self.encoded)?;
        let path = self.open_path();
        let part = match &mut self.open {
            Some(part) => part,
            // `create` truncates an `.open` left by a crashed run.
            None => self.open.insert(OpenPart {
                file: BufWriter::new(File::create(&path).map_err(|e| Error::io(&path, e))?),
                bytes: 0,
            }),
        };
        part.file
            .write_all(&self.encoded)
            .map_err(|e| Error::io(&path, e))?;
        part.bytes += self.encoded.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let path = self.open_path();
        match &mut self.open {
            Some(part) => part.file.flush().map_err(|e| Error::io(path, e)),
            None => Ok(()),
        }
    }

    fn pre_commit(&mut self, epoch: Epoch) -> Result<Snapshot> {
        let Some(part) = self.open.take() else {
            return Ok(Snapshot::none());
        };
        let open_path = self.open_path();
        // Flushed and closed, not fsynced: `prepare` does that off the worker.
        drop(
            part.file
                .into_inner()
                .map_err(|e| Error::io(&open_path, e.into_error()))?,
        );
        let staged = StagedPart {
            file: format!("{}-{epoch}.part", self.instance),
            bytes: part.bytes,
            instance: self.instance as u64,
            epoch,
        };
        let part_path = self.staging.join(&staged.file);
        fs::rename(&open_path, &part_path).map_err(|e| {
            Error::io(&open_path, e).context(&format!("staging as {}", part_path.display()))
        })?;
        staged.to_token()
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the entries of directory `dir` (files created, renamed, deleted)
/// durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests;
