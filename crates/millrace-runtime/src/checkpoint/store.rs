//! Checkpoints on disk: one directory per checkpoint, a state file and a
//! manifest written last.
//!
//! ```text
//! <dir>/chk-00000000000000000041/state.arrows   every part, one after another
//! <dir>/chk-00000000000000000041/MANIFEST.json  written last (atomic rename)
//! ```
//!
//! A part is one chunk of one table of one component's snapshot
//! (`Snapshot::with_chunks`), as an Arrow IPC stream with its CRC-32 in the
//! manifest. The manifest names the pipeline's fingerprint, the epoch and
//! every part (the checkpoint whose state file holds it, offset, length,
//! checksum), so a checkpoint is complete exactly when its manifest exists.
//! Any part that does not read back as written is an error naming the file
//! and the part, never a silent fresh start.
//!
//! **Incremental.** A chunk that the previous checkpoint of this run wrote,
//! and that a component still holds unchanged (the same Arrow arrays:
//! batches are immutable), is not written again: the new manifest points
//! at the older state file. So a window join that buffers ten seconds of
//! rows writes, at each checkpoint, only the rows that arrived since the
//! last one. A state file whose parts are mostly no longer referenced
//! (less than half of its bytes) has its live parts written again, so disk
//! use stays within about twice the state.
//!
//! **Deletion.** Retention removes the manifests of all but the newest N
//! complete checkpoints, then every directory whose state file no retained
//! manifest references. A directory without a manifest that no complete
//! manifest references is an interrupted write (or an interrupted
//! deletion), removed before a run starts.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use millrace_core::{Epoch, Error, OperatorId, PlanFingerprint, Result, Snapshot};
use serde_json::{Value, json};

/// What a manifest's `format` says; a reader refuses any other (format 1,
/// without shared parts, is read too).
const FORMAT: u64 = 2;
const MANIFEST: &str = "MANIFEST.json";
const STATE: &str = "state.arrows";
const PREFIX: &str = "chk-";

/// What a part of a checkpoint belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A source reader's position.
    Position,
    /// The runtime's own state of a source instance (its watermark).
    Progress,
    /// An operator's snapshot.
    Operator,
    /// A sink's prepared commit (instance 0: one per sink).
    Commit,
    /// The runtime's counters of an operator instance (its late rows), so
    /// a restored run reports the whole run's.
    Counters,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Position => "position",
            Role::Progress => "progress",
            Role::Operator => "operator",
            Role::Commit => "commit",
            Role::Counters => "counters",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [
            Role::Position,
            Role::Progress,
            Role::Operator,
            Role::Commit,
            Role::Counters,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Whose snapshot: a role, a plan node and an instance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub role: Role,
    pub node: OperatorId,
    pub instance: usize,
}

/// Everything one checkpoint holds, by owner.
#[derive(Debug, Default)]
pub struct CheckpointState {
    pub snapshots: BTreeMap<Owner, Snapshot>,
}

/// A complete checkpoint as read back.
#[derive(Debug)]
pub struct Checkpoint {
    pub epoch: Epoch,
    pub dir: PathBuf,
    pub fingerprint: PlanFingerprint,
    /// Parallelism of each node when it was taken, by node id.
    pub parallelism: BTreeMap<OperatorId, usize>,
    /// Taken when every source had ended (nothing follows it).
    pub finished: bool,
    pub state: CheckpointState,
    /// Bytes of state (all its parts, wherever they lie).
    pub bytes: u64,
}

/// What writing a checkpoint cost and holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSize {
    /// Bytes of all its parts, the ones it shares with older checkpoints
    /// included.
    pub state: u64,
    /// Bytes it wrote: its own state file.
    pub written: u64,
}

/// Where a part lies: in the state file of checkpoint `file`.
#[derive(Clone, Copy, Debug)]
struct PartAt {
    file: Epoch,
    offset: u64,
    len: u64,
    crc: u32,
}

