//! Rough single-core throughput of the window operator and a filter, fed
//! pre-built batches (no runtime, no I/O): `cargo run --release -p millrace-ops
//! --example window_throughput`. A smoke check for regressions, not a benchmark
//! of the engine.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float64Array, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_core::{Emitter, OperatorFactory, Watermark, attach_entered};
use millrace_ops::{
    Agg, FilterFactory, LatePolicy, WindowFactory, WindowKind, WindowSpec, col, lit,
};

fn main() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("price", DataType::Float64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]));
    let keys: i64 = std::env::args().nth(1).map_or(1000, |k| k.parse().unwrap());
    let (batch_rows, batches) = (8192usize, 1000usize);
    let mut input = Vec::with_capacity(batches);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for b in 0..batches {
        let mut k = Vec::with_capacity(batch_rows);
        let mut price = Vec::with_capacity(batch_rows);
        let mut ts = Vec::with_capacity(batch_rows);
        for r in 0..batch_rows {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            k.push((state % keys as u64) as i64);
            price.push((state >> 20) as f64 / 1e6);
            // 1 row per 0.1 ms of event time.
            ts.push(((b * batch_rows + r) / 10) as i64);
        }
        let user = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(k)),
                Arc::new(Float64Array::from(price)),
                Arc::new(TimestampMillisecondArray::from(ts)),
            ],
        )
        .unwrap();
        input.push(attach_entered(&user, Int64Array::from(vec![0; batch_rows])).unwrap());
    }
    let total = (batch_rows * batches) as f64;

    let filter = FilterFactory::new(schema.clone(), None, col("price").gt(lit(1000.0))).unwrap();
    let mut op = filter.create(0, 1).unwrap();
    let start = Instant::now();
    let mut out = Emitter::new();
    for b in &input {
        op.on_data(0, b.clone(), &mut out).unwrap();
        out.take_messages();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:<40} {:>8.1} M rows/s", filter.name(), total / secs / 1e6);

    for kind in [
        WindowKind::Tumbling { size_ms: 1000 },
        WindowKind::Hopping {
            size_ms: 1000,
            slide_ms: 250,
        },
    ] {
        let spec = WindowSpec {
            kind,
            keys: vec!["k".into()],
            aggs: vec![
                Agg::count_all("n"),
                Agg::sum("price", "total"),
                Agg::max("price", "top"),
            ],
            event_time: "ts".into(),
            late: LatePolicy::Drop,
        };
        let factory = WindowFactory::new(schema.clone(), spec).unwrap();
        let mut op = factory.create(0, 1).unwrap();
        let mut out = Emitter::new();
        let mut emitted = 0;
        let start = Instant::now();
        for (i, b) in input.iter().enumerate() {
            op.on_data(0, b.clone(), &mut out).unwrap();
            let wm = Watermark {
                time_ms: (((i + 1) * batch_rows) / 10) as i64 - 1,
                entered_ns: 0,
            };
            op.on_watermark(wm, &mut out).unwrap();
            emitted += out.take_messages().iter().map(|m| m.rows()).sum::<usize>();
        }
        op.on_end(&mut out).unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{:<40} {:>8.1} M rows/s ({emitted} results)",
            format!("window {kind}"),
            total / secs / 1e6
        );
    }
}
