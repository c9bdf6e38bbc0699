//! A task: one instance of a fused chain — a head (a source, or the input
//! gate of several channels) and the nodes fused after it with no queue
//! between them: a tree of operators and sinks, each reading the head or one
//! node before it, each node's output also routed to the next tasks.
//!
//! Tasks are polled by workers and never block: with input waiting and room
//! downstream a poll does a bounded amount of work; with output held back by
//! a full channel it reports `Backpressured` and reads nothing more.
//!
//! Source heads own the source-side rules: watermark = max event time −
//! bound after every batch, `Idle` after the idle timeout without data,
//! barriers every N rows, `End` when the reader is exhausted.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use arrow::array::Array;
use hdrhistogram::Histogram;
use millrace_core::time::{event_times_ms, now_ns};
use millrace_core::{
    BarrierId, Emitter, Error, Message, Operator, Result, SinkWriter, SourcePoll, SourceReader,
    Watermark, entered_column, strip_entered,
};

use crate::alignment::SourceAlignment;
use crate::batching::BatchController;
use crate::gate::{GateEvent, InputGate};
use crate::metrics::{NodeMetrics, OperatorMetrics, TaskTimes, new_latency_histogram};
use crate::output::OutputRouter;
use crate::worker::StopHandle;

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

/// How soon a source that is pending without a wake-up time is polled again.
const UNTIMED_SOURCE_RETRY_NS: i64 = 1_000_000;

/// How soon a source instance held back by alignment looks again.
const ALIGNMENT_RETRY_NS: i64 = 50_000;

/// `DataflowTask::current` while the source reader runs.
const HEAD: usize = usize::MAX;

/// How many input messages one poll of a task reading channels may process
/// before yielding the worker (a source reads one batch per poll).
const POLL_BUDGET: usize = 16;

/// One operator of a chain with its counters.
pub struct ChainOp {
    pub name: String,
    pub op: Box<dyn Operator>,
    pub metrics: Arc<OperatorMetrics>,
    /// A late output reads this operator: its late rows are kept and
    /// passed on, not only counted.
    pub keep_late: bool,
}

/// The late output of one input of the operator stage it reads: the rows
/// the operator left out as late, then its barriers and its end, in the
/// order the operator reported them. It carries no watermarks (the rows
/// are behind them by definition).
pub struct LateStage {
    pub name: String,
    pub input: usize,
    pub metrics: Arc<OperatorMetrics>,
}

/// What a fused node does with the messages it reads.
pub enum StageWork {
    Operator(ChainOp),
    Late(LateStage),
    Sink(SinkStage),
}

/// A message on an operator's late outputs: rows of one input (`Some`), or
/// a barrier or the end, for every input (`None`).
type LateMessage = (Option<usize>, Message);

/// One fused node of a task: its work, whose output it reads, and the
/// exchanges its own output feeds.
pub struct Stage {
    pub work: StageWork,
    /// The stage it reads (`None`: the head).
    pub reads: Option<usize>,
    pub routers: Vec<OutputRouter>,
}

impl Stage {
    fn name(&self) -> &str {
        match &self.work {
            StageWork::Operator(op) => &op.name,
            StageWork::Late(late) => &late.name,
            StageWork::Sink(sink) => &sink.name,
        }
    }
}

