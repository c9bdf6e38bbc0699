//! The receiving side of a task: merges its input channels into one ordered
//! stream of events for the operator chain. The watermark and barrier rules
//! of the engine live here and nowhere else:
//!
//! * **Watermarks**: each channel's latest watermark is kept; the task's
//!   watermark is the minimum over channels that are neither idle nor ended,
//!   and is forwarded only when it advances.
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
use millrace_core::{BarrierId, Message, Watermark};

use crate::channel::Channel;

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
    Data { input: usize, batch: RecordBatch },
    Watermark(Watermark),
    Barrier(BarrierId),
    Idle,
    End,
}

pub struct InputGate {
    channels: Vec<InputChannel>,
    next: usize,
    watermark: i64,
    aligning: Option<BarrierId>,
    idle_forwarded: bool,
    ended: bool,
    /// Events decided but not yet handed out (one message can complete both
    /// a barrier alignment and a watermark advance).
    ready: VecDeque<GateEvent>,
}

impl InputGate {
    pub fn new(channels: Vec<InputChannel>) -> Self {
        InputGate {
            channels,
            next: 0,
            watermark: i64::MIN,
            aligning: None,
            idle_forwarded: false,
            ended: false,
            ready: VecDeque::new(),
        }
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
                let Some(msg) = ch.channel.try_recv() else {
                    continue;
                };
                // Start the next search after this channel: no input starves.
                self.next = (c + 1) % n;
                self.on_message(c, msg);
                received = true;
                break;
            }
            if !received {
                return None;
            }
        }
    }

    fn on_message(&mut self, c: usize, msg: Message) {
        match msg {
            Message::Data(batch) => {
                let ch = &mut self.channels[c];
                ch.idle = false;
                self.idle_forwarded = false;
                self.ready.push_back(GateEvent::Data {
                    input: ch.input,
                    batch,
                });
            }
            Message::Watermark(wm) => {
                let ch = &mut self.channels[c];
                ch.idle = false;
                if wm.time_ms > ch.watermark {
                    ch.watermark = wm.time_ms;
                    ch.watermark_entered = wm.entered_ns;
                }
                self.advance_watermark();
            }
            Message::Idle => {
                self.channels[c].idle = true;
                self.advance_watermark();
                let all_idle = self.channels.iter().all(|ch| ch.ended || ch.idle);
                if all_idle && !self.idle_forwarded {
                    self.idle_forwarded = true;
                    self.ready.push_back(GateEvent::Idle);
                }
            }
            Message::Barrier(id) => {
                self.channels[c].blocked = true;
                self.aligning = Some(id);
                self.try_release_barrier();
            }
            Message::End => {
                self.channels[c].ended = true;
                if self.channels.iter().all(|ch| ch.ended) {
                    self.ended = true;
                    self.ready.push_back(GateEvent::End);
                    return;
                }
                // One fewer input to wait for: an alignment or the minimum
                // watermark may complete now.
                self.try_release_barrier();
                self.advance_watermark();
            }
        }
    }

    fn try_release_barrier(&mut self) {
        let Some(id) = self.aligning else { return };
        if self.channels.iter().all(|ch| ch.ended || ch.blocked) {
            for ch in &mut self.channels {
                ch.blocked = false;
            }
            self.aligning = None;
            self.ready.push_back(GateEvent::Barrier(id));
        }
    }

    /// Forwards the minimum watermark over active channels if it advanced.
    fn advance_watermark(&mut self) {
        let active = self.channels.iter().filter(|ch| !ch.ended && !ch.idle);
        let Some(min) = active.min_by_key(|ch| ch.watermark) else {
            return;
        };
        if min.watermark > self.watermark {
            self.watermark = min.watermark;
            self.ready.push_back(GateEvent::Watermark(Watermark {
                time_ms: min.watermark,
                entered_ns: min.watermark_entered,
            }));
        }
    }

    /// The watermark forwarded so far.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }
}
