//! A task: one instance of a fused chain — a head (a source, or the input
//! gate of several channels) and the nodes fused after it with no queue
//! between them: a tree of operators and sinks, each reading the head or one
//! node before it, each node's output also routed to the next tasks.
//!
//! Tasks are polled by workers and never block: with input waiting and room
//! downstream a poll does a bounded amount of work; with output held back by
//! a full channel it reports `Backpressured` and reads nothing more.
//!
//! This module holds the `Task` trait and `DataflowTask`, which runs the
//! fused tree; the source head is in `source_head`, the fused nodes in
//! `stage`, the sink at the end of a branch in `sink_stage`.

mod sink_stage;
mod source_head;
mod stage;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use millrace_core::time::now_ns;
use millrace_core::{BarrierId, Message, OperatorId, Result, Snapshot};

use crate::checkpoint::{Ack, Owner, Role, SinkToken, TaskCheckpoint, counters};
use crate::gate::{GateEvent, InputGate};
use crate::metrics::TaskTimes;
use crate::output::OutputRouter;
use crate::trace::{StageId, Trace, Traced};

pub use sink_stage::SinkStage;
pub use source_head::SourceHead;
pub use stage::{ChainOp, LateStage, Stage, StageWork};
use stage::{LateMessage, pass_late, run_operator};

/// What a poll did, and when the task wants polling again.
pub enum TaskPoll {
    /// Did some work; poll again soon.
    Progress,
    /// Nothing to do until woken, or until `wake_at_ns` if given.
    Idle { wake_at_ns: Option<i64> },
    /// Output is held back by a full channel; the consumer will wake us.
    Backpressured,
    /// Finished (sent `End`); never poll again.
    Done,
}

pub trait Task: Send {
    fn poll(&mut self) -> Result<TaskPoll>;
    /// The operator a panic should be blamed on.
    fn current_operator(&self) -> String;
    /// Publishes end-of-life metrics (idempotent).
    fn finish_metrics(&mut self);
    /// Whether the task was sent window results it has not yet taken in.
    fn is_urgent(&self) -> bool {
        false
    }
}

/// `DataflowTask::current` while the source reader runs.
const HEAD: usize = usize::MAX;

/// How many input messages one poll of a task reading channels may process
/// before yielding the worker (a source reads one batch per poll).
const POLL_BUDGET: usize = 16;

/// Where a task's input comes from: a source it reads itself, or the
/// channels of the tasks before it, merged by an input gate.
pub enum Head {
    Source(Box<SourceHead>),
    Gate(InputGate),
}

/// A task instance: its head and the fused tree of stages after it, run
/// message by message within one poll.
pub struct DataflowTask {
    pub name: String,
    pub head: Head,
    /// Exchanges fed by the head itself (a source that other tasks read).
    head_routers: Vec<OutputRouter>,
    /// The fused nodes, each after the stage it reads.
    stages: Vec<Stage>,
    pub times: Arc<TaskTimes>,
    backpressured_since: Option<i64>,
    done: bool,
    finished: bool,
    /// Index in `stages` of the node running now (`HEAD` = the source,
    /// `stages.len()` = the head's routers).
    current: usize,
    scratch: Vec<(usize, Message)>,
    /// What each stage emitted in the current call, until the last stage
    /// reading it takes it (the head's messages are `run_chain`'s input).
    emitted: Vec<Vec<Message>>,
    /// What each operator stage put on its late outputs in the current call.
    late_emitted: Vec<Vec<LateMessage>>,
    /// In a traced step (`trace.rs`), each stage's trace: the trace of
    /// what it read, stamped when it finished. What it emits carries it.
    stage_traces: Vec<Traced>,
    /// The last stage that reads the head (index 0) or stage s (index
    /// s + 1): it takes the messages, earlier readers get copies. Late
    /// stages read `late_emitted` instead, and are not counted.
    last_reader: Vec<Option<usize>>,
    /// What this task sends now carries window results or follows from
    /// them: set when an operator emits rows on a watermark, or when urgent
    /// input is taken in; cleared once the input is drained (a source: at
    /// each read).
    urgent: bool,
    /// Scratch of [`Self::interest`]: at 0 the head's readers', at s + 1
    /// stage s's readers' smallest interest.
    interest_after: Vec<i64>,
    /// Set when the run checkpoints.
    checkpoint: Option<Checkpointing>,
    /// The last boundary a closing watermark was traced at
    /// (`Self::trace_closing_watermark`).
    traced_boundary: i64,
}

