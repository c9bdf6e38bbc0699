//! A source as the head of a task: reads batches of the size its batch
//! controller chooses, and owns the source-side rules: watermark = max
//! event time − bound after every batch, `Idle` after the idle timeout
//! without data, each barrier the run requests (`checkpoint::Barriers`)
//! at the next step, holding back while ahead of its sibling instances
//! (alignment), `End` when the reader is exhausted or the run is stopped
//! (after the stopping run's last barrier, when it checkpoints).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use arrow::array::Array;
use millrace_core::time::{event_times_ms, now_ns};
use millrace_core::{
    BarrierId, Error, Message, Result, Snapshot, SourcePoll, SourceReader, Watermark,
    entered_column,
};

use crate::alignment::SourceAlignment;
use crate::batching::BatchController;
use crate::checkpoint::{Barriers, SourceProgress};
use crate::metrics::OperatorMetrics;
use crate::trace::{StageId, Trace, Traced, oldest_entered};
use crate::worker::StopHandle;

/// How soon a source that is pending without a wake-up time is polled again.
const UNTIMED_SOURCE_RETRY_NS: i64 = 1_000_000;

/// How soon a source instance held back by alignment looks again.
const ALIGNMENT_RETRY_NS: i64 = 50_000;

/// The source side of a source task.
pub struct SourceHead {
    pub name: String,
    pub reader: Box<dyn SourceReader>,
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
    /// Without checkpoints, a barrier after every this many rows (for
    /// tests of alignment): the instance requests it for every source.
    pub barrier_every_rows: Option<u64>,
    pub max_event_time: i64,
    pub last_watermark: i64,
    pub last_data_ns: i64,
    pub idle_declared: bool,
    /// Restored from a checkpoint and not yet said downstream: the first
    /// step sends the restored watermark (and `Idle`, if it was idle), so
    /// the fresh input gates below learn where this instance stood.
    pub announce_restored: bool,
    pub rows_since_barrier: u64,
    pub next_barrier: BarrierId,
    /// The barriers the run asks for. Every instance injects each one at
    /// its next step, whatever it is doing (reading, waiting for input,
    /// held back by alignment), so a quiet or slow source never holds an
    /// alignment (and with it the other inputs) hostage.
    pub barriers: Arc<Barriers>,
    /// The run checkpoints: a stop waits for the last barrier.
    pub checkpointing: bool,
    pub exhausted: bool,
    /// Set from outside to end the stream early (graceful stop).
    pub stop: StopHandle,
    /// The source's instances and this one's index among them, when they
    /// are kept within a drift of each other.
    pub alignment: Option<(Arc<SourceAlignment>, usize)>,
    /// Trace one batch per this many ns (`trace.rs`); `None`: none.
    pub trace_every_ns: Option<i64>,
    /// The next batch read at or after this time is traced.
    pub next_trace_ns: i64,
    /// The trace of what the last step produced, until the task takes it.
    pub traced: Traced,
    /// When the newest row of the last batch read entered (`i64::MIN`:
    /// none read yet): the end of input is traced from it.
    pub last_entered_ns: i64,
}

impl SourceHead {
    /// Makes where this instance stands readable live (`OperatorMetrics`).
    pub(super) fn publish_progress(&self) {
        let stats = self.reader.stats();
        let m = &self.metrics;
        m.skipped.store(stats.skipped, Relaxed);
        m.dead_lettered.store(stats.dead_lettered, Relaxed);
        m.watermark_ms.store(self.last_watermark, Relaxed);
        m.max_event_time_ms.store(self.max_event_time, Relaxed);
    }

    /// Tells the sibling instances where this one is (`i64::MAX`: it holds
    /// nobody back).
    fn publish(&self, wm: i64) {
        if let Some((alignment, instance)) = &self.alignment {
            alignment.publish(*instance, wm);
        }
    }

    /// The watermark the event times read so far allow (the reader's
    /// `event_time_reached` when it interleaves inputs, else the largest
    /// event time seen), if later than the last one sent.
    fn advanced_watermark(&self) -> Option<i64> {
        let (_, _, bound, _) = self.event_time.as_ref()?;
        let reached = self
            .reader
            .event_time_reached()
            .unwrap_or(self.max_event_time);
        let wm = reached.saturating_sub(*bound);
        (wm > self.last_watermark).then_some(wm)
    }

