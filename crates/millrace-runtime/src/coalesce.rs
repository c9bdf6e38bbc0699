//! Exchange-side micro-batching: small batches bound for one channel are
//! held and merged until they reach a size target or their linger deadline.
//!
//! A hash exchange splits every batch over its targets, and an operator
//! with several input instances sends one output per input message, so
//! batches shrink at every hop, and a consumer such as a window join can
//! end up spending most of its time on per-message costs
//! (docs/benchmarks.md, "Merging in exchanges"). Merging them again where
//! they leave restores the batch size without asking the source to wait
//! longer (which would delay every branch of its fused chain, not only the
//! one that suffers).
//!
//! What a pending batch holds back, and why it is safe:
//!
//! * **Watermarks** arriving while rows are pending wait behind them; only
//!   the latest is kept (a watermark promises "nothing earlier follows",
//!   and a later one implies every earlier one). Rows that arrive after a
//!   held watermark join the pending batch, so they overtake it: a
//!   watermark may always be delayed, never advanced. Like a source's
//!   bigger batches, this can only make fewer rows late, never more.
//! * **Barriers, idleness and end of input** close the pending batch first
//!   and are sent behind it, so a barrier still cuts the stream at the
//!   same row.
//! * **Window results** (the task's urgent output) are never held: they,
//!   and anything pending before them, leave at once.
//!
//! * **Rows after `Idle`** go out at once: the consumer leaves an idle
//!   input out of its watermark until it sends again, so rows held there
//!   could fall behind a watermark that other inputs moved meanwhile.
//! * A task held back by a full channel lets its pending batches go: it
//!   reads no input until room frees, so nothing could join them.
//!
//! Memory: per target, one pending batch of under twice the size target,
//! on top of the output of one input message that a task may already hold.
//!
//! **The controller** ([`ExchangeBatching`]) sets the linger and the size
//! target of one exchange from what its batches cost where they are
//! received. Each consumer times every data message it takes (`Channel::
//! record_service`); a least-squares fit of `cost = o + c·rows` over an
//! interval gives the per-message part `o`, and with the batches sent per
//! consumer per second `m`, the **overhead load** `λ = m·o`: the share of a
//! consumer's core spent on per-message costs that merging would save.
//! Every instance of the sending operator has its controller and sees only
//! its own channels, so `m` counts the batches of all the instances that
//! feed the consumer's input (they are alike: this one's times their
//! number). Every interval (ten latency targets, as for sources):
//!
//! * `λ > OVERHEAD_HIGH`: double the linger (from none to the first of
//!   `budget / 32`, `budget / 16`, … that gathers anything), up to the
//!   budget, `EXCHANGE_LINGER_SHARE` of the latency target; but only if the
//!   pieces offered to a target (`a` per second, before merging) come fast
//!   enough for another one to arrive within the new linger (`a·L ≥ 1`):
//!   waiting for a piece that will not come only delays;
//! * `λ < OVERHEAD_LOW`, or `a·L < 1`: halve it (below the first step: 0,
//!   every piece goes out as it comes);
//! * the size target is twice the rows that arrive per linger (`2·r·L`,
//!   within `[2, max]`): a steady stream closes on the deadline, a burst
//!   (a backlog after a stall) closes on size, and a piece that is already
//!   that big never waits.
//!
//! Halving the linger at most doubles the batches, so at most doubles `λ`;
//! with `OVERHEAD_LOW < OVERHEAD_HIGH / 2` a halving can never cross the
//! band, and `a` does not depend on the linger, so after a step change the
//! linger moves one way and then holds. `λ` is smoothed (EWMA) over
//! intervals, restarting after each change as for sources, so one busy
//! interval does not move it.

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use millrace_core::{Message, Watermark};

use crate::batching::{
    BatchPolicy, CostFit, INTERVAL_TARGETS, LINGER_STEPS, MAX_INTERVAL_NS, MIN_INTERVAL_NS, smooth,
};
use crate::trace::Traced;

/// The most of the latency target a row may wait in one exchange's
/// pending batch (sources may add `LINGER_SHARE` before it).
pub const EXCHANGE_LINGER_SHARE: f64 = 0.05;
/// Overhead load above which the linger doubles: per-message costs take
/// more than this share of a consumer's core.
pub const OVERHEAD_HIGH: f64 = 0.1;
/// Overhead load below which the linger halves (below `OVERHEAD_HIGH / 2`).
pub const OVERHEAD_LOW: f64 = 0.04;

