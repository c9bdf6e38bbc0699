//! The state contract: what operators, sources and sinks promise so that a
//! running pipeline can be cut at a barrier, saved, and continued later as
//! if it had never stopped.
//!
//! # The model
//!
//! A checkpoint is an *epoch*. Sources cut their streams with
//! `Message::Barrier(epoch)`; a task with several inputs aligns the barrier
//! (everything before it on every input is processed, nothing after it).
//! At that instant every component of the task hands over what it needs to
//! continue:
//!
//! * an **operator** its [`Snapshot`] ([`Operator::snapshot`]); a fresh
//!   instance made by [`OperatorFactory::restore`] from that snapshot must
//!   then produce, for the same input after the barrier, exactly the output
//!   the original instance would have produced;
//! * a **source** its position ([`SourceReader::position`]); a reader
//!   moved there with [`SourceReader::seek`] produces exactly the rows that
//!   followed the barrier, in the same order per instance;
//! * a **sink** pre-commits what it wrote in the epoch
//!   ([`SinkWriter::pre_commit`]); only once the whole checkpoint is durable
//!   is it committed ([`SinkCommitter::commit`], `crate::sink`).
//!
//! The runtime and the checkpoint coordinator build on these promises; they
//! do not know what any operator keeps. What is written where and when is
//! theirs: an operator only hands over values.
//!
//! Snapshots are Arrow record batches (state is columnar already, and
//! checkpoints store Arrow IPC), named so that a restore can find its parts.
//!
//! # Another parallelism
//!
//! A restore gives instance `i` of `p` what instance `i` of `p` handed over.
//! To continue at another parallelism, the snapshots of all old instances
//! are first redistributed by the component that wrote them
//! ([`OperatorFactory::rescale`], [`SourceFactory::rescale`]): keyed state
//! to the instance owning its key group (`crate::key_groups`, the same
//! placement the runtime's hash exchange gives the rows), a source's input
//! units (files, partitions) to the reader that will own them. Components
//! that cannot say how their state splits refuse, by name.
//!
//! # Identity
//!
//! Each node of a plan has an [`OperatorId`] derived from the plan itself
//! (its position among the nodes and its name), so planning the same SQL
//! file again gives the same ids. A [`PlanFingerprint`] hashes, per
//! operator, everything that decides what its state means (its
//! [`OperatorFactory::signature`], output schema and inputs); a checkpoint
//! records it, and a restore into a plan whose fingerprint differs is
//! refused, naming the first operator that changed.
//!
//! [`Operator::snapshot`]: crate::Operator::snapshot
//! [`OperatorFactory::restore`]: crate::OperatorFactory::restore
//! [`OperatorFactory::signature`]: crate::OperatorFactory::signature
//! [`SourceReader::position`]: crate::SourceReader::position
//! [`SourceReader::seek`]: crate::SourceReader::seek
//! [`SinkWriter::pre_commit`]: crate::SinkWriter::pre_commit
//! [`SinkCommitter::commit`]: crate::SinkCommitter::commit
//! [`OperatorFactory::rescale`]: crate::OperatorFactory::rescale
//! [`SourceFactory::rescale`]: crate::SourceFactory::rescale

use std::fmt;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::{Error, Result};

/// A checkpoint's number: the id of the barrier that cuts it.
pub type Epoch = crate::BarrierId;

/// What one operator instance, or one source reader, hands over at a
/// barrier: named Arrow tables.
///
/// Table names are the component's own (`"windows"`, `"progress"`…); the
/// component that wrote them is the only one that reads them. An empty
/// snapshot ([`Snapshot::none`]) says "nothing to keep".
///
/// A table may be handed over as the batches the component already keeps
/// ([`Snapshot::with_chunks`]): taking a snapshot then copies nothing, and
/// a checkpoint writes a batch it wrote before only once (batches are
/// immutable, so one the component still holds is unchanged). Readers see
/// one batch per table ([`Snapshot::table`]).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    tables: Vec<(String, Table)>,
}

/// One table: its chunks, in order, all of `schema`, and all of them as one
/// batch, made on the first read.
#[derive(Clone, Debug)]
struct Table {
    schema: SchemaRef,
    chunks: Vec<RecordBatch>,
    whole: OnceLock<RecordBatch>,
}

impl Snapshot {
    /// The snapshot of a component that keeps nothing between calls.
    pub fn none() -> Self {
        Self::default()
    }

    /// True when there is nothing to restore.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Adds table `name` (replacing one of that name).
    pub fn with(self, name: impl Into<String>, batch: RecordBatch) -> Self {
        let whole = OnceLock::from(batch.clone());
        self.with_table(
            name.into(),
            Table {
                schema: batch.schema(),
                chunks: vec![batch],
                whole,
            },
        )
    }

