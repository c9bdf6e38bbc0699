//! A pipeline graph built in code: sources, operators (any
//! [`OperatorFactory`]), exchanges between them, late outputs, sinks.
//! Expressions and windows over streams are in `millrace_sql::api`, which
//! builds on this.
//!
//! Every node is checked when it is added, so a pipeline that builds has a
//! plan that runs.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use millrace_core::key_groups::KEY_GROUPS;
use millrace_core::state::StableHasher;
use millrace_core::time::is_event_time_type;
use millrace_core::{
    Emitter, Error, EventTime, Operator, OperatorFactory, OperatorId, PlanFingerprint, Result,
    SinkFactory, Snapshot, SourceFactory,
};

use crate::channel::ChannelCapacity;
use crate::checkpoint::CheckpointConfig;
use crate::coalesce::ExchangeBatchingMode;
use crate::exchange::{Partitioning, key_indices};
use crate::live::LiveRun;
use crate::metrics::RunSummary;
use crate::worker::{IdleStrategy, StopHandle};

/// Options of one pipeline run.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Default parallelism of sources and operators.
    pub parallelism: usize,
    /// Worker threads (one per core by default); never more than needed.
    pub workers: usize,
    /// Pin each worker to its own core.
    pub pin_workers: bool,
    /// Rows a source reads per batch at most.
    pub batch_size: usize,
    /// With a target, sources size their batches adaptively (up to
    /// `batch_size`) from measured costs and load; without, they always
    /// ask for `batch_size` rows. See `batching/`.
    pub latency_target: Option<Duration>,
    /// With a latency target, exchanges also merge small batches bound for
    /// one channel (adaptively by default: as their consumers' per-message
    /// costs require; `coalesce.rs`); without a target they never do.
    pub exchange_batching: ExchangeBatchingMode,
    /// Bound of every channel.
    pub channel: ChannelCapacity,
    /// Sources inject a barrier after every this many rows (per instance).
    pub barrier_every_rows: Option<u64>,
    /// Rows that enter within this long of the start are processed and
    /// written but left out of the latency histograms (benchmarks exclude
    /// the warm-up: first-touch memory, caches, the first windows).
    pub latency_warmup: Duration,
    /// How workers wait for work; with a latency target, the target decides
    /// instead (`IdleStrategy::for_latency_target`).
    pub idle: IdleStrategy,
    /// How far (event time) an instance of a source may run ahead of its
    /// slowest sibling before it waits (`alignment.rs`); `None`: no bound.
    pub source_alignment: Option<Duration>,
    /// Checkpoints, and where the run starts from (`checkpoint/`); `None`:
    /// no checkpoints, every run starts fresh.
    pub checkpoint: Option<CheckpointConfig>,
    /// Each source instance traces one batch per this interval through
    /// every stage, for the per-stage latency breakdown (`trace.rs`);
    /// `None`: no tracing.
    pub latency_breakdown: Option<Duration>,
}

impl PipelineConfig {
    /// Rejects settings that cannot run, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            (self.parallelism, "parallelism"),
            (self.workers, "workers"),
            (self.batch_size, "batch_size"),
            (self.channel.rows, "channel rows"),
            (self.channel.bytes, "channel bytes"),
            (self.channel.messages, "channel messages"),
        ];
        for (value, name) in checks {
            if value == 0 {
                return Err(Error::plan(format!("{name} must be at least 1")));
            }
        }
        if let Some(c) = &self.checkpoint {
            if self.barrier_every_rows.is_some() {
                return Err(Error::plan(
                    "barrier_every_rows cannot be combined with checkpoints: the checkpoint \
                     coordinator injects the barriers",
                ));
            }
            if c.interval.is_zero() {
                return Err(Error::plan("checkpoint_interval must be above zero"));
            }
        }
        if self.parallelism > KEY_GROUPS {
            return Err(Error::plan(format!(
                "parallelism must be at most {KEY_GROUPS}, got {}",
                self.parallelism
            )));
        }
        Ok(())
    }
}

/// Rows a source reads per batch at most unless `batch_size` is set: the
/// adaptive policy's maximum too.
pub const DEFAULT_BATCH_SIZE: usize = 1024;

