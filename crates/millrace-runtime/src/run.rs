//! Runs a planned pipeline: creates channels and task instances, places
//! instances on pinned workers, waits for the end, and gathers the summary.
//!
//! Instance *i* of every chain runs on worker *i mod workers*, so a keyed
//! slice of the pipeline stays on one core and forward hops never cross
//! cores. Every factory is asked for its instance before any thread starts:
//! a source file that cannot be opened fails the run before it begins.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, mpsc};

use millrace_core::time::now_ns;
use millrace_core::{Error, OperatorId, Result, SinkCommitter};

use crate::alignment::SourceAlignment;
use crate::batching::{BatchController, BatchPolicy};
use crate::channel::Channel;
use crate::checkpoint::{
    Ack, Barriers, CheckpointConfig, CheckpointStats, CheckpointStore, Coordinator, Restored, Role,
    TaskCheckpoint, late_rows,
};
use crate::coalesce::ExchangeBatching;
use crate::exchange::key_indices;
use crate::gate::{InputChannel, InputGate};
use crate::graph::{Graph, NodeOp, PipelineConfig};
use crate::live::{LiveAttempt, LiveRun};
use crate::metrics::{NodeKind, NodeMetrics, OperatorMetrics, RunSummary, TaskTimes};
use crate::output::OutputRouter;
use crate::plan::{Chain, ChainEdge, Plan};
use crate::task::{
    ChainOp, Checkpointing, DataflowTask, Head, LateStage, SinkStage, SourceHead, Stage, StageWork,
    Task,
};
use crate::trace::{StageId, StageKind, TraceLog, TraceStage, TraceStages};
use crate::worker::{IdleStrategy, RunControl, StopHandle, Worker, WorkerWaker};

/// Plans the graph, wires its channels, builds every task instance, then
/// runs them on the workers until every task is done or one fails.
///
/// `started` is set once the workers start: an error before that is in
/// the pipeline or its checkpoint, and running again would not help.
/// How far one attempt at running a pipeline got, for the restart policy.
#[derive(Debug, Default)]
pub(crate) struct Attempt {
    /// Its tasks started (errors before are not worth a restart).
    pub started: bool,
    /// It completed a checkpoint of its own (a restart then continues from
    /// the latest; before, from where this attempt started).
    pub checkpointed: bool,
}

