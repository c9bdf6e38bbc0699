//! The nodes fused into a task after its head: what each does (an
//! operator, the late output of an operator, a sink), which node it reads,
//! and how an operator and a late output process one call's messages.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use millrace_core::time::now_ns;
use millrace_core::{Emitter, Message, Operator, Result, Snapshot};

use super::SinkStage;
use crate::metrics::OperatorMetrics;
use crate::output::OutputRouter;
use crate::trace::StageId;

/// One operator of a chain with its counters.
pub struct ChainOp {
    pub name: String,
    pub op: Box<dyn Operator>,
    pub metrics: Arc<OperatorMetrics>,
    /// A late output reads this operator: its late rows are kept and
    /// passed on, not only counted.
    pub keep_late: bool,
    /// The run checkpoints: the operator's snapshot is taken at each
    /// barrier (before it is forwarded) and at the end.
    pub checkpoint: bool,
    /// The snapshot taken in the current call, until the task sends it.
    pub taken: Option<Snapshot>,
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
    Sink(Box<SinkStage>),
}

/// A message on an operator's late outputs: rows of one input (`Some`), or
/// a barrier or the end, for every input (`None`).
pub(super) type LateMessage = (Option<usize>, Message);

/// One fused node of a task: its work, whose output it reads, and the
/// exchanges its own output feeds.
pub struct Stage {
    pub work: StageWork,
    /// The stage it reads (`None`: the head).
    pub reads: Option<usize>,
    pub routers: Vec<OutputRouter>,
}

impl Stage {
    pub(super) fn name(&self) -> &str {
        match &self.work {
            StageWork::Operator(op) => &op.name,
            StageWork::Late(late) => &late.name,
            StageWork::Sink(sink) => &sink.name,
        }
    }

    /// Its stage in traces: its graph node's (`trace.rs`).
    pub(super) fn trace_stage(&self) -> StageId {
        let node = match &self.work {
            StageWork::Operator(op) => op.metrics.node,
            StageWork::Late(late) => late.metrics.node,
            StageWork::Sink(sink) => sink.metrics.node,
        };
        node as StageId
    }
}

/// Runs one operator over `input`; what it emits. Sets `urgent` when it
/// emits rows on a watermark. With `keep_late`, appends to `late` the late
/// rows and, after them, each barrier and the end.
pub(super) fn run_operator(
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
            Message::Barrier(id) => {
                if stage.checkpoint {
                    match stage.op.snapshot() {
                        Ok(snapshot) => stage.taken = Some(snapshot),
                        Err(e) => return Err(e.in_operator(&stage.name)),
                    }
                }
                stage.op.on_barrier(id, &mut out)
            }
            Message::Idle => {
                out.out.push(Message::Idle);
                Ok(())
            }
            Message::End => stage.op.on_end(&mut out).and_then(|_| {
                out.out.push(Message::End);
                if stage.checkpoint {
                    stage.taken = Some(stage.op.snapshot()?);
                }
                Ok(())
            }),
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
pub(super) fn pass_late(stage: &LateStage, late: &[LateMessage]) -> Vec<Message> {
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
