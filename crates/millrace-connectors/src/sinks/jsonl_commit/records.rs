//! The records the exactly-once JSON-lines sink keeps in snapshots, and
//! their Arrow layout (described in the parent module's doc): the token a
//! writer hands over per epoch, and the prepared commit a checkpoint stores.
//! Reading one back checks it, since a damaged checkpoint must fail the
//! restore, not steer a commit.

use std::path::{Component, Path};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use arrow::datatypes::{Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use millrace_core::state::{scalar, scalars};
use millrace_core::{Epoch, Error, Result, Snapshot};

/// One writer's rows of one epoch, as its token names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct StagedPart {
    /// Name in the staging directory.
    pub(super) file: String,
    pub(super) bytes: u64,
    pub(super) instance: u64,
    pub(super) epoch: Epoch,
}

impl StagedPart {
    const TABLE: &'static str = "part";

    pub(super) fn to_token(&self) -> Result<Snapshot> {
        let table = record_batch(vec![
            (
                "file",
                Arc::new(StringArray::from(vec![self.file.as_str()])),
            ),
            ("bytes", int64s(&[self.bytes])?),
            ("instance", int64s(&[self.instance])?),
            ("epoch", int64s(&[self.epoch])?),
        ]);
        Ok(Snapshot::none().with(Self::TABLE, table))
    }

    /// The part a token names; `None` for the empty token of an epoch
    /// without rows.
    pub(super) fn from_token(token: &Snapshot) -> Result<Option<StagedPart>> {
        if token.is_empty() {
            return Ok(None);
        }
        let table = token.table(Self::TABLE)?;
        if table.num_rows() != 1 {
            return Err(Error::Other(format!(
                "sink token has {} rows in table '{}', expected 1",
                table.num_rows(),
                Self::TABLE
            )));
        }
        Ok(Some(StagedPart {
            file: part_names(table)?.remove(0),
            bytes: u64s(table, "bytes")?[0],
            instance: u64s(table, "instance")?[0],
            epoch: u64s(table, "epoch")?[0],
        }))
    }
}

/// One part of a prepared commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PartToAppend {
    /// Name in the staging directory.
    pub(super) file: String,
    pub(super) bytes: u64,
}

/// What a commit does: append `parts`, in order, to the output cut to `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PreparedCommit {
    pub(super) base: u64,
    pub(super) parts: Vec<PartToAppend>,
}

impl PreparedCommit {
    const COMMIT: &'static str = "commit";
    const PARTS: &'static str = "parts";

    /// The output's length once this commit is done.
    pub(super) fn end(&self) -> u64 {
        self.base + self.parts.iter().map(|p| p.bytes).sum::<u64>()
    }

    pub(super) fn to_snapshot(&self) -> Result<Snapshot> {
        let base = i64::try_from(self.base)
            .map_err(|_| Error::Other(format!("output length {} overflows", self.base)))?;
        let files: Vec<&str> = self.parts.iter().map(|p| p.file.as_str()).collect();
        let bytes: Vec<u64> = self.parts.iter().map(|p| p.bytes).collect();
        let parts = record_batch(vec![
            ("file", Arc::new(StringArray::from(files))),
            ("bytes", int64s(&bytes)?),
        ]);
        Ok(Snapshot::none()
            .with(Self::COMMIT, scalars(&[("base", Some(base))]))
            .with(Self::PARTS, parts))
    }

    pub(super) fn from_snapshot(snapshot: &Snapshot) -> Result<PreparedCommit> {
        let base = scalar(snapshot.table(Self::COMMIT)?, "base")?
            .and_then(|b| u64::try_from(b).ok())
            .ok_or_else(|| Error::Other("'base' is null or negative".into()))?;
        let parts = snapshot.table(Self::PARTS)?;
        let files = part_names(parts)?;
        let bytes = u64s(parts, "bytes")?;
        Ok(PreparedCommit {
            base,
            parts: files
                .into_iter()
                .zip(bytes)
                .map(|(file, bytes)| PartToAppend { file, bytes })
                .collect(),
        })
    }
}

fn record_batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, column)| Field::new(*name, column.data_type().clone(), false))
        .collect();
    let columns = columns.into_iter().map(|(_, c)| c).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .expect("non-null columns of equal length")
}

fn int64s(values: &[u64]) -> Result<ArrayRef> {
    let values = values
        .iter()
        .map(|&v| i64::try_from(v).map_err(|_| Error::Other(format!("{v} overflows Int64"))))
        .collect::<Result<Vec<i64>>>()?;
    Ok(Arc::new(Int64Array::from(values)))
}

/// Column `name`: non-null, non-negative Int64 values.
fn u64s(table: &RecordBatch, name: &str) -> Result<Vec<u64>> {
    let column = table
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .filter(|c| c.null_count() == 0)
        .ok_or_else(|| Error::Other(format!("sink record has no non-null Int64 '{name}'")))?;
    column
        .values()
        .iter()
        .map(|&v| {
            u64::try_from(v).map_err(|_| Error::Other(format!("sink record '{name}' is {v}")))
        })
        .collect()
}

/// Column `file`: names of files directly in the staging directory. Any
/// other path is refused, so a damaged checkpoint cannot make a commit
/// read, or delete, a file elsewhere.
fn part_names(table: &RecordBatch) -> Result<Vec<String>> {
    let column = table
        .column_by_name("file")
        .and_then(|c| c.as_string_opt::<i32>())
        .filter(|c| c.null_count() == 0)
        .ok_or_else(|| Error::Other("sink record has no non-null Utf8 'file'".into()))?;
    column
        .iter()
        .map(|name| {
            let name = name.unwrap_or_default();
            let mut components = Path::new(name).components();
            match (components.next(), components.next()) {
                (Some(Component::Normal(n)), None) if n == name => Ok(name.to_string()),
                _ => Err(Error::Other(format!(
                    "sink record names part '{name}', which is not a file name"
                ))),
            }
        })
        .collect()
}
