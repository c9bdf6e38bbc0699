//! What an operator is to the runtime.
//!
//! An operator sees one ordered stream of messages. The runtime has already
//! merged its inputs: watermarks arrive as the minimum over inputs, barriers
//! once aligned, `End` once every input ended. An operator emits into an
//! [`Emitter`]; consecutive operators of a fused chain pass batches through
//! emitters with no queue between them.
//!
//! Batches in and out carry the user columns followed by the entered column
//! (`crate::ENTERED_COLUMN`); operators keep it aligned with the rows
//! (Arrow's `filter`/`take` do so) or, for results made final by a watermark,
//! set it from `Watermark::entered_ns`.

use crate::{BarrierId, Error, Message, Result, Snapshot, Watermark};
use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

/// Output of one operator call.
#[derive(Default)]
pub struct Emitter {
    pub out: Vec<Message>,
    pub late_rows: u64,
    /// Late rows with the input they came on, when the runtime routes them
    /// to a late output ([`Emitter::keeping_late`]); `None`: only counted.
    late: Option<Vec<(usize, RecordBatch)>>,
}

impl Emitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// An emitter that keeps late rows for the operator's late output.
    pub fn keeping_late() -> Self {
        Emitter {
            late: Some(Vec::new()),
            ..Self::default()
        }
    }

    /// Emits a batch (empty batches are dropped: they carry nothing).
    pub fn data(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.out.push(Message::Data(batch));
        }
    }

    pub fn watermark(&mut self, wm: Watermark) {
        self.out.push(Message::Watermark(wm));
    }

    pub fn barrier(&mut self, id: BarrierId) {
        self.out.push(Message::Barrier(id));
    }

    /// Rows `rows` of `batch`, read on input `input`, arrived behind the
    /// watermark and are left out of the operator's results. They are always
    /// counted (per operator in the run summary) and, when the pipeline asked
    /// for them, sent as they came (entered column included) to the late
    /// output of that input. An operator reports every row it leaves out for
    /// lateness here, exactly once.
    pub fn late(&mut self, input: usize, batch: &RecordBatch, rows: &[u32]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.late_rows += rows.len() as u64;
        if let Some(kept) = &mut self.late {
            let indices = UInt32Array::from(rows.to_vec());
            kept.push((input, take_record_batch(batch, &indices)?));
        }
        Ok(())
    }

    /// Takes the late rows kept so far, with their input.
    pub fn take_late(&mut self) -> Vec<(usize, RecordBatch)> {
        self.late.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Messages emitted so far (for operator unit tests).
    pub fn messages(&self) -> &[Message] {
        &self.out
    }

    /// Takes the emitted messages (for operator unit tests).
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.out)
    }

    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }
}

pub trait Operator: Send {
    /// A batch from input `input` (0 for single-input operators).
    fn on_data(&mut self, input: usize, batch: RecordBatch, out: &mut Emitter) -> Result<()>;

    /// The task's input watermark advanced. Operators that hold state fire
    /// what it completes, then forward it.
    fn on_watermark(&mut self, wm: Watermark, out: &mut Emitter) -> Result<()> {
        out.watermark(wm);
        Ok(())
    }

    /// Barrier `id` is aligned on every input. The runtime has taken the
    /// operator's [`Operator::snapshot`] just before; most operators only
    /// forward the barrier.
    fn on_barrier(&mut self, id: BarrierId, out: &mut Emitter) -> Result<()> {
        out.barrier(id);
        Ok(())
    }

    /// Everything this instance must keep to continue after a barrier, as
    /// Arrow tables (the state contract: `crate::state`).
    ///
    /// Called when a barrier is aligned, before [`Operator::on_barrier`],
    /// on the worker thread, with the barrier waiting behind it, so it
    /// must not block: no I/O, no waiting; only copy (or hand over shared
    /// buffers of) what the operator holds. The operator must be left as
    /// it was: the same later input gives the same later output whether or
    /// not a snapshot was taken.
    ///
    /// What breaks if it is wrong: an operator that keeps state across
    /// calls (open windows, buffered join rows, a watermark, counters that
    /// reach the output) and leaves any of it out of its snapshot loses it
    /// in a recovery, silently: windows fire with part of their rows, joins
    /// miss matches, rows counted late are let in. There is therefore no
    /// default; a stateless operator says so with [`Snapshot::none`].
    fn snapshot(&mut self) -> Result<Snapshot>;

    /// Every input ended: emit what remains (e.g. fire all open windows).
    /// The runtime forwards `End` itself afterwards.
    fn on_end(&mut self, _out: &mut Emitter) -> Result<()> {
        Ok(())
    }

    /// The most state this instance has held so far, for the run summary;
    /// `None` for operators that keep none.
    fn peak_state(&self) -> Option<StateSize> {
        None
    }

    /// The smallest input watermark (ms) that can make this operator emit
    /// rows, or pass on a watermark at or past `downstream`, the smallest
    /// one the operators after it care about (`i64::MAX`: none do).
    ///
    /// An exchange that is merging small batches for this task keeps a
    /// watermark below it waiting behind them (`coalesce.rs` in the
    /// runtime): such a watermark changes nothing here until a later one
    /// comes. It is a hint for latency only: a held watermark is always
    /// correct, and one that mattered after all (the answer fell, or was
    /// read before it did) is late by at most the exchange's linger.
    /// The default, `i64::MIN`, says that every watermark matters.
    fn watermark_interest(&self, downstream: i64) -> i64 {
        let _ = downstream;
        i64::MIN
    }
}

