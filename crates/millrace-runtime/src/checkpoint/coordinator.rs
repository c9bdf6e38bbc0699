//! The checkpoint coordinator: one thread per run that starts epochs,
//! gathers every task's acknowledgement, writes the checkpoint and commits
//! the sinks. Workers only ever send it an [`Ack`]; all I/O is here.
//!
//! Rules:
//! * a checkpoint is complete when every task has acknowledged its epoch,
//!   or ended before the barrier reached it (its final state stands in);
//! * the manifest is written last; sinks commit only after it;
//! * a checkpoint that does not complete within the timeout is aborted and
//!   counted; its sink tokens, and those of acknowledgements that come
//!   after, are carried into the next checkpoint, so staged output is never
//!   dropped, only committed later;
//! * a commit that fails stops the run: the checkpoint is complete, and
//!   recovery replays the commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use millrace_core::{Epoch, Error, OperatorId, PlanFingerprint, Result, SinkCommitter, Snapshot};

use super::store::{CheckpointState, CheckpointStore, Owner, Role};
use super::{Ack, Barriers, CheckpointConfig, SinkToken};
use crate::worker::{RunControl, StopHandle};

/// Counters of a run's checkpoints.
pub struct CheckpointStats {
    pub completed: AtomicU64,
    /// Timed out before every task acknowledged.
    pub aborted: AtomicU64,
    /// Could not be written (the reason is in `last_error`).
    pub failed: AtomicU64,
    /// Epoch of the latest complete checkpoint (0: none yet).
    pub latest: AtomicU64,
    /// Bytes of state in the latest complete checkpoint.
    pub latest_bytes: AtomicU64,
    /// When the latest complete checkpoint's sinks committed (the
    /// `time::now_ns` clock; 0: none yet).
    pub latest_committed_ns: AtomicI64,
    /// Bytes written by all checkpoints of the run (a checkpoint writes
    /// only the state its predecessor does not hold: `store.rs`).
    pub written_bytes: AtomicU64,
    /// From the start of each complete checkpoint to its sinks' commit, µs.
    pub duration_us: Mutex<Histogram<u64>>,
    /// From each row's entry (its scheduled time, for a generator) to the
    /// commit that made it visible in an exactly-once sink, ns (sampled:
    /// `task::EnteredSample`).
    pub committed_latency: Mutex<Histogram<u64>>,
    pub last_error: Mutex<Option<String>>,
}

impl Default for CheckpointStats {
    fn default() -> Self {
        CheckpointStats {
            completed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latest: AtomicU64::new(0),
            latest_bytes: AtomicU64::new(0),
            latest_committed_ns: AtomicI64::new(0),
            written_bytes: AtomicU64::new(0),
            duration_us: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            committed_latency: Mutex::new(crate::metrics::new_latency_histogram()),
            last_error: Mutex::new(None),
        }
    }
}

impl std::fmt::Display for CheckpointStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.duration_us.lock().unwrap_or_else(|e| e.into_inner());
        write!(
            f,
            "{} complete (latest {}, {} bytes; {} bytes written in all), {} aborted, {} failed; \
             duration p50 {} µs p99 {} µs",
            self.completed.load(Relaxed),
            self.latest.load(Relaxed),
            self.latest_bytes.load(Relaxed),
            self.written_bytes.load(Relaxed),
            self.aborted.load(Relaxed),
            self.failed.load(Relaxed),
            d.value_at_quantile(0.5),
            d.value_at_quantile(0.99),
        )?;
        let c = self
            .committed_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !c.is_empty() {
            write!(
                f,
                "; entry to committed output p50 {:.1} ms p99 {:.1} ms",
                c.value_at_quantile(0.5) as f64 / 1e6,
                c.value_at_quantile(0.99) as f64 / 1e6,
            )?;
        }
        if let Some(e) = &*self.last_error.lock().unwrap_or_else(|e| e.into_inner()) {
            write!(f, "; last problem: {e}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for CheckpointStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointStats({self})")
    }
}

/// An epoch started and not yet complete.
struct InFlight {
    started: Instant,
    /// By task.
    acks: Vec<Option<Ack>>,
}

/// What the coordinator needs from the run.
pub(crate) struct Coordinator {
    pub config: CheckpointConfig,
    pub store: CheckpointStore,
    pub fingerprint: PlanFingerprint,
    /// Parallelism of each node, recorded in every manifest.
    pub parallelism: BTreeMap<OperatorId, usize>,
    /// Id of each graph node.
    pub node_ids: Vec<OperatorId>,
    pub tasks: usize,
    pub acks: Receiver<Ack>,
    pub barriers: Arc<Barriers>,
    pub stop: StopHandle,
    pub control: Arc<RunControl>,
    /// Each exactly-once sink's graph node and committer.
    pub committers: Vec<(usize, Arc<dyn SinkCommitter>)>,
    /// The epoch the run started after (a restored checkpoint's, or the
    /// newest in the directory on a fresh start).
    pub last_epoch: Epoch,
    pub stats: Arc<CheckpointStats>,
    /// The store's lock, released when the coordinator ends.
    pub _lock: std::fs::File,
}