/// The source side of a source task.
pub struct SourceHead {
    pub name: String,
    pub reader: Box<dyn SourceReader>,
    pub node: Arc<NodeMetrics>,
    pub metrics: Arc<OperatorMetrics>,
    pub columns: usize,
    /// (event-time column index and name, out-of-orderness bound ms, idle timeout).
    pub event_time: Option<(usize, String, i64, Option<Duration>)>,
    /// Decides how many rows to ask the reader for, and how long to pause
    /// after a short read (the linger).
    pub batching: BatchController,
    /// After a short read, the reader is not asked again before this time.
    pub resume_at_ns: Option<i64>,
    /// Backpressured time not yet reported to `batching`.
    pub pressure_ns: u64,
    pub barrier_every_rows: Option<u64>,
    pub max_event_time: i64,
    pub last_watermark: i64,
    pub last_data_ns: i64,
    pub idle_declared: bool,
    pub rows_since_barrier: u64,
    pub next_barrier: BarrierId,
    /// Highest barrier id any source of the run has injected. A source with
    /// nothing to read catches up to it, so a quiet or slow source never
    /// holds an alignment (and with it the other inputs) hostage.
    pub barriers_injected: Arc<AtomicU64>,
    pub exhausted: bool,
    /// Set from outside to end the stream early (graceful stop).
    pub stop: StopHandle,
    /// The source's instances and this one's index among them, when they
    /// are kept within a drift of each other.
    pub alignment: Option<(Arc<SourceAlignment>, usize)>,
}

impl SourceHead {
    /// Tells the sibling instances where this one is (`i64::MAX`: it holds
    /// nobody back).
    fn publish(&self, wm: i64) {
        if let Some((alignment, instance)) = &self.alignment {
            alignment.publish(*instance, wm);
        }
    }

    fn inject_barrier(&mut self, out: &mut Vec<(usize, Message)>) {
        out.push((0, Message::Barrier(self.next_barrier)));
        self.barriers_injected.fetch_max(self.next_barrier, Relaxed);
        self.next_barrier += 1;
        self.rows_since_barrier = 0;
    }