/// How much keyed state an operator holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Bytes of memory the state occupies, keys included.
    pub bytes: usize,
    /// Keyed entries (for a window aggregate: one per key per open window).
    pub keys: usize,
    /// Bytes of the keys themselves, within `bytes`.
    pub key_bytes: usize,
}

impl std::ops::AddAssign for StateSize {
    /// The state of two instances, or of two windows, together.
    fn add_assign(&mut self, other: StateSize) {
        self.bytes += other.bytes;
        self.keys += other.keys;
        self.key_bytes += other.key_bytes;
    }
}

impl std::ops::SubAssign for StateSize {
    /// What is left once `other`, a part of this state, is let go.
    fn sub_assign(&mut self, other: StateSize) {
        self.bytes -= other.bytes;
        self.keys -= other.keys;
        self.key_bytes -= other.key_bytes;
    }
}

impl StateSize {
    /// Bytes per entry beyond its key (0 without entries).
    pub fn bytes_per_key_beyond_key(&self) -> f64 {
        if self.keys == 0 {
            return 0.0;
        }
        (self.bytes.saturating_sub(self.key_bytes)) as f64 / self.keys as f64
    }
}

/// Describes an operator and creates one instance per parallel task.
pub trait OperatorFactory: Send + Sync {
    /// Short name shown in plans, summaries and errors (e.g. `filter`, `window`).
    fn name(&self) -> String;
    /// User schema of the output (without the entered column).
    fn output_schema(&self) -> SchemaRef;
    /// Event-time column of the output, if the output has one.
    fn output_event_time(&self) -> Option<String>;
    fn create(&self, instance: usize, parallelism: usize) -> Result<Box<dyn Operator>>;

    /// Instance `instance` of `parallelism`, continuing from `state`: what
    /// that instance's [`Operator::snapshot`] returned at a barrier of a run
    /// of the same plan (same [`OperatorFactory::signature`], same
    /// parallelism). Fed the input that followed the barrier, it must emit
    /// exactly what the snapshotted instance would have. An empty snapshot
    /// (nothing to continue from) gives a fresh instance; any other goes to
    /// [`OperatorFactory::resume`].
    fn restore(
        &self,
        instance: usize,
        parallelism: usize,
        state: &Snapshot,
    ) -> Result<Box<dyn Operator>> {
        if state.is_empty() {
            self.create(instance, parallelism)
        } else {
            self.resume(instance, parallelism, state)
        }
    }

    /// [`OperatorFactory::restore`] from a snapshot that holds state: what a
    /// stateful operator implements. A snapshot that is not this plan's must
    /// be refused with an error, never half-read. The default serves
    /// stateless operators: it refuses every snapshot (state is never
    /// dropped).
    fn resume(
        &self,
        _instance: usize,
        _parallelism: usize,
        state: &Snapshot,
    ) -> Result<Box<dyn Operator>> {
        Err(Error::Other(format!(
            "operator '{}' keeps no state, but its snapshot holds {} row(s)",
            self.name(),
            state.rows()
        )))
    }

    /// The snapshots of `parallelism` new instances continuing from `old`,
    /// the snapshots every instance of a run at another parallelism handed
    /// over at one barrier (`old[i]` is instance `i` of `old.len()`'s). The
    /// result has one snapshot per new instance, in instance order, each to
    /// be given to [`OperatorFactory::restore`] as that instance's.
    ///
    /// What an implementer must guarantee: the new instances, each fed the
    /// input the runtime routes to it after the barrier, emit together
    /// exactly what the old instances would have emitted together (as a
    /// multiset of rows; the order across instances was never defined).
    /// That means:
    ///
    /// * **Keyed state goes where its key's rows will go**: to the instance
    ///   owning its key group (`crate::key_groups`), computed with the same
    ///   hash over the same key values, of the same Arrow types, that the
    ///   runtime's hash exchange uses to route this operator's input. State
    ///   placed anywhere else meets none of its later rows: a window fires
    ///   with part of its rows, a join misses matches, silently.
    /// * **Nothing is lost or doubled**: every piece of state of every old
    ///   snapshot is in exactly one new one (or merged into one, where two
    ///   old instances held parts of one thing, as partial aggregates of
    ///   one window do). An operator whose rows are such parts, merged by
    ///   a later phase, promises the same merged result rather than the
    ///   same rows: its merged state sends one part where the old
    ///   instances would have sent two.
    /// * **State that is not keyed** (the watermark, counters) is merged by
    ///   a rule the implementation states with its reason. A watermark is
    ///   merged by its minimum: every instance behind a hash exchange has
    ///   seen the same input watermark anyway, and a smaller one never
    ///   declares a row late that the old run would have let in.
    /// * An operator that cannot keep these promises for some input
    ///   partitioning (one limited to a single instance, say) refuses with
    ///   an error naming itself, rather than guess.
    ///
    /// Same parallelism is a rescale like any other, so an implementation
    /// never needs to special-case it.
    ///
    /// The default serves operators without state: when every old snapshot
    /// is empty it returns `parallelism` empty ones; any state is refused
    /// by name, since it cannot know where that state belongs.
    fn rescale(&self, old: &[Snapshot], parallelism: usize) -> Result<Vec<Snapshot>> {
        crate::state::rescale_nothing(&format!("operator '{}'", self.name()), old, parallelism)
    }

    /// Everything that decides what this operator computes and what its
    /// state means, as text: the plan fingerprint hashes it (with the
    /// output schema and the inputs), so a checkpoint is never restored
    /// into an operator that would read its state differently. The default,
    /// the name, suits operators whose name says it all.
    fn signature(&self) -> String {
        self.name()
    }
}