struct State {
    next_epoch: Epoch,
    in_flight: BTreeMap<Epoch, InFlight>,
    /// The final state of each task that ended.
    finished: Vec<Option<Ack>>,
    /// Sink tokens not yet in a complete checkpoint.
    carried: Vec<SinkToken>,
    last_start: Instant,
    last_end: Instant,
}

impl Coordinator {
    /// Runs until every task has dropped its sender (the run is over),
    /// then writes the finished checkpoint if every source ended on its
    /// own. An error here fails the run.
    pub(crate) fn run(self) {
        if let Err(e) = self.coordinate() {
            self.control.fail(e.in_operator("checkpoint coordinator"));
        }
    }

    fn coordinate(&self) -> Result<()> {
        let now = Instant::now();
        let mut s = State {
            next_epoch: self.last_epoch + 1,
            in_flight: BTreeMap::new(),
            finished: (0..self.tasks).map(|_| None).collect(),
            carried: Vec::new(),
            last_start: now,
            last_end: now,
        };
        let mut stopping = false;
        loop {
            let now = Instant::now();
            if !stopping && self.stop.is_stopped() {
                stopping = true;
                let epoch = self.start(&mut s, now);
                self.barriers.request_last(epoch);
                self.control.wake_all();
            }
            let due = (s.last_start + self.config.interval).max(s.last_end + self.config.min_pause);
            if !stopping && s.in_flight.len() < self.config.max_in_flight.max(1) && now >= due {
                let epoch = self.start(&mut s, now);
                self.barriers.request(epoch);
                self.control.wake_all();
            }
            self.abort_expired(&mut s, now);
            let wait = due
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            match self.acks.recv_timeout(wait) {
                Ok(ack) => self.take(&mut s, ack)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let all_ended = s.finished.iter().all(Option::is_some);
        if all_ended && !stopping && !self.control.is_cancelled() {
            // Bounded input read to its end: one more checkpoint covers the
            // output written after the last barrier.
            let epoch = s.next_epoch;
            let parts: Vec<&Ack> = s.finished.iter().flatten().collect();
            let state = self.snapshots(&parts);
            let tokens = std::mem::take(&mut s.carried);
            match self.complete(epoch, Instant::now(), state, tokens, true) {
                Ok(()) => {}
                Err(Failed::Write(e, _)) => {
                    return Err(Error::Other(format!(
                        "the final checkpoint {epoch} failed, its output is not committed: {e}"
                    )));
                }
                Err(Failed::Commit(e)) => return Err(e),
            }
        }
        Ok(())
    }

    fn start(&self, s: &mut State, now: Instant) -> Epoch {
        let epoch = s.next_epoch;
        s.next_epoch += 1;
        s.last_start = now;
        s.in_flight.insert(
            epoch,
            InFlight {
                started: now,
                acks: (0..self.tasks).map(|_| None).collect(),
            },
        );
        epoch
    }

    fn abort_expired(&self, s: &mut State, now: Instant) {
        let expired: Vec<Epoch> = s
            .in_flight
            .iter()
            .filter(|(_, f)| now.duration_since(f.started) >= self.config.timeout)
            .map(|(e, _)| *e)
            .collect();
        for epoch in expired {
            self.abort(s, epoch);
            *self
                .stats
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(format!(
                "checkpoint {epoch} timed out after {:?}",
                self.config.timeout
            ));
            s.last_end = now;
        }
    }

    /// Drops epoch `epoch`'s snapshots, keeping its sink tokens for the
    /// next checkpoint.
    fn abort(&self, s: &mut State, epoch: Epoch) {
        if let Some(f) = s.in_flight.remove(&epoch) {
            self.stats.aborted.fetch_add(1, Relaxed);
            for ack in f.acks.into_iter().flatten() {
                s.carried.extend(ack.tokens);
            }
        }
    }

    fn take(&self, s: &mut State, mut ack: Ack) -> Result<()> {
        let task = ack.task;
        if ack.finished {
            s.carried.append(&mut ack.tokens);
            s.finished[task] = Some(ack);
        } else if let Some(f) = s.in_flight.get_mut(&ack.epoch) {
            f.acks[task] = Some(ack);
        } else {
            // An epoch already aborted: its output goes with the next one.
            s.carried.append(&mut ack.tokens);
            return Ok(());
        }
        // The oldest epoch may be complete now; a later one cannot be
        // before it (every task sees barriers in order).
        while let Some((&epoch, f)) = s.in_flight.first_key_value() {
            let parts: Option<Vec<&Ack>> = (0..self.tasks)
                .map(|t| {
                    f.acks[t].as_ref().or_else(|| {
                        // Ended before this barrier reached it.
                        s.finished[t].as_ref().filter(|a| a.epoch < epoch)
                    })
                })
                .collect();
            let Some(parts) = parts else { break };
            let state = self.snapshots(&parts);
            let started = f.started;
            let f = s
                .in_flight
                .remove(&epoch)
                .expect("the first epoch in flight");
            let mut tokens: Vec<SinkToken> = f
                .acks
                .into_iter()
                .flatten()
                .flat_map(|a| a.tokens)
                .collect();
            let (now_due, later): (Vec<SinkToken>, Vec<SinkToken>) = std::mem::take(&mut s.carried)
                .into_iter()
                .partition(|t| t.epoch <= epoch);
            s.carried = later;
            tokens.extend(now_due);
            match self.complete(epoch, started, state, tokens, false) {
                Ok(()) => {}
                Err(Failed::Write(e, tokens)) => {
                    // The next checkpoint carries this one's output.
                    s.carried.extend(tokens);
                    self.stats.failed.fetch_add(1, Relaxed);
                    *self
                        .stats
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("checkpoint {epoch} failed: {e}"));
                }
                Err(Failed::Commit(e)) => return Err(e),
            }
            s.last_end = Instant::now();
        }
        Ok(())
    }

    /// Every snapshot of `parts`, by owner.
    fn snapshots(&self, parts: &[&Ack]) -> CheckpointState {
        let mut state = CheckpointState::default();
        for ack in parts {
            for (owner, snapshot) in &ack.snapshots {
                state.snapshots.insert(owner.clone(), snapshot.clone());
            }
        }
        state
    }

    /// Prepares every sink's commit, writes checkpoint `epoch`, then
    /// commits.
    fn complete(
        &self,
        epoch: Epoch,
        started: Instant,
        mut state: CheckpointState,
        mut tokens: Vec<SinkToken>,
        finished: bool,
    ) -> std::result::Result<(), Failed> {
        tokens.sort_by_key(|t| (t.node, t.epoch, t.instance));
        let mut prepared = Vec::new();
        for (node, committer) in &self.committers {
            let mine: Vec<Snapshot> = tokens
                .iter()
                .filter(|t| t.node == *node)
                .map(|t| t.token.clone())
                .collect();
            match committer.prepare(epoch, &mine) {
                Ok(p) => prepared.push((*node, p)),
                Err(e) => return Err(Failed::Write(e, tokens)),
            }
        }
        for (node, p) in &prepared {
            let owner = Owner {
                role: Role::Commit,
                node: self.node_ids[*node].clone(),
                instance: 0,
            };
            state.snapshots.insert(owner, p.clone());
        }
        let size = match self.store.write(
            epoch,
            &self.fingerprint,
            &self.parallelism,
            finished,
            &state,
        ) {
            Ok(b) => b,
            Err(e) => return Err(Failed::Write(e, tokens)),
        };
        for ((_, committer), (node, p)) in self.committers.iter().zip(&prepared) {
            committer.commit(epoch, p).map_err(|e| {
                Failed::Commit(Error::Other(format!(
                    "commit of checkpoint {epoch} to {}: {e}",
                    self.node_ids[*node]
                )))
            })?;
        }
        let committed_at = millrace_core::time::now_ns();
        let mut latency = self
            .stats
            .committed_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for t in &tokens {
            for &entered in &t.entered {
                let _ = latency.record_n((committed_at - entered).max(0) as u64, t.weight);
            }
        }
        drop(latency);
        self.stats.completed.fetch_add(1, Relaxed);
        self.stats.latest.store(epoch, Relaxed);
        self.stats.latest_bytes.store(size.state, Relaxed);
        self.stats.latest_committed_ns.store(committed_at, Relaxed);
        self.stats.written_bytes.fetch_add(size.written, Relaxed);
        let us = started.elapsed().as_micros().max(1) as u64;
        self.stats
            .duration_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(us);
        // Retention failing leaves extra checkpoints, never a wrong one.
        if let Err(e) = self.store.retain(self.config.retain) {
            *self
                .stats
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) =
                Some(format!("cannot delete old checkpoints: {e}"));
        }
        Ok(())
    }
}

/// Why a checkpoint did not complete.
enum Failed {
    /// Nothing was made visible; the tokens go to the next checkpoint.
    Write(Error, Vec<SinkToken>),
    /// The checkpoint is complete but a sink could not commit it.
    Commit(Error),
}
