//! Device telemetry generator: readings from a fleet of devices, arriving out
//! of order by a bounded delay — the workload for event-time windows and
//! watermarks outside the auction domain.
//!
//! Guarantees:
//! * **Deterministic.** Event `n` is a function of `(seed, n, config)` only;
//!   the same seed and config give the same rows whatever the parallelism,
//!   batch sizes or emission speed.
//! * **Bounded disorder.** Event `n` has `ts = base + floor(n * 1000 /
//!   event_rate) - delay` with `delay` in `[0, max_delay_ms]`. Since the
//!   undelayed time never decreases with `n`, every row emitted in `n` order
//!   (as each instance does) has `ts >= max(ts seen so far) - max_delay_ms`:
//!   the declared watermark bound never makes a row late.
//! * **Split and pacing** as for Nexmark: instance `i` of `p` emits the events
//!   with `n % p == i` in increasing `n`; with `emit_rate`, event `n` is due at
//!   `start + n * 1e9 / emit_rate` ns and carries that as its entered time.
//! * **Checkpoints** as for Nexmark: the position is the next event number
//!   (table `iot`); after a seek the rows are the ones that followed it, and
//!   a paced schedule restarts at the first poll.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Float64Array, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_core::batch::schema_with_entered;
use millrace_core::{Error, EventTime, Result, Snapshot, SourceFactory, SourcePoll, SourceReader};

use crate::rng::{
    Cursor, EventRng, Pacer, check_rate, check_split, event_time_ms, generator_position, mix64,
    seek_generator,
};

/// Parameters of the telemetry sequence.
#[derive(Debug, Clone)]
pub struct IotConfig {
    pub seed: u64,
    /// Size of the fleet: device ids are `0..devices`.
    pub devices: u64,
    /// Total events; `None` = unbounded.
    pub events: Option<u64>,
    /// Event-time rate, events/s (before the per-event delay).
    pub event_rate: f64,
    /// `None`: emit as fast as possible. `Some(r)`: open loop at `r` events/s.
    pub emit_rate: Option<f64>,
    /// Largest delay of a reading behind its slot's time; also the declared
    /// watermark bound.
    pub max_delay_ms: i64,
    /// Event time of event 0 (before delay), ms since the Unix epoch.
    pub base_time_ms: i64,
}

impl Default for IotConfig {
    fn default() -> Self {
        IotConfig {
            seed: 42,
            devices: 100_000,
            events: None,
            event_rate: 100_000.0,
            emit_rate: None,
            max_delay_ms: 2000,
            // 2026-01-01T00:00:00Z, as for Nexmark.
            base_time_ms: 1_767_225_600_000,
        }
    }
}

/// The source's name, which also names its position's table.
const SOURCE_NAME: &str = "iot";
const DOMAIN_READINGS: u64 = 0x494f_5452;
const DOMAIN_DEVICES: u64 = 0x4445_5649;
/// Largest batch built at once, whatever `max_rows` asks.
const MAX_BATCH_ROWS: usize = 1 << 20;

/// The telemetry source ([`SourceFactory`]).
pub struct IotSource {
    config: IotConfig,
    /// Emission start shared by all readers of this factory (paced mode).
    start_ns: Arc<OnceLock<i64>>,
}

impl IotSource {
    pub fn new(config: IotConfig) -> Self {
        IotSource {
            config,
            start_ns: Arc::new(OnceLock::new()),
        }
    }

    /// The user columns (without the entered column).
    pub fn schema() -> SchemaRef {
        let float = |name: &str| Field::new(name, DataType::Float64, false);
        Arc::new(Schema::new(vec![
            Field::new("device_id", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            float("temperature"),
            float("humidity"),
            float("voltage"),
        ]))
    }

    pub fn config(&self) -> &IotConfig {
        &self.config
    }

    fn check_config(&self) -> Result<()> {
        let name = self.name();
        check_rate(&name, "event_rate", self.config.event_rate)?;
        if let Some(r) = self.config.emit_rate {
            check_rate(&name, "emit_rate", r)?;
        }
        if self.config.devices == 0 {
            return Err(Error::plan(format!("{name}: devices must be at least 1")));
        }
        if self.config.max_delay_ms < 0 {
            return Err(Error::plan(format!(
                "{name}: max_delay_ms must not be negative, got {}",
                self.config.max_delay_ms
            )));
        }
        Ok(())
    }
}

impl SourceFactory for IotSource {
    fn name(&self) -> String {
        SOURCE_NAME.to_string()
    }

    fn schema(&self) -> SchemaRef {
        Self::schema()
    }

