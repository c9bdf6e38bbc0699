//! The sending side of a task: partitions its output over the downstream
//! channels and holds what does not fit yet.
//!
//! A task hands the output of one input message to [`OutputRouter::send`],
//! then calls [`OutputRouter::flush`] until everything is queued; while
//! anything is held back, the task reads no more input. So the memory held
//! here is at most the output of one input message per task, plus, when
//! the exchange coalesces (`coalesce.rs`), one pending batch of at most the
//! size target per channel — the only buffers besides the bounded channels.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use millrace_core::{Message, Result};

use crate::batching::CostFit;
use crate::channel::Channel;
use crate::coalesce::{ExchangeBatching, Pending};
use crate::exchange::{Partitioning, hash_partition};
use crate::trace::{Traced, oldest_entered};

pub struct OutputRouter {
    targets: Vec<Arc<Channel>>,
    /// Messages not yet accepted, with their traces, per target, in order.
    held: Vec<VecDeque<(Message, Traced)>>,
    /// Small batches waiting to be merged, per target (`coalesce.rs`).
    pending: Vec<Pending>,
    /// How long a pending batch may wait for more rows, and the rows at
    /// which it leaves at once.
    batching: ExchangeBatching,
    /// `Idle` went out and no data since: the next rows go out at once.
    resuming: bool,
    partitioning: Partitioning,
    key_indices: Vec<usize>,
    next_round_robin: usize,
}

impl OutputRouter {
    pub(crate) fn new(
        targets: Vec<Arc<Channel>>,
        partitioning: Partitioning,
        key_indices: Vec<usize>,
        batching: ExchangeBatching,
    ) -> Self {
        let held = targets.iter().map(|_| VecDeque::new()).collect();
        let pending = targets.iter().map(|_| Pending::default()).collect();
        OutputRouter {
            targets,
            held,
            pending,
            batching,
            resuming: false,
            partitioning,
            key_indices,
            next_round_robin: 0,
        }
    }

    /// Routes one message with its trace (nothing is sent yet; call
    /// [`Self::flush`]). Of a batch cut into parts, the part holding its
    /// oldest row carries the trace (the row it follows, if still there);
    /// of a broadcast batch, the copy to the first target. A watermark or
    /// the end carries it to every target: each may make results final.
    pub fn send(&mut self, msg: Message, trace: Traced, now_ns: i64) -> Result<()> {
        match msg {
            Message::Data(batch) => {
                let routed = self.route_batch(batch, trace, now_ns);
                self.resuming = false;
                routed
            }
            Message::Watermark(wm) => {
                for t in 0..self.targets.len() {
                    // Behind pending rows it waits with them, unless it can
                    // change something at the consumer: then they all leave.
                    if self.pending[t].is_empty() {
                        self.held[t].push_back((Message::Watermark(wm), trace.clone()));
                        continue;
                    }
                    self.pending[t].hold_watermark(wm, trace.clone());
                    if wm.time_ms >= self.targets[t].interest() {
                        self.release(t);
                    }
                }
                Ok(())
            }
            control => {
                // After `Idle` the consumers leave this input out of their
                // watermark until it sends again: its next rows must not
                // wait, or other inputs may move the watermark past them.
                self.resuming |= matches!(control, Message::Idle);
                for t in 0..self.targets.len() {
                    self.release(t);
                    self.held[t].push_back((control.clone(), trace.clone()));
                }
                Ok(())
            }
        }
    }