pub(crate) fn run(
    graph: &Graph,
    stop: StopHandle,
    live: &LiveRun,
    attempt: &mut Attempt,
) -> Result<RunSummary> {
    let plan = Plan::build(graph)?;
    let config = &graph.config;
    let max_par = plan.chains.iter().map(|c| c.parallelism).max().unwrap_or(1);
    let workers = config.workers.clamp(1, max_par);
    let wakers: Vec<WorkerWaker> = (0..workers).map(|_| WorkerWaker::default()).collect();
    let control = Arc::new(RunControl::default());
    for w in &wakers {
        control.register(w.clone());
    }
    let nodes = node_metrics(graph);
    let policy = batch_policy(config);
    let mut wiring = Wiring::connect(graph, &plan, policy, &wakers)?;
    let traces = config
        .latency_breakdown
        .map(|_| Arc::new(TraceLog::new(trace_stages(graph, &plan))));
    let checkpoints = match &config.checkpoint {
        Some(c) => Some(RunCheckpoints::prepare(graph, c)?),
        None => None,
    };
    // Sinks that stage their output for exactly-once commits, by node.
    let committers: Vec<usize> = checkpoints
        .iter()
        .flat_map(|c| c.committers.iter().map(|(n, _)| *n))
        .collect();
    let builder = TaskBuilder {
        graph,
        nodes: &nodes,
        policy,
        stop: stop.clone(),
        barriers: checkpoints
            .as_ref()
            .map_or_else(Default::default, |c| c.barriers.clone()),
        checkpoints: checkpoints.as_ref(),
        // Set when the run starts: no row is excluded from latency before then.
        record_latency_from: Arc::new(AtomicI64::new(i64::MIN)),
        traces: traces.clone(),
    };
    let tasks = builder.tasks(&plan, &mut wiring)?;
    let record_latency_from = builder.record_latency_from.clone();
    let times: Vec<Arc<TaskTimes>> = tasks.iter().map(|(_, t)| t.times.clone()).collect();
    let task_count = tasks.len();
    let per_worker = place(tasks, workers);
    // The tasks hold the only senders of acknowledgements now: the
    // coordinator ends when the last task is gone.
    let coordinator = checkpoints
        .map(|c| c.start(graph, task_count, stop, control.clone()))
        .transpose()?;
    live.begin(LiveAttempt::new(
        workers,
        nodes.clone(),
        graph
            .nodes
            .iter()
            .map(|n| n.inputs.iter().map(|e| e.from).collect())
            .collect(),
        wiring.channels.clone(),
        coordinator.as_ref().map(|(_, stats)| stats.clone()),
        traces.clone(),
    ));
    attempt.started = true;
    let elapsed = run_workers(
        config,
        per_worker,
        &wakers,
        &control,
        &record_latency_from,
        &times,
    );
    live.end_attempt();
    let stats = match coordinator {
        Some((handle, stats)) => {
            if handle.join().is_err() {
                control.fail(Error::Panic("the checkpoint coordinator panicked".into()));
            }
            attempt.checkpointed = stats.completed.load(std::sync::atomic::Ordering::Relaxed) > 0;
            Some(stats)
        }
        None => None,
    };
    let elapsed = elapsed?;
    if let Some(err) = control.take_error() {
        return Err(match written(graph, &nodes, &committers) {
            Some(output) => Error::Stopped {
                cause: Box::new(err),
                output,
            },
            None => err,
        });
    }
    let channels = wiring.channels.iter().map(|c| c.stats()).collect();
    let mut summary = RunSummary::collect(elapsed, workers, &nodes, channels, traces.as_deref());
    summary.checkpoints = stats;
    Ok(summary)
}

/// A checkpointing run's side of the checkpoints until its coordinator
/// starts: the store, the checkpoint restored, the sinks' committers.
struct RunCheckpoints {
    /// Held until the coordinator ends (`CheckpointStore::lock`).
    lock: std::fs::File,
    config: CheckpointConfig,
    store: CheckpointStore,
    restored: Restored,
    /// Each exactly-once sink's graph node and committer.
    committers: Vec<(usize, Arc<dyn SinkCommitter>)>,
    barriers: Arc<Barriers>,
    acks: Sender<Ack>,
    received: Receiver<Ack>,
}

impl RunCheckpoints {
    /// Opens the store, reads and checks the checkpoint to restore, and
    /// brings every exactly-once sink's output to what that checkpoint
    /// committed (before any writer exists).
    fn prepare(graph: &Graph, config: &CheckpointConfig) -> Result<Self> {
        let started = std::time::Instant::now();
        let store = CheckpointStore::open(&config.dir)?;
        let lock = store.lock()?;
        store.remove_incomplete()?;
        let restored = Restored::load(config, &store, graph)?;
        let mut committers = Vec::new();
        for (n, node) in graph.nodes.iter().enumerate() {
            if let NodeOp::Sink(f) = &node.op
                && let Some(committer) = f.committer()
            {
                let commit = restored.commit(&graph.node_id(n));
                if restored.checkpoint.is_some() && commit.is_none() {
                    return Err(Error::Other(format!(
                        "the checkpoint to restore holds no commit for sink {}",
                        node.name
                    )));
                }
                committer
                    .recover(commit.as_ref().map(|(e, p)| (*e, p)))
                    .map_err(|e| e.in_operator(&node.name))?;
                committers.push((n, committer));
            }
        }
        if let Some(announce) = &config.announce {
            announce(&restored.report(&store, started.elapsed()));
        }
        let (acks, received) = mpsc::channel();
        Ok(RunCheckpoints {
            lock,
            config: config.clone(),
            barriers: Arc::new(Barriers::starting_after(restored.last_epoch)),
            store,
            restored,
            committers,
            acks,
            received,
        })
    }

    /// What a task of this run sends its acknowledgements with.
    fn task(&self, task: usize) -> TaskCheckpoint {
        TaskCheckpoint {
            task,
            acks: self.acks.clone(),
        }
    }