    /// Adds table `name` (replacing one of that name) made of `chunks`, in
    /// order, each with the columns of `schema` (a chunk whose schema says
    /// otherwise is given `schema`, or refused if its columns do not fit);
    /// rows-less chunks are left out.
    pub fn with_chunks<'a>(
        self,
        name: impl Into<String>,
        schema: &SchemaRef,
        chunks: impl IntoIterator<Item = &'a RecordBatch>,
    ) -> Result<Self> {
        let name = name.into();
        let mut kept = Vec::new();
        for chunk in chunks.into_iter().filter(|c| c.num_rows() > 0) {
            if chunk.schema_ref().fields() == schema.fields() {
                kept.push(chunk.clone());
                continue;
            }
            let fitted = RecordBatch::try_new(schema.clone(), chunk.columns().to_vec())
                .map_err(|e| Error::Other(format!("snapshot table '{name}': {e}")))?;
            kept.push(fitted);
        }
        Ok(self.with_table(
            name,
            Table {
                schema: schema.clone(),
                chunks: kept,
                whole: OnceLock::new(),
            },
        ))
    }

    fn with_table(mut self, name: String, table: Table) -> Self {
        self.tables.retain(|(n, _)| *n != name);
        self.tables.push((name, table));
        self
    }

    /// The snapshot without table `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.tables.retain(|(n, _)| n != name);
        self
    }

    /// The tables, in the order they were added: name, schema and chunks.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &SchemaRef, &[RecordBatch])> {
        self.tables
            .iter()
            .map(|(n, t)| (n.as_str(), &t.schema, t.chunks.as_slice()))
    }

    /// Table `name` as one batch, or an error naming what is missing: a
    /// snapshot that lacks a part its reader needs is corrupt, never
    /// "empty".
    pub fn table(&self, name: &str) -> Result<&RecordBatch> {
        let Some((_, table)) = self.tables.iter().find(|(n, _)| n == name) else {
            let found: Vec<&str> = self.tables.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::Other(format!(
                "snapshot has no table '{name}' (tables: [{}])",
                found.join(", ")
            )));
        };
        if let Some(whole) = table.whole.get() {
            return Ok(whole);
        }
        let whole = concat_batches(&table.schema, &table.chunks)?;
        Ok(table.whole.get_or_init(|| whole))
    }

    /// Rows in all tables (for tests and summaries).
    pub fn rows(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|(_, t)| &t.chunks)
            .map(RecordBatch::num_rows)
            .sum()
    }
}

/// The default rescale of operators and sources: empty snapshots for the
/// new instances when there is nothing to move, else an error naming
/// `what` (`"operator 'filter'"`, `"source 'nexmark-bids'"`).
pub(crate) fn rescale_nothing(
    what: &str,
    old: &[Snapshot],
    parallelism: usize,
) -> Result<Vec<Snapshot>> {
    if old.iter().all(Snapshot::is_empty) {
        return Ok(vec![Snapshot::none(); parallelism]);
    }
    let rows: usize = old.iter().map(Snapshot::rows).sum();
    Err(Error::Other(format!(
        "{what} cannot be restored at another parallelism: it does not say how its state \
         ({rows} row(s) over {} instance(s)) is split between instances; \
         restore at parallelism {}",
        old.len(),
        old.len()
    )))
}