/// What a task of a checkpointing run needs to acknowledge barriers.
pub struct Checkpointing {
    pub(crate) run: TaskCheckpoint,
    pub instance: usize,
    /// The head's plan node, when it is a source.
    pub source: Option<OperatorId>,
    /// Each stage's plan node: its id and index.
    pub stages: Vec<(OperatorId, usize)>,
    /// The last barrier that passed.
    pub last_epoch: BarrierId,
}

/// Snapshots by owner, as a task gathers them for an acknowledgement.
type Parts = Vec<(Owner, Snapshot)>;

/// A barrier or the end, as it enters a task's stages.
enum Mark {
    Barrier(BarrierId),
    End,
}

impl DataflowTask {
    /// `stages` must come after the stage each reads.
    pub fn new(
        name: String,
        head: Head,
        head_routers: Vec<OutputRouter>,
        stages: Vec<Stage>,
        times: Arc<TaskTimes>,
    ) -> Self {
        let mut last_reader = vec![None; stages.len() + 1];
        for (s, stage) in stages.iter().enumerate() {
            debug_assert!(
                stage.reads.is_none_or(|r| r < s),
                "a stage reads a later one"
            );
            if !matches!(stage.work, StageWork::Late(_)) {
                last_reader[stage.reads.map_or(0, |r| r + 1)] = Some(s);
            }
        }
        DataflowTask {
            name,
            head,
            emitted: vec![Vec::new(); stages.len()],
            late_emitted: (0..stages.len()).map(|_| Vec::new()).collect(),
            stage_traces: vec![None; stages.len()],
            head_routers,
            stages,
            times,
            backpressured_since: None,
            done: false,
            finished: false,
            current: 0,
            scratch: Vec::new(),
            urgent: false,
            last_reader,
            interest_after: Vec::new(),
            checkpoint: None,
            traced_boundary: i64::MIN,
        }
    }

    /// Makes the task take part in the run's checkpoints.
    pub fn with_checkpoint(mut self, checkpoint: Checkpointing) -> Self {
        for stage in &mut self.stages {
            match &mut stage.work {
                StageWork::Operator(op) => op.checkpoint = true,
                StageWork::Sink(sink) => sink.last_epoch = checkpoint.last_epoch,
                StageWork::Late(_) => {}
            }
        }
        self.checkpoint = Some(checkpoint);
        self
    }

    /// The barrier or end among `items` (at most one: a head yields one
    /// per step) when the run checkpoints, with the source's snapshot
    /// taken before the stages run.
    fn mark(&self, items: &[(usize, Message)]) -> Result<Option<(Mark, Parts)>> {
        let Some(c) = &self.checkpoint else {
            return Ok(None);
        };
        let Some(mark) = items.iter().find_map(|(_, m)| match m {
            Message::Barrier(id) => Some(Mark::Barrier(*id)),
            Message::End => Some(Mark::End),
            _ => None,
        }) else {
            return Ok(None);
        };
        let mut parts = Vec::new();
        if let (Head::Source(src), Some(node)) = (&self.head, &c.source) {
            let (position, progress) = src.snapshot().map_err(|e| e.in_operator(&src.name))?;
            let owner = |role| Owner {
                role,
                node: node.clone(),
                instance: c.instance,
            };
            parts.push((owner(Role::Position), position));
            parts.push((owner(Role::Progress), progress));
        }
        Ok(Some((mark, parts)))
    }

