//! Window results of whole pipelines equal an independent batch computation
//! over the same rows (plain Rust over the generator's output), at
//! parallelism 1 and 2, on out-of-order input within the watermark bound.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use millrace_connectors::iot::{IotConfig, IotSource};
use millrace_connectors::nexmark::{NexmarkConfig, NexmarkSource};
use millrace_core::CollectSink;
use millrace_runtime::{Pipeline, PipelineConfig};
use millrace_sql::api::{StreamExt, Window, agg, col};

fn config(parallelism: usize) -> PipelineConfig {
    PipelineConfig {
        parallelism,
        workers: parallelism,
        batch_size: 500,
        ..PipelineConfig::default()
    }
}

fn iot() -> IotSource {
    IotSource::new(IotConfig {
        devices: 40,
        events: Some(60_000),
        event_rate: 10_000.0,
        max_delay_ms: 1500,
        ..IotConfig::default()
    })
}

#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    count: i64,
    sum_voltage: f64,
    min_temp: f64,
    max_temp: f64,
    sum_hum: f64,
}

/// (device, window start) → aggregates, computed directly from the rows.
fn expected(size: i64, slide: i64) -> BTreeMap<(i64, i64), Acc> {
    let rows = read_all(&iot());
    let (dev, ts) = (ints(&rows, "device_id"), ints(&rows, "ts"));
    let (temp, hum, volt) = (
        floats(&rows, "temperature"),
        floats(&rows, "humidity"),
        floats(&rows, "voltage"),
    );
    assert_eq!(dev.len(), 60_000);
    let mut table: BTreeMap<(i64, i64), Acc> = BTreeMap::new();
    for i in 0..dev.len() {
        for start in windows_of(ts[i], size, slide) {
            let a = table.entry((dev[i], start)).or_insert(Acc {
                min_temp: f64::INFINITY,
                max_temp: f64::NEG_INFINITY,
                ..Acc::default()
            });
            a.count += 1;
            a.sum_voltage += volt[i];
            a.min_temp = a.min_temp.min(temp[i]);
            a.max_temp = a.max_temp.max(temp[i]);
            a.sum_hum += hum[i];
        }
    }
    table
}

fn streamed(window: Window, parallelism: usize) -> BTreeMap<(i64, i64), Acc> {
    streamed_with(window, config(parallelism))
}

fn streamed_with(window: Window, config: PipelineConfig) -> BTreeMap<(i64, i64), Acc> {
    let pipeline = Pipeline::new(config);
    let out = CollectSink::new();
    pipeline
        .source(iot())
        .window(
            window
                .keys(["device_id"])
                .agg(agg::count_all().alias("n"))
                .agg(agg::sum(col("voltage")).alias("sum_voltage"))
                .agg(agg::min(col("temperature")).alias("min_temp"))
                .agg(agg::max(col("temperature")).alias("max_temp"))
                .agg(agg::avg(col("humidity")).alias("avg_hum")),
        )
        .unwrap()
        .sink(out.clone())
        .unwrap();
    let summary = pipeline.run().expect("run");
    assert_eq!(summary.events, 60_000);
    let b = out.batches();
    let (dev, start, end) = (
        ints(&b, "device_id"),
        ints(&b, "window.start"),
        ints(&b, "window.end"),
    );
    let n = ints(&b, "n");
    let (sv, mn, mx, avg) = (
        floats(&b, "sum_voltage"),
        floats(&b, "min_temp"),
        floats(&b, "max_temp"),
        floats(&b, "avg_hum"),
    );
    let mut table = BTreeMap::new();
    for i in 0..dev.len() {
        assert!(end[i] > start[i]);
        let acc = Acc {
            count: n[i],
            sum_voltage: sv[i],
            min_temp: mn[i],
            max_temp: mx[i],
            sum_hum: avg[i] * n[i] as f64,
        };
        assert!(
            table.insert((dev[i], start[i]), acc).is_none(),
            "window ({}, {}) emitted twice",
            dev[i],
            start[i]
        );
    }
    // Nothing was late: the generator's disorder is within the bound.
    assert_eq!(summary.operator("window").unwrap().late_rows, 0);
    table
}

fn assert_same(got: &BTreeMap<(i64, i64), Acc>, want: &BTreeMap<(i64, i64), Acc>) {
    assert_eq!(got.len(), want.len(), "number of (device, window) results");
    for (k, w) in want {
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("missing result for {k:?}"));
        assert_eq!(g.count, w.count, "count of {k:?}");
        assert!(
            close(g.sum_voltage, w.sum_voltage),
            "sum of {k:?}: {g:?} vs {w:?}"
        );
        assert_eq!(g.min_temp, w.min_temp, "min of {k:?}");
        assert_eq!(g.max_temp, w.max_temp, "max of {k:?}");
        assert!(close(g.sum_hum, w.sum_hum), "avg of {k:?}: {g:?} vs {w:?}");
    }
}

#[test]
fn tumbling_window_equals_batch_computation_at_parallelism_1_and_2() {
    let want = expected(1000, 1000);
    for p in [1, 2] {
        assert_same(
            &streamed(Window::tumbling(Duration::from_secs(1)), p),
            &want,
        );
    }
}

#[test]
fn adaptive_batch_sizes_do_not_change_results() {
    let want = expected(1000, 1000);
    let adaptive = PipelineConfig {
        latency_target: Some(Duration::from_millis(1)),
        batch_size: 4096,
        ..config(2)
    };
    assert_same(
        &streamed_with(Window::tumbling(Duration::from_secs(1)), adaptive),
        &want,
    );
}

#[test]
fn hopping_window_equals_batch_computation_at_parallelism_1_and_2() {
    let want = expected(2000, 500);
    for p in [1, 2] {
        let w = Window::hopping(Duration::from_secs(2), Duration::from_millis(500));
        assert_same(&streamed(w, p), &want);
    }
}

#[test]
fn nexmark_bids_per_auction_equal_batch_counts() {
    let source = || {
        NexmarkSource::bids(NexmarkConfig {
            events: Some(100_000),
            ..NexmarkConfig::default()
        })
    };
    let rows = read_all(&source());
    let mut want: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for (a, t) in ints(&rows, "auction")
        .into_iter()
        .zip(ints(&rows, "date_time"))
    {
        *want.entry((a, t.div_euclid(10_000) * 10_000)).or_default() += 1;
    }
    for p in [1, 2] {
        let pipeline = Pipeline::new(config(p));
        let out = CollectSink::new();
        pipeline
            .source(source())
            .window(
                Window::tumbling_ms(10_000)
                    .keys(["auction"])
                    .agg(agg::count_all().alias("bids")),
            )
            .unwrap()
            .sink(out.clone())
            .unwrap();
        pipeline.run().unwrap();
        let b = out.batches();
        let got: BTreeMap<(i64, i64), i64> = ints(&b, "auction")
            .into_iter()
            .zip(ints(&b, "window.start"))
            .zip(ints(&b, "bids"))
            .collect();
        assert_eq!(got, want, "parallelism {p}");
    }
}