/// How often a source instance traces a batch unless `latency_breakdown`
/// is set: often enough that the live breakdown's window holds a cohort
/// near a high percentile, rarely enough that tracing stays a small
/// fixed cost per instance whatever the rate (its cost is measured in
/// docs/observability.md). Window results are traced apart from it
/// (`DataflowTask::trace_closing_watermark`).
pub const DEFAULT_TRACE_INTERVAL: Duration = Duration::from_millis(10);

impl Default for PipelineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PipelineConfig {
            parallelism: cores,
            workers: cores,
            pin_workers: true,
            batch_size: DEFAULT_BATCH_SIZE,
            latency_target: None,
            exchange_batching: ExchangeBatchingMode::Adaptive,
            channel: ChannelCapacity::default(),
            barrier_every_rows: None,
            latency_warmup: Duration::ZERO,
            idle: IdleStrategy::default(),
            source_alignment: Some(Duration::from_secs(5)),
            checkpoint: None,
            latency_breakdown: Some(DEFAULT_TRACE_INTERVAL),
        }
    }
}

pub(crate) enum NodeOp {
    Source {
        factory: Arc<dyn SourceFactory>,
        event_time: Option<EventTime>,
    },
    Operator(Arc<dyn OperatorFactory>),
    /// The late rows of input `input` of the operator node it reads; always
    /// fused after that operator.
    Late {
        input: usize,
    },
    Sink(Arc<dyn SinkFactory>),
}

pub(crate) struct Edge {
    pub from: usize,
    pub partitioning: Partitioning,
}

pub(crate) struct Node {
    pub name: String,
    pub op: NodeOp,
    pub parallelism: usize,
    pub inputs: Vec<Edge>,
    pub schema: SchemaRef,
    pub event_time: Option<String>,
    /// The node is only correct up to this parallelism (a window without
    /// keys must see every row in one instance).
    pub max_parallelism: Option<usize>,
}

pub(crate) struct Graph {
    pub config: PipelineConfig,
    pub nodes: Vec<Node>,
}

impl Graph {
    fn add(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The stable id of node `index`.
    pub(crate) fn node_id(&self, index: usize) -> OperatorId {
        OperatorId::new(index, &self.nodes[index].name)
    }

    /// See [`Pipeline::fingerprint`].
    pub(crate) fn fingerprint(&self) -> PlanFingerprint {
        let operators = (0..self.nodes.len())
            .map(|i| (self.node_id(i), node_hash(&self.nodes[i])))
            .collect();
        PlanFingerprint { operators }
    }
}

/// A pipeline under construction; [`Pipeline::run`] runs it to the end.
pub struct Pipeline {
    graph: Rc<RefCell<Graph>>,
    stop: StopHandle,
    live: LiveRun,
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Pipeline {
            graph: Rc::new(RefCell::new(Graph {
                config,
                nodes: Vec::new(),
            })),
            stop: StopHandle::default(),
            live: LiveRun::default(),
        }
    }

    /// A handle that stops the sources of this pipeline from another thread
    /// (e.g. a Ctrl-C handler); the run then drains and returns its summary.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// A handle that reads the run's counters from another thread while it
    /// runs (the live endpoint), and its final counts after.
    pub fn live(&self) -> LiveRun {
        self.live.clone()
    }

    pub fn config(&self) -> PipelineConfig {
        self.graph.borrow().config.clone()
    }

    /// Adds a source with the default parallelism and its own event-time declaration.
    pub fn source(&self, factory: impl SourceFactory + 'static) -> Stream {
        self.source_arc(Arc::new(factory))
    }

    pub fn source_arc(&self, factory: Arc<dyn SourceFactory>) -> Stream {
        let mut g = self.graph.borrow_mut();
        let event_time = factory.event_time();
        let node = Node {
            name: format!("source {}", factory.name()),
            parallelism: g.config.parallelism,
            inputs: Vec::new(),
            schema: factory.schema(),
            event_time: event_time.as_ref().map(|e| e.column.clone()),
            max_parallelism: None,
            op: NodeOp::Source {
                factory,
                event_time,
            },
        };
        let id = g.add(node);
        Stream::new(self.graph.clone(), id)
    }