    /// Sends the coordinator what the stages took as `mark` passed them.
    fn acknowledge(&mut self, mark: Mark, mut snapshots: Parts) {
        let Some(c) = &mut self.checkpoint else {
            return;
        };
        let mut tokens = Vec::new();
        for (stage, (node, index)) in self.stages.iter_mut().zip(&c.stages) {
            match &mut stage.work {
                StageWork::Operator(op) => {
                    let owner = |role| Owner {
                        role,
                        node: node.clone(),
                        instance: c.instance,
                    };
                    if let Some(snapshot) = op.taken.take()
                        && !snapshot.is_empty()
                    {
                        snapshots.push((owner(Role::Operator), snapshot));
                    }
                    let counters = counters(op.metrics.late_rows.load(Relaxed));
                    if !counters.is_empty() {
                        snapshots.push((owner(Role::Counters), counters));
                    }
                }
                StageWork::Sink(sink) => {
                    if let Some((epoch, token, sample)) = sink.taken.take() {
                        tokens.push(SinkToken {
                            node: *index,
                            instance: c.instance,
                            epoch,
                            token,
                            entered: sample.kept,
                            weight: sample.weight,
                        });
                    }
                }
                StageWork::Late(_) => {}
            }
        }
        let (epoch, finished) = match mark {
            Mark::Barrier(id) => {
                c.last_epoch = id;
                (id, false)
            }
            Mark::End => (c.last_epoch, true),
        };
        // A coordinator that is gone has failed the run already.
        let _ = c.run.acks.send(Ack {
            task: c.run.task,
            epoch,
            finished,
            snapshots,
            tokens,
        });
    }

    /// Pushes the head's messages through the fused stages, each stage's
    /// output to the stages that read it and to its routers. Messages are
    /// copied (sharing the batches' buffers) only for all but their last
    /// reader. `trace`: the head's messages are traced; what follows from
    /// them carries the trace, stamped by each stage it passes.
    /// `clock` is the time the head's messages were ready; each stage's
    /// busy time runs from the previous stage's end to its own, one clock
    /// read per stage: on small batches clock reads are a noticeable share
    /// of the work, so each stage's end is the next one's start. A stage's
    /// routing is thus counted in the busy time of the stage after it.
    fn run_chain(
        &mut self,
        mut items: Vec<(usize, Message)>,
        trace: Traced,
        clock: &mut i64,
    ) -> Result<()> {
        self.current = self.stages.len();
        let now = *clock;
        let head_trace = trace.as_deref();
        if !self.head_routers.is_empty() {
            // Only a source head has routers: its messages are all input 0.
            let routers = &mut self.head_routers;
            if self.last_reader[0].is_some() {
                let copies = items.iter().map(|(_, m)| m.clone());
                route(routers, copies, head_trace, &mut self.done, now)?;
            } else {
                let msgs = std::mem::take(&mut items).into_iter().map(|(_, m)| m);
                route(routers, msgs, head_trace, &mut self.done, now)?;
            }
        }
        for s in 0..self.stages.len() {
            self.current = s;
            let reads = self.stages[s].reads;
            let read_later = self.last_reader[s + 1].is_some();
            let read_trace = match reads {
                None => head_trace,
                Some(r) => self.stage_traces[r].as_deref(),
            };
            if let StageWork::Late(late) = &self.stages[s].work {
                let from = reads.expect("a late output reads its operator's stage");
                let out = pass_late(late, &self.late_emitted[from]);
                let stage = self.stages[s].trace_stage();
                self.stage_traces[s] = read_trace.map(|t| t.stamped(stage, *clock));
                self.finish_stage(s, out, read_later, *clock)?;
                continue;
            }
            let last = self.last_reader[reads.map_or(0, |r| r + 1)] == Some(s);
            let input: Vec<(usize, Message)> = match reads {
                None if last => std::mem::take(&mut items),
                None => items.clone(),
                Some(r) if last => std::mem::take(&mut self.emitted[r])
                    .into_iter()
                    .map(|m| (0, m))
                    .collect(),
                Some(r) => self.emitted[r].iter().map(|m| (0, m.clone())).collect(),
            };
            let stage = &mut self.stages[s];
            let out = match &mut stage.work {
                StageWork::Operator(op) => run_operator(
                    op,
                    input,
                    &mut self.urgent,
                    clock,
                    &mut self.late_emitted[s],
                )?,
                StageWork::Late(_) => unreachable!("late stages are run above"),
                StageWork::Sink(sink) => {
                    for (_, msg) in input {
                        self.done |= matches!(msg, Message::End);
                        if let Err(e) = sink.deliver(msg, read_trace, clock) {
                            return Err(e.in_operator(&sink.name));
                        }
                    }
                    Vec::new()
                }
            };
            // A sink emits nothing: its trace is finished where it
            // delivers.
            if let (Some(t), false) = (read_trace, matches!(stage.work, StageWork::Sink(_))) {
                self.stage_traces[s] = Some(t.stamped(stage.trace_stage(), *clock));
            }
            self.finish_stage(s, out, read_later, *clock)?;
        }
        if trace.is_some() {
            self.stage_traces.fill(None);
        }
        for e in &mut self.emitted {
            e.clear();
        }
        for e in &mut self.late_emitted {
            e.clear();
        }
        self.current = self.stages.len();
        Ok(())
    }

