//! Generator throughput: how fast one reader builds batches, unpaced.
//!
//! `cargo run --release -p millrace-connectors --example gen_speed [events]`
//!
//! Generates `events` (default 5,000,000) bids with a single reader and
//! prints rows/s; then, for context, persons, auctions and IoT readings.

use std::time::Instant;

use millrace_connectors::iot::{IotConfig, IotSource};
use millrace_connectors::nexmark::{NexmarkConfig, NexmarkKind, NexmarkSource};
use millrace_core::{SourceFactory, SourcePoll, batch_bytes};

const BATCH_ROWS: usize = 8192;

/// Drains one reader; returns (rows, bytes, seconds).
fn run(factory: &dyn SourceFactory) -> millrace_core::Result<(u64, usize, f64)> {
    let mut reader = factory.create(0, 1)?;
    let (mut rows, mut bytes) = (0u64, 0usize);
    let started = Instant::now();
    loop {
        match reader.poll_batch(BATCH_ROWS)? {
            SourcePoll::Batch(b) => {
                rows += b.num_rows() as u64;
                bytes += batch_bytes(&b);
            }
            SourcePoll::Exhausted => break,
            SourcePoll::Pending { .. } => {
                return Err(millrace_core::Error::Other(
                    "unpaced generator returned Pending".into(),
                ));
            }
        }
    }
    Ok((rows, bytes, started.elapsed().as_secs_f64()))
}

fn report(label: &str, factory: &dyn SourceFactory) -> millrace_core::Result<()> {
    let (rows, bytes, secs) = run(factory)?;
    println!(
        "{label:<9} {rows:>10} rows in {secs:>6.3} s = {:>6.2} M rows/s, {:>7.1} MB/s",
        rows as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6,
    );
    Ok(())
}

fn main() -> millrace_core::Result<()> {
    let bids: u64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|e| millrace_core::Error::Other(format!("events '{s}': {e}")))?,
        None => 5_000_000,
    };
    // Bids are 46 of every 50 events: this many events hold `bids` bids.
    let events = bids.div_ceil(46) * 50;
    let config = NexmarkConfig {
        events: Some(events),
        ..NexmarkConfig::default()
    };
    println!("one reader, batches of {BATCH_ROWS} rows, unpaced");
    report("bids", &NexmarkSource::bids(config.clone()))?;
    report(
        "persons",
        &NexmarkSource::new(NexmarkKind::Person, config.clone()),
    )?;
    report("auctions", &NexmarkSource::auctions(config))?;
    report(
        "iot",
        &IotSource::new(IotConfig {
            events: Some(bids),
            ..IotConfig::default()
        }),
    )?;
    Ok(())
}