    fn event_time(&self) -> Option<EventTime> {
        Some(EventTime::new("ts", self.config.max_delay_ms))
    }

    fn create(&self, instance: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        check_split(&self.name(), instance, parallelism)?;
        self.check_config()?;
        Ok(Box::new(IotReader {
            readings: Readings {
                key: EventRng::key(self.config.seed, DOMAIN_READINGS),
                device_key: EventRng::key(self.config.seed, DOMAIN_DEVICES),
                devices: self.config.devices,
                base_time_ms: self.config.base_time_ms,
                event_rate: self.config.event_rate,
                // Non-negative, checked above.
                max_delay_ms: self.config.max_delay_ms as u64,
            },
            schema: schema_with_entered(&Self::schema()),
            cursor: Cursor::new(instance, parallelism, vec![true], self.config.events),
            pacer: Pacer::new(self.config.emit_rate, Arc::clone(&self.start_ns)),
            ns: Vec::new(),
            entered: Vec::new(),
        }))
    }
}

/// How one reading is derived from its event number.
#[derive(Debug, Clone, Copy)]
struct Readings {
    key: u64,
    device_key: u64,
    devices: u64,
    base_time_ms: i64,
    event_rate: f64,
    max_delay_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    device_id: i64,
    ts: i64,
    temperature: f64,
    humidity: f64,
    voltage: f64,
}

/// Rounds a positive reading to 0.01, the resolution of a typical sensor
/// (`+ 0.5` and truncation: no libm call per value).
#[inline]
fn centi(x: f64) -> f64 {
    ((x * 100.0 + 0.5) as i64) as f64 / 100.0
}

impl Readings {
    #[inline]
    fn get(&self, n: u64) -> Reading {
        let mut rng = EventRng::new(self.key, n);
        let device = rng.below(self.devices);
        let delay = rng.below(self.max_delay_ms.saturating_add(1)) as i64;
        // Each device has its own baseline between 20 and 30 °C, so
        // per-device aggregates differ visibly; readings spread ±5 around it,
        // which keeps every reading within 15..35 °C.
        let offset = (mix64(self.device_key ^ device) >> 11) as f64 / (1u64 << 53) as f64;
        let temperature = 15.0 + 10.0 * offset + 10.0 * rng.unit();
        Reading {
            device_id: device as i64,
            ts: event_time_ms(self.base_time_ms, self.event_rate, n).saturating_sub(delay),
            temperature: centi(temperature),
            humidity: centi(20.0 + 60.0 * rng.unit()),
            voltage: centi(3.0 + 1.2 * rng.unit()),
        }
    }
}

struct IotReader {
    readings: Readings,
    /// User columns plus the entered column, built once.
    schema: SchemaRef,
    cursor: Cursor,
    pacer: Pacer,
    /// Scratch: event numbers and entered times of the batch being built.
    ns: Vec<u64>,
    entered: Vec<i64>,
}

impl SourceReader for IotReader {
    fn poll_batch(&mut self, max_rows: usize) -> Result<SourcePoll> {
        let max_rows = max_rows.min(MAX_BATCH_ROWS);
        if let Some(poll) =
            self.pacer
                .take(&mut self.cursor, max_rows, &mut self.ns, &mut self.entered)
        {
            return Ok(poll);
        }
        let rows = self.ns.len();
        let mut device = Vec::with_capacity(rows);
        let mut ts = Vec::with_capacity(rows);
        let mut temperature = Vec::with_capacity(rows);
        let mut humidity = Vec::with_capacity(rows);
        let mut voltage = Vec::with_capacity(rows);
        for &n in &self.ns {
            let r = self.readings.get(n);
            device.push(r.device_id);
            ts.push(r.ts);
            temperature.push(r.temperature);
            humidity.push(r.humidity);
            voltage.push(r.voltage);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(device)),
            Arc::new(TimestampMillisecondArray::from(ts)),
            Arc::new(Float64Array::from(temperature)),
            Arc::new(Float64Array::from(humidity)),
            Arc::new(Float64Array::from(voltage)),
            Arc::new(Int64Array::from(std::mem::take(&mut self.entered))),
        ];
        Ok(SourcePoll::Batch(RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?))
    }

    fn position(&self) -> Result<Option<Snapshot>> {
        generator_position(SOURCE_NAME, &self.cursor).map(Some)
    }