/// Whether exchanges merge small batches (only ever with a latency
/// target: without one, batch sizes are fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeBatchingMode {
    /// Never: every piece leaves as it comes.
    Off,
    /// As the consumers' per-message costs require (the controller below).
    Adaptive,
    /// Always for the whole budget, up to the largest batch: for tests
    /// and comparisons.
    Always,
}

/// The linger and size target of one exchange (all its targets alike: they
/// are instances of one operator), and what it measures to set them.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeBatching {
    /// Longest linger allowed; 0 never merges (fixed batch policies).
    budget_ns: i64,
    max_rows: usize,
    /// The whole budget and the largest batch, whatever the load.
    always: bool,
    linger_ns: i64,
    size: usize,
    /// Smoothed overhead load `λ`, pieces and rows offered per target per
    /// second.
    load: Option<f64>,
    pieces_rate: Option<f64>,
    rows_rate: Option<f64>,
    /// This interval's pieces and rows offered (over all targets).
    pieces: u64,
    rows: u64,
    interval_start_ns: i64,
    interval_ns: i64,
}

impl ExchangeBatching {
    /// Merges under an adaptive batch policy as `mode` says, never under a
    /// fixed one.
    pub(crate) fn new(policy: BatchPolicy, mode: ExchangeBatchingMode, now_ns: i64) -> Self {
        let (budget_ns, max_rows, interval_ns) = match policy {
            BatchPolicy::Adaptive {
                latency_target,
                max,
            } if mode != ExchangeBatchingMode::Off => {
                let target = i64::try_from(latency_target.as_nanos()).unwrap_or(i64::MAX);
                (
                    (target as f64 * EXCHANGE_LINGER_SHARE) as i64,
                    max.max(2),
                    target
                        .saturating_mul(INTERVAL_TARGETS)
                        .clamp(MIN_INTERVAL_NS, MAX_INTERVAL_NS),
                )
            }
            _ => (0, 2, i64::MAX),
        };
        let always = mode == ExchangeBatchingMode::Always;
        ExchangeBatching {
            budget_ns,
            max_rows,
            always,
            linger_ns: if always { budget_ns } else { 0 },
            size: max_rows,
            load: None,
            pieces_rate: None,
            rows_rate: None,
            pieces: 0,
            rows: 0,
            interval_start_ns: now_ns,
            interval_ns,
        }
    }

    /// How long a pending batch may wait for more rows (0: it never waits).
    pub(crate) fn linger_ns(&self) -> i64 {
        self.linger_ns
    }

    /// Rows at which a pending batch leaves at once.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// A piece of `rows` rows was offered to one target.
    pub(crate) fn offered(&mut self, rows: usize) {
        self.pieces += 1;
        self.rows += rows as u64;
    }

    /// Whether the current interval is over at `now_ns` (then call
    /// [`Self::decide`] with what the consumers recorded).
    pub(crate) fn due(&self, now_ns: i64) -> bool {
        !self.always && now_ns - self.interval_start_ns >= self.interval_ns
    }

    /// Re-decides from the interval that ends at `now_ns`: `service` is
    /// what the `targets` consumers spent on the batches they took from
    /// this exchange, and `producers` how many instances like this one feed
    /// each consumer's input (each sees its share of the consumer's
    /// messages; the load that matters is the consumer's).
    pub(crate) fn decide(
        &mut self,
        now_ns: i64,
        targets: usize,
        producers: usize,
        service: CostFit,
    ) {
        if self.budget_ns == 0 {
            return;
        }
        let wall_ns = (now_ns - self.interval_start_ns).max(1) as f64;
        let per_target_s = targets.max(1) as f64 * wall_ns / 1e9;
        let pieces_rate = smooth(self.pieces_rate, self.pieces as f64 / per_target_s);
        let rows_rate = smooth(self.rows_rate, self.rows as f64 / per_target_s);
        (self.pieces_rate, self.rows_rate) = (Some(pieces_rate), Some(rows_rate));
        (self.pieces, self.rows, self.interval_start_ns) = (0, 0, now_ns);
        // The consumers' per-batch share of a core; when the fit cannot
        // tell (batches all alike), their whole busy share bounds it, which
        // is enough to know that merging is not needed.
        let consumer_wall_ns = targets.max(1) as f64 * wall_ns / producers.max(1) as f64;
        let load_now = match service.per_batch_and_row() {
            Some((per_batch_ns, _)) => Some(per_batch_ns * service.batches() / consumer_wall_ns),
            None => Some(service.total() / consumer_wall_ns).filter(|l| *l < OVERHEAD_LOW),
        };
        if let Some(now) = load_now {
            self.load = Some(smooth(self.load, now));
        }
        let step = (self.budget_ns / LINGER_STEPS).max(1);
        let before = self.linger_ns;
        // Another piece is expected within `linger` (`a·L ≥ 1`).
        let gathers = |linger: i64| pieces_rate * linger as f64 >= 1e9;
        // The next linger up: double, or from none the first step that
        // gathers anything.
        let mut next = (self.linger_ns * 2).max(step).min(self.budget_ns);
        while self.linger_ns == 0 && !gathers(next) && next < self.budget_ns {
            next = (next * 2).min(self.budget_ns);
        }
        if self.load.is_some_and(|l| l > OVERHEAD_HIGH) && next > self.linger_ns && gathers(next) {
            self.linger_ns = next;
        } else if self.linger_ns > 0
            && (self.load.is_some_and(|l| l < OVERHEAD_LOW) || !gathers(self.linger_ns))
        {
            self.linger_ns /= 2;
            if self.linger_ns < step {
                self.linger_ns = 0;
            }
        }
        let per_linger = 2.0 * rows_rate * self.linger_ns as f64 / 1e9;
        self.size = (per_linger.ceil() as usize).clamp(2, self.max_rows);
        if self.linger_ns != before {
            // Judge the new linger by what it does.
            self.load = None;
        }
    }
}

