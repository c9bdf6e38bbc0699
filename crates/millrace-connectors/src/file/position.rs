//! A file source's position as plain values: how far a reader got in each
//! of its files ([`FilePosition`]), its snapshot format, and its split for
//! another parallelism ([`rescale`]), a pure function of the old positions.
//!
//! # Format
//!
//! * table `file`, one row of `Int64`s: `exhausted` (0 or 1), the
//!   bad-record counters `skipped` and `dead_lettered`, and `files`,
//!   `instance`, `parallelism`, which say whose position it is;
//! * table `files`, one row per file of the reader, in reading order:
//!   `index` (`Int64`, the file's place in the source's list), `path`
//!   (`Utf8`), `done` (`Boolean`), and `byte_offset` and `line` (`Int64`):
//!   a file not done has been read up to `byte_offset`, just past physical
//!   line `line` (both 0 when it has not been started).
//!
//! A reader reads its files in order, so at most one is part read; a
//! reader made by a rescale may have several, each taken over from the old
//! reader that owned the file. Every file carries its path, so a position
//! is never applied to another file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray};
use arrow::datatypes::{Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use millrace_core::state::{scalar, scalars};
use millrace_core::{Snapshot, SourceStats};

/// A check's outcome: on failure, why, for the caller to put in context
/// (which source, which instance).
type Checked<T> = Result<T, String>;

const POSITION_TABLE: &str = "file";
const FILES_TABLE: &str = "files";

/// How far a reader got in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Read to its end: nothing more is read from it.
    Done,
    /// Read up to byte `offset`, just past physical line `line` (0 and 0:
    /// not started).
    At { offset: u64, line: u64 },
}

impl Progress {
    pub(crate) const NOT_STARTED: Progress = Progress::At { offset: 0, line: 0 };
}

/// One file of a reader's position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileProgress {
    /// The file's place in the source's list of paths.
    pub index: usize,
    pub path: String,
    pub progress: Progress,
}

/// Where one reader of a file source is (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FilePosition {
    pub instance: usize,
    pub parallelism: usize,
    /// The reader's files, in reading order.
    pub files: Vec<FileProgress>,
    /// The reader has returned `Exhausted`.
    pub exhausted: bool,
    pub stats: SourceStats,
}