    /// Starts the coordinator on a thread of its own.
    fn start(
        self,
        graph: &Graph,
        tasks: usize,
        stop: StopHandle,
        control: Arc<RunControl>,
    ) -> Result<(std::thread::JoinHandle<()>, Arc<CheckpointStats>)> {
        let stats = Arc::new(CheckpointStats::default());
        let coordinator = Coordinator {
            fingerprint: graph.fingerprint(),
            parallelism: node_parallelism(graph),
            node_ids: (0..graph.nodes.len()).map(|n| graph.node_id(n)).collect(),
            config: self.config,
            store: self.store,
            tasks,
            acks: self.received,
            barriers: self.barriers,
            stop,
            control,
            committers: self.committers,
            last_epoch: self.restored.last_epoch,
            stats: stats.clone(),
            _lock: self.lock,
        };
        // Dropping `self.acks` here leaves the tasks' clones as the only
        // senders.
        let handle = std::thread::Builder::new()
            .name("millrace-checkpoints".into())
            .spawn(move || coordinator.run())
            .map_err(|e| Error::Other(format!("cannot start the checkpoint thread: {e}")))?;
        Ok((handle, stats))
    }
}

/// What the sinks of a run that failed had written, when any wrote: rows
/// of an at-least-once sink are out there; an exactly-once sink
/// (`staging`) shows only what its checkpoints committed.
fn written(graph: &Graph, nodes: &[Arc<NodeMetrics>], staging: &[usize]) -> Option<String> {
    let lines: Vec<String> = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| matches!(node.op, NodeOp::Sink(_)))
        .filter_map(|(n, node)| {
            let rows = nodes[n].summary().rows_in;
            (rows > 0).then(|| {
                if staging.contains(&n) {
                    format!(
                        "  {}: {rows} rows received; only those of committed checkpoints are \
                         visible (exactly-once), the next run writes the rest",
                        node.name
                    )
                } else {
                    format!(
                        "  {}: {rows} rows already written and visible (at-least-once): \
                         that output is partial",
                        node.name
                    )
                }
            })
        })
        .collect();
    (!lines.is_empty()).then(|| format!("output before the failure:\n{}", lines.join("\n")))
}

/// Each node's parallelism, by id.
fn node_parallelism(graph: &Graph) -> BTreeMap<OperatorId, usize> {
    (0..graph.nodes.len())
        .map(|n| (graph.node_id(n), graph.nodes[n].parallelism))
        .collect()
}

/// The worker that runs instance `instance` of every chain.
fn worker_of(instance: usize, workers: usize) -> usize {
    instance % workers
}

/// One metrics record per graph node; each task instance adds its own
/// counters to it.
fn node_metrics(graph: &Graph) -> Vec<Arc<NodeMetrics>> {
    graph
        .nodes
        .iter()
        .map(|n| {
            let kind = match n.op {
                NodeOp::Source { .. } => NodeKind::Source,
                NodeOp::Operator(_) | NodeOp::Late { .. } => NodeKind::Operator,
                NodeOp::Sink(_) => NodeKind::Sink,
            };
            Arc::new(NodeMetrics::new(n.name.clone(), kind, n.parallelism))
        })
        .collect()
}

/// The stages a trace can pass (`trace.rs`): every graph node, by node
/// index, then each plan edge's exchange and channel, edge by edge (the
/// ids `Wiring::connect` gives the channels).
fn trace_stages(graph: &Graph, plan: &Plan) -> TraceStages {
    let mut stages: Vec<TraceStage> = graph
        .nodes
        .iter()
        .map(|n| TraceStage {
            name: n.name.clone(),
            kind: match n.op {
                NodeOp::Source { .. } => StageKind::Source,
                NodeOp::Operator(_) | NodeOp::Late { .. } => StageKind::Operator,
                NodeOp::Sink(_) => StageKind::Sink,
            },
        })
        .collect();
    for e in &plan.edges {
        let name = edge_name(graph, plan, e);
        for kind in [StageKind::Exchange, StageKind::Channel] {
            let name = name.clone();
            stages.push(TraceStage { name, kind });
        }
    }
    TraceStages(stages)
}