/// Rows waiting to leave for one target.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    batches: Vec<RecordBatch>,
    /// The trace of the first traced batch among them: the merged batch
    /// carries it (`trace.rs`).
    trace: Traced,
    rows: usize,
    /// When the oldest pending row was staged.
    since_ns: i64,
    /// The latest watermark that arrived after them, with its trace.
    watermark: Option<(Watermark, Traced)>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// When these rows must leave at the latest, with linger `linger_ns`.
    pub(crate) fn deadline(&self, linger_ns: i64) -> Option<i64> {
        (!self.is_empty()).then(|| self.since_ns.saturating_add(linger_ns))
    }

    /// Whether `batch` can join the pending rows (same schema).
    pub(crate) fn accepts(&self, batch: &RecordBatch) -> bool {
        self.batches
            .first()
            .is_none_or(|first| first.schema() == batch.schema())
    }

    pub(crate) fn push(&mut self, batch: RecordBatch, trace: Traced, now_ns: i64) {
        if self.batches.is_empty() {
            self.since_ns = now_ns;
        }
        if self.trace.is_none() {
            self.trace = trace;
        }
        self.rows += batch.num_rows();
        self.batches.push(batch);
    }

    /// Holds `wm` behind the pending rows; false (and nothing held) when
    /// there are none, so it can go out at once.
    pub(crate) fn hold_watermark(&mut self, wm: Watermark, trace: Traced) -> bool {
        if self.is_empty() {
            return false;
        }
        self.watermark = Some((wm, trace));
        true
    }

    /// Empties the pending batch: the merged rows, then the watermark held
    /// behind them, each with its trace. A merge that fails (it cannot,
    /// for batches of one schema) sends the batches as they are, the
    /// first with the trace.
    pub(crate) fn take(&mut self) -> Vec<(Message, Traced)> {
        let batches = std::mem::take(&mut self.batches);
        let mut trace = self.trace.take();
        self.rows = 0;
        let mut out = Vec::with_capacity(2);
        let merged = match batches.len() {
            0 | 1 => None,
            _ => concat_batches(&batches[0].schema(), &batches).ok(),
        };
        match merged {
            Some(merged) => out.push((Message::Data(merged), trace)),
            None => out.extend(
                batches
                    .into_iter()
                    .map(|b| (Message::Data(b), trace.take())),
            ),
        }
        out.extend(
            self.watermark
                .take()
                .map(|(wm, trace)| (Message::Watermark(wm), trace)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;
    use crate::trace::Trace;

    /// Consumers that pay `overhead + per_row·rows` ns for every batch.
    #[derive(Clone, Copy)]
    struct Consumer {
        overhead: f64,
        per_row: f64,
    }

    /// Two targets, each offered `pieces` pieces per second of about
    /// `rows` rows (half, as many and half again in turn: arrivals are
    /// uneven). With linger `L` a batch gathers the pieces of `L`, at least
    /// one, at most what reaches the size target. Runs `intervals` decision
    /// intervals and returns the linger after each.
    fn simulate(
        c: &mut ExchangeBatching,
        pieces: f64,
        rows: f64,
        consumer: Consumer,
        intervals: usize,
        now: &mut i64,
    ) -> Vec<i64> {
        const TARGETS: usize = 2;
        let interval = c.interval_ns.min(10_000_000);
        let mut lingers = Vec::new();
        for _ in 0..intervals {
            let per_target = (pieces * interval as f64 / 1e9).round().max(1.0) as usize;
            let by_size = (c.size() as f64 / rows).max(1.0);
            let per_batch = (pieces * c.linger_ns() as f64 / 1e9).clamp(1.0, by_size);
            let mut service = CostFit::default();
            for _ in 0..TARGETS {
                let mut batch_rows = 0.0;
                let mut gathered = 0.0;
                for i in 0..per_target {
                    let piece = rows * [0.5, 1.0, 1.5][i % 3];
                    c.offered(piece as usize);
                    batch_rows += piece;
                    gathered += 1.0;
                    if gathered >= per_batch || i + 1 == per_target {
                        service.add(
                            batch_rows,
                            consumer.overhead + consumer.per_row * batch_rows,
                        );
                        (batch_rows, gathered) = (0.0, 0.0);
                    }
                }
            }
            *now += interval;
            c.decide(*now, TARGETS, 1, service);
            lingers.push(c.linger_ns());
        }
        lingers
    }

    /// The share of a consumer's core its per-batch costs take at linger `l`.
    fn load(pieces: f64, overhead: f64, l: i64) -> f64 {
        let per_batch = (pieces * l as f64 / 1e9).max(1.0);
        pieces / per_batch * overhead / 1e9
    }

    fn exchange(mode: ExchangeBatchingMode) -> ExchangeBatching {
        let policy = BatchPolicy::Adaptive {
            latency_target: Duration::from_millis(1),
            max: 8192,
        };
        ExchangeBatching::new(policy, mode, 0)
    }

    fn adaptive() -> ExchangeBatching {
        exchange(ExchangeBatchingMode::Adaptive)
    }

    /// ~2 µs per batch and 50 ns per row: a consumer like a window join.
    const JOIN: Consumer = Consumer {
        overhead: 2_000.0,
        per_row: 50.0,
    };

    #[test]
    fn a_light_load_sends_every_piece_as_it_comes() {
        let mut c = adaptive();
        let mut now = 0;
        // 10k pieces/s at 2 µs each: 2% of the consumer.
        let lingers = simulate(&mut c, 10_000.0, 3.0, JOIN, 50, &mut now);
        assert!(lingers.iter().all(|l| *l == 0), "{lingers:?}");
    }

    #[test]
    fn per_message_costs_make_it_merge_just_enough() {
        let mut c = adaptive();
        let mut now = 0;
        // 300k pieces/s of 3 rows: 60% of the consumer on per-batch costs.
        let lingers = simulate(&mut c, 300_000.0, 3.0, JOIN, 100, &mut now);
        assert!(
            lingers.windows(2).all(|w| w[0] <= w[1]),
            "monotonic: {lingers:?}"
        );
        let last = *lingers.last().unwrap();
        assert!(
            load(300_000.0, 2_000.0, last) <= OVERHEAD_HIGH,
            "{lingers:?}"
        );
        assert!(last < c.budget_ns, "only part of the budget: {lingers:?}");
        assert!(lingers[lingers.len() - 50..].iter().all(|l| *l == last));
        // A batch of twice the rows of a linger closes on size (pieces of
        // 1, 3 and 4 rows: 8/3 on average).
        let per_linger = 300_000.0 * 8.0 / 3.0 * last as f64 / 1e9;
        assert_eq!(c.size(), (2.0 * per_linger).ceil() as usize);
    }

    #[test]
    fn pieces_too_far_apart_are_not_waited_for() {
        let mut c = adaptive();
        let mut now = 0;
        // 30 µs per batch, 5k pieces/s: 15% of the consumer, but a piece
        // comes every 200 µs and the budget is 50 µs: nothing would gather.
        let consumer = Consumer {
            overhead: 30_000.0,
            per_row: 50.0,
        };
        let lingers = simulate(&mut c, 5_000.0, 100.0, consumer, 50, &mut now);
        assert!(lingers.iter().all(|l| *l == 0), "{lingers:?}");
    }

    #[test]
    fn a_step_change_moves_the_linger_once_and_it_holds() {
        let mut c = adaptive();
        let mut now = 0;
        simulate(&mut c, 10_000.0, 3.0, JOIN, 20, &mut now);
        assert_eq!(c.linger_ns(), 0);
        let up = simulate(&mut c, 400_000.0, 3.0, JOIN, 200, &mut now);
        assert!(
            up.windows(2).all(|w| w[0] <= w[1]),
            "after the step up: {up:?}"
        );
        let settled = *up.last().unwrap();
        assert!(settled > 0 && up[up.len() - 100..].iter().all(|l| *l == settled));
        let down = simulate(&mut c, 10_000.0, 3.0, JOIN, 200, &mut now);
        assert!(
            down.windows(2).all(|w| w[0] >= w[1]),
            "after the step down: {down:?}"
        );
        assert_eq!(*down.last().unwrap(), 0);
    }

    #[test]
    fn the_load_counts_every_producer_of_the_consumer() {
        // One producer's share: 6% of the consumer's core in per-batch
        // costs, under OVERHEAD_HIGH; with two alike producers it is 12%.
        let interval = adaptive().interval_ns;
        let share = |producers| {
            let mut c = adaptive();
            let mut service = CostFit::default();
            let batches = 0.06 * interval as f64 / JOIN.overhead;
            for i in 0..batches as usize {
                let rows = [1.0, 3.0, 4.0][i % 3];
                service.add(rows, JOIN.overhead + JOIN.per_row * rows);
            }
            for _ in 0..batches as usize * 4 {
                c.offered(3);
            }
            c.decide(interval, 1, producers, service);
            c.linger_ns()
        };
        assert_eq!(share(1), 0);
        assert!(share(2) > 0);
    }

    #[test]
    fn a_short_burst_does_not_move_the_linger() {
        let mut c = adaptive();
        let mut now = 0;
        simulate(&mut c, 10_000.0, 3.0, JOIN, 20, &mut now);
        // One interval at 25% of the consumer on per-batch costs.
        assert_eq!(simulate(&mut c, 125_000.0, 3.0, JOIN, 1, &mut now), [0]);
    }

    #[test]
    fn the_linger_and_size_stay_within_their_bounds() {
        for pieces in [1.0, 1e3, 1e5, 1e6, 1e7] {
            for rows in [1.0, 30.0, 3000.0] {
                let mut c = adaptive();
                let mut now = 0;
                for l in simulate(&mut c, pieces, rows, JOIN, 40, &mut now) {
                    assert!((0..=50_000).contains(&l), "{pieces} × {rows}: {l}");
                    assert!((2..=8192).contains(&c.size()), "{pieces} × {rows}");
                }
            }
        }
    }

    #[test]
    fn fixed_policies_and_off_never_merge_and_always_keeps_the_budget() {
        let fixed = ExchangeBatching::new(BatchPolicy::Fixed(64), ExchangeBatchingMode::Always, 0);
        for mut c in [fixed, exchange(ExchangeBatchingMode::Off)] {
            let mut now = 0;
            let lingers = simulate(&mut c, 1e6, 3.0, JOIN, 20, &mut now);
            assert!(lingers.iter().all(|l| *l == 0), "{lingers:?}");
        }
        let mut always = exchange(ExchangeBatchingMode::Always);
        let mut now = 0;
        // The router never asks it to decide.
        assert!(!always.due(i64::MAX));
        assert_eq!((always.linger_ns(), always.size()), (50_000, 8192));
        let _ = simulate(&mut always, 10.0, 3.0, JOIN, 1, &mut now);
    }

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn wm(t: i64) -> Watermark {
        Watermark {
            time_ms: t,
            entered_ns: t,
        }
    }

    #[test]
    fn rows_merge_in_order_and_the_latest_watermark_follows_them() {
        let mut p = Pending::default();
        assert!(
            !p.hold_watermark(wm(1), None),
            "nothing pending: it goes out now"
        );
        p.push(batch(&[1, 2]), None, 100);
        assert!(p.hold_watermark(wm(5), None));
        // The first traced batch's trace goes with the merged rows.
        p.push(batch(&[3]), Some(Trace::start(3, 0, 140)), 150);
        p.push(batch(&[4]), Some(Trace::start(4, 0, 150)), 160);
        assert!(p.hold_watermark(wm(7), Some(Trace::start(7, 0, 160))));
        assert_eq!(p.rows(), 4);
        assert_eq!(p.deadline(40), Some(140), "from the oldest row");
        let out = p.take();
        assert_eq!(out.len(), 2);
        let (Message::Data(b), Some(trace)) = &out[0] else {
            panic!("traced data first")
        };
        let v: Vec<i64> = b.column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(v, [1, 2, 3, 4]);
        assert_eq!(trace.origin_ns(), 3);
        assert!(
            matches!(&out[1], (Message::Watermark(w), Some(t)) if w.time_ms == 7 && t.origin_ns() == 7)
        );
        assert!(p.is_empty() && p.deadline(40).is_none() && p.take().is_empty());
    }

    #[test]
    fn a_batch_of_another_schema_is_not_accepted() {
        let mut p = Pending::default();
        p.push(batch(&[1]), None, 0);
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("w", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![2]))],
        )
        .unwrap();
        assert!(p.accepts(&batch(&[2])));
        assert!(!p.accepts(&other));
    }
}
