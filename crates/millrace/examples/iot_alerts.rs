//! Builds a pipeline with the Rust API: IoT telemetry → filter → computed
//! column → per-device hopping window → JSON lines, with late rows counted.
//!
//! Run: `cargo run --release -p millrace --example iot_alerts`

use std::sync::Arc;
use std::time::Duration;

use millrace::connectors::iot::{IotConfig, IotSource};
use millrace::connectors::sinks::{ConsoleSink, JsonLinesSink};
use millrace::core::Result;
use millrace::ops::{Agg, col, lit};
use millrace::runtime::{Pipeline, PipelineConfig, Window};

fn main() -> Result<()> {
    let pipeline = Pipeline::new(PipelineConfig::default());
    let readings = pipeline.source(IotSource::new(IotConfig {
        events: Some(2_000_000),
        ..IotConfig::default()
    }));
    readings
        // Only readings from devices running hot.
        .filter(col("temperature").gt(lit(30.0)))?
        // Fahrenheit, computed column-at-a-time.
        .with_column("temp_f", col("temperature") * lit(1.8) + lit(32.0))?
        .window(
            Window::hopping(Duration::from_secs(10), Duration::from_secs(5))
                .keys(["device_id"])
                .agg(Agg::count_all("hot_readings"))
                .agg(Agg::max("temp_f", "max_temp_f"))
                .agg(Agg::avg("voltage", "avg_voltage"))
                // Rows behind the watermark are always counted; here they are
                // also shown.
                .late_rows_to(Arc::new(ConsoleSink::new().with_max_rows(5))),
        )?
        .sink(JsonLinesSink::new("hot-devices.jsonl"))?;
    println!("{}", pipeline.explain()?);
    let summary = pipeline.run()?;
    println!("{summary}");
    println!("results written to hot-devices.jsonl");
    Ok(())
}