/// How the summary and traces name a plan edge.
fn edge_name(graph: &Graph, plan: &Plan, e: &ChainEdge) -> String {
    let to = plan.chains[e.to_chain].nodes[0];
    format!(
        "{} → {} ({})",
        graph.nodes[e.from_node].name, graph.nodes[to].name, e.partitioning
    )
}

/// Adaptive with a latency target (up to `batch_size` rows), fixed
/// without; sources and exchanges size their batches by it.
fn batch_policy(config: &PipelineConfig) -> BatchPolicy {
    match config.latency_target {
        Some(latency_target) => BatchPolicy::Adaptive {
            latency_target,
            max: config.batch_size,
        },
        None => BatchPolicy::Fixed(config.batch_size),
    }
}

/// The channels between tasks, by chain and instance, until the tasks that
/// use them are built.
struct Wiring {
    /// `inputs[chain][instance]`: the channels its gate reads.
    inputs: Vec<Vec<Vec<InputChannel>>>,
    /// `outputs[chain][instance]`: its routers, each with the graph node
    /// whose output it sends.
    outputs: Vec<Vec<Vec<(usize, OutputRouter)>>>,
    /// Every channel, for the summary.
    channels: Vec<Arc<Channel>>,
}

impl Wiring {
    /// For every plan edge and every sending instance, a channel to each
    /// receiving instance (only the same index when the edge is one to
    /// one) and one router over them. Each channel wakes the workers its
    /// two ends are placed on (`worker_of`).
    fn connect(
        graph: &Graph,
        plan: &Plan,
        policy: BatchPolicy,
        wakers: &[WorkerWaker],
    ) -> Result<Wiring> {
        let config = &graph.config;
        let workers = wakers.len();
        let inputs: Vec<Vec<Vec<InputChannel>>> = plan
            .chains
            .iter()
            .map(|c| (0..c.parallelism).map(|_| Vec::new()).collect())
            .collect();
        let outputs = inputs
            .iter()
            .map(|c| c.iter().map(|_| Vec::new()).collect())
            .collect();
        let mut wiring = Wiring {
            inputs,
            outputs,
            channels: Vec::new(),
        };
        for (k, e) in plan.edges.iter().enumerate() {
            let (from, to) = (&plan.chains[e.from_chain], &plan.chains[e.to_chain]);
            // After the nodes, two per edge (`trace_stages`).
            let exchange_stage = (graph.nodes.len() + 2 * k) as StageId;
            let keys = match &e.partitioning {
                crate::exchange::Partitioning::Hash(k) => {
                    key_indices(&graph.nodes[e.from_node].schema, k)?
                }
                _ => Vec::new(),
            };
            let edge = edge_name(graph, plan, e);
            for i in 0..from.parallelism {
                let mut targets = Vec::new();
                for j in 0..to.parallelism {
                    if e.one_to_one && i != j {
                        continue;
                    }
                    let ch = Arc::new(Channel::new(
                        config.channel,
                        wakers[worker_of(i, workers)].clone(),
                        wakers[worker_of(j, workers)].clone(),
                        format!("task {}#{i}", e.from_chain),
                        format!("task {}#{j}", e.to_chain),
                        edge.clone(),
                        exchange_stage,
                    ));
                    wiring.inputs[e.to_chain][j].push(InputChannel::new(ch.clone(), e.input));
                    wiring.channels.push(ch.clone());
                    targets.push(ch);
                }
                let batching = ExchangeBatching::new(policy, config.exchange_batching, now_ns());
                let router =
                    OutputRouter::new(targets, e.partitioning.clone(), keys.clone(), batching);
                wiring.outputs[e.from_chain][i].push((e.from_node, router));
            }
        }
        Ok(wiring)
    }
}

/// What building task instances needs besides their chain and channels.
struct TaskBuilder<'a> {
    graph: &'a Graph,
    nodes: &'a [Arc<NodeMetrics>],
    policy: BatchPolicy,
    stop: StopHandle,
    /// The barriers the run asks sources for.
    barriers: Arc<Barriers>,
    /// Set when the run checkpoints.
    checkpoints: Option<&'a RunCheckpoints>,
    /// Sinks record the latency of rows that entered from this time on.
    record_latency_from: Arc<AtomicI64>,
    /// Where sinks put finished traces, when the run traces.
    traces: Option<Arc<TraceLog>>,
}