    /// The dataflow as it will run: tasks (fused chains), parallelism, exchanges.
    pub fn explain(&self) -> Result<String> {
        let g = self.graph.borrow();
        Ok(crate::plan::Plan::build(&g)?.explain(&g))
    }

    /// The stable id of every node and the plan's fingerprint (the state
    /// contract of `millrace_core::state`). A node's hash covers what
    /// decides what its state means: its kind and signature (an operator's
    /// [`OperatorFactory::signature`], a source's name and event time, a
    /// sink's name), its output columns, and which nodes it reads and how
    /// rows reach it. Parallelism is left out: keyed state is kept per key
    /// group, not per instance.
    pub fn fingerprint(&self) -> PlanFingerprint {
        self.graph.borrow().fingerprint()
    }

    /// Runs the pipeline until every source ends, or the first error.
    ///
    /// With checkpoints and a restart strategy, a run that fails after it
    /// started with an error that may pass ([`Error::is_transient`]) is
    /// started again, as the strategy allows: from its latest checkpoint
    /// once it took one, else from where it started (a `--fresh` run or
    /// one from an older checkpoint never falls back on checkpoints it
    /// chose not to use); the summary counts the restarts.
    pub fn run(self) -> Result<RunSummary> {
        self.config().validate()?;
        // Streams may outlive the pipeline; they keep an empty graph.
        let config = self.config();
        let mut graph = self.graph.replace(Graph {
            config,
            nodes: Vec::new(),
        });
        let mut restarts = 0;
        loop {
            let mut attempt = crate::run::Attempt::default();
            let error = match crate::run::run(&graph, self.stop.clone(), &self.live, &mut attempt) {
                Ok(mut summary) => {
                    summary.restarts = restarts;
                    return Ok(summary);
                }
                Err(e) => e,
            };
            let Some(checkpoint) = graph.config.checkpoint.as_mut() else {
                return Err(error);
            };
            let delay = checkpoint.restart.delay(restarts + 1);
            let Some(delay) = delay
                .filter(|_| attempt.started && error.is_transient() && !self.stop.is_stopped())
            else {
                if restarts == 0 {
                    return Err(error);
                }
                return Err(Error::Other(format!("{error} (after {restarts} restarts)")));
            };
            restarts += 1;
            self.live.restarted();
            checkpoint.start_from = checkpoint
                .start_from
                .clone()
                .after_failure(attempt.checkpointed);
            if let Some(announce) = &checkpoint.announce {
                announce(&format!(
                    "restart {restarts} in {delay:?}, from {}, after: {error}",
                    checkpoint.start_from
                ));
            }
            std::thread::sleep(delay);
        }
    }
}

/// A stream of batches out of one node, and how the next node will read it.
#[derive(Clone)]
pub struct Stream {
    graph: Rc<RefCell<Graph>>,
    node: usize,
    partitioning: Partitioning,
}

