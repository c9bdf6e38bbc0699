//! What one latency trace costs (docs/observability.md): a trace started at
//! a source, carried across two exchanges (a copy per hop, as routers and
//! fused stages make), stamped at each of eight stages, finished at a sink
//! and kept in the run's log. Prints nanoseconds per trace.
//!
//!   cargo run --release -p millrace-runtime --example trace_cost

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use millrace_core::{Message, attach_entered};
use millrace_runtime::trace::{Trace, TraceLog, TraceStages};

const TRACES: u32 = 1_000_000;
/// Rows of the traced batch: a copy on rows finds their oldest.
const ROWS: i64 = 512;

fn main() {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let values = Arc::new(Int64Array::from_iter_values(0..ROWS));
    let batch = RecordBatch::try_new(schema, vec![values]).unwrap();
    let batch = attach_entered(&batch, Int64Array::from_iter_values(0..ROWS)).unwrap();
    let rows = Message::Data(batch);
    let log = TraceLog::new(TraceStages::default());
    let started = Instant::now();
    for i in 0..TRACES {
        let at = i64::from(i);
        let mut trace = Trace::start(at, 0, at + 1);
        for hop in 0..2 {
            // A fused stage, then an exchange's copy, stamped by both ends
            // of the channel.
            let fused = trace.stamped(1 + hop, at + 2);
            let mut sent = fused.for_message(&rows).unwrap();
            sent.stamp(3 + hop, at + 3);
            sent.stamp(4 + hop, at + 4);
            trace = sent;
        }
        let origin = trace.origin_for_rows(black_box(match &rows {
            Message::Data(b) => b,
            _ => unreachable!(),
        }));
        log.add(trace.finish(origin, 9, at + 10));
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(TRACES);
    println!(
        "{ns:.0} ns per trace ({TRACES} traces, {} kept)",
        log.finished()
    );
}