    fn inject_barrier(&mut self, out: &mut Vec<(usize, Message)>) {
        out.push((0, Message::Barrier(self.next_barrier)));
        self.next_barrier += 1;
        self.rows_since_barrier = 0;
    }

    /// The reader's position and this instance's progress, taken as a
    /// barrier leaves (nothing was read since it was injected). A reader
    /// that cannot be read again from a position is refused by name.
    pub(super) fn snapshot(&self) -> Result<(Snapshot, Snapshot)> {
        let position = self.reader.position()?.ok_or_else(|| {
            Error::plan(format!(
                "source {} cannot take part in checkpoints: it cannot be read again from a \
                 position (turn checkpoints off for this pipeline)",
                self.name
            ))
        })?;
        let progress = SourceProgress {
            max_event_time: self.max_event_time,
            watermark: self.last_watermark,
            idle: self.idle_declared,
        };
        Ok((position, progress.to_snapshot()))
    }

    /// Continues from `position` and `progress` (what [`Self::snapshot`]
    /// returned in the run being restored); barriers go on after
    /// `last_epoch`.
    pub(crate) fn restore(
        &mut self,
        position: &Snapshot,
        progress: &Snapshot,
        last_epoch: BarrierId,
    ) -> Result<()> {
        self.next_barrier = last_epoch + 1;
        if position.is_empty() {
            return Err(Error::Other(format!(
                "the checkpoint holds no position for source {}",
                self.name
            )));
        }
        self.reader.seek(position)?;
        let progress = SourceProgress::from_snapshot(progress)?.ok_or_else(|| {
            Error::Other(format!(
                "the checkpoint holds no progress for source {}",
                self.name
            ))
        })?;
        self.max_event_time = progress.max_event_time;
        self.last_watermark = progress.watermark;
        self.idle_declared = progress.idle;
        self.announce_restored = true;
        self.publish(self.last_watermark);
        Ok(())
    }

    /// Ends the stream. With tracing on, the end is traced from the newest
    /// row read: the results it makes final (windows still open) count
    /// their latency from the newest row their operator saw.
    fn end(&mut self, out: &mut Vec<(usize, Message)>) {
        self.exhausted = true;
        self.publish(i64::MAX);
        out.push((0, Message::End));
        if self.trace_every_ns.is_some() && self.last_entered_ns != i64::MIN {
            let stage = self.metrics.node as StageId;
            self.traced = Some(Trace::start(self.last_entered_ns, stage, now_ns()));
        }
    }

