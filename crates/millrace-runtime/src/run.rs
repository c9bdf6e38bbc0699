//! Runs a planned pipeline: creates channels and task instances, places
//! instances on pinned workers, waits for the end, and gathers the summary.
//!
//! Instance *i* of every chain runs on worker *i mod workers*, so a keyed
//! slice of the pipeline stays on one core and forward hops never cross
//! cores. Every factory is asked for its instance before any thread starts:
//! a source file that cannot be opened fails the run before it begins.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use millrace_core::time::now_ns;
use millrace_core::{Error, Result};

use crate::alignment::SourceAlignment;
use crate::batching::{BatchController, BatchPolicy};
use crate::channel::Channel;
use crate::coalesce::ExchangeBatching;
use crate::exchange::key_indices;
use crate::gate::{InputChannel, InputGate};
use crate::graph::{Graph, NodeOp};
use crate::metrics::{NodeKind, NodeMetrics, OperatorMetrics, RunSummary, TaskTimes};
use crate::output::OutputRouter;
use crate::plan::Plan;
use crate::task::{
    ChainOp, DataflowTask, Head, LateStage, SinkStage, SourceHead, Stage, StageWork, Task,
};
use crate::worker::{IdleStrategy, RunControl, StopHandle, Worker, WorkerWaker};