    /// Sends what stage `s` emitted to its routers, and keeps it for the
    /// stages that read it (copies to the routers if one does).
    fn finish_stage(
        &mut self,
        s: usize,
        mut out: Vec<Message>,
        read_later: bool,
        now: i64,
    ) -> Result<()> {
        let stage = &mut self.stages[s];
        let trace = self.stage_traces[s].as_deref();
        if !stage.routers.is_empty() {
            if read_later {
                let copies = out.iter().cloned();
                route(&mut stage.routers, copies, trace, &mut self.done, now)?;
            } else {
                route(
                    &mut stage.routers,
                    out.drain(..),
                    trace,
                    &mut self.done,
                    now,
                )?;
            }
        }
        self.emitted[s] = out;
        Ok(())
    }

    fn routers_mut(&mut self) -> impl Iterator<Item = &mut OutputRouter> {
        self.head_routers
            .iter_mut()
            .chain(self.stages.iter_mut().flat_map(|s| s.routers.iter_mut()))
    }

    /// Sends what the routers may send at `now`; false when a channel is
    /// full.
    fn flush(&mut self, now: i64) -> bool {
        let urgent = self.urgent;
        let mut all = true;
        for r in self.routers_mut() {
            all &= r.flush(urgent, now);
        }
        if !all {
            // Held back: no input is read until room frees, so nothing can
            // join the pending batches meanwhile, and a backpressured task
            // has no timer to send them at their deadline. They go now.
            for r in self.routers_mut() {
                r.release_all();
                r.flush(urgent, now);
            }
        }
        all
    }

    /// The smallest watermark that can change anything in this task or
    /// behind it: each node's `Operator::watermark_interest`, given what
    /// the nodes and exchanges after it care about (a sink: nothing).
    fn interest(&mut self) -> i64 {
        let after = &mut self.interest_after;
        after.clear();
        after.resize(self.stages.len() + 1, i64::MAX);
        for (s, stage) in self.stages.iter().enumerate().rev() {
            let downstream = stage
                .routers
                .iter()
                .map(OutputRouter::interest)
                .fold(after[s + 1], i64::min);
            let own = match &stage.work {
                StageWork::Operator(op) => op.op.watermark_interest(downstream),
                StageWork::Late(_) | StageWork::Sink(_) => i64::MAX,
            };
            let parent = stage.reads.map_or(0, |r| r + 1);
            after[parent] = after[parent].min(own);
        }
        after[0]
    }