/// A chunk's identity: its arrays' addresses and its rows. Only compared
/// while [`Written`] holds the chunk (so none of those addresses can be
/// reused by other data meanwhile); a match is reused only if the schemas
/// agree too (one array may be kept under two names).
type ChunkKey = (Vec<usize>, usize);

fn chunk_key(chunk: &RecordBatch) -> ChunkKey {
    (
        chunk
            .columns()
            .iter()
            .map(|c| Arc::as_ptr(c) as *const () as usize)
            .collect(),
        chunk.num_rows(),
    )
}

/// The parts of the last checkpoint this store wrote, by chunk identity,
/// with the chunks themselves, and the size of each state file they lie in.
#[derive(Default)]
struct Written {
    parts: HashMap<ChunkKey, (RecordBatch, PartAt)>,
    file_bytes: HashMap<Epoch, u64>,
}

/// The checkpoints of one pipeline, in one directory.
pub struct CheckpointStore {
    dir: PathBuf,
    /// What the next checkpoint may point at instead of writing again
    /// (empty at first: a run's first checkpoint writes everything).
    written: Mutex<Written>,
}

impl CheckpointStore {
    /// The store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            written: Mutex::new(Written::default()),
        })
    }

    /// Takes the directory for one run: a second process running the same
    /// pipeline into it is refused instead of mixing its checkpoints in.
    /// The lock lasts as long as the returned file is open; the system
    /// releases it when the process dies, however it dies.
    pub(crate) fn lock(&self) -> Result<File> {
        let path = self.dir.join("LOCK");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::plan(format!(
                "{} is in use by another run of this pipeline (it holds {})",
                self.dir.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// Removes interrupted writes and deletions: checkpoint directories
    /// without a manifest whose state file no complete checkpoint
    /// references. Only while no run writes here (under [`Self::lock`]).
    pub(crate) fn remove_incomplete(&self) -> Result<()> {
        let referenced = self.referenced(&self.complete()?)?;
        for (epoch, path) in self.entries()? {
            if !path.join(MANIFEST).exists() && !referenced.contains(&epoch) {
                fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// The checkpoints whose state files the manifests of `epochs` name.
    fn referenced(&self, epochs: &[Epoch]) -> Result<BTreeSet<Epoch>> {
        let mut files = BTreeSet::new();
        for &epoch in epochs {
            let path = self.path_of(epoch).join(MANIFEST);
            let text = fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let manifest: Value = serde_json::from_slice(&text).map_err(|e| {
                Error::Other(format!(
                    "checkpoint {}: not a readable manifest ({e})",
                    path.display()
                ))
            })?;
            files.insert(epoch);
            for part in manifest["parts"].as_array().into_iter().flatten() {
                if let Some(file) = part["file"].as_u64() {
                    files.insert(file);
                }
            }
        }
        Ok(files)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every checkpoint directory, complete or not, by epoch.
    fn entries(&self) -> Result<Vec<(Epoch, PathBuf)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(epoch) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.parse::<Epoch>().ok())
            else {
                continue;
            };
            found.push((epoch, entry.path()));
        }
        found.sort();
        Ok(found)
    }

    /// The state file of checkpoint `epoch`.
    pub fn state_file(&self, epoch: Epoch) -> PathBuf {
        self.path_of(epoch).join(STATE)
    }

    /// Epochs of the complete checkpoints, oldest first.
    pub fn complete(&self) -> Result<Vec<Epoch>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|(_, p)| p.join(MANIFEST).exists())
            .map(|(e, _)| e)
            .collect())
    }

    fn path_of(&self, epoch: Epoch) -> PathBuf {
        self.dir.join(format!("{PREFIX}{epoch:020}"))
    }

    /// Writes checkpoint `epoch` durably: the state file (the parts no
    /// earlier checkpoint of this run holds), then the manifest by atomic
    /// rename, each fsynced, then the directory entry.
    pub fn write(
        &self,
        epoch: Epoch,
        fingerprint: &PlanFingerprint,
        parallelism: &BTreeMap<OperatorId, usize>,
        finished: bool,
        state: &CheckpointState,
    ) -> Result<WriteSize> {
        let dir = self.path_of(epoch);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut previous = self.written.lock().unwrap_or_else(|e| e.into_inner());
        // Every part in manifest order; an empty table is one chunk without
        // rows, so that its schema is kept.
        let mut chunks = Vec::new();
        for (owner, snapshot) in &state.snapshots {
            for (table, schema, table_chunks) in snapshot.tables() {
                if table_chunks.is_empty() {
                    chunks.push((owner, table, RecordBatch::new_empty(schema.clone())));
                }
                for chunk in table_chunks {
                    chunks.push((owner, table, chunk.clone()));
                }
            }
        }
        // Parts the previous checkpoint wrote and that are still held
        // unchanged, unless most of their file is no longer referenced.
        let mut reused: Vec<Option<PartAt>> = chunks
            .iter()
            .map(|(_, _, chunk)| {
                let (held, at) = previous.parts.get(&chunk_key(chunk))?;
                (held.schema_ref() == chunk.schema_ref()).then_some(*at)
            })
            .collect();
        let mut live: HashMap<Epoch, u64> = HashMap::new();
        for at in reused.iter().flatten() {
            *live.entry(at.file).or_default() += at.len;
        }
        for at in &mut reused {
            if let Some(a) = at
                && live[&a.file] * 2 < previous.file_bytes.get(&a.file).copied().unwrap_or(0)
            {
                *at = None;
            }
        }
        let mut data = Vec::new();
        let mut parts = Vec::new();
        let mut next = Written::default();
        let mut state_bytes = 0;
        for ((owner, table, chunk), reused) in chunks.into_iter().zip(reused) {
            let at = match reused {
                Some(at) => at,
                None => {
                    let offset = data.len();
                    encode(&chunk, &mut data)?;
                    PartAt {
                        file: epoch,
                        offset: offset as u64,
                        len: (data.len() - offset) as u64,
                        crc: crc32fast::hash(&data[offset..]),
                    }
                }
            };
            state_bytes += at.len;
            let mut part = json!({
                "role": owner.role.as_str(),
                "node": owner.node.as_str(),
                "instance": owner.instance,
                "table": table,
                "offset": at.offset,
                "len": at.len,
                "crc32": at.crc,
            });
            if at.file != epoch {
                part["file"] = json!(at.file);
            }
            parts.push(part);
            if let Some(bytes) = previous.file_bytes.get(&at.file) {
                next.file_bytes.insert(at.file, *bytes);
            }
            next.parts.insert(chunk_key(&chunk), (chunk, at));
        }
        let state_path = dir.join(STATE);
        write_synced(&state_path, &data)?;
        let manifest = json!({
            "format": FORMAT,
            "epoch": epoch,
            "finished": finished,
            "pipeline": format!("{:016x}", fingerprint.digest()),
            "operators": fingerprint.operators.iter().map(|(id, hash)| json!({
                "id": id.as_str(),
                "hash": format!("{hash:016x}"),
                "parallelism": parallelism.get(id),
            })).collect::<Vec<_>>(),
            "state": {"file": STATE, "bytes": data.len()},
            "parts": parts,
        });
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Other(format!("cannot encode a manifest: {e}")))?;
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        write_synced(&tmp, &text)?;
        let path = dir.join(MANIFEST);
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        if let Err(e) = sync_dir(&dir).and_then(|()| sync_dir(&self.dir)) {
            // Not durable, so not complete: the run counts it as failed and
            // commits its output later, and a restore must not find it.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        // Only a complete checkpoint's parts may be pointed at.
        next.file_bytes.insert(epoch, data.len() as u64);
        *previous = next;
        Ok(WriteSize {
            state: state_bytes,
            written: data.len() as u64,
        })
    }

    /// Checkpoint `epoch`, read back and verified; an error names the file
    /// and what is wrong with it.
    pub fn read(&self, epoch: Epoch) -> Result<Checkpoint> {
        let dir = self.path_of(epoch);
        let manifest_path = dir.join(MANIFEST);
        let corrupt = |path: &Path, why: String| {
            Error::Other(format!("checkpoint {}: {why}", path.display()))
        };
        let text = fs::read(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
        let manifest: Value = serde_json::from_slice(&text)
            .map_err(|e| corrupt(&manifest_path, format!("not a readable manifest ({e})")))?;
        let field = |name: &str| {
            manifest
                .get(name)
                .ok_or_else(|| corrupt(&manifest_path, format!("the manifest has no '{name}'")))
        };
        let format = field("format")?.as_u64();
        if !matches!(format, Some(1..=FORMAT)) {
            return Err(corrupt(
                &manifest_path,
                format!("format {format:?}, this build reads formats 1 to {FORMAT}"),
            ));
        }
        let bad = |what: &str| corrupt(&manifest_path, format!("malformed {what}"));
        if field("epoch")?.as_u64() != Some(epoch) {
            return Err(bad("epoch"));
        }
        let finished = field("finished")?
            .as_bool()
            .ok_or_else(|| bad("finished"))?;
        let mut fingerprint = PlanFingerprint {
            operators: Vec::new(),
        };
        let mut parallelism = BTreeMap::new();
        for op in field("operators")?
            .as_array()
            .ok_or_else(|| bad("operators"))?
        {
            let id = op["id"].as_str().ok_or_else(|| bad("operator id"))?;
            let (index, name) = id.split_once(':').ok_or_else(|| bad("operator id"))?;
            let index: usize = index.parse().map_err(|_| bad("operator id"))?;
            let hash = op["hash"]
                .as_str()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("operator hash"))?;
            let id = OperatorId::new(index, name);
            if let Some(p) = op["parallelism"].as_u64() {
                parallelism.insert(id.clone(), p as usize);
            }
            fingerprint.operators.push((id, hash));
        }
        let state_path = dir.join(STATE);
        let own = read_file(&state_path)?;
        let expected = field("state")?["bytes"]
            .as_u64()
            .ok_or_else(|| bad("state"))?;
        if own.len() as u64 != expected {
            return Err(corrupt(
                &state_path,
                format!("{} bytes, the manifest says {expected}", own.len()),
            ));
        }
        // The state files this checkpoint's parts lie in, each read once.
        let mut files: HashMap<Epoch, (PathBuf, Vec<u8>)> = HashMap::new();
        files.insert(epoch, (state_path, own));
        let mut tables: BTreeMap<(Owner, String), Vec<RecordBatch>> = BTreeMap::new();
        let mut order = Vec::new();
        let mut bytes_read = 0;
        for part in field("parts")?.as_array().ok_or_else(|| bad("parts"))? {
            let role = part["role"]
                .as_str()
                .and_then(Role::parse)
                .ok_or_else(|| bad("part role"))?;
            let node = part["node"].as_str().ok_or_else(|| bad("part node"))?;
            let (index, name) = node.split_once(':').ok_or_else(|| bad("part node"))?;
            let node = OperatorId::new(index.parse().map_err(|_| bad("part node"))?, name);
            let instance = part["instance"].as_u64().ok_or_else(|| bad("part"))? as usize;
            let table = part["table"].as_str().ok_or_else(|| bad("part table"))?;
            let offset = part["offset"].as_u64().ok_or_else(|| bad("part offset"))? as usize;
            let len = part["len"].as_u64().ok_or_else(|| bad("part length"))? as usize;
            let crc = part["crc32"].as_u64().ok_or_else(|| bad("part checksum"))?;
            let file = match &part["file"] {
                Value::Null => epoch,
                other => other.as_u64().ok_or_else(|| bad("part file"))?,
            };
            let (path, data) = match files.entry(file) {
                Entry::Occupied(held) => held.into_mut(),
                Entry::Vacant(slot) => {
                    let path = self.path_of(file).join(STATE);
                    let data = read_file(&path).map_err(|e| {
                        corrupt(
                            &manifest_path,
                            format!("a part's state file is missing: {e}"),
                        )
                    })?;
                    slot.insert((path, data))
                }
            };
            let (path, data) = (&*path, &*data);
            let what = format!("part {table} of {} {node}#{instance}", role.as_str());
            let bytes = offset
                .checked_add(len)
                .and_then(|end| data.get(offset..end))
                .ok_or_else(|| corrupt(path, format!("{what} lies past the end")))?;
            if u64::from(crc32fast::hash(bytes)) != crc {
                return Err(corrupt(path, format!("{what}: checksum mismatch")));
            }
            let batch = decode(bytes).map_err(|e| corrupt(path, format!("{what}: {e}")))?;
            bytes_read += len as u64;
            let owner = Owner {
                role,
                node,
                instance,
            };
            let key = (owner, table.to_string());
            if !tables.contains_key(&key) {
                order.push(key.clone());
            }
            tables.entry(key).or_default().push(batch);
        }
        let mut state = CheckpointState::default();
        for key in order {
            let chunks = tables.remove(&key).unwrap_or_default();
            let (owner, table) = key;
            let schema = chunks[0].schema();
            let snapshot = state.snapshots.remove(&owner).unwrap_or_default();
            let snapshot = snapshot
                .with_chunks(table.as_str(), &schema, &chunks)
                .map_err(|e| corrupt(&manifest_path, e.to_string()))?;
            state.snapshots.insert(owner, snapshot);
        }
        Ok(Checkpoint {
            epoch,
            dir,
            fingerprint,
            parallelism,
            finished,
            state,
            bytes: bytes_read,
        })
    }

    /// Keeps the newest `keep` complete checkpoints: deletes the manifests
    /// of older ones, then every checkpoint directory that no kept
    /// manifest references (a kept checkpoint may hold parts in an older
    /// one's state file).
    pub fn retain(&self, keep: usize) -> Result<()> {
        let complete = self.complete()?;
        let kept = &complete[complete.len().saturating_sub(keep.max(1))..];
        let referenced = self.referenced(kept)?;
        for (epoch, path) in self.entries()? {
            if kept.contains(&epoch) {
                continue;
            }
            // The manifest first: a crash mid-delete leaves a directory
            // without one, which the next run removes unless it is
            // referenced, never a complete-looking one with parts missing.
            let manifest = path.join(MANIFEST);
            if manifest.exists() {
                fs::remove_file(&manifest).map_err(|e| Error::io(&manifest, e))?;
            }
            if !referenced.contains(&epoch) {
                fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }
}

fn encode(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let mut writer = StreamWriter::try_new(out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(bytes, None)?;
    let batch = reader
        .next()
        .ok_or_else(|| Error::Other("no record batch".into()))??;
    if reader.next().is_some() {
        return Err(Error::Other("more than one record batch".into()));
    }
    Ok(batch)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| Error::io(path, e))?;
    Ok(data)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// Makes a directory's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_core::state::{scalar, scalars};

    fn fingerprint() -> PlanFingerprint {
        PlanFingerprint {
            operators: vec![
                (OperatorId::new(0, "source"), 7),
                (OperatorId::new(1, "window"), 9),
            ],
        }
    }

    fn state(value: i64) -> CheckpointState {
        let mut state = CheckpointState::default();
        for instance in 0..2 {
            state.snapshots.insert(
                Owner {
                    role: Role::Operator,
                    node: OperatorId::new(1, "window"),
                    instance,
                },
                Snapshot::none()
                    .with(
                        "progress",
                        scalars(&[("wm", Some(value + instance as i64))]),
                    )
                    .with("more", scalars(&[("n", None)])),
            );
        }
        state
    }

    fn par() -> BTreeMap<OperatorId, usize> {
        [(OperatorId::new(1, "window"), 2)].into_iter().collect()
    }

    #[test]
    fn a_written_checkpoint_reads_back_and_retention_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        for epoch in 1..=4 {
            store
                .write(
                    epoch,
                    &fingerprint(),
                    &par(),
                    epoch == 4,
                    &state(epoch as i64),
                )
                .unwrap();
        }
        store.retain(2).unwrap();
        assert_eq!(store.complete().unwrap(), vec![3, 4]);
        let chk = store.read(4).unwrap();
        assert!(chk.finished);
        assert_eq!(chk.fingerprint, fingerprint());
        assert_eq!(chk.parallelism, par());
        let owner = Owner {
            role: Role::Operator,
            node: OperatorId::new(1, "window"),
            instance: 1,
        };
        let snap = &chk.state.snapshots[&owner];
        assert_eq!(
            scalar(snap.table("progress").unwrap(), "wm").unwrap(),
            Some(5)
        );
        assert_eq!(scalar(snap.table("more").unwrap(), "n").unwrap(), None);
    }

    #[test]
    fn a_second_run_cannot_take_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let held = store.lock().unwrap();
        let err = store.lock().unwrap_err().to_string();
        assert!(err.contains("in use by another run"), "{err}");
        drop(held);
        store.lock().unwrap();
    }

    #[test]
    fn an_interrupted_write_is_removed_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store
            .write(1, &fingerprint(), &par(), false, &state(1))
            .unwrap();
        // A checkpoint whose manifest was never written.
        fs::create_dir_all(store.path_of(2)).unwrap();
        fs::write(store.path_of(2).join(STATE), b"partial").unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(store.complete().unwrap(), vec![1]);
        store.remove_incomplete().unwrap();
        assert!(!store.path_of(2).exists());

        // One flipped byte in the state file.
        let state_path = store.path_of(1).join(STATE);
        let mut bytes = fs::read(&state_path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&state_path, &bytes).unwrap();
        let err = store.read(1).unwrap_err().to_string();
        assert!(
            err.contains("state.arrows") && err.contains("checksum"),
            "{err}"
        );

        // Truncated.
        fs::write(&state_path, &bytes[..mid]).unwrap();
        let err = store.read(1).unwrap_err().to_string();
        assert!(
            err.contains("state.arrows") && err.contains("bytes"),
            "{err}"
        );

        // An unreadable manifest.
        fs::write(store.path_of(1).join(MANIFEST), b"{\"format\": 1,").unwrap();
        let err = store.read(1).unwrap_err().to_string();
        assert!(err.contains("MANIFEST.json"), "{err}");
    }

    fn rows(from: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, false),
        ]));
        let values = arrow::array::Int64Array::from_iter_values(from..from + n);
        RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap()
    }

    fn chunked(chunks: &[RecordBatch]) -> CheckpointState {
        let mut state = CheckpointState::default();
        state.snapshots.insert(
            Owner {
                role: Role::Operator,
                node: OperatorId::new(1, "window"),
                instance: 0,
            },
            Snapshot::none()
                .with_chunks("rows", &chunks[0].schema(), chunks)
                .unwrap(),
        );
        state
    }

    fn values(store: &CheckpointStore, epoch: Epoch) -> Vec<i64> {
        let chk = store.read(epoch).unwrap();
        let snap = chk.state.snapshots.values().next().unwrap();
        let table = snap.table("rows").unwrap();
        table
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    fn manifest_refs(store: &CheckpointStore, epoch: Epoch) -> BTreeSet<Epoch> {
        store.referenced(&[epoch]).unwrap()
    }

    /// A chunk still held unchanged is written once; later checkpoints
    /// point at it, and the file holding it outlives its own checkpoint
    /// while they do.
    #[test]
    fn held_chunks_are_written_once_and_their_file_kept_while_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let (a, b, c, d) = (
            rows(0, 1000),
            rows(1000, 1000),
            rows(2000, 10),
            rows(3000, 10),
        );
        let w = |epoch, chunks: &[RecordBatch]| {
            store
                .write(epoch, &fingerprint(), &par(), false, &chunked(chunks))
                .unwrap()
        };
        let first = w(1, &[a.clone(), b.clone()]);
        assert_eq!(first.written, first.state);
        let second = w(2, &[a.clone(), b.clone(), c.clone()]);
        assert!(second.written * 10 < second.state, "{second:?}");
        assert_eq!(manifest_refs(&store, 2), BTreeSet::from([1, 2]));
        // The same values in other arrays are other data: written again.
        let third = w(3, &[rows(0, 1000), b.clone(), c.clone()]);
        assert!(third.written > 8000 && third.written < 9000, "{third:?}");
        assert_eq!(values(&store, 2), (0..2010).collect::<Vec<_>>());

        store.retain(1).unwrap();
        assert_eq!(store.complete().unwrap(), vec![3]);
        assert!(store.path_of(1).exists() && store.path_of(2).exists());
        store.remove_incomplete().unwrap();
        assert!(store.path_of(1).exists(), "chk-1 holds b, which 3 needs");
        let expected: Vec<i64> = (0..2010).collect();
        assert_eq!(values(&store, 3), expected);

        // Once nothing kept points at a file, its directory goes.
        w(4, &[c.clone(), d.clone()]);
        store.retain(1).unwrap();
        assert!(!store.path_of(1).exists());
        assert!(store.path_of(2).exists(), "chk-2 holds c");
        assert!(!store.path_of(3).exists());
        let expected: Vec<i64> = (2000..2010).chain(3000..3010).collect();
        assert_eq!(values(&store, 4), expected);

        // A run starting over writes everything again.
        let again = CheckpointStore::open(dir.path()).unwrap();
        let fresh = again
            .write(5, &fingerprint(), &par(), false, &chunked(&[c, d]))
            .unwrap();
        assert_eq!(fresh.written, fresh.state);
    }

    /// A file whose parts are mostly unreferenced has its live parts
    /// written again, so old files do not pin dead state.
    #[test]
    fn live_parts_of_a_mostly_dead_file_are_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let (big, small) = (rows(0, 10_000), rows(10_000, 10));
        let w = |epoch, chunks: &[RecordBatch]| {
            store
                .write(epoch, &fingerprint(), &par(), false, &chunked(chunks))
                .unwrap()
        };
        w(1, &[big, small.clone()]);
        let second = w(2, &[small]);
        assert_eq!(second.written, second.state);
        assert_eq!(manifest_refs(&store, 2), BTreeSet::from([2]));
        store.retain(1).unwrap();
        assert!(!store.path_of(1).exists());
        assert_eq!(values(&store, 2), (10_000..10_010).collect::<Vec<_>>());
    }

    /// A part in another checkpoint's file that is gone is an error naming
    /// the manifest and the missing file.
    #[test]
    fn a_missing_shared_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let a = rows(0, 1000);
        for epoch in 1..=2 {
            store
                .write(
                    epoch,
                    &fingerprint(),
                    &par(),
                    false,
                    &chunked(std::slice::from_ref(&a)),
                )
                .unwrap();
        }
        fs::remove_dir_all(store.path_of(1)).unwrap();
        let err = store.read(2).unwrap_err().to_string();
        assert!(
            err.contains("MANIFEST.json")
                && err.contains("missing")
                && err.contains("chk-00000000000000000001"),
            "{err}"
        );
    }
}