pub(crate) fn run(graph: Graph, stop: StopHandle) -> Result<RunSummary> {
    let plan = Plan::build(&graph)?;
    let config = &graph.config;
    let max_par = plan.chains.iter().map(|c| c.parallelism).max().unwrap_or(1);
    let workers = config.workers.clamp(1, max_par);
    let wakers: Vec<WorkerWaker> = (0..workers).map(|_| WorkerWaker::default()).collect();
    let worker_of = |instance: usize| instance % workers;
    let control = Arc::new(RunControl::default());
    for w in &wakers {
        control.register(w.clone());
    }

    let nodes: Vec<Arc<NodeMetrics>> = graph
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
        .collect();

    // Channels: inputs[chain][instance] and outputs[chain][instance].
    let mut inputs: Vec<Vec<Vec<InputChannel>>> = plan
        .chains
        .iter()
        .map(|c| (0..c.parallelism).map(|_| Vec::new()).collect())
        .collect();
    // Routers with the graph node whose output each sends.
    let mut outputs: Vec<Vec<Vec<(usize, OutputRouter)>>> = inputs
        .iter()
        .map(|c| c.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut all_channels = Vec::new();
    let policy = match config.latency_target {
        Some(latency_target) => BatchPolicy::Adaptive {
            latency_target,
            max: config.batch_size,
        },
        None => BatchPolicy::Fixed(config.batch_size),
    };
    for e in &plan.edges {
        let (from, to) = (&plan.chains[e.from_chain], &plan.chains[e.to_chain]);
        let keys = match &e.partitioning {
            crate::exchange::Partitioning::Hash(k) => {
                key_indices(&graph.nodes[e.from_node].schema, k)?
            }
            _ => Vec::new(),
        };
        let edge = format!(
            "{} → {} ({})",
            graph.nodes[e.from_node].name, graph.nodes[to.nodes[0]].name, e.partitioning
        );
        for i in 0..from.parallelism {
            let mut targets = Vec::new();
            for j in 0..to.parallelism {
                if e.one_to_one && i != j {
                    continue;
                }
                let ch = Arc::new(Channel::new(
                    config.channel,
                    wakers[worker_of(i)].clone(),
                    wakers[worker_of(j)].clone(),
                    format!("task {}#{i}", e.from_chain),
                    format!("task {}#{j}", e.to_chain),
                    edge.clone(),
                ));
                inputs[e.to_chain][j].push(InputChannel::new(ch.clone(), e.input));
                all_channels.push(ch.clone());
                targets.push(ch);
            }
            let batching = ExchangeBatching::new(policy, config.exchange_batching, now_ns());
            let router = OutputRouter::new(targets, e.partitioning.clone(), keys.clone(), batching);
            outputs[e.from_chain][i].push((e.from_node, router));
        }
    }

    let barriers_injected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Set when the run starts: no row is excluded from latency before then.
    let record_latency_from = Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN));
    // Task instances, per worker.
    let mut all_times = Vec::new();
    let mut per_worker: Vec<Vec<Box<dyn Task>>> = (0..workers).map(|_| Vec::new()).collect();
    for (c, chain) in plan.chains.iter().enumerate() {
        let p = chain.parallelism;
        // A source with event time and several instances keeps them aligned.
        let alignment = match (&graph.nodes[chain.nodes[0]].op, config.source_alignment) {
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
        };
        for i in 0..p {
            let times = Arc::new(TaskTimes::default());
            all_times.push(times.clone());
            let metrics = |node: usize| {
                let m = Arc::new(OperatorMetrics::new(node, times.clone()));
                nodes[node]
                    .instances
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(m.clone());
                m
            };
            let head_id = chain.nodes[0];
            let head_node = &graph.nodes[head_id];
            // Positions in `chain.nodes` that become stages: all but a source.
            let mut first_stage = 0;
            let head = match &head_node.op {
                NodeOp::Source {
                    factory,
                    event_time,
                } => {
                    first_stage = 1;
                    let reader = factory
                        .create(i, p)
                        .map_err(|e| e.in_operator(&head_node.name))?;
                    let event_time = match event_time {
                        Some(et) => Some((
                            head_node.schema.index_of(&et.column).map_err(|_| {
                                Error::plan(format!(
                                    "{}: event-time column '{}' is not in its schema",
                                    head_node.name, et.column
                                ))
                            })?,
                            et.column.clone(),
                            et.max_out_of_orderness_ms,
                            et.idle_timeout,
                        )),
                        None => None,
                    };
                    Head::Source(Box::new(SourceHead {
                        name: head_node.name.clone(),
                        reader,
                        node: nodes[head_id].clone(),
                        metrics: metrics(head_id),
                        columns: head_node.schema.fields().len(),
                        event_time,
                        batching: if outputs[c][i].is_empty() {
                            BatchController::new(policy, now_ns()).without_hops()
                        } else {
                            BatchController::new(policy, now_ns())
                        },
                        resume_at_ns: None,
                        pressure_ns: 0,
                        barrier_every_rows: config.barrier_every_rows.filter(|n| *n > 0),
                        max_event_time: i64::MIN,
                        last_watermark: i64::MIN,
                        last_data_ns: now_ns(),
                        idle_declared: false,
                        rows_since_barrier: 0,
                        next_barrier: 1,
                        barriers_injected: barriers_injected.clone(),
                        exhausted: false,
                        stop: stop.clone(),
                        alignment: alignment.clone().map(|a| (a, i)),
                    }))
                }
                _ => Head::Gate(InputGate::new(std::mem::take(&mut inputs[c][i]))),
            };
            let mut routers = std::mem::take(&mut outputs[c][i]);
            let mut routers_of = |node: usize| {
                let (mine, rest) = std::mem::take(&mut routers)
                    .into_iter()
                    .partition(|(from, _)| *from == node);
                routers = rest;
                mine.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
            };
            let head_routers = if first_stage == 1 {
                routers_of(head_id)
            } else {
                Vec::new()
            };
            let mut stages = Vec::new();
            for k in first_stage..chain.nodes.len() {
                let n = chain.nodes[k];
                let node = &graph.nodes[n];
                let work = match &node.op {
                    NodeOp::Operator(f) => StageWork::Operator(ChainOp {
                        name: node.name.clone(),
                        op: f.create(i, p).map_err(|e| e.in_operator(&node.name))?,
                        metrics: metrics(n),
                        keep_late: graph
                            .nodes
                            .iter()
                            .any(|m| matches!(m.op, NodeOp::Late { .. }) && m.inputs[0].from == n),
                    }),
                    NodeOp::Late { input } => StageWork::Late(LateStage {
                        name: node.name.clone(),
                        input: *input,
                        metrics: metrics(n),
                    }),
                    NodeOp::Sink(f) => {
                        let writer = f
                            .create(i, p, node.schema.clone())
                            .map_err(|e| e.in_operator(&node.name))?;
                        StageWork::Sink(SinkStage::new(
                            node.name.clone(),
                            writer,
                            metrics(n),
                            nodes[n].clone(),
                            record_latency_from.clone(),
                        ))
                    }
                    NodeOp::Source { .. } => unreachable!("a source never follows another node"),
                };
                stages.push(Stage {
                    work,
                    // Stage indices are chain positions less the source.
                    reads: chain.reads[k]
                        .filter(|&r| r >= first_stage)
                        .map(|r| r - first_stage),
                    routers: routers_of(n),
                });
            }
            let task =
                DataflowTask::new(format!("task {c}#{i}"), head, head_routers, stages, times);
            per_worker[worker_of(i)].push(Box::new(task));
        }
    }

    let cores = if config.pin_workers {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let started = now_ns();
    let warmup = i64::try_from(config.latency_warmup.as_nanos()).unwrap_or(i64::MAX);
    record_latency_from.store(
        started.saturating_add(warmup),
        std::sync::atomic::Ordering::Relaxed,
    );
    for times in &all_times {
        times
            .started_ns
            .store(started, std::sync::atomic::Ordering::Relaxed);
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
    let elapsed = (now_ns() - started) as u64;
    if let Some(err) = control.take_error() {
        return Err(err);
    }
    let channels = all_channels.iter().map(|c| c.stats()).collect();
    Ok(RunSummary::collect(elapsed, workers, &nodes, channels))
}