impl Stream {
    fn new(graph: Rc<RefCell<Graph>>, node: usize) -> Self {
        Stream {
            graph,
            node,
            partitioning: Partitioning::Forward,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.graph.borrow().nodes[self.node].schema.clone()
    }

    /// Name of the event-time column, if the stream has one.
    pub fn event_time(&self) -> Option<String> {
        self.graph.borrow().nodes[self.node].event_time.clone()
    }

    pub fn parallelism(&self) -> usize {
        self.graph.borrow().nodes[self.node].parallelism
    }

    /// Sets the parallelism of the node this stream comes out of.
    pub fn with_parallelism(self, parallelism: usize) -> Result<Self> {
        if parallelism == 0 || parallelism > KEY_GROUPS {
            return Err(Error::plan(format!(
                "parallelism must be between 1 and {KEY_GROUPS}, got {parallelism}"
            )));
        }
        {
            let mut g = self.graph.borrow_mut();
            let node = &mut g.nodes[self.node];
            if let Some(max) = node.max_parallelism.filter(|m| parallelism > *m) {
                return Err(Error::plan(format!(
                    "'{}' runs with parallelism at most {max}; got {parallelism}",
                    node.name
                )));
            }
            node.parallelism = parallelism;
            // A late output runs in its operator's task instances.
            for late in g
                .nodes
                .iter_mut()
                .filter(|n| matches!(n.op, NodeOp::Late { .. }) && n.inputs[0].from == self.node)
            {
                late.parallelism = parallelism;
            }
        }
        Ok(self)
    }

    /// The node this stream comes out of is only correct up to
    /// `max` instances (a window without keys must see every row in one):
    /// its parallelism is lowered to `max` now, and cannot be raised later.
    pub fn with_max_parallelism(self, max: usize) -> Result<Self> {
        let parallelism = self.parallelism().min(max.max(1));
        self.graph.borrow_mut().nodes[self.node].max_parallelism = Some(max.max(1));
        self.with_parallelism(parallelism)
    }

    /// Replaces the event-time declaration of a source stream.
    pub fn with_event_time(self, event_time: EventTime) -> Result<Self> {
        {
            let mut g = self.graph.borrow_mut();
            let node = &mut g.nodes[self.node];
            let field = node
                .schema
                .field_with_name(&event_time.column)
                .map_err(|_| {
                    Error::plan(format!(
                        "event-time column '{}' is not in the schema",
                        event_time.column
                    ))
                })?;
            if !is_event_time_type(field.data_type()) {
                return Err(Error::plan(format!(
                    "event-time column '{}' has type {}; expected a timestamp or Int64 milliseconds",
                    event_time.column,
                    field.data_type()
                )));
            }
            let NodeOp::Source { event_time: et, .. } = &mut node.op else {
                return Err(Error::plan("with_event_time applies to a source stream"));
            };
            node.event_time = Some(event_time.column.clone());
            *et = Some(event_time);
        }
        Ok(self)
    }

    /// The next node receives each row at the instance owning its key.
    pub fn key_by<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Result<Self> {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            return Err(Error::plan("key_by needs at least one column"));
        }
        key_indices(&self.schema(), &keys)?;
        self.partitioning = Partitioning::Hash(keys);
        Ok(self)
    }

    /// The next node receives whole batches round-robin.
    pub fn rebalance(mut self) -> Self {
        self.partitioning = Partitioning::RoundRobin;
        self
    }

    /// Every instance of the next node receives every row.
    pub fn broadcast(mut self) -> Self {
        self.partitioning = Partitioning::Broadcast;
        self
    }

    fn add_node(&self, name: String, op: NodeOp, inputs: Vec<Edge>, parallelism: usize) -> Stream {
        let (schema, event_time) = match &op {
            NodeOp::Operator(f) => (f.output_schema(), f.output_event_time()),
            _ => (self.schema(), self.event_time()),
        };
        let id = self.graph.borrow_mut().add(Node {
            name,
            op,
            parallelism,
            inputs,
            schema,
            event_time,
            max_parallelism: None,
        });
        Stream::new(self.graph.clone(), id)
    }

    fn edge(&self) -> Edge {
        Edge {
            from: self.node,
            partitioning: self.partitioning.clone(),
        }
    }

    /// Adds a single-input operator with this stream's parallelism.
    pub fn apply(&self, factory: Arc<dyn OperatorFactory>) -> Stream {
        let name = factory.name();
        self.add_node(
            name,
            NodeOp::Operator(factory),
            vec![self.edge()],
            self.parallelism(),
        )
    }

    /// Adds a two-input operator: this stream is input 0, `other` input 1.
    pub fn connect(&self, other: &Stream, factory: Arc<dyn OperatorFactory>) -> Result<Stream> {
        if !Rc::ptr_eq(&self.graph, &other.graph) {
            return Err(Error::plan("cannot connect streams of different pipelines"));
        }
        let name = factory.name();
        Ok(self.add_node(
            name,
            NodeOp::Operator(factory),
            vec![self.edge(), other.edge()],
            self.parallelism(),
        ))
    }