    /// Produces the next messages, or says when to come back. `clock` is
    /// the time the step started; a read moves it to when the read ended.
    fn step(
        &mut self,
        out: &mut Vec<(usize, Message)>,
        clock: &mut i64,
    ) -> Result<Option<Option<i64>>> {
        if self.exhausted {
            return Ok(Some(None));
        }
        if self.stop.is_stopped() {
            self.exhausted = true;
            self.publish(i64::MAX);
            out.push((0, Message::End));
            return Ok(None);
        }
        if let Some(at) = self.resume_at_ns {
            if *clock < at {
                return Ok(Some(Some(at)));
            }
            self.resume_at_ns = None;
        }
        if let Some((alignment, instance)) = &self.alignment
            && alignment.is_ahead(*instance, self.last_watermark)
        {
            // While waiting, keep up with the barriers the others inject,
            // or an aligning consumer would wait for this one's barrier
            // while the slow sibling waits for room behind it.
            if self.next_barrier <= self.barriers_injected.load(Relaxed) {
                self.inject_barrier(out);
                return Ok(None);
            }
            return Ok(Some(Some(now_ns() + ALIGNMENT_RETRY_NS)));
        }
        let mut max_rows = self.batching.size();
        if let Some(every) = self.barrier_every_rows {
            if self.rows_since_barrier >= every {
                self.inject_barrier(out);
                return Ok(None);
            }
            max_rows = max_rows.min((every - self.rows_since_barrier) as usize);
        }
        let started = *clock;
        let polled = self.reader.poll_batch(max_rows.max(1));
        let now = now_ns();
        *clock = now;
        self.metrics
            .busy_ns
            .fetch_add((now - started) as u64, Relaxed);
        match polled? {
            SourcePoll::Batch(batch) if batch.num_rows() > 0 => {
                if batch.num_columns() != self.columns + 1 || entered_column(&batch).is_none() {
                    return Err(Error::Other(format!(
                        "source produced a batch with {} columns, expected {} plus the entered column",
                        batch.num_columns(),
                        self.columns
                    )));
                }
                let rows = batch.num_rows();
                // Caught up with the input: let the next batch fill a while.
                let linger = self.batching.linger_ns();
                if rows < max_rows && linger > 0 {
                    self.resume_at_ns = Some(now.saturating_add(linger));
                }
                self.rows_since_barrier += rows as u64;
                self.metrics.rows_out.fetch_add(rows as u64, Relaxed);
                let watermark = match &self.event_time {
                    Some((idx, col, bound, _)) => {
                        let times = event_times_ms(batch.column(*idx), col)?;
                        if let Some(max) = times.iter().copied().max() {
                            self.max_event_time = self.max_event_time.max(max);
                        }
                        let wm = self.max_event_time.saturating_sub(*bound);
                        (wm > self.last_watermark).then_some(wm)
                    }
                    None => None,
                };
                let entered = entered_column(&batch)
                    .filter(|c| !c.is_empty())
                    .map(|c| c.value(c.len() - 1))
                    .unwrap_or(now);
                out.push((0, Message::Data(batch)));
                // Every batch, not only one that advances the watermark: a
                // pending instance published +∞ and must now count again.
                self.publish(watermark.unwrap_or(self.last_watermark));
                if let Some(wm) = watermark {
                    self.last_watermark = wm;
                    out.push((
                        0,
                        Message::Watermark(Watermark {
                            time_ms: wm,
                            entered_ns: entered,
                        }),
                    ));
                }
                self.last_data_ns = now;
                self.idle_declared = false;
                Ok(None)
            }
            // Progress without rows: poll again right away.
            SourcePoll::Batch(_) => Ok(None),
            SourcePoll::Pending { wake_at_ns } => {
                // Caught up with its input: nobody should wait for it.
                self.publish(i64::MAX);
                if self.next_barrier <= self.barriers_injected.load(Relaxed) {
                    self.inject_barrier(out);
                    return Ok(None);
                }
                // A reader without a timer is asked again within a millisecond.
                let wake_at_ns = Some(wake_at_ns.unwrap_or(now + UNTIMED_SOURCE_RETRY_NS));
                let idle_timeout = self.event_time.as_ref().and_then(|e| e.3);
                if let (Some(timeout), false) = (idle_timeout, self.idle_declared) {
                    let timeout_ns = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
                    let deadline = self.last_data_ns.saturating_add(timeout_ns);
                    if now >= deadline {
                        self.idle_declared = true;
                        out.push((0, Message::Idle));
                        return Ok(None);
                    }
                    let wake = wake_at_ns.map_or(deadline, |w| w.min(deadline));
                    return Ok(Some(Some(wake)));
                }
                Ok(Some(wake_at_ns))
            }
            SourcePoll::Exhausted => {
                self.exhausted = true;
                self.publish(i64::MAX);
                out.push((0, Message::End));
                Ok(None)
            }
        }
    }
}

pub enum Head {
    Source(Box<SourceHead>),
    Gate(InputGate),
}

/// The sink at the end of a chain: records latency, then writes.
pub struct SinkStage {
    pub name: String,
    pub writer: Box<dyn SinkWriter>,
    pub metrics: Arc<OperatorMetrics>,
    pub node: Arc<NodeMetrics>,
    pub latency: Histogram<u64>,
    /// Rows that entered before this time (the run's start plus its
    /// latency warm-up; set when the run starts) are written but not
    /// recorded in `latency`.
    pub record_from_ns: Arc<AtomicI64>,
}

impl SinkStage {
    pub fn new(
        name: String,
        writer: Box<dyn SinkWriter>,
        metrics: Arc<OperatorMetrics>,
        node: Arc<NodeMetrics>,
        record_from_ns: Arc<AtomicI64>,
    ) -> Self {
        SinkStage {
            name,
            writer,
            metrics,
            node,
            latency: new_latency_histogram(),
            record_from_ns,
        }
    }