    /// Produces the next messages, or says when to come back. `clock` is
    /// the time the step started; a read moves it to when the read ended.
    pub(super) fn step(
        &mut self,
        out: &mut Vec<(usize, Message)>,
        clock: &mut i64,
    ) -> Result<Option<Option<i64>>> {
        self.publish_progress();
        if self.exhausted {
            return Ok(Some(None));
        }
        if self.next_barrier <= self.barriers.requested() {
            self.inject_barrier(out);
            return Ok(None);
        }
        if self.announce_restored {
            self.announce_restored = false;
            if self.last_watermark > i64::MIN {
                out.push((
                    0,
                    Message::Watermark(Watermark {
                        time_ms: self.last_watermark,
                        entered_ns: now_ns(),
                    }),
                ));
            }
            if self.idle_declared {
                out.push((0, Message::Idle));
            }
            return Ok(None);
        }
        if self.stop.is_stopped() {
            if self.checkpointing && self.barriers.stop_at().is_none() {
                // The coordinator is choosing the last barrier; it comes
                // before the end.
                return Ok(Some(Some(now_ns() + ALIGNMENT_RETRY_NS)));
            }
            self.end(out);
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
            return Ok(Some(Some(now_ns() + ALIGNMENT_RETRY_NS)));
        }
        let mut max_rows = self.batching.size();
        if let Some(every) = self.barrier_every_rows {
            if self.rows_since_barrier >= every {
                self.barriers.request(self.next_barrier);
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
                    Some((idx, col, _, _)) => {
                        let times = event_times_ms(batch.column(*idx), col)?;
                        if let Some(max) = times.iter().copied().max() {
                            self.max_event_time = self.max_event_time.max(max);
                        }
                        self.advanced_watermark()
                    }
                    None => None,
                };
                let entered = entered_column(&batch)
                    .filter(|c| !c.is_empty())
                    .map(|c| c.value(c.len() - 1))
                    .unwrap_or(now);
                self.last_entered_ns = entered;
                if let Some(every) = self.trace_every_ns
                    && now >= self.next_trace_ns
                {
                    self.next_trace_ns = now.saturating_add(every);
                    // The oldest row: the batch's largest latency.
                    let oldest = oldest_entered(&batch).unwrap_or(now);
                    let stage = self.metrics.node as StageId;
                    self.traced = Some(Trace::start(oldest, stage, now));
                }
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
                // One of several inputs may have turned idle meanwhile (a
                // single input cannot have advanced without data).
                if let Some(wm) = self.advanced_watermark() {
                    self.last_watermark = wm;
                    out.push((
                        0,
                        Message::Watermark(Watermark {
                            time_ms: wm,
                            entered_ns: now,
                        }),
                    ));
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
                self.end(out);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batching::BatchPolicy;
    use crate::metrics::TaskTimes;

    /// A reader that never has data: what a quiet source looks like.
    struct Quiet;

    impl SourceReader for Quiet {
        fn poll_batch(&mut self, _max_rows: usize) -> Result<SourcePoll> {
            Ok(SourcePoll::Pending { wake_at_ns: None })
        }
        fn position(&self) -> Result<Option<Snapshot>> {
            Ok(Some(Snapshot::none().with(
                "at",
                millrace_core::state::scalars(&[("row", Some(0))]),
            )))
        }
        fn seek(&mut self, _position: &Snapshot) -> Result<()> {
            Ok(())
        }
    }

    fn quiet_head() -> SourceHead {
        SourceHead {
            name: "quiet".into(),
            reader: Box::new(Quiet),
            metrics: Arc::new(OperatorMetrics::new(0, Arc::new(TaskTimes::default()))),
            columns: 1,
            event_time: Some((0, "ts".into(), 0, Some(Duration::from_secs(3600)))),
            batching: BatchController::new(BatchPolicy::Fixed(8), now_ns()),
            resume_at_ns: None,
            pressure_ns: 0,
            barrier_every_rows: None,
            max_event_time: i64::MIN,
            last_watermark: i64::MIN,
            last_data_ns: now_ns(),
            idle_declared: false,
            announce_restored: false,
            rows_since_barrier: 0,
            next_barrier: 1,
            barriers: Arc::new(Barriers::starting_after(0)),
            checkpointing: true,
            exhausted: false,
            stop: StopHandle::default(),
            alignment: None,
            trace_every_ns: None,
            next_trace_ns: 0,
            traced: None,
            last_entered_ns: i64::MIN,
        }
    }

    fn names(out: &[(usize, Message)]) -> Vec<String> {
        out.iter()
            .map(|(_, m)| match m {
                Message::Watermark(w) => format!("watermark {}", w.time_ms),
                Message::Idle => "idle".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// An instance idle at the checkpoint says so again as soon as it is
    /// restored, after its watermark: downstream does not wait another
    /// idle timeout (an hour here) to learn it.
    #[test]
    fn restored_instance_announces_its_watermark_and_idleness_first() {
        for idle in [true, false] {
            let mut before = quiet_head();
            before.max_event_time = 5_000;
            before.last_watermark = 5_000;
            before.idle_declared = idle;
            let (position, progress) = before.snapshot().unwrap();

            let mut head = quiet_head();
            head.restore(&position, &progress, 7).unwrap();
            let mut out = Vec::new();
            let mut clock = now_ns();
            head.step(&mut out, &mut clock).unwrap();
            let mut expected = vec!["watermark 5000".to_string()];
            if idle {
                expected.push("idle".into());
            }
            assert_eq!(names(&out), expected, "idle {idle}");
            assert_eq!(head.next_barrier, 8);

            // Once said, not again: the quiet reader is only polled.
            out.clear();
            head.step(&mut out, &mut clock).unwrap();
            assert!(out.is_empty(), "{:?}", names(&out));
            let (_, again) = head.snapshot().unwrap();
            let again = SourceProgress::from_snapshot(&again).unwrap().unwrap();
            assert_eq!(again.idle, idle);
        }
    }
}
