//! Choosing the checkpoint a run starts from, and checking that this plan
//! can continue it.

use std::collections::BTreeMap;

use millrace_core::{Epoch, Error, OperatorId, PlanFingerprint, Result, Snapshot};

use super::store::{Checkpoint, CheckpointStore, Owner, Role};
use super::{CheckpointConfig, StartFrom};

/// The checkpoint a run continues, if any.
pub(crate) struct Restored {
    pub checkpoint: Option<Checkpoint>,
    /// Epochs of this run come after this one.
    pub last_epoch: Epoch,
}

impl Restored {
    /// The checkpoint `config.start_from` names, read and verified, and
    /// checked against this plan. A plan whose state differs is refused,
    /// naming the first operator that changed; so is a checkpoint taken at
    /// another parallelism. An unreadable checkpoint is an error, never a
    /// fresh start.
    pub(crate) fn load(
        config: &CheckpointConfig,
        store: &CheckpointStore,
        fingerprint: &PlanFingerprint,
        parallelism: &BTreeMap<OperatorId, usize>,
    ) -> Result<Restored> {
        let complete = store.complete()?;
        let newest = complete.last().copied().unwrap_or(0);
        let epoch = match &config.start_from {
            StartFrom::Fresh => None,
            StartFrom::Latest => complete.last().copied(),
            StartFrom::Checkpoint(e) if complete.contains(e) => Some(*e),
            StartFrom::Checkpoint(e) => {
                return Err(Error::plan(format!(
                    "no complete checkpoint {e} in {} (there are: {complete:?})",
                    store.dir().display()
                )));
            }
        };
        let Some(epoch) = epoch else {
            // Epochs go on after the newest, so a fresh run never writes
            // into a retained checkpoint's directory.
            return Ok(Restored {
                checkpoint: None,
                last_epoch: newest,
            });
        };
        let checkpoint = store.read(epoch)?;
        let refuse = |why: String| {
            Error::plan(format!(
                "cannot restore checkpoint {epoch} from {}: {why}; run with --fresh to start over \
                 (the checkpoints stay where they are)",
                checkpoint.dir.display()
            ))
        };
        if let Some(why) = checkpoint.fingerprint.mismatch(fingerprint) {
            return Err(refuse(format!("the pipeline changed: {why}")));
        }
        for (id, p) in parallelism {
            if let Some(was) = checkpoint.parallelism.get(id)
                && was != p
            {
                return Err(refuse(format!(
                    "{id} ran at parallelism {was} and now runs at {p}; \
                     restoring at another parallelism is not supported yet"
                )));
            }
        }
        Ok(Restored {
            last_epoch: epoch.max(newest),
            checkpoint: Some(checkpoint),
        })
    }

    /// One line saying where the run starts from.
    /// `took`: reading, verifying and recovering the sinks.
    pub(crate) fn report(&self, store: &CheckpointStore, took: std::time::Duration) -> String {
        match &self.checkpoint {
            Some(c) => {
                let instances: usize = c.parallelism.values().sum();
                format!(
                    "restored checkpoint {} from {} ({} bytes of state over {} operator \
                     instances, read in {:.1} ms{})",
                    c.epoch,
                    c.dir.display(),
                    c.bytes,
                    instances,
                    took.as_secs_f64() * 1e3,
                    if c.finished {
                        "; it was taken at the end of the input, so nothing is left to read"
                    } else {
                        ""
                    }
                )
            }
            None => format!(
                "no checkpoint restored: starting fresh; checkpoints go to {}",
                store.dir().display()
            ),
        }
    }

    /// What `role` of instance `instance` of `node` handed over; an empty
    /// snapshot when the run starts fresh.
    pub(crate) fn snapshot(&self, role: Role, node: &OperatorId, instance: usize) -> Snapshot {
        let owner = Owner {
            role,
            node: node.clone(),
            instance,
        };
        self.checkpoint
            .as_ref()
            .and_then(|c| c.state.snapshots.get(&owner))
            .cloned()
            .unwrap_or_default()
    }

    /// The prepared commit of sink `node` in the restored checkpoint.
    pub(crate) fn commit(&self, node: &OperatorId) -> Option<(Epoch, Snapshot)> {
        let checkpoint = self.checkpoint.as_ref()?;
        let owner = Owner {
            role: Role::Commit,
            node: node.clone(),
            instance: 0,
        };
        let prepared = checkpoint.state.snapshots.get(&owner)?;
        Some((checkpoint.epoch, prepared.clone()))
    }
}