    fn seek(&mut self, position: &Snapshot) -> Result<()> {
        seek_generator(SOURCE_NAME, position, &mut self.cursor, &mut self.pacer)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
    use millrace_core::ENTERED_COLUMN;
    use millrace_core::batch::strip_entered;
    use millrace_core::state::scalar;

    use super::*;
    use crate::resume_check::check_resume_everywhere;

    fn cfg(events: u64) -> IotConfig {
        IotConfig {
            events: Some(events),
            ..IotConfig::default()
        }
    }

    fn drain(f: &IotSource, instance: usize, p: usize, max_rows: usize) -> Vec<RecordBatch> {
        let mut reader = f.create(instance, p).unwrap();
        let mut out = Vec::new();
        loop {
            match reader.poll_batch(max_rows).unwrap() {
                SourcePoll::Batch(b) => {
                    assert!(b.num_rows() > 0 && b.num_rows() <= max_rows);
                    out.push(b);
                }
                SourcePoll::Exhausted => return out,
                SourcePoll::Pending { .. } => panic!("unpaced reader returned Pending"),
            }
        }
    }

    /// (device, ts, temperature, humidity, voltage) of every row, floats as bits.
    fn rows(batches: &[RecordBatch]) -> Vec<(i64, i64, u64, u64, u64)> {
        let mut out = Vec::new();
        for b in batches {
            let d = b.column(0).as_primitive::<Int64Type>();
            let t = b.column(1).as_primitive::<TimestampMillisecondType>();
            let f = |i: usize| b.column(i).as_primitive::<Float64Type>();
            for r in 0..b.num_rows() {
                out.push((
                    d.value(r),
                    t.value(r),
                    f(2).value(r).to_bits(),
                    f(3).value(r).to_bits(),
                    f(4).value(r).to_bits(),
                ));
            }
        }
        out
    }

    #[test]
    fn schema_and_entered_column() {
        let batches = drain(&IotSource::new(cfg(100)), 0, 1, 64);
        let b = &batches[0];
        assert_eq!(b.schema().fields().last().unwrap().name(), ENTERED_COLUMN);
        assert_eq!(strip_entered(b).schema(), IotSource::schema());
        let f = IotSource::new(cfg(1));
        assert_eq!(f.event_time(), Some(EventTime::new("ts", 2000)));
    }

    #[test]
    fn deterministic_and_seed_sensitive() {
        let a = rows(&drain(&IotSource::new(cfg(5000)), 0, 1, 100));
        let b = rows(&drain(&IotSource::new(cfg(5000)), 0, 1, 777));
        assert_eq!(a.len(), 5000);
        assert_eq!(a, b);
        let other = IotSource::new(IotConfig {
            seed: 7,
            ..cfg(5000)
        });
        let c = rows(&drain(&other, 0, 1, 100));
        let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
        assert!(same < 50, "{same} equal rows under different seeds");
    }

    #[test]
    fn instances_together_equal_the_single_sequence() {
        let f = IotSource::new(cfg(6001));
        let mut single = rows(&drain(&f, 0, 1, 500));
        single.sort_unstable();
        for p in [2usize, 3] {
            let mut union = Vec::new();
            for i in 0..p {
                union.extend(rows(&drain(&f, i, p, 64)));
            }
            union.sort_unstable();
            assert_eq!(union, single, "parallelism {p}");
        }
    }

    /// Replays each instance's rows through the watermark the source declares
    /// and checks that none is ever late.
    #[test]
    fn disorder_never_exceeds_the_declared_bound() {
        for (delay, p) in [(2000i64, 1usize), (2000, 3), (0, 1), (50, 2)] {
            let config = IotConfig {
                max_delay_ms: delay,
                event_rate: 10_000.0,
                ..cfg(100_000)
            };
            let f = IotSource::new(config.clone());
            let bound = f.event_time().unwrap().max_out_of_orderness_ms;
            let mut out_of_order = 0usize;
            for i in 0..p {
                let mut max_seen = i64::MIN;
                for (_, ts, ..) in rows(&drain(&f, i, p, 1000)) {
                    if max_seen != i64::MIN {
                        assert!(
                            ts >= max_seen - bound,
                            "late row: {ts} < {max_seen} - {bound}"
                        );
                        if ts < max_seen {
                            out_of_order += 1;
                        }
                    }
                    max_seen = max_seen.max(ts);
                }
            }
            // The bound is not vacuous: with a delay, rows really are disordered.
            if delay > 0 {
                assert!(out_of_order > 1000, "only {out_of_order} disordered rows");
            }
        }
    }

    #[test]
    fn times_and_readings_are_plausible() {
        let config = IotConfig {
            devices: 50,
            event_rate: 1000.0,
            max_delay_ms: 300,
            ..cfg(20_000)
        };
        let batches = drain(&IotSource::new(config.clone()), 0, 1, 1024);
        let mut per_device: HashMap<i64, (f64, usize)> = HashMap::new();
        for (n, (d, ts, t, h, v)) in rows(&batches).into_iter().enumerate() {
            let slot = config.base_time_ms + n as i64;
            assert!((0..50).contains(&d));
            assert!(
                ts <= slot && ts >= slot - 300,
                "event {n}: ts {ts}, slot {slot}"
            );
            let (t, h, v) = (f64::from_bits(t), f64::from_bits(h), f64::from_bits(v));
            assert!((15.0..=35.0).contains(&t), "temperature {t}");
            assert!((20.0..=80.0).contains(&h), "humidity {h}");
            assert!((3.0..=4.2).contains(&v), "voltage {v}");
            let e = per_device.entry(d).or_default();
            e.0 += t;
            e.1 += 1;
        }
        assert_eq!(per_device.len(), 50);
        // Per-device offsets make device means differ by more than noise
        // (the mean of ~400 readings has a spread of ~0.15 °C).
        let means: Vec<f64> = per_device.values().map(|(s, c)| s / *c as f64).collect();
        let lo = means.iter().copied().fold(f64::MAX, f64::min);
        let hi = means.iter().copied().fold(f64::MIN, f64::max);
        assert!(hi - lo > 4.0, "device means span only {lo}..{hi}");
    }

    #[test]
    fn events_bound_and_paced_pending() {
        let f = IotSource::new(cfg(10));
        let mut r = f.create(0, 1).unwrap();
        let SourcePoll::Batch(b) = r.poll_batch(100).unwrap() else {
            panic!("expected a batch");
        };
        assert_eq!(b.num_rows(), 10);
        assert!(matches!(r.poll_batch(100).unwrap(), SourcePoll::Exhausted));

        let f = IotSource::new(IotConfig {
            emit_rate: Some(1e-3),
            ..IotConfig::default()
        });
        let mut r = f.create(0, 1).unwrap();
        let SourcePoll::Batch(b) = r.poll_batch(100).unwrap() else {
            panic!("event 0 is due at once");
        };
        assert_eq!(b.num_rows(), 1);
        let start = *f.start_ns.get().unwrap();
        assert_eq!(millrace_core::entered_column(&b).unwrap().value(0), start);
        match r.poll_batch(100).unwrap() {
            SourcePoll::Pending { wake_at_ns } => {
                assert_eq!(wake_at_ns, Some(start + 1_000_000_000_000));
            }
            other => panic!("expected Pending, got {other:?}"),
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let f = IotSource::new(IotConfig {
            devices: 0,
            ..IotConfig::default()
        });
        assert!(f.create(0, 1).is_err());
        let f = IotSource::new(IotConfig {
            max_delay_ms: -1,
            ..IotConfig::default()
        });
        assert!(f.create(0, 1).is_err());
        let f = IotSource::new(IotConfig::default());
        assert!(f.create(1, 1).is_err());
    }

    #[test]
    fn a_resumed_reader_continues_with_the_same_rows() {
        // One instance returns 31 batches (the last of one row), each of two
        // instances 16: cuts fall inside, at the last batch and past the end.
        let source = IotSource::new(cfg(3001));
        let cuts = [0, 1, 4, 15, 16, 30, 31, 32];
        let outcomes = check_resume_everywhere(&source, &[1, 2], 100, &cuts, &[]);
        let exhausted = outcomes.iter().find(|r| r.exhausted_at_cut).unwrap();
        let table = exhausted.position.table("iot").unwrap();
        assert_eq!(scalar(table, "exhausted").unwrap(), Some(1));
    }

    #[test]
    fn the_position_is_the_next_event_number_and_refuses_strangers() {
        let source = IotSource::new(cfg(100));
        let mut reader = source.create(0, 2).unwrap();
        assert!(matches!(
            reader.poll_batch(5).unwrap(),
            SourcePoll::Batch(_)
        ));
        let position = reader.position().unwrap().unwrap();
        let table = position.table("iot").unwrap();
        assert_eq!(scalar(table, "next_event").unwrap(), Some(10));

        let mut other = source.create(1, 2).unwrap();
        let err = other.seek(&position).unwrap_err().to_string();
        assert!(err.contains("instance 0 of 2"), "{err}");
        let err = other.seek(&Snapshot::none()).unwrap_err().to_string();
        assert!(err.contains("iot") && err.contains("no table"), "{err}");
    }
}