    /// A trace for a source step that `trace_every_ns` did not sample but
    /// whose watermark reaches what a node behind it waits for (a window
    /// to close, say): the results it makes final are then always
    /// explained, however rare they are. Once per such boundary: until the
    /// nodes behind say what they wait for next, later watermarks reach it
    /// too. Nodes that do not say (`i64::MIN`: every watermark may matter)
    /// get sampled traces only. `read_ns`: when the step's read ended.
    fn trace_closing_watermark(&mut self, items: &[(usize, Message)], read_ns: i64) -> Traced {
        let Head::Source(src) = &self.head else {
            return None;
        };
        src.trace_every_ns?;
        let stage = src.metrics.node as StageId;
        let wm = items.iter().find_map(|(_, m)| match m {
            Message::Watermark(wm) => Some(*wm),
            _ => None,
        })?;
        let fused = self.interest();
        let interest = (self.head_routers.iter())
            .map(OutputRouter::interest)
            .fold(fused, i64::min);
        if interest == i64::MIN || interest == self.traced_boundary || wm.time_ms < interest {
            return None;
        }
        self.traced_boundary = interest;
        // It follows the row that advanced the watermark: the newest read
        // with it, which the rows follow too (`Trace::origin_for`).
        Some(Trace::start(wm.entered_ns, stage, read_ns))
    }

    /// When the earliest batch pending in an exchange must leave.
    fn pending_deadline(&self) -> Option<i64> {
        self.head_routers
            .iter()
            .chain(self.stages.iter().flat_map(|s| s.routers.iter()))
            .filter_map(OutputRouter::deadline)
            .min()
    }
}

