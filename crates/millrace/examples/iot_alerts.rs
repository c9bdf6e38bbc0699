//! Builds a pipeline with the Rust API: IoT telemetry → filter → computed
//! column → per-device hopping window → JSON lines; late rows to the console.
//!
//! Run: `cargo run --release -p millrace --example iot_alerts`

use std::time::Duration;

use millrace::api::{StreamExt, Window, agg, col, lit};
use millrace::connectors::iot::{IotConfig, IotSource};
use millrace::connectors::sinks::{ConsoleSink, JsonLinesSink};
use millrace::core::Result;
use millrace::runtime::{Pipeline, PipelineConfig};

fn main() -> Result<()> {
    let pipeline = Pipeline::new(PipelineConfig::default());
    let readings = pipeline.source(IotSource::new(IotConfig {
        events: Some(2_000_000),
        ..IotConfig::default()
    }));
    let windows = readings
        // Only readings from devices running hot.
        .filter(col("temperature").gt(lit(30.0)))?
        // Fahrenheit, computed column-at-a-time.
        .with_column("temp_f", col("temperature") * lit(1.8) + lit(32.0))?
        .window(
            Window::hopping(Duration::from_secs(10), Duration::from_secs(5))
                .keys(["device_id"])
                .agg(agg::count_all().alias("hot_readings"))
                .agg(agg::max(col("temp_f")).alias("max_temp_f"))
                .agg(agg::avg(col("voltage")).alias("avg_voltage")),
        )?;
    windows.sink(JsonLinesSink::new("hot-devices.jsonl"))?;
    // Rows behind the watermark are always counted; here they are also shown.
    windows
        .late_rows(0)?
        .sink(ConsoleSink::new().with_max_rows(5))?;
    println!("{}", pipeline.explain()?);
    let summary = pipeline.run()?;
    println!("{summary}");
    println!("results written to hot-devices.jsonl");
    Ok(())
}
