//! Checkpoints on disk: one directory per checkpoint, a state file and a
//! manifest written last.
//!
//! ```text
//! <dir>/chk-00000000000000000041/state.arrows   every part, one after another
//! <dir>/chk-00000000000000000041/MANIFEST.json  written last (atomic rename)
//! ```
//!
//! A part is one table of one component's snapshot, as an Arrow IPC stream
//! with its CRC-32 in the manifest. The manifest names the pipeline's
//! fingerprint, the epoch and every part (offset, length, checksum), so a
//! checkpoint is complete exactly when its manifest exists: a directory
//! without one is an interrupted write, removed before a run starts. Any
//! part that does not read back as written is an error naming the file and
//! the part, never a silent fresh start.
//!
//! Each checkpoint holds its whole state (no file is shared between two
//! checkpoints), so retention deletes whole directories, oldest first.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use millrace_core::{Epoch, Error, OperatorId, PlanFingerprint, Result, Snapshot};
use serde_json::{Value, json};

/// What a manifest's `format` says; a reader refuses any other.
const FORMAT: u64 = 1;
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
    /// Bytes of the state file.
    pub bytes: u64,
}

/// The checkpoints of one pipeline, in one directory.
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// The store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
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

    /// Removes interrupted writes: checkpoint directories without a
    /// manifest. Only while no run writes here (under [`Self::lock`]).
    pub(crate) fn remove_incomplete(&self) -> Result<()> {
        for (_, path) in self.entries()? {
            if !path.join(MANIFEST).exists() {
                fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
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

    /// Writes checkpoint `epoch` durably: the state file, then the
    /// manifest by atomic rename, each fsynced, then the directory entry.
    /// Returns the bytes written.
    pub fn write(
        &self,
        epoch: Epoch,
        fingerprint: &PlanFingerprint,
        parallelism: &BTreeMap<OperatorId, usize>,
        finished: bool,
        state: &CheckpointState,
    ) -> Result<u64> {
        let dir = self.path_of(epoch);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut data = Vec::new();
        let mut parts = Vec::new();
        for (owner, snapshot) in &state.snapshots {
            for (table, batch) in snapshot.tables() {
                let offset = data.len();
                encode(batch, &mut data)?;
                let len = data.len() - offset;
                parts.push(json!({
                    "role": owner.role.as_str(),
                    "node": owner.node.as_str(),
                    "instance": owner.instance,
                    "table": table,
                    "offset": offset,
                    "len": len,
                    "crc32": crc32fast::hash(&data[offset..]),
                }));
            }
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
        sync_dir(&dir)?;
        sync_dir(&self.dir)?;
        Ok(data.len() as u64)
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
        if format != Some(FORMAT) {
            return Err(corrupt(
                &manifest_path,
                format!("format {format:?}, this build reads format {FORMAT}"),
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
        let mut data = Vec::new();
        File::open(&state_path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| Error::io(&state_path, e))?;
        let expected = field("state")?["bytes"]
            .as_u64()
            .ok_or_else(|| bad("state"))?;
        if data.len() as u64 != expected {
            return Err(corrupt(
                &state_path,
                format!("{} bytes, the manifest says {expected}", data.len()),
            ));
        }
        let mut state = CheckpointState::default();
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
            let what = format!("part {table} of {} {node}#{instance}", role.as_str());
            let bytes = offset
                .checked_add(len)
                .and_then(|end| data.get(offset..end))
                .ok_or_else(|| corrupt(&state_path, format!("{what} lies past the end")))?;
            if u64::from(crc32fast::hash(bytes)) != crc {
                return Err(corrupt(&state_path, format!("{what}: checksum mismatch")));
            }
            let batch = decode(bytes).map_err(|e| corrupt(&state_path, format!("{what}: {e}")))?;
            let owner = Owner {
                role,
                node,
                instance,
            };
            let snapshot = state.snapshots.remove(&owner).unwrap_or_default();
            state.snapshots.insert(owner, snapshot.with(table, batch));
        }
        Ok(Checkpoint {
            epoch,
            dir,
            fingerprint,
            parallelism,
            finished,
            state,
            bytes: data.len() as u64,
        })
    }

    /// Deletes the oldest complete checkpoints beyond the newest `keep`.
    pub fn retain(&self, keep: usize) -> Result<()> {
        let complete = self.complete()?;
        let drop = complete.len().saturating_sub(keep.max(1));
        for epoch in &complete[..drop] {
            let path = self.path_of(*epoch);
            // The manifest first: a crash mid-delete leaves an incomplete
            // directory, which `open` removes, never a complete-looking one
            // with parts missing.
            fs::remove_file(path.join(MANIFEST)).map_err(|e| Error::io(&path, e))?;
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
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
}