impl TaskBuilder<'_> {
    /// Every instance of every chain, in plan order, with its instance
    /// index. Asks every factory for its instance, so a factory that fails
    /// fails the run here, before any thread starts.
    fn tasks(&self, plan: &Plan, wiring: &mut Wiring) -> Result<Vec<(usize, DataflowTask)>> {
        let mut tasks = Vec::new();
        for (c, chain) in plan.chains.iter().enumerate() {
            let alignment = self.alignment(chain);
            for i in 0..chain.parallelism {
                let aligned = alignment.clone().map(|a| (a, i));
                let mut task = self.instance(c, chain, i, wiring, aligned)?;
                if let Some(checkpoints) = self.checkpoints {
                    let head = chain.nodes[0];
                    let first_stage =
                        usize::from(matches!(self.graph.nodes[head].op, NodeOp::Source { .. }));
                    task = task.with_checkpoint(Checkpointing {
                        run: checkpoints.task(tasks.len()),
                        instance: i,
                        source: (first_stage == 1).then(|| self.graph.node_id(head)),
                        stages: chain.nodes[first_stage..]
                            .iter()
                            .map(|&n| (self.graph.node_id(n), n))
                            .collect(),
                        last_epoch: checkpoints.restored.last_epoch,
                    });
                }
                tasks.push((i, task));
            }
        }
        Ok(tasks)
    }

    /// A source with event time and several instances keeps them within
    /// the configured drift of each other: one alignment for them all.
    fn alignment(&self, chain: &Chain) -> Option<Arc<SourceAlignment>> {
        let p = chain.parallelism;
        match (
            &self.graph.nodes[chain.nodes[0]].op,
            self.graph.config.source_alignment,
        ) {
            (
                NodeOp::Source {
                    event_time: Some(_),
                    ..
                },
                Some(drift),
            ) if p > 1 => {
                let ms = i64::try_from(drift.as_millis()).unwrap_or(i64::MAX);
                Some(Arc::new(SourceAlignment::new(p, ms)))
            }
            _ => None,
        }
    }

    /// Instance `i` of chain `c`: its head (the source's reader, or a gate
    /// over the channels it reads) and one stage per other node of the
    /// chain, each node given the routers that send its output. Takes the
    /// instance's channels and routers out of `wiring`.
    fn instance(
        &self,
        c: usize,
        chain: &Chain,
        i: usize,
        wiring: &mut Wiring,
        alignment: Option<(Arc<SourceAlignment>, usize)>,
    ) -> Result<DataflowTask> {
        let p = chain.parallelism;
        let times = Arc::new(TaskTimes::default());
        let mut routers = std::mem::take(&mut wiring.outputs[c][i]);
        let metrics = |node: usize| {
            let m = Arc::new(OperatorMetrics::new(node, times.clone()));
            self.nodes[node]
                .instances
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(m.clone());
            m
        };
        // A task without routers sends nothing to another task: its source
        // has no hops after it.
        let has_hops = !routers.is_empty();
        let mut routers_of = |node: usize| {
            let (mine, rest) = std::mem::take(&mut routers)
                .into_iter()
                .partition(|(from, _)| *from == node);
            routers = rest;
            mine.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
        };
        let head_id = chain.nodes[0];
        // Positions in `chain.nodes` that become stages: all but a source.
        let (head, head_routers, first_stage) = match &self.graph.nodes[head_id].op {
            NodeOp::Source { .. } => {
                let source = self.source_head(head_id, (i, p), has_hops, alignment, &metrics)?;
                (Head::Source(Box::new(source)), routers_of(head_id), 1)
            }
            _ => {
                let inputs = std::mem::take(&mut wiring.inputs[c][i]);
                (Head::Gate(InputGate::new(inputs)), Vec::new(), 0)
            }
        };
        let mut stages = Vec::new();
        for k in first_stage..chain.nodes.len() {
            let n = chain.nodes[k];
            stages.push(Stage {
                work: self.stage_work(n, (i, p), &metrics)?,
                // Stage indices are chain positions less the source.
                reads: chain.reads[k]
                    .filter(|&r| r >= first_stage)
                    .map(|r| r - first_stage),
                routers: routers_of(n),
            });
        }
        Ok(DataflowTask::new(
            format!("task {c}#{i}"),
            head,
            head_routers,
            stages,
            times,
        ))
    }

    /// Instance `i` of `p` of source node `id`: its reader, and the
    /// source-side state at the start (no watermark, no barrier yet).
    /// Without hops its batch controller is `without_hops`.
    fn source_head(
        &self,
        id: usize,
        (i, p): (usize, usize),
        has_hops: bool,
        alignment: Option<(Arc<SourceAlignment>, usize)>,
        metrics: &impl Fn(usize) -> Arc<OperatorMetrics>,
    ) -> Result<SourceHead> {
        let node = &self.graph.nodes[id];
        let NodeOp::Source {
            factory,
            event_time,
        } = &node.op
        else {
            unreachable!("source_head of a node that is not a source");
        };
        let config = &self.graph.config;
        let reader = factory
            .create(i, p)
            .map_err(|e| e.in_operator(&node.name))?;
        let event_time = match event_time {
            Some(et) => Some((
                node.schema.index_of(&et.column).map_err(|_| {
                    Error::plan(format!(
                        "{}: event-time column '{}' is not in its schema",
                        node.name, et.column
                    ))
                })?,
                et.column.clone(),
                et.max_out_of_orderness_ms,
                et.idle_timeout,
            )),
            None => None,
        };
        let mut head = SourceHead {
            name: node.name.clone(),
            reader,
            metrics: metrics(id),
            columns: node.schema.fields().len(),
            event_time,
            batching: if has_hops {
                BatchController::new(self.policy, now_ns())
            } else {
                BatchController::new(self.policy, now_ns()).without_hops()
            },
            resume_at_ns: None,
            pressure_ns: 0,
            barrier_every_rows: config.barrier_every_rows.filter(|n| *n > 0),
            max_event_time: i64::MIN,
            last_watermark: i64::MIN,
            last_data_ns: now_ns(),
            idle_declared: false,
            announce_restored: false,
            rows_since_barrier: 0,
            next_barrier: self.barriers.requested() + 1,
            barriers: self.barriers.clone(),
            checkpointing: self.checkpoints.is_some(),
            exhausted: false,
            stop: self.stop.clone(),
            alignment,
            trace_every_ns: config
                .latency_breakdown
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            next_trace_ns: 0,
            traced: None,
            last_entered_ns: i64::MIN,
        };
        if let Some(c) = self.checkpoints
            && c.restored.checkpoint.is_some()
        {
            let node_id = self.graph.node_id(id);
            let position = c.restored.snapshot(Role::Position, &node_id, i);
            let progress = c.restored.snapshot(Role::Progress, &node_id, i);
            head.restore(&position, &progress, c.restored.last_epoch)
                .map_err(|e| e.in_operator(&node.name))?;
        }
        Ok(head)
    }

    /// What instance `i` of `p` of node `n` (fused after the head) does:
    /// its operator (keeping late rows when a late output reads it), the
    /// late output of its operator, or its sink's writer.
    fn stage_work(
        &self,
        n: usize,
        (i, p): (usize, usize),
        metrics: &impl Fn(usize) -> Arc<OperatorMetrics>,
    ) -> Result<StageWork> {
        let graph = self.graph;
        let node = &graph.nodes[n];
        Ok(match &node.op {
            NodeOp::Operator(f) => StageWork::Operator(ChainOp {
                name: node.name.clone(),
                op: match self.checkpoints {
                    Some(c) => {
                        let state = c.restored.snapshot(Role::Operator, &graph.node_id(n), i);
                        f.restore(i, p, &state)
                    }
                    None => f.create(i, p),
                }
                .map_err(|e| e.in_operator(&node.name))?,
                metrics: {
                    let m = metrics(n);
                    if let Some(c) = self.checkpoints {
                        let counters = c.restored.snapshot(Role::Counters, &graph.node_id(n), i);
                        let late = late_rows(&counters).map_err(|e| e.in_operator(&node.name))?;
                        m.late_rows.store(late, Relaxed);
                    }
                    m
                },
                keep_late: graph
                    .nodes
                    .iter()
                    .any(|m| matches!(m.op, NodeOp::Late { .. }) && m.inputs[0].from == n),
                checkpoint: false,
                taken: None,
            }),
            NodeOp::Late { input } => StageWork::Late(LateStage {
                name: node.name.clone(),
                input: *input,
                metrics: metrics(n),
            }),
            NodeOp::Sink(f) => {
                let committer = self
                    .checkpoints
                    .and_then(|c| c.committers.iter().find(|(node, _)| *node == n))
                    .map(|(_, committer)| committer);
                let writer = match committer {
                    Some(c) => c.create(i, p, node.schema.clone()),
                    None => f.create(i, p, node.schema.clone()),
                }
                .map_err(|e| e.in_operator(&node.name))?;
                let mut sink = SinkStage::new(
                    node.name.clone(),
                    writer,
                    metrics(n),
                    self.nodes[n].clone(),
                    self.record_latency_from.clone(),
                );
                sink.staging = committer.is_some();
                sink.traces = self.traces.clone();
                StageWork::Sink(Box::new(sink))
            }
            NodeOp::Source { .. } => unreachable!("a source never follows another node"),
        })
    }
}