impl FilePosition {
    /// The position as snapshot tables (the module doc's format).
    pub(crate) fn to_snapshot(&self) -> Checked<Snapshot> {
        let int = |name: &str, v: u64| {
            i64::try_from(v).map_err(|_| format!("{name} {v} does not fit a checkpoint's Int64"))
        };
        let position = scalars(&[
            ("exhausted", Some(i64::from(self.exhausted))),
            ("skipped", Some(int("skipped", self.stats.skipped)?)),
            (
                "dead_lettered",
                Some(int("dead_lettered", self.stats.dead_lettered)?),
            ),
            ("files", Some(int("files", self.files.len() as u64)?)),
            ("instance", Some(int("instance", self.instance as u64)?)),
            (
                "parallelism",
                Some(int("parallelism", self.parallelism as u64)?),
            ),
        ]);
        let (mut offsets, mut lines) = (Vec::new(), Vec::new());
        for file in &self.files {
            let (offset, line) = match file.progress {
                Progress::Done => (0, 0),
                Progress::At { offset, line } => (offset, line),
            };
            offsets.push(int("byte_offset", offset)?);
            lines.push(int("line", line)?);
        }
        let indices = self
            .files
            .iter()
            .map(|f| int("index", f.index as u64))
            .collect::<Checked<Vec<_>>>()?;
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("index", Arc::new(Int64Array::from(indices))),
            (
                "path",
                Arc::new(StringArray::from_iter_values(
                    self.files.iter().map(|f| &f.path),
                )),
            ),
            (
                "done",
                Arc::new(BooleanArray::from_iter(
                    self.files
                        .iter()
                        .map(|f| Some(f.progress == Progress::Done)),
                )),
            ),
            ("byte_offset", Arc::new(Int64Array::from(offsets))),
            ("line", Arc::new(Int64Array::from(lines))),
        ];
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, c)| Field::new(*name, c.data_type().clone(), false))
            .collect();
        let files = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, c)| c).collect(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Snapshot::none()
            .with(POSITION_TABLE, position)
            .with(FILES_TABLE, files))
    }

    /// The position a snapshot of [`FilePosition::to_snapshot`] holds; an
    /// error says what is missing or wrong.
    pub(crate) fn from_snapshot(snapshot: &Snapshot) -> Checked<Self> {
        let position = snapshot.table(POSITION_TABLE).map_err(|e| e.to_string())?;
        let value = |name: &str| -> Checked<u64> {
            match scalar(position, name) {
                Ok(Some(v)) => u64::try_from(v).map_err(|_| format!("'{name}' is negative ({v})")),
                Ok(None) => Err(format!("'{name}' is null")),
                Err(e) => Err(e.to_string()),
            }
        };
        let count = |name: &str| -> Checked<usize> {
            usize::try_from(value(name)?).map_err(|_| format!("'{name}' is too large"))
        };
        let instance = count("instance")?;
        let parallelism = count("parallelism")?;
        let file_count = count("files")?;
        let exhausted = value("exhausted")? != 0;
        let stats = SourceStats {
            skipped: value("skipped")?,
            dead_lettered: value("dead_lettered")?,
        };
        let table = snapshot.table(FILES_TABLE).map_err(|e| e.to_string())?;
        if table.num_rows() != file_count {
            return Err(format!(
                "table '{FILES_TABLE}' has {} rows for {file_count} files",
                table.num_rows()
            ));
        }
        let ints = |name: &str| -> Checked<Vec<u64>> {
            let column = table
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .filter(|c| c.null_count() == 0)
                .ok_or_else(|| format!("table '{FILES_TABLE}' has no non-null Int64 '{name}'"))?;
            column
                .values()
                .iter()
                .map(|&v| u64::try_from(v).map_err(|_| format!("'{name}' is negative ({v})")))
                .collect()
        };
        let (indices, offsets, lines) = (ints("index")?, ints("byte_offset")?, ints("line")?);
        let paths = table
            .column_by_name("path")
            .and_then(|c| c.as_string_opt::<i32>())
            .filter(|c| c.null_count() == 0)
            .ok_or_else(|| format!("table '{FILES_TABLE}' has no non-null Utf8 'path'"))?;
        let done = table
            .column_by_name("done")
            .and_then(|c| c.as_boolean_opt())
            .filter(|c| c.null_count() == 0)
            .ok_or_else(|| format!("table '{FILES_TABLE}' has no non-null Boolean 'done'"))?;
        let files = (0..file_count)
            .map(|k| {
                let index = usize::try_from(indices[k])
                    .map_err(|_| format!("file index {} is too large", indices[k]))?;
                let progress = if done.value(k) {
                    Progress::Done
                } else {
                    Progress::At {
                        offset: offsets[k],
                        line: lines[k],
                    }
                };
                Ok(FileProgress {
                    index,
                    path: paths.value(k).to_string(),
                    progress,
                })
            })
            .collect::<Checked<Vec<_>>>()?;
        Ok(FilePosition {
            instance,
            parallelism,
            files,
            exhausted,
            stats,
        })
    }

    /// An error unless this is the position of instance `instance` of
    /// `parallelism` reading `files` (index in the source's list, path), in
    /// that order.
    pub(crate) fn check_owner(
        &self,
        instance: usize,
        parallelism: usize,
        files: &[(usize, &Path)],
    ) -> Checked<()> {
        if (self.instance, self.parallelism, self.files.len())
            != (instance, parallelism, files.len())
        {
            return Err(format!(
                "it is the position of instance {} of {} reading {} files, \
                 this instance reads {} files",
                self.instance,
                self.parallelism,
                self.files.len(),
                files.len()
            ));
        }
        for (k, (file, &(index, path))) in self.files.iter().zip(files).enumerate() {
            let ours = path.to_string_lossy();
            if file.index != index || file.path != ours {
                return Err(format!(
                    "file {k} of the position is {} (file {} of the source), \
                     this instance's is {ours} (file {index})",
                    file.path, file.index
                ));
            }
        }
        if self.exhausted && self.files.iter().any(|f| f.progress != Progress::Done) {
            return Err("it is exhausted, yet not every file is done".into());
        }
        Ok(())
    }
}

/// The files instance `instance` of `parallelism` reads, in order: those
/// of `paths` whose index is `instance mod parallelism`.
pub(crate) fn files_of(
    paths: &[PathBuf],
    instance: usize,
    parallelism: usize,
) -> Vec<(usize, &Path)> {
    paths
        .iter()
        .enumerate()
        .filter(|(i, _)| i % parallelism == instance)
        .map(|(i, p)| (i, p.as_path()))
        .collect()
}

