//! Choosing the checkpoint a run starts from, and checking that this plan
//! can continue it.

use millrace_core::{Epoch, Error, OperatorId, Result, Snapshot};

use super::store::{Checkpoint, CheckpointStore, Owner, Role};
use super::{CheckpointConfig, SourceProgress, StartFrom, counters, late_rows};
use crate::graph::{Graph, NodeOp};

/// The checkpoint a run continues, if any.
pub(crate) struct Restored {
    pub checkpoint: Option<Checkpoint>,
    /// Epochs of this run come after this one.
    pub last_epoch: Epoch,
}

impl Restored {
    /// The checkpoint `config.start_from` names, read and verified, and
    /// checked against `graph`: a plan whose state differs is refused,
    /// naming the first operator that changed. State of nodes that now run
    /// at another parallelism is split anew between their instances
    /// ([`Restored::rescale`]). An unreadable checkpoint is an error, never
    /// a fresh start.
    pub(crate) fn load(
        config: &CheckpointConfig,
        store: &CheckpointStore,
        graph: &Graph,
    ) -> Result<Restored> {
        let fingerprint = graph.fingerprint();
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
        if let Some(why) = checkpoint.fingerprint.mismatch(&fingerprint) {
            return Err(refuse(format!("the pipeline changed: {why}")));
        }
        let mut restored = Restored {
            last_epoch: epoch.max(newest),
            checkpoint: Some(checkpoint),
        };
        restored.rescale(graph)?;
        Ok(restored)
    }

    /// Splits the state of every node whose parallelism changed since the
    /// checkpoint between its new instances: operators and sources by
    /// their own `rescale` (keyed state by key group); the runtime's own
    /// per-instance state by these rules:
    ///
    /// * a source instance's progress: the minimum over the old instances
    ///   (of the largest event time seen and of the watermark), so no row
    ///   is declared late that the old run would have let in;
    /// * an operator's late-row counter: the old instances' sum, kept by
    ///   new instance 0, so the run's total stays right.
    fn rescale(&mut self, graph: &Graph) -> Result<()> {
        let Some(checkpoint) = self.checkpoint.as_mut() else {
            return Ok(());
        };
        for (n, node) in graph.nodes.iter().enumerate() {
            let id = graph.node_id(n);
            let now = node.parallelism;
            let Some(&was) = checkpoint.parallelism.get(&id) else {
                continue;
            };
            if was == now {
                continue;
            }
            let state = &mut checkpoint.state.snapshots;
            let mut take = |role| -> Vec<Snapshot> {
                (0..was)
                    .map(|i| {
                        let owner = Owner {
                            role,
                            node: id.clone(),
                            instance: i,
                        };
                        state.remove(&owner).unwrap_or_default()
                    })
                    .collect()
            };
            let mut put = Vec::new();
            match &node.op {
                NodeOp::Source { factory, .. } => {
                    let positions = factory
                        .rescale(&take(Role::Position), now)
                        .map_err(|e| e.in_operator(&node.name))?;
                    put.extend(
                        positions
                            .into_iter()
                            .map(|s| (Role::Position, s))
                            .enumerate(),
                    );
                    let mut least: Option<SourceProgress> = None;
                    for old in take(Role::Progress) {
                        if let Some(p) = SourceProgress::from_snapshot(&old)? {
                            least = Some(least.map_or(p, |l| l.min(p)));
                        }
                    }
                    let progress = least.map(SourceProgress::to_snapshot).unwrap_or_default();
                    put.extend((0..now).map(|i| (i, (Role::Progress, progress.clone()))));
                }
                NodeOp::Operator(factory) => {
                    let snapshots = factory
                        .rescale(&take(Role::Operator), now)
                        .map_err(|e| e.in_operator(&node.name))?;
                    put.extend(
                        snapshots
                            .into_iter()
                            .map(|s| (Role::Operator, s))
                            .enumerate(),
                    );
                    let mut late = 0;
                    for old in take(Role::Counters) {
                        late += late_rows(&old)?;
                    }
                    put.push((0, (Role::Counters, counters(late))));
                }
                NodeOp::Late { .. } | NodeOp::Sink(_) => {}
            }
            for (instance, (role, snapshot)) in put {
                if !snapshot.is_empty() {
                    let owner = Owner {
                        role,
                        node: id.clone(),
                        instance,
                    };
                    state.insert(owner, snapshot);
                }
            }
            checkpoint.parallelism.insert(id, now);
        }
        Ok(())
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