    /// Takes one message; `clock` is when it arrived (the time the step
    /// before ended) and moves to when this one ended.
    fn deliver(&mut self, msg: Message, clock: &mut i64) -> Result<()> {
        let started = *clock;
        match msg {
            Message::Data(batch) => {
                let now = started;
                if let Some(entered) = entered_column(&batch) {
                    let from = self.record_from_ns.load(Relaxed);
                    for &e in entered.values().iter().filter(|e| **e >= from) {
                        self.latency.saturating_record((now - e).max(0) as u64);
                    }
                }
                self.metrics
                    .rows_in
                    .fetch_add(batch.num_rows() as u64, Relaxed);
                self.writer.write(&strip_entered(&batch))?;
            }
            Message::End => self.writer.finish()?,
            // Nothing to do: no clock read either (the next step's time
            // includes these few ns).
            Message::Watermark(_) | Message::Barrier(_) | Message::Idle => return Ok(()),
        }
        *clock = now_ns();
        self.metrics
            .busy_ns
            .fetch_add((*clock - started) as u64, Relaxed);
        Ok(())
    }
}

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
        }
    }

    /// Pushes the head's messages through the fused stages, each stage's
    /// output to the stages that read it and to its routers. Messages are
    /// copied (sharing the batches' buffers) only for all but their last
    /// reader.
    /// `clock` is the time the head's messages were ready; each stage's
    /// busy time runs from the previous stage's end to its own, one clock
    /// read per stage (reading it at both ends of every stage put
    /// `clock_gettime` at a quarter of q0's samples with one-row batches).
    /// A stage's routing is thus counted in the busy time of the stage
    /// after it.
    fn run_chain(&mut self, mut items: Vec<(usize, Message)>, clock: &mut i64) -> Result<()> {
        self.current = self.stages.len();
        let now = *clock;
        if !self.head_routers.is_empty() {
            // Only a source head has routers: its messages are all input 0.
            if self.last_reader[0].is_some() {
                let copies = items.iter().map(|(_, m)| m.clone());
                route(&mut self.head_routers, copies, &mut self.done, now)?;
            } else {
                let msgs = std::mem::take(&mut items).into_iter().map(|(_, m)| m);
                route(&mut self.head_routers, msgs, &mut self.done, now)?;
            }
        }
        for s in 0..self.stages.len() {
            self.current = s;
            let reads = self.stages[s].reads;
            let read_later = self.last_reader[s + 1].is_some();
            if let StageWork::Late(late) = &self.stages[s].work {
                let from = reads.expect("a late output reads its operator's stage");
                let out = pass_late(late, &self.late_emitted[from]);
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
                        if let Err(e) = sink.deliver(msg, clock) {
                            return Err(e.in_operator(&sink.name));
                        }
                    }
                    Vec::new()
                }
            };
            self.finish_stage(s, out, read_later, *clock)?;
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
        if !stage.routers.is_empty() {
            if read_later {
                let copies = out.iter().cloned();
                route(&mut stage.routers, copies, &mut self.done, now)?;
            } else {
                route(&mut stage.routers, out.drain(..), &mut self.done, now)?;
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
                        } => {
                            // Past the take: another worker may have sent
                            // these rows after this step began, and a sink
                            // measures their latency from the clock.
                            clock = now_ns();
                            served = Some((channel, batch.num_rows()));
                            (input, Message::Data(batch))
                        }
                        GateEvent::Watermark(wm) => (0, Message::Watermark(wm)),
                        GateEvent::Barrier(id) => (0, Message::Barrier(id)),
                        GateEvent::Idle => (0, Message::Idle),
                        GateEvent::End => (0, Message::End),
                    }),
                },
            }
            progressed = true;
            // Rows a source read, for its batch controller.
            let rows: usize = match self.head {
                Head::Source(_) => items.iter().map(|(_, m)| m.rows()).sum(),
                Head::Gate(_) => 0,
            };
            self.run_chain(items, &mut clock)?;
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
            // tasks, which take what the step sent (q7 at 10%: window
            // results p50 ~100 → ~88 µs with the source's two consumers
            // fused).
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
        for stage in &self.stages {
            match &stage.work {
                StageWork::Operator(op) => {
                    *op.metrics.state.lock().unwrap_or_else(|e| e.into_inner()) =
                        op.op.peak_state();
                }
                StageWork::Sink(sink) => sink.node.merge_latency(&sink.latency),
                StageWork::Late(_) => {}
            }
        }
        if let Head::Source(src) = &self.head {
            src.node.add_source_stats(src.reader.stats());
        }
    }
}