    fn route_batch(&mut self, batch: RecordBatch, trace: Traced, now_ns: i64) -> Result<()> {
        let n = self.targets.len();
        match &self.partitioning {
            _ if n == 1 => self.stage(0, batch, trace, now_ns),
            Partitioning::Forward | Partitioning::RoundRobin => {
                let t = self.next_round_robin % n;
                self.next_round_robin = self.next_round_robin.wrapping_add(1);
                self.stage(t, batch, trace, now_ns);
            }
            Partitioning::Broadcast => {
                let mut trace = trace;
                for t in 0..n {
                    self.stage(t, batch.clone(), trace.take(), now_ns);
                }
            }
            Partitioning::Hash(_) => {
                let parts = hash_partition(&batch, &self.key_indices, n)?;
                let traced = trace.as_ref().and_then(|_| {
                    (parts.iter().enumerate())
                        .filter_map(|(t, p)| Some((t, oldest_entered(p.as_ref()?)?)))
                        .min_by_key(|(_, oldest)| *oldest)
                        .map(|(t, _)| t)
                });
                let mut trace = trace;
                for (t, part) in parts.into_iter().enumerate() {
                    if let Some(part) = part {
                        let trace = if traced == Some(t) {
                            trace.take()
                        } else {
                            None
                        };
                        self.stage(t, part, trace, now_ns);
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds `batch` to target `t`'s pending rows, or holds it for sending
    /// when it is big enough alone (or the exchange does not coalesce).
    fn stage(&mut self, t: usize, batch: RecordBatch, trace: Traced, now_ns: i64) {
        self.batching.offered(batch.num_rows());
        let size = self.batching.size();
        if self.batching.linger_ns() == 0 || batch.num_rows() >= size || self.resuming {
            self.release(t);
            self.hold(t, batch, trace);
            return;
        }
        if !self.pending[t].accepts(&batch) {
            self.release(t);
        }
        self.pending[t].push(batch, trace, now_ns);
        if self.pending[t].rows() >= size {
            self.release(t);
        }
    }

    /// Moves target `t`'s pending rows (and the watermark behind them) to
    /// the messages held for sending.
    fn release(&mut self, t: usize) {
        if self.pending[t].is_empty() {
            return;
        }
        for (msg, trace) in self.pending[t].take() {
            match msg {
                Message::Data(batch) => self.hold(t, batch, trace),
                other => self.held[t].push_back((other, trace)),
            }
        }
    }

    /// Lets every pending batch go (they are sent at the next flush).
    pub fn release_all(&mut self) {
        for t in 0..self.pending.len() {
            self.release(t);
        }
    }

    /// The earliest time a pending batch must leave, if any is pending.
    pub fn deadline(&self) -> Option<i64> {
        let linger = self.batching.linger_ns();
        self.pending.iter().filter_map(|p| p.deadline(linger)).min()
    }

    /// Holds `batch` for target `t`, cut into slices that each fit the
    /// channel's row capacity (zero-copy), so occupancy never exceeds it.
    /// A trace goes with the first slice.
    fn hold(&mut self, t: usize, batch: RecordBatch, mut trace: Traced) {
        let cap = self.targets[t].capacity().rows;
        let rows = batch.num_rows();
        if rows <= cap {
            self.held[t].push_back((Message::Data(batch), trace));
            return;
        }
        let mut offset = 0;
        while offset < rows {
            let len = cap.min(rows - offset);
            let slice = Message::Data(batch.slice(offset, len));
            self.held[t].push_back((slice, trace.take()));
            offset += len;
        }
    }

    /// Releases the pending batches that are due (all of them when
    /// `urgent`), then queues as much as the channels accept; true when
    /// nothing is held back (pending batches may still wait).
    /// `urgent`: what is queued now carries window results or follows from
    /// them, so its consumers are polled ahead of their workers' rounds.
    pub fn flush(&mut self, urgent: bool, now_ns: i64) -> bool {
        if self.batching.due(now_ns) {
            let mut service = CostFit::default();
            for target in &self.targets {
                service.merge(&target.take_service());
            }
            let producers = self
                .targets
                .iter()
                .map(|c| c.producers())
                .max()
                .unwrap_or(1);
            self.batching
                .decide(now_ns, self.targets.len(), producers, service);
        }
        let linger = self.batching.linger_ns();
        for t in 0..self.pending.len() {
            if urgent
                || self.pending[t]
                    .deadline(linger)
                    .is_some_and(|d| d <= now_ns)
            {
                self.release(t);
            }
        }
        let mut all = true;
        for (t, held) in self.held.iter_mut().enumerate() {
            let mut sent = false;
            while let Some((msg, trace)) = held.pop_front() {
                if let Err(back) = self.targets[t].try_send(msg, trace, now_ns) {
                    held.push_front(back);
                    all = false;
                    break;
                }
                sent = true;
            }
            if sent && urgent {
                self.targets[t].mark_urgent();
            }
        }
        all
    }

    /// The smallest watermark that can change anything behind this exchange
    /// (`i64::MAX` if nothing can).
    pub fn interest(&self) -> i64 {
        self.targets
            .iter()
            .map(|c| c.interest())
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Nothing held back and nothing pending.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.iter().all(|h| h.is_empty()) && self.pending.iter().all(|p| p.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use millrace_core::Watermark;

    use super::*;
    use crate::batching::BatchPolicy;
    use crate::coalesce::ExchangeBatchingMode;
    use crate::trace::Trace;

    /// With a 1 ms target an exchange that always merges lingers 50 µs.
    const LINGER: i64 = 50_000;

    fn router(mode: ExchangeBatchingMode, max: usize) -> (OutputRouter, Arc<Channel>) {
        let channel = Channel::for_test();
        let policy = BatchPolicy::Adaptive {
            latency_target: Duration::from_millis(1),
            max,
        };
        let batching = ExchangeBatching::new(policy, mode, 0);
        let r = OutputRouter::new(
            vec![channel.clone()],
            Partitioning::Forward,
            vec![],
            batching,
        );
        (r, channel)
    }

    fn data(values: &[i64]) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let column = Arc::new(Int64Array::from(values.to_vec()));
        Message::Data(RecordBatch::try_new(schema, vec![column]).unwrap())
    }

    fn wm(t: i64) -> Message {
        Message::Watermark(Watermark {
            time_ms: t,
            entered_ns: 0,
        })
    }

    /// What the channel holds, as values for data and `-t` for a watermark
    /// at `t`, `0` for anything else, one inner list per message.
    fn drain(c: &Channel) -> Vec<Vec<i64>> {
        std::iter::from_fn(|| c.try_recv().map(|(m, _)| m))
            .map(|m| match m {
                Message::Data(b) => b.column(0).as_primitive::<Int64Type>().values().to_vec(),
                Message::Watermark(w) => vec![-w.time_ms],
                _ => vec![0],
            })
            .collect()
    }

    #[test]
    fn small_batches_merge_and_leave_at_their_deadline() {
        let (mut r, c) = router(ExchangeBatchingMode::Always, 1024);
        r.send(data(&[1, 2]), None, 0).unwrap();
        r.send(data(&[3]), None, 10_000).unwrap();
        assert!(r.flush(false, LINGER - 1));
        assert!(drain(&c).is_empty(), "both wait");
        assert_eq!(r.deadline(), Some(LINGER), "from the first");
        assert!(!r.is_empty());
        assert!(r.flush(false, LINGER));
        assert_eq!(drain(&c), [vec![1, 2, 3]]);
        assert!(r.is_empty() && r.deadline().is_none());
    }

    #[test]
    fn watermarks_wait_behind_merged_rows_unless_the_consumer_needs_them() {
        let (mut r, c) = router(ExchangeBatchingMode::Always, 1024);
        c.set_interest(100);
        r.send(data(&[1]), None, 0).unwrap();
        r.send(wm(40), None, 0).unwrap();
        r.send(data(&[2]), None, 0).unwrap();
        r.send(wm(60), None, 0).unwrap();
        r.flush(false, 1);
        assert!(drain(&c).is_empty(), "40 and 60 change nothing there");
        // 100 can fire a window: it leaves at once, behind the rows.
        r.send(wm(100), None, 2).unwrap();
        r.flush(false, 3);
        assert_eq!(drain(&c), [vec![1, 2], vec![-100]]);
        // With nothing pending a watermark goes straight out.
        r.send(wm(110), None, 4).unwrap();
        r.flush(false, 5);
        assert_eq!(drain(&c), [vec![-110]]);
    }

    #[test]
    fn the_latest_held_watermark_follows_the_rows_at_the_deadline() {
        let (mut r, c) = router(ExchangeBatchingMode::Always, 1024);
        c.set_interest(i64::MAX);
        r.send(data(&[1]), None, 0).unwrap();
        r.send(wm(40), None, 0).unwrap();
        r.send(wm(60), None, 0).unwrap();
        r.flush(false, LINGER);
        assert_eq!(drain(&c), [vec![1], vec![-60]]);
    }

    #[test]
    fn urgent_output_barriers_and_big_batches_do_not_wait() {
        let (mut r, c) = router(ExchangeBatchingMode::Always, 4);
        c.set_interest(i64::MAX);
        r.send(data(&[1]), None, 0).unwrap();
        r.flush(true, 1);
        assert_eq!(drain(&c), [vec![1]], "window results leave at once");
        r.send(data(&[2]), None, 2).unwrap();
        r.send(Message::Barrier(7), None, 2).unwrap();
        r.flush(false, 3);
        assert_eq!(
            drain(&c),
            [vec![2], vec![0]],
            "rows before the barrier, then it"
        );
        r.send(data(&[3]), None, 4).unwrap();
        r.send(data(&[4, 5, 6, 7]), None, 4).unwrap();
        r.flush(false, 5);
        assert_eq!(
            drain(&c),
            [vec![3], vec![4, 5, 6, 7]],
            "a batch of the size target goes out, after what waited"
        );
        r.send(data(&[8, 9]), None, 6).unwrap();
        r.send(data(&[10, 11]), None, 6).unwrap();
        r.flush(false, 7);
        assert_eq!(
            drain(&c),
            [vec![8, 9, 10, 11]],
            "pending rows reach the size"
        );
    }

    #[test]
    fn rows_after_idle_do_not_wait_and_a_backpressured_task_lets_go() {
        let (mut r, c) = router(ExchangeBatchingMode::Always, 1024);
        c.set_interest(i64::MAX);
        r.send(Message::Idle, None, 0).unwrap();
        r.send(data(&[1]), None, 0).unwrap();
        r.flush(false, 1);
        assert_eq!(drain(&c), [vec![0], vec![1]], "the first rows after Idle");
        r.send(data(&[2]), None, 2).unwrap();
        r.flush(false, 3);
        assert!(drain(&c).is_empty(), "later rows wait again");
        r.release_all();
        r.flush(false, 4);
        assert_eq!(drain(&c), [vec![2]]);
    }

    #[test]
    fn an_exchange_without_merging_sends_every_batch_as_it_comes() {
        for mode in [ExchangeBatchingMode::Off, ExchangeBatchingMode::Adaptive] {
            let (mut r, c) = router(mode, 1024);
            c.set_interest(i64::MAX);
            r.send(data(&[1]), None, 0).unwrap();
            r.send(wm(5), None, 0).unwrap();
            r.send(data(&[2]), None, 0).unwrap();
            r.flush(false, 0);
            assert_eq!(drain(&c), [vec![1], vec![-5], vec![2]], "{mode:?}");
        }
    }

    // ── traces ──────────────────────────────────────────────────────────

    /// Rows `0..n` with key = row and entered = `entered + row`.
    fn entered_rows(n: i64, entered: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let keys = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))]);
        let entered = Int64Array::from_iter_values((0..n).map(|i| entered + i));
        millrace_core::attach_entered(&keys.unwrap(), entered).unwrap()
    }

    fn channel_of(rows: usize, stage: crate::trace::StageId) -> Arc<Channel> {
        let capacity = crate::channel::ChannelCapacity {
            rows,
            ..Default::default()
        };
        let waker = crate::worker::WorkerWaker::default;
        Arc::new(Channel::new(
            capacity,
            waker(),
            waker(),
            "up".into(),
            "down".into(),
            "e".into(),
            stage,
        ))
    }

    type Stamps = Vec<(crate::trace::StageId, i64)>;

    /// Each message taken from `c`: its rows and its trace's stamps.
    fn traces_in(c: &Channel) -> Vec<(usize, Option<Stamps>)> {
        std::iter::from_fn(|| c.try_recv())
            .map(|(m, t)| (m.rows(), t.map(|t| t.stamps().to_vec())))
            .collect()
    }

    /// Of a batch split by key, only the part holding its oldest row
    /// carries the trace: one sample stays one trace.
    #[test]
    fn a_split_batch_gives_its_trace_to_the_part_holding_its_oldest_row() {
        let channels = [channel_of(1024, 10), channel_of(1024, 20)];
        let policy = BatchPolicy::Fixed(1024);
        let mut r = OutputRouter::new(
            channels.to_vec(),
            Partitioning::Hash(vec!["k".into()]),
            vec![0],
            ExchangeBatching::new(policy, ExchangeBatchingMode::Off, 0),
        );
        let batch = entered_rows(64, 1_000);
        let oldest_key_at = hash_partition(&batch.slice(0, 1), &[0], 2).unwrap()[0].is_some();
        r.send(
            Message::Data(batch),
            Some(Trace::start(1_000, 1, 2_000)),
            3_000,
        )
        .unwrap();
        assert!(r.flush(false, 4_000));
        let (with, without) = if oldest_key_at { (0, 1) } else { (1, 0) };
        let traced = traces_in(&channels[with]);
        assert_eq!(traced.len(), 1);
        assert_eq!(
            traced[0].1.as_deref(),
            Some(&[(1, 2_000), (with as u32 * 10 + 10, 4_000)][..])
        );
        assert!(
            traces_in(&channels[without])
                .iter()
                .all(|(_, t)| t.is_none())
        );
    }

    /// A batch cut to fit the channel gives its trace to the first slice;
    /// a refused send is stamped once, when a channel accepts it.
    #[test]
    fn a_trace_goes_with_the_first_slice_and_is_stamped_when_accepted() {
        let c = channel_of(4, 7);
        let policy = BatchPolicy::Fixed(1024);
        let mut r = OutputRouter::new(
            vec![c.clone()],
            Partitioning::Forward,
            vec![],
            ExchangeBatching::new(policy, ExchangeBatchingMode::Off, 0),
        );
        r.send(Message::Data(entered_rows(4, 0)), None, 0).unwrap();
        assert!(r.flush(false, 1));
        r.send(
            Message::Data(entered_rows(6, 100)),
            Some(Trace::start(100, 1, 150)),
            200,
        )
        .unwrap();
        assert!(!r.flush(false, 300), "the channel is full");
        assert_eq!(traces_in(&c), [(4, None)]);
        assert!(!r.flush(false, 400), "the second slice waits");
        assert_eq!(
            traces_in(&c),
            [(4, Some(vec![(1, 150), (7, 400)]))],
            "the first slice, stamped by the send that was accepted"
        );
        assert!(r.flush(false, 500));
        assert_eq!(traces_in(&c), [(2, None)]);
    }
}
