//! The built-in pipelines `millrace demo` runs: Nexmark bids through a keyed
//! window (tumbling or hopping) or straight through, to a chosen sink.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use millrace_connectors::nexmark::{NexmarkConfig, NexmarkSource};
use millrace_connectors::sinks::{ConsoleSink, DiscardSink, JsonLinesSink};
use millrace_core::{Result, SinkFactory};
use millrace_runtime::{Pipeline, PipelineConfig, RunSummary, StopHandle};
use millrace_sql::api::{StreamExt, Window, agg, col};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoQuery {
    Tumble,
    Hop,
    Passthrough,
}

#[derive(Debug, Clone)]
pub enum DemoSink {
    Console { max_rows: usize },
    JsonLines(PathBuf),
    Discard,
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub query: DemoQuery,
    /// Total generator events; 0 = unbounded (until stopped).
    pub events: u64,
    pub event_rate: f64,
    pub emit_rate: Option<f64>,
    pub parallelism: Option<usize>,
    pub workers: Option<usize>,
    pub batch_size: usize,
    /// Adaptive batch sizes (up to `batch_size`) aiming at this latency.
    pub latency_target: Option<Duration>,
    /// Pin each worker thread to its own core.
    pub pin_workers: bool,
    pub seed: u64,
    pub sink: DemoSink,
}

/// Builds the demo pipeline (without running it).
pub fn build(o: &DemoOptions) -> Result<Pipeline> {
    let mut config = PipelineConfig::default();
    if let Some(p) = o.parallelism {
        config.parallelism = p;
    }
    if let Some(w) = o.workers {
        config.workers = w;
    }
    config.batch_size = o.batch_size;
    config.latency_target = o.latency_target;
    config.pin_workers = o.pin_workers;
    let pipeline = Pipeline::new(config);
    let bids = pipeline.source(NexmarkSource::bids(NexmarkConfig {
        seed: o.seed,
        events: (o.events > 0).then_some(o.events),
        event_rate: o.event_rate,
        emit_rate: o.emit_rate,
        ..NexmarkConfig::default()
    }));
    let sink: Arc<dyn SinkFactory> = match &o.sink {
        DemoSink::Console { max_rows } => Arc::new(ConsoleSink::new().with_max_rows(*max_rows)),
        DemoSink::JsonLines(path) => Arc::new(JsonLinesSink::new(path.clone())),
        DemoSink::Discard => Arc::new(DiscardSink::new()),
    };
    let window = match o.query {
        DemoQuery::Passthrough => {
            bids.sink_arc(sink)?;
            return Ok(pipeline);
        }
        DemoQuery::Tumble => Window::tumbling(Duration::from_secs(10)),
        DemoQuery::Hop => Window::hopping(Duration::from_secs(10), Duration::from_secs(2)),
    };
    bids.window(
        window
            .keys(["channel"])
            .agg(agg::count_all().alias("bids"))
            .agg(agg::sum(col("price")).alias("sum_price"))
            .agg(agg::min(col("price")).alias("min_price"))
            .agg(agg::max(col("price")).alias("max_price"))
            .agg(agg::avg(col("price")).alias("avg_price")),
    )?
    .sink_arc(sink)?;
    Ok(pipeline)
}

/// Builds and runs the demo; with `explain`, prints the plan first.
/// `on_start` receives the pipeline's stop handle before it runs.
pub fn run(
    o: &DemoOptions,
    explain: bool,
    on_start: impl FnOnce(StopHandle),
) -> Result<RunSummary> {
    let pipeline = build(o)?;
    if explain {
        println!("{}", pipeline.explain()?);
    }
    on_start(pipeline.stop_handle());
    pipeline.run()
}

/// Parses a duration such as `1ms`, `250us`, `2s` or `500ns`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{t}' has no unit (use ns, us, ms or s)"))?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{t}' does not start with a number"))?;
    let nanos = match unit.trim() {
        "ns" => value,
        "us" | "µs" => value * 1e3,
        "ms" => value * 1e6,
        "s" => value * 1e9,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{t}' (use ns, us, ms or s)"
            ));
        }
    };
    if !(nanos.is_finite() && nanos > 0.0) {
        return Err(format!("'{t}' must be a positive duration"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ns"), Ok(Duration::from_nanos(500)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("3h").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0ms").unwrap_err().contains("positive"));
        assert!(parse_duration("ms").unwrap_err().contains("number"));
    }
}