/// Runs one operator over `input`; what it emits. Sets `urgent` when it
/// emits rows on a watermark. With `keep_late`, appends to `late` the late
/// rows and, after them, each barrier and the end.
fn run_operator(
    stage: &mut ChainOp,
    input: Vec<(usize, Message)>,
    urgent: &mut bool,
    clock: &mut i64,
    late: &mut Vec<LateMessage>,
) -> Result<Vec<Message>> {
    let mut out = if stage.keep_late {
        Emitter::keeping_late()
    } else {
        Emitter::new()
    };
    let started = *clock;
    for (input, msg) in input {
        let late_control = match &msg {
            Message::Barrier(id) if stage.keep_late => Some(Message::Barrier(*id)),
            Message::End if stage.keep_late => Some(Message::End),
            _ => None,
        };
        let result = match msg {
            Message::Data(batch) => {
                stage
                    .metrics
                    .rows_in
                    .fetch_add(batch.num_rows() as u64, Relaxed);
                stage.op.on_data(input, batch, &mut out)
            }
            Message::Watermark(wm) => {
                let before = out.out.len();
                let result = stage.op.on_watermark(wm, &mut out);
                if out.out[before..]
                    .iter()
                    .any(|m| matches!(m, Message::Data(_)))
                {
                    *urgent = true;
                }
                result
            }
            Message::Barrier(id) => stage.op.on_barrier(id, &mut out),
            Message::Idle => {
                out.out.push(Message::Idle);
                Ok(())
            }
            Message::End => stage
                .op
                .on_end(&mut out)
                .map(|_| out.out.push(Message::End)),
        };
        result.map_err(|e| e.in_operator(&stage.name))?;
        if stage.keep_late {
            late.extend(
                out.take_late()
                    .into_iter()
                    .map(|(input, batch)| (Some(input), Message::Data(batch))),
            );
            late.extend(late_control.map(|m| (None, m)));
        }
    }
    *clock = now_ns();
    stage
        .metrics
        .busy_ns
        .fetch_add((*clock - started) as u64, Relaxed);
    if out.late_rows > 0 {
        stage.metrics.late_rows.fetch_add(out.late_rows, Relaxed);
    }
    let emitted: u64 = out.out.iter().map(|m| m.rows() as u64).sum();
    stage.metrics.rows_out.fetch_add(emitted, Relaxed);
    Ok(out.out)
}

/// The messages of one late output among everything its operator put on
/// its late outputs.
fn pass_late(stage: &LateStage, late: &[LateMessage]) -> Vec<Message> {
    let out: Vec<Message> = late
        .iter()
        .filter(|(input, _)| input.is_none_or(|i| i == stage.input))
        .map(|(_, m)| m.clone())
        .collect();
    let rows: u64 = out.iter().map(|m| m.rows() as u64).sum();
    stage.metrics.rows_in.fetch_add(rows, Relaxed);
    stage.metrics.rows_out.fetch_add(rows, Relaxed);
    out
}

/// Hands each message to every router of `routers` (not empty): copies to
/// all but the last, which takes the message. Notes when `End` leaves the
/// task.
fn route(
    routers: &mut [OutputRouter],
    msgs: impl Iterator<Item = Message>,
    done: &mut bool,
    now_ns: i64,
) -> Result<()> {
    let Some((last, others)) = routers.split_last_mut() else {
        return Ok(());
    };
    for msg in msgs {
        *done |= matches!(msg, Message::End);
        for router in others.iter_mut() {
            router.send(msg.clone(), now_ns)?;
        }
        last.send(msg, now_ns)?;
    }
    Ok(())
}