/// The positions of `parallelism` new readers of a source reading `paths`,
/// continuing from `old`, the positions of every reader of a run at
/// `old.len()` instances. Each new reader's files (index `j mod
/// parallelism`) continue where their old reader left them: done, part
/// read, or not started, so together the new readers read exactly what
/// the old ones had not.
///
/// The bad-record counters are the run's totals, which a summary adds over
/// instances: new instance 0 carries the sum of the old ones' and the
/// others start at 0 (no instance's own count means anything once its
/// files came from several old instances).
pub(crate) fn rescale(
    paths: &[PathBuf],
    old: &[FilePosition],
    parallelism: usize,
) -> Checked<Vec<FilePosition>> {
    if parallelism == 0 {
        return Err("cannot split the files among 0 instances".into());
    }
    let mut progress: Vec<Option<Progress>> = vec![None; paths.len()];
    let mut stats = SourceStats::default();
    for (instance, position) in old.iter().enumerate() {
        position
            .check_owner(instance, old.len(), &files_of(paths, instance, old.len()))
            .map_err(|e| format!("the position of old instance {instance}: {e}"))?;
        for file in &position.files {
            progress[file.index] = Some(file.progress);
        }
        stats.skipped += position.stats.skipped;
        stats.dead_lettered += position.stats.dead_lettered;
    }
    (0..parallelism)
        .map(|j| {
            let files = files_of(paths, j, parallelism)
                .into_iter()
                .map(|(index, path)| {
                    let progress = progress[index].ok_or_else(|| {
                        format!("no old instance had file {index} ({})", path.display())
                    })?;
                    Ok(FileProgress {
                        index,
                        path: path.to_string_lossy().into_owned(),
                        progress,
                    })
                })
                .collect::<Checked<Vec<_>>>()?;
            Ok(FilePosition {
                instance: j,
                parallelism,
                exhausted: files.iter().all(|f| f.progress == Progress::Done),
                files,
                stats: if j == 0 {
                    stats
                } else {
                    SourceStats::default()
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| PathBuf::from(format!("f{i}.jsonl")))
            .collect()
    }

    fn position(
        paths: &[PathBuf],
        instance: usize,
        parallelism: usize,
        progress: &[Progress],
        skipped: u64,
    ) -> FilePosition {
        let files: Vec<FileProgress> = files_of(paths, instance, parallelism)
            .into_iter()
            .zip(progress)
            .map(|((index, path), &progress)| FileProgress {
                index,
                path: path.to_string_lossy().into_owned(),
                progress,
            })
            .collect();
        FilePosition {
            instance,
            parallelism,
            exhausted: false,
            files,
            stats: SourceStats {
                skipped,
                dead_lettered: 0,
            },
        }
    }

    #[test]
    fn a_position_reads_back_from_its_tables() {
        let paths = paths(5);
        let at = Progress::At {
            offset: 120,
            line: 7,
        };
        let p = position(&paths, 1, 2, &[Progress::Done, at], 3);
        let read = FilePosition::from_snapshot(&p.to_snapshot().unwrap()).unwrap();
        assert_eq!(read, p);
        assert!(read.check_owner(1, 2, &files_of(&paths, 1, 2)).is_ok());
        let err = read.check_owner(0, 2, &files_of(&paths, 0, 2)).unwrap_err();
        assert!(err.contains("instance 1 of 2"), "{err}");
        let other: Vec<PathBuf> = paths.iter().rev().cloned().collect();
        let err = read.check_owner(1, 2, &files_of(&other, 1, 2)).unwrap_err();
        assert!(
            err.contains("f1.jsonl") && err.contains("f3.jsonl"),
            "{err}"
        );
    }

    /// Five files, two old readers: the new readers take each file's
    /// progress from the old reader that had it; counters go to instance 0.
    #[test]
    fn each_file_keeps_its_progress_whichever_instance_reads_it() {
        let paths = paths(5);
        let at = |offset, line| Progress::At { offset, line };
        let old = [
            // Files 0, 2, 4.
            position(&paths, 0, 2, &[Progress::Done, at(50, 4), at(0, 0)], 2),
            // Files 1, 3.
            position(&paths, 1, 2, &[Progress::Done, Progress::Done], 5),
        ];
        let want = [
            Progress::Done,
            Progress::Done,
            at(50, 4),
            Progress::Done,
            at(0, 0),
        ];
        for parallelism in [1, 2, 3, 7] {
            let new = rescale(&paths, &old, parallelism).unwrap();
            assert_eq!(new.len(), parallelism);
            for (j, p) in new.iter().enumerate() {
                assert!(
                    p.check_owner(j, parallelism, &files_of(&paths, j, parallelism))
                        .is_ok()
                );
                for f in &p.files {
                    assert_eq!(f.progress, want[f.index], "file {}", f.index);
                }
                assert_eq!(
                    p.exhausted,
                    p.files.iter().all(|f| f.progress == Progress::Done)
                );
                assert_eq!(p.stats.skipped, if j == 0 { 7 } else { 0 });
            }
        }
        let err = rescale(&paths, &old[..1], 2).unwrap_err();
        assert!(
            err.contains("old instance 0") && err.contains("instance 0 of 2"),
            "{err}"
        );
    }
}