impl Task for DataflowTask {
    fn poll(&mut self) -> Result<TaskPoll> {
        let started = now_ns();
        if !self.flush(started) {
            self.backpressured_since.get_or_insert(started);
            return Ok(TaskPoll::Backpressured);
        }
        if let Some(since) = self.backpressured_since.take() {
            let waited = (started - since) as u64;
            self.times.backpressured_ns.fetch_add(waited, Relaxed);
            if let Head::Source(src) = &mut self.head {
                src.pressure_ns += waited;
            }
        }
        if self.done {
            return Ok(TaskPoll::Done);
        }
        if let Head::Gate(gate) = &mut self.head
            && gate.take_urgent()
        {
            self.urgent = true;
        }
        let mut progressed = false;
        let mut wake_at = None;
        // The end of one step is the start of the next.
        let mut clock = started;
        for _ in 0..POLL_BUDGET {
            let step_started = clock;
            let mut items = std::mem::take(&mut self.scratch);
            // A data message from a channel: (channel, rows), to tell its
            // producer what the message cost here.
            let mut served = None;
            let mut trace = None;
            match &mut self.head {
                Head::Source(src) => {
                    self.current = HEAD;
                    self.urgent = false;
                    if let Some(wake) = src
                        .step(&mut items, &mut clock)
                        .map_err(|e| e.in_operator(&src.name))?
                    {
                        wake_at = wake;
                        self.scratch = items;
                        break;
                    }
                    trace = src.traced.take();
                }
                Head::Gate(gate) => match gate.next_event() {
                    None => {
                        self.urgent = false;
                        self.scratch = items;
                        break;
                    }
                    Some(event) => items.push(match event {
                        GateEvent::Data {
                            input,
                            channel,
                            batch,
                            trace: traced,
                        } => {
                            // Past the take: another worker may have sent
                            // these rows after this step began, and a sink
                            // measures their latency from the clock.
                            clock = now_ns();
                            served = Some((channel, batch.num_rows()));
                            trace = traced;
                            (input, Message::Data(batch))
                        }
                        GateEvent::Watermark(wm, traced) => {
                            if traced.is_some() {
                                // As for data: it may have been sent after
                                // this step began.
                                clock = now_ns();
                            }
                            trace = traced;
                            (0, Message::Watermark(wm))
                        }
                        GateEvent::Barrier(id) => {
                            let held = gate.take_held_ns();
                            self.times.aligning_ns.fetch_add(held, Relaxed);
                            (0, Message::Barrier(id))
                        }
                        GateEvent::Idle => (0, Message::Idle),
                        GateEvent::End(traced) => {
                            trace = traced;
                            (0, Message::End)
                        }
                    }),
                },
            }
            if trace.is_none() {
                trace = self.trace_closing_watermark(&items, clock);
            }
            progressed = true;
            // Rows a source read, for its batch controller.
            let rows: usize = match self.head {
                Head::Source(_) => items.iter().map(|(_, m)| m.rows()).sum(),
                Head::Gate(_) => 0,
            };
            let mark = self.mark(&items)?;
            self.run_chain(items, trace, &mut clock)?;
            if let Some((mark, parts)) = mark {
                self.acknowledge(mark, parts);
            }
            let flushed = self.flush(clock);
            clock = now_ns();
            if let (Head::Gate(gate), Some((channel, rows))) = (&self.head, served) {
                gate.record_service(channel, rows, (clock - step_started) as u64);
            }
            if let Head::Source(src) = &mut self.head {
                // Time spent reading counts from before the read; time held
                // back by a slow consumer is reported apart, so batches can
                // grow when downstream cannot keep up.
                let busy = (clock - step_started) as u64;
                src.batching
                    .observe(rows, busy, std::mem::take(&mut src.pressure_ns), clock);
            }
            if !flushed {
                self.backpressured_since = Some(clock);
                break;
            }
            // A source reads one batch per poll. Its step already runs the
            // batch through every fused node; reading on (when the linger
            // has passed meanwhile) would hold back this worker's other
            // tasks, which take what the step sent (docs/benchmarks.md,
            // "Fusion and one read per poll").
            if self.done || matches!(self.head, Head::Source(_)) {
                break;
            }
        }
        if progressed {
            if matches!(self.head, Head::Gate(_)) {
                let interest = self.interest();
                if let Head::Gate(gate) = &self.head {
                    gate.publish_interest(interest);
                }
            }
            self.times
                .busy_ns
                .fetch_add((clock - started) as u64, Relaxed);
            return Ok(TaskPoll::Progress);
        }
        // Batches waiting in an exchange leave by their deadline even if
        // no input comes meanwhile.
        let wake_at = match (wake_at, self.pending_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(TaskPoll::Idle {
            wake_at_ns: wake_at,
        })
    }

    fn is_urgent(&self) -> bool {
        match &self.head {
            Head::Gate(gate) => gate.is_urgent(),
            Head::Source(_) => false,
        }
    }

    fn current_operator(&self) -> String {
        match (&self.head, self.current) {
            (Head::Source(s), HEAD) => s.name.clone(),
            (_, i) if i < self.stages.len() => self.stages[i].name().to_string(),
            _ => self.name.clone(),
        }
    }

    fn finish_metrics(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let now = now_ns();
        if let Some(since) = self.backpressured_since.take() {
            self.times
                .backpressured_ns
                .fetch_add((now - since) as u64, Relaxed);
        }
        self.times.ended_ns.store(now, Relaxed);
        for stage in &mut self.stages {
            match &mut stage.work {
                StageWork::Operator(op) => {
                    *op.metrics.state.lock().unwrap_or_else(|e| e.into_inner()) =
                        op.op.peak_state();
                }
                StageWork::Sink(sink) => sink.publish_latency(now),
                StageWork::Late(_) => {}
            }
        }
        if let Head::Source(src) = &self.head {
            src.publish_progress();
        }
    }
}

/// Hands each message to every router of `routers` (not empty): copies to
/// all but the last, which takes the message; each with its copy of
/// `trace` when the step is traced. Notes when `End` leaves the task.
fn route(
    routers: &mut [OutputRouter],
    msgs: impl Iterator<Item = Message>,
    trace: Option<&Trace>,
    done: &mut bool,
    now_ns: i64,
) -> Result<()> {
    let Some((last, others)) = routers.split_last_mut() else {
        return Ok(());
    };
    for msg in msgs {
        *done |= matches!(msg, Message::End);
        let traced = trace.and_then(|t| t.for_message(&msg));
        for router in others.iter_mut() {
            router.send(msg.clone(), traced.clone(), now_ns)?;
        }
        last.send(msg, traced, now_ns)?;
    }
    Ok(())
}