/// Gives each instance to its worker (`worker_of`); a worker's tasks keep
/// the order they were built in.
fn place(tasks: Vec<(usize, DataflowTask)>, workers: usize) -> Vec<Vec<Box<dyn Task>>> {
    let mut per_worker: Vec<Vec<Box<dyn Task>>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, task) in tasks {
        per_worker[worker_of(i, workers)].push(Box::new(task));
    }
    per_worker
}

/// Starts the clock (task times, and the latency warm-up the sinks wait
/// out), runs each worker's tasks on a thread of its own (pinned when
/// configured) until all end, and returns the elapsed ns. A panic outside
/// any operator fails the run rather than leaving the other workers
/// waiting for this one.
fn run_workers(
    config: &PipelineConfig,
    per_worker: Vec<Vec<Box<dyn Task>>>,
    wakers: &[WorkerWaker],
    control: &Arc<RunControl>,
    record_latency_from: &AtomicI64,
    times: &[Arc<TaskTimes>],
) -> Result<u64> {
    let cores = if config.pin_workers {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let started = now_ns();
    let warmup = i64::try_from(config.latency_warmup.as_nanos()).unwrap_or(i64::MAX);
    record_latency_from.store(started.saturating_add(warmup), Relaxed);
    for times in times {
        times.started_ns.store(started, Relaxed);
    }
    let handles: Vec<_> = per_worker
        .into_iter()
        .enumerate()
        .map(|(w, tasks)| {
            let worker = Worker {
                index: w,
                core: (!cores.is_empty()).then(|| cores[w % cores.len()]),
                waker: wakers[w].clone(),
                tasks,
                idle: match config.latency_target {
                    Some(target) => IdleStrategy::for_latency_target(target),
                    None => config.idle,
                },
                control: control.clone(),
            };
            let control = control.clone();
            std::thread::Builder::new()
                .name(format!("millrace-worker-{w}"))
                .spawn(move || {
                    // A panic outside any operator call (a connector's stats,
                    // a task's drop) must still stop the other workers, or
                    // they would wait for this one forever.
                    if catch_unwind(AssertUnwindSafe(|| worker.run())).is_err() {
                        control.fail(Error::Panic(format!(
                            "worker {w} panicked outside any operator"
                        )));
                    }
                })
                .map_err(|e| Error::Other(format!("cannot start worker thread: {e}")))
        })
        .collect::<Result<_>>()?;
    for h in handles {
        if h.join().is_err() {
            control.fail(Error::Panic(
                "a worker thread panicked outside any operator".into(),
            ));
        }
    }
    Ok((now_ns() - started) as u64)
}