    /// The rows that the operator producing this stream left out because
    /// they arrived behind the watermark, from its input `input` (0 for a
    /// single-input operator), with that input's columns. They are counted
    /// whether or not this stream is used; with it, they flow like any
    /// other stream (bounded channels, backpressure) to where it leads.
    /// The stream has no event time: its rows are behind the watermark.
    pub fn late_rows(&self, input: usize) -> Result<Stream> {
        let parallelism = self.parallelism();
        let (name, schema) = {
            let g = self.graph.borrow();
            let node = &g.nodes[self.node];
            if !matches!(node.op, NodeOp::Operator(_)) {
                return Err(Error::plan(format!(
                    "'{}' is not an operator: only operators have late rows",
                    node.name
                )));
            }
            let Some(edge) = node.inputs.get(input) else {
                return Err(Error::plan(format!("'{}' has no input {input}", node.name)));
            };
            (
                format!("late rows of {} (input {input})", node.name),
                g.nodes[edge.from].schema.clone(),
            )
        };
        let id = self.graph.borrow_mut().add(Node {
            name,
            op: NodeOp::Late { input },
            parallelism,
            inputs: vec![Edge {
                from: self.node,
                partitioning: Partitioning::Forward,
            }],
            schema,
            event_time: None,
            max_parallelism: None,
        });
        Ok(Stream::new(self.graph.clone(), id))
    }

    /// Both streams' rows as one stream (schemas must match).
    pub fn union(&self, other: &Stream) -> Result<Stream> {
        let (a, b) = (self.schema(), other.schema());
        if !same_columns(&a, &b) {
            return Err(Error::plan(format!(
                "union of streams with different schemas: {a:?} vs {b:?}"
            )));
        }
        let event_time = self
            .event_time()
            .filter(|e| other.event_time().as_deref() == Some(e.as_str()));
        self.connect(
            other,
            Arc::new(UnionFactory {
                schema: a,
                event_time,
            }),
        )
    }

    /// Writes the stream to `factory` (parallelism capped by the sink's).
    pub fn sink(&self, factory: impl SinkFactory + 'static) -> Result<()> {
        self.sink_arc(Arc::new(factory))
    }

    pub fn sink_arc(&self, factory: Arc<dyn SinkFactory>) -> Result<()> {
        let parallelism = factory
            .max_parallelism()
            .map_or(self.parallelism(), |m| m.min(self.parallelism()).max(1));
        let name = format!("sink {}", factory.name());
        self.add_node(name, NodeOp::Sink(factory), vec![self.edge()], parallelism);
        Ok(())
    }
}

fn node_hash(node: &Node) -> u64 {
    let mut h = StableHasher::new();
    match &node.op {
        NodeOp::Source {
            factory,
            event_time,
        } => {
            h.write(b"source");
            h.write(factory.name().as_bytes());
            if let Some(et) = event_time {
                h.write(et.column.as_bytes());
                h.write(&et.max_out_of_orderness_ms.to_le_bytes());
            }
        }
        NodeOp::Operator(factory) => {
            h.write(b"operator");
            h.write(factory.signature().as_bytes());
        }
        NodeOp::Late { input } => {
            h.write(b"late");
            h.write(&input.to_le_bytes());
        }
        NodeOp::Sink(factory) => {
            h.write(b"sink");
            h.write(factory.name().as_bytes());
        }
    }
    for field in node.schema.fields() {
        h.write(field.name().as_bytes());
        h.write(field.data_type().to_string().as_bytes());
        h.write(&[u8::from(field.is_nullable())]);
    }
    for edge in &node.inputs {
        h.write(&edge.from.to_le_bytes());
        h.write(edge.partitioning.to_string().as_bytes());
    }
    h.finish()
}

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// Passes both inputs through unchanged.
struct UnionFactory {
    schema: SchemaRef,
    event_time: Option<String>,
}

impl OperatorFactory for UnionFactory {
    fn name(&self) -> String {
        "union".into()
    }
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn output_event_time(&self) -> Option<String> {
        self.event_time.clone()
    }
    fn create(&self, _: usize, _: usize) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Union))
    }
}

struct Union;

impl Operator for Union {
    fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(Snapshot::none())
    }

    fn on_data(
        &mut self,
        _input: usize,
        batch: arrow::record_batch::RecordBatch,
        out: &mut Emitter,
    ) -> Result<()> {
        out.data(batch);
        Ok(())
    }

    fn watermark_interest(&self, downstream: i64) -> i64 {
        downstream
    }
}
