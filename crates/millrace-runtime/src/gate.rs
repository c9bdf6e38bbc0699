//! The receiving side of a task: merges its input channels into one ordered
//! stream of events for the operator chain. The watermark and barrier rules
//! of the engine live here and nowhere else:
//!
//! * **Watermarks**: each channel's latest watermark is kept; the task's
//!   watermark is the minimum over channels that are not idle, and is
//!   forwarded only when it advances. An ended channel's watermark is +∞ (it
//!   will never send an earlier row), so a finished input next to an idle one
//!   lets every window fire.
//! * **Idleness**: a channel that sent `Idle` is left out of the minimum until
//!   it sends data or a watermark again; when every open channel is idle the
//!   task forwards `Idle` itself.
//! * **Barriers** (aligned, as Chandy–Lamport/Flink): a channel that delivered
//!   barrier *n* is not read again until every open channel has delivered
//!   it; then barrier *n* is forwarded once. Ended channels count as aligned.
//! * **End**: forwarded once every channel has ended.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use millrace_core::time::now_ns;
use millrace_core::{BarrierId, Message, Watermark};

use crate::channel::Channel;
use crate::trace::Traced;

/// One input channel and the logical input (0, 1, …) it belongs to.
pub struct InputChannel {
    pub channel: Arc<Channel>,
    pub input: usize,
    watermark: i64,
    watermark_entered: i64,
    idle: bool,
    ended: bool,
    blocked: bool,
}

impl InputChannel {
    pub fn new(channel: Arc<Channel>, input: usize) -> Self {
        InputChannel {
            channel,
            input,
            watermark: i64::MIN,
            watermark_entered: 0,
            idle: false,
            ended: false,
            blocked: false,
        }
    }
}

/// What the gate hands to the operator chain.
#[derive(Debug)]
pub enum GateEvent {
    /// Rows for logical input `input`, from the gate's channel `channel`.
    Data {
        input: usize,
        channel: usize,
        batch: RecordBatch,
        trace: Traced,
    },
    /// The task's watermark advanced; traced when the message that
    /// advanced it was.
    Watermark(Watermark, Traced),
    Barrier(BarrierId),
    Idle,
    /// Every input ended; traced when the last end to arrive was.
    End(Traced),
}

pub struct InputGate {
    channels: Vec<InputChannel>,
    next: usize,
    watermark: i64,
    aligning: Option<BarrierId>,
    /// When the barrier being aligned first arrived on a channel.
    aligning_since_ns: i64,
    /// Time channels were held back by alignments, not yet taken.
    held_ns: u64,
    idle_forwarded: bool,
    ended: bool,
    /// Events decided but not yet handed out (one message can complete both
    /// a barrier alignment and a watermark advance).
    ready: VecDeque<GateEvent>,
}

impl InputGate {
    pub fn new(channels: Vec<InputChannel>) -> Self {
        // Tell each producer how many feed its input alongside it.
        for c in &channels {
            let alike = channels.iter().filter(|o| o.input == c.input).count();
            c.channel.set_producers(alike);
        }
        InputGate {
            channels,
            next: 0,
            watermark: i64::MIN,
            aligning: None,
            aligning_since_ns: 0,
            held_ns: 0,
            idle_forwarded: false,
            ended: false,
            ready: VecDeque::new(),
        }
    }

    /// Whether an input channel holds urgent messages (see
    /// [`Channel::mark_urgent`]).
    pub fn is_urgent(&self) -> bool {
        self.channels.iter().any(|c| c.channel.is_urgent())
    }

    /// Whether any input was flagged urgent since the last call; clears the
    /// flags.
    pub fn take_urgent(&mut self) -> bool {
        let mut any = false;
        for c in &self.channels {
            any |= c.channel.take_urgent();
        }
        any
    }