/// A one-row table of named, nullable `Int64` values: the watermark, a
/// counter, a position. Read back with [`scalar`].
pub fn scalars(values: &[(&str, Option<i64>)]) -> RecordBatch {
    let fields: Vec<Field> = values
        .iter()
        .map(|(name, _)| Field::new(*name, DataType::Int64, true))
        .collect();
    let columns: Vec<ArrayRef> = values
        .iter()
        .map(|(_, v)| Arc::new(Int64Array::from(vec![*v])) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .expect("one Int64 column per value, one row each")
}

/// Value `name` of a table made by [`scalars`]; an error if the column is
/// missing or not a one-row `Int64`.
pub fn scalar(table: &RecordBatch, name: &str) -> Result<Option<i64>> {
    let column = table
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .filter(|c| c.len() == 1)
        .ok_or_else(|| Error::Other(format!("snapshot value '{name}' is missing")))?;
    Ok(column.is_valid(0).then(|| column.value(0)))
}

/// The stable identity of one node of a plan (`"3:window_agg[tumble 10s]"`):
/// its position among the plan's nodes and its name. The same pipeline,
/// built again (the same SQL file planned again), gets the same ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorId(String);

impl OperatorId {
    pub fn new(index: usize, name: &str) -> Self {
        OperatorId(format!("{index}:{name}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A hash, per operator, of everything that decides what its state means;
/// two plans with equal fingerprints can restore each other's checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanFingerprint {
    /// Every node, in plan order, with its own hash.
    pub operators: Vec<(OperatorId, u64)>,
}

impl PlanFingerprint {
    /// One number for the whole plan.
    pub fn digest(&self) -> u64 {
        let mut h = StableHasher::new();
        for (id, hash) in &self.operators {
            h.write(id.as_str().as_bytes());
            h.write(&hash.to_le_bytes());
        }
        h.finish()
    }

    /// Why `self` (a checkpoint's plan) cannot be restored into `other`
    /// (the plan about to run), naming the first operator that differs;
    /// `None` when they are the same plan.
    pub fn mismatch(&self, other: &PlanFingerprint) -> Option<String> {
        for (i, (id, hash)) in self.operators.iter().enumerate() {
            match other.operators.get(i) {
                None => return Some(format!("operator {id} is not in the new plan")),
                Some((other_id, _)) if other_id != id => {
                    return Some(format!(
                        "operator {id} of the checkpoint is {other_id} in the new plan"
                    ));
                }
                Some((_, other_hash)) if other_hash != hash => {
                    return Some(format!("operator {id} changed"));
                }
                Some(_) => {}
            }
        }
        other
            .operators
            .get(self.operators.len())
            .map(|(id, _)| format!("operator {id} is new in this plan"))
    }
}

/// A 64-bit FNV-1a hash: the same bytes hash alike on every machine, build
/// and version (std's hashers promise neither), which is what a fingerprint
/// stored in a checkpoint needs. Not for hash tables.
#[derive(Clone, Debug)]
pub struct StableHasher(u64);

impl StableHasher {
    pub fn new() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_read_back_and_missing_parts_are_errors() {
        let t = scalars(&[("watermark", Some(-5)), ("entered", None)]);
        assert_eq!(scalar(&t, "watermark").unwrap(), Some(-5));
        assert_eq!(scalar(&t, "entered").unwrap(), None);
        assert!(scalar(&t, "nope").is_err());
        let s = Snapshot::none().with("progress", t);
        assert!(s.table("progress").is_ok());
        let err = s.table("windows").unwrap_err().to_string();
        assert!(
            err.contains("'windows'") && err.contains("progress"),
            "{err}"
        );
    }

    #[test]
    fn without_state_a_rescale_gives_empty_snapshots_and_with_state_refuses_by_name() {
        let empty = rescale_nothing(
            "operator 'filter'",
            &[Snapshot::none(), Snapshot::none()],
            3,
        )
        .unwrap();
        assert_eq!(empty.len(), 3);
        assert!(empty.iter().all(Snapshot::is_empty));
        let held = Snapshot::none().with("progress", scalars(&[("watermark", Some(1))]));
        let err = rescale_nothing("operator 'filter'", &[Snapshot::none(), held], 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("operator 'filter' cannot be restored at another parallelism")
                && err.contains("restore at parallelism 2"),
            "{err}"
        );
    }

    #[test]
    fn fingerprints_name_the_first_operator_that_differs() {
        let plan = |hashes: &[u64]| PlanFingerprint {
            operators: hashes
                .iter()
                .enumerate()
                .map(|(i, h)| (OperatorId::new(i, "op"), *h))
                .collect(),
        };
        let a = plan(&[1, 2, 3]);
        assert_eq!(a.mismatch(&plan(&[1, 2, 3])), None);
        assert_eq!(a.digest(), plan(&[1, 2, 3]).digest());
        assert_ne!(a.digest(), plan(&[1, 2, 4]).digest());
        assert_eq!(
            a.mismatch(&plan(&[1, 9, 3])).as_deref(),
            Some("operator 1:op changed")
        );
        assert!(a.mismatch(&plan(&[1, 2])).unwrap().contains("2:op"));
        assert!(plan(&[1]).mismatch(&a).unwrap().contains("new"));
    }

    #[test]
    fn the_stable_hash_is_fnv1a_with_a_separator() {
        // Pinned: a checkpoint written by one build is read by the next.
        let mut h = StableHasher::new();
        h.write(b"millrace");
        assert_eq!(h.finish(), 0x5f1d_2004_f25d_0783);
        let (mut ab, mut a_b) = (StableHasher::new(), StableHasher::new());
        ab.write(b"ab");
        ab.write(b"c");
        a_b.write(b"a");
        a_b.write(b"bc");
        assert_ne!(ab.finish(), a_b.finish());
    }
}