    /// The next event, or `None` if no readable channel has a message.
    pub fn next_event(&mut self) -> Option<GateEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let n = self.channels.len();
            let mut received = false;
            for step in 0..n {
                let c = (self.next + step) % n;
                let ch = &self.channels[c];
                if ch.ended || ch.blocked {
                    continue;
                }
                let Some((msg, mut trace)) = ch.channel.try_recv() else {
                    continue;
                };
                if let Some(t) = &mut trace {
                    t.stamp(ch.channel.channel_stage(), now_ns());
                }
                // Start the next search after this channel: no input starves.
                self.next = (c + 1) % n;
                self.on_message(c, msg, trace);
                received = true;
                break;
            }
            if !received {
                return None;
            }
        }
    }

    fn on_message(&mut self, c: usize, msg: Message, trace: Traced) {
        match msg {
            Message::Data(batch) => {
                let ch = &mut self.channels[c];
                ch.idle = false;
                self.idle_forwarded = false;
                self.ready.push_back(GateEvent::Data {
                    input: ch.input,
                    channel: c,
                    batch,
                    trace,
                });
            }
            Message::Watermark(wm) => {
                let ch = &mut self.channels[c];
                ch.idle = false;
                if wm.time_ms > ch.watermark {
                    ch.watermark = wm.time_ms;
                    ch.watermark_entered = wm.entered_ns;
                }
                self.advance_watermark(Some((wm.entered_ns, trace)));
            }
            Message::Idle => {
                self.channels[c].idle = true;
                self.advance_watermark(None);
                self.forward_idle_if_all_idle();
            }
            Message::Barrier(id) => {
                self.channels[c].blocked = true;
                if self.aligning.is_none() {
                    self.aligning_since_ns = now_ns();
                }
                self.aligning = Some(id);
                self.try_release_barrier();
            }
            Message::End => {
                self.channels[c].ended = true;
                self.channels[c].watermark = i64::MAX;
                if self.channels.iter().all(|ch| ch.ended) {
                    self.ended = true;
                    self.ready.push_back(GateEvent::End(trace));
                    return;
                }
                // One fewer input to wait for: an alignment, the minimum
                // watermark, or "every open input is idle" may complete now.
                self.try_release_barrier();
                self.advance_watermark(None);
                self.forward_idle_if_all_idle();
            }
        }
    }

    fn forward_idle_if_all_idle(&mut self) {
        let all_idle = self.channels.iter().all(|ch| ch.ended || ch.idle);
        let any_idle = self.channels.iter().any(|ch| ch.idle);
        if all_idle && any_idle && !self.idle_forwarded {
            self.idle_forwarded = true;
            self.ready.push_back(GateEvent::Idle);
        }
    }

    fn try_release_barrier(&mut self) {
        let Some(id) = self.aligning else { return };
        if self.channels.iter().all(|ch| ch.ended || ch.blocked) {
            for ch in &mut self.channels {
                ch.blocked = false;
            }
            self.aligning = None;
            self.held_ns += (now_ns() - self.aligning_since_ns).max(0) as u64;
            self.ready.push_back(GateEvent::Barrier(id));
        }
    }

    /// Forwards the minimum watermark over active channels if it advanced.
    /// `closed_by`: the entered time and trace of the watermark message
    /// just taken in. When the minimum advances on it, that message is the
    /// event that completed the new watermark, so results it makes final
    /// count their latency from it (the channel now at the minimum may have
    /// got there earlier), and carry its trace. Otherwise (an input ended
    /// or went idle) the entered time of the channel at the minimum stands
    /// in, untraced.
    fn advance_watermark(&mut self, closed_by: Option<(i64, Traced)>) {
        let active = self.channels.iter().filter(|ch| !ch.idle);
        let Some(min) = active.min_by_key(|ch| ch.watermark) else {
            return;
        };
        if min.watermark > self.watermark {
            self.watermark = min.watermark;
            // Progress went downstream: a later all-idle must be re-announced.
            self.idle_forwarded = false;
            let (entered_ns, trace) = closed_by.unwrap_or((min.watermark_entered, None));
            let wm = Watermark {
                time_ms: min.watermark,
                entered_ns,
            };
            self.ready.push_back(GateEvent::Watermark(wm, trace));
        }
    }

    /// Time channels were held back by barrier alignment (from a barrier's
    /// first arrival to its release) since the last call.
    pub fn take_held_ns(&mut self) -> u64 {
        std::mem::take(&mut self.held_ns)
    }

    /// Tells channel `channel`'s producer what its data message of `rows`
    /// rows cost this task (`ns`), so its exchange can size batches.
    pub fn record_service(&self, channel: usize, rows: usize, ns: u64) {
        self.channels[channel].channel.record_service(rows, ns);
    }

    /// Tells every input's producer the smallest watermark that can change
    /// anything in this task (see `Operator::watermark_interest`).
    pub fn publish_interest(&self, watermark_ms: i64) {
        for c in &self.channels {
            c.channel.set_interest(watermark_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::channel::Channel;

    fn channel() -> Arc<Channel> {
        Channel::for_test()
    }

    fn wm(t: i64) -> Message {
        Message::Watermark(Watermark {
            time_ms: t,
            entered_ns: t * 10,
        })
    }

    fn data(v: i64) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        Message::Data(
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap(),
        )
    }

    /// Everything the gate hands out until its inputs run dry, as text.
    fn drain(gate: &mut InputGate) -> Vec<String> {
        std::iter::from_fn(|| gate.next_event())
            .map(|e| match e {
                GateEvent::Data { input, batch, .. } => {
                    let v = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .value(0);
                    format!("data{input}:{v}")
                }
                GateEvent::Watermark(w, _) => format!("wm:{}@{}", w.time_ms, w.entered_ns),
                GateEvent::Barrier(b) => format!("barrier:{b}"),
                GateEvent::Idle => "idle".into(),
                GateEvent::End(_) => "end".into(),
            })
            .collect()
    }

    fn gate(n: usize) -> (Vec<Arc<Channel>>, InputGate) {
        let chans: Vec<_> = (0..n).map(|_| channel()).collect();
        let inputs = chans
            .iter()
            .enumerate()
            .map(|(i, c)| InputChannel::new(c.clone(), i))
            .collect();
        (chans, InputGate::new(inputs))
    }

    #[test]
    fn each_producer_learns_how_many_feed_its_input() {
        let chans: Vec<_> = (0..3).map(|_| channel()).collect();
        let inputs = chans
            .iter()
            .zip([0, 0, 1])
            .map(|(c, input)| InputChannel::new(c.clone(), input))
            .collect();
        let _gate = InputGate::new(inputs);
        let producers: Vec<usize> = chans.iter().map(|c| c.producers()).collect();
        assert_eq!(producers, [2, 2, 1]);
    }

    #[test]
    fn urgent_input_is_seen_until_the_task_takes_it() {
        let (c, mut g) = gate(2);
        assert!(!g.is_urgent());
        c[0].try_send(wm(100), None, 0).unwrap();
        assert!(!g.is_urgent(), "a plain send is not urgent");
        c[1].try_send(wm(100), None, 0).unwrap();
        c[1].mark_urgent();
        assert!(g.is_urgent());
        assert!(g.take_urgent());
        assert!(!g.is_urgent() && !g.take_urgent());
    }

    #[test]
    fn forwards_the_minimum_watermark_only_when_it_advances() {
        let (c, mut g) = gate(2);
        c[0].try_send(wm(100), None, 0).unwrap();
        assert_eq!(
            drain(&mut g),
            Vec::<String>::new(),
            "input 1 has no watermark yet"
        );
        c[1].try_send(wm(50), None, 0).unwrap();
        assert_eq!(drain(&mut g), vec!["wm:50@500"]);
        c[1].try_send(wm(200), None, 0).unwrap();
        assert_eq!(
            drain(&mut g),
            vec!["wm:100@2000"],
            "the minimum is now input 0's, completed by input 1's watermark (entered at 2000)"
        );
        c[0].try_send(wm(90), None, 0).unwrap(); // a regression on one input changes nothing
        assert_eq!(drain(&mut g), Vec::<String>::new());
    }

    #[test]
    fn idle_inputs_leave_the_minimum_until_they_speak_again() {
        let (c, mut g) = gate(2);
        c[0].try_send(wm(100), None, 0).unwrap();
        c[1].try_send(Message::Idle, None, 0).unwrap();
        assert_eq!(drain(&mut g), vec!["wm:100@1000"]);
        c[0].try_send(Message::Idle, None, 0).unwrap();
        assert_eq!(
            drain(&mut g),
            vec!["idle"],
            "all inputs idle: the task is idle"
        );
        c[1].try_send(data(7), None, 0).unwrap();
        c[1].try_send(wm(150), None, 0).unwrap();
        c[0].try_send(wm(300), None, 0).unwrap();
        assert_eq!(drain(&mut g), vec!["data1:7", "wm:150@1500"]);
    }

    #[test]
    fn barriers_align_and_hold_back_the_inputs_that_delivered_them() {
        let (c, mut g) = gate(2);
        c[0].try_send(data(1), None, 0).unwrap();
        c[0].try_send(Message::Barrier(1), None, 0).unwrap();
        c[0].try_send(data(2), None, 0).unwrap(); // after the barrier: must wait
        c[1].try_send(data(10), None, 0).unwrap();
        assert_eq!(drain(&mut g), vec!["data0:1", "data1:10"]);
        c[1].try_send(data(11), None, 0).unwrap();
        c[1].try_send(Message::Barrier(1), None, 0).unwrap();
        assert_eq!(drain(&mut g), vec!["data1:11", "barrier:1", "data0:2"]);
    }

    #[test]
    fn a_finished_input_beside_an_idle_one_releases_every_window() {
        let (c, mut g) = gate(2);
        c[0].try_send(wm(100), None, 0).unwrap();
        c[1].try_send(Message::Idle, None, 0).unwrap();
        c[0].try_send(Message::End, None, 0).unwrap();
        assert_eq!(
            drain(&mut g),
            vec![
                "wm:100@1000".to_string(),
                format!("wm:{}@1000", i64::MAX),
                "idle".into()
            ]
        );
    }

    #[test]
    fn the_last_active_input_ending_beside_idle_ones_makes_the_task_idle() {
        let (c, mut g) = gate(2);
        c[0].try_send(wm(100), None, 0).unwrap();
        c[1].try_send(wm(50), None, 0).unwrap();
        assert_eq!(drain(&mut g), vec!["wm:50@500"]);
        c[0].try_send(Message::Idle, None, 0).unwrap();
        c[1].try_send(Message::End, None, 0).unwrap();
        // Input 1 ended (+inf) and input 0 is idle: nothing holds the
        // watermark any more, and the task is idle.
        assert_eq!(
            drain(&mut g),
            vec![format!("wm:{}@500", i64::MAX), "idle".into()]
        );
    }

    #[test]
    fn ended_inputs_count_as_aligned_and_end_comes_last() {
        let (c, mut g) = gate(2);
        c[0].try_send(Message::Barrier(3), None, 0).unwrap();
        c[0].try_send(wm(10), None, 0).unwrap();
        c[1].try_send(wm(5), None, 0).unwrap();
        c[1].try_send(Message::End, None, 0).unwrap();
        // Input 0 has no watermark yet when input 1 sends 5, so the minimum
        // stays unknown; once input 1 ends, only input 0's watermark counts.
        let events = drain(&mut g);
        assert_eq!(events, vec!["barrier:3", "wm:10@100"]);
        c[0].try_send(Message::End, None, 0).unwrap();
        assert_eq!(drain(&mut g), vec!["end"]);
        c[0].try_send(data(1), None, 0).unwrap();
        assert_eq!(drain(&mut g), Vec::<String>::new(), "nothing after end");
    }

    /// A watermark that moves the minimum forwards its own trace (the one
    /// results it makes final follow), stamped by the channel it came
    /// through; one that does not move it forwards nothing; traced rows
    /// keep their trace.
    #[test]
    fn the_watermark_that_moves_the_minimum_forwards_its_trace() {
        use crate::trace::Trace;
        let (c, mut gate) = gate(2);
        let traced = |origin| Some(Trace::start(origin, 5, origin + 1));
        c[0].try_send(wm(100), traced(1), 2).unwrap();
        c[1].try_send(data(7), traced(3), 4).unwrap();
        c[1].try_send(wm(50), traced(5), 6).unwrap();
        let events: Vec<GateEvent> = std::iter::from_fn(|| gate.next_event()).collect();
        let [
            GateEvent::Data {
                trace: Some(rows), ..
            },
            GateEvent::Watermark(w, Some(closing)),
        ] = &events[..]
        else {
            panic!("{events:?}")
        };
        assert_eq!(rows.origin_ns(), 3);
        assert_eq!(w.time_ms, 50);
        assert_eq!(closing.origin_ns(), 5, "the trace of the watermark at 50");
        let stages: Vec<_> = closing.stamps().iter().map(|s| s.0).collect();
        assert_eq!(stages, [5, 0, 1], "read, then both ends of its channel");
        // 100 on input 0 came first and moved nothing: its trace is gone.
        c[1].try_send(wm(80), traced(9), 10).unwrap();
        let [GateEvent::Watermark(w, Some(closing))] =
            &std::iter::from_fn(|| gate.next_event()).collect::<Vec<_>>()[..]
        else {
            panic!("one watermark")
        };
        assert_eq!((w.time_ms, closing.origin_ns()), (80, 9));
    }
}
