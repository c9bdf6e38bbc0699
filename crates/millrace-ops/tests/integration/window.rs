//! Keyed event-time windows: hand-checked tables for assignment, aggregates,
//! watermarks, lateness and entered times, then a randomized comparison with a
//! naive computation.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMillisecondArray, TimestampSecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_core::{CollectSink, Emitter, Message, Operator, OperatorFactory, Watermark};
use millrace_ops::{Agg, LatePolicy, WindowFactory, WindowKind, WindowSpec};

use crate::common::{batch, data, entered, rows, schema, sorted_rows};

fn ts_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn spec(kind: WindowKind, keys: &[&str], aggs: Vec<Agg>) -> WindowSpec {
    WindowSpec {
        kind,
        keys: keys.iter().map(|k| k.to_string()).collect(),
        aggs,
        event_time: "ts".into(),
        late: LatePolicy::Drop,
    }
}

fn wm(time_ms: i64, entered_ns: i64) -> Watermark {
    Watermark {
        time_ms,
        entered_ns,
    }
}

fn create(input: &SchemaRef, spec: WindowSpec) -> Box<dyn Operator> {
    WindowFactory::new(input.clone(), spec)
        .unwrap()
        .create(0, 1)
        .unwrap()
}

/// Renders messages as `data:<rows>` / `wm:<t>` to check relative order.
fn trace(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            Message::Data(b) => format!("data:{}", sorted_rows(std::slice::from_ref(b)).join(",")),
            Message::Watermark(w) => format!("wm:{}", w.time_ms),
            other => format!("{other:?}"),
        })
        .collect()
}

/// k Int64, v Int64, x Float64, ts Timestamp(ms)
fn kvx_schema() -> SchemaRef {
    schema(&[
        ("k", DataType::Int64),
        ("v", DataType::Int64),
        ("x", DataType::Float64),
        ("ts", ts_ms()),
    ])
}

fn kvx(rows: &[(i64, Option<i64>, Option<f64>, i64)], entered: Vec<i64>) -> RecordBatch {
    batch(
        &kvx_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.3),
            )),
        ],
        entered,
    )
}

fn all_aggs() -> Vec<Agg> {
    vec![
        Agg::count_all("n"),
        Agg::count("v", "nv"),
        Agg::sum("v", "s"),
        Agg::min("v", "mn"),
        Agg::max("x", "mx"),
        Agg::avg("v", "a"),
    ]
}

#[test]
fn tumbling_int_key_all_aggregates_with_nulls() {
    let s = kvx_schema();
    let factory = WindowFactory::new(
        s.clone(),
        spec(WindowKind::Tumbling { size_ms: 10 }, &["k"], all_aggs()),
    )
    .unwrap();
    let names: Vec<String> = factory
        .output_schema()
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        names,
        [
            "k:Int64",
            &format!("window_start:{}", ts_ms()),
            &format!("window_end:{}", ts_ms()),
            "n:Int64",
            "nv:Int64",
            "s:Int64",
            "mn:Int64",
            "mx:Float64",
            "a:Float64"
        ]
    );
    assert_eq!(factory.output_event_time().as_deref(), Some("window_end"));

    let mut op = factory.create(0, 1).unwrap();
    let mut out = Emitter::new();
    // ts 9 arrives after 12 and 15: out of order, but no watermark passed it.
    let input = kvx(
        &[
            (1, Some(5), Some(1.5), 3),
            (1, None, Some(2.5), 7),
            (2, Some(7), None, 1),
            (1, Some(3), None, 12),
            (2, None, None, 15),
        ],
        vec![10, 11, 12, 13, 14],
    );
    op.on_data(0, input, &mut out).unwrap();
    op.on_data(0, kvx(&[(1, Some(-4), Some(0.5), 9)], vec![9]), &mut out)
        .unwrap();
    assert!(
        out.messages().is_empty(),
        "nothing fires before a watermark"
    );
    op.on_end(&mut out).unwrap();
    let batches = data(&out.take_messages());
    let all = rows(&batches);
    // k|start|end|n|nv|s|mn|mx|a, ordered by window end.
    assert!(all[..2].iter().all(|r| r.contains("|0|10|")), "{all:?}");
    assert_eq!(
        sorted_rows(&batches),
        [
            "1|0|10|3|2|1|-4|2.5|0.5",
            "1|10|20|1|1|3|3|null|3.0",
            "2|0|10|1|1|7|7|null|7.0",
            "2|10|20|1|0|null|null|null|null",
        ]
    );
    // At end of input, results carry the largest entered time seen.
    assert_eq!(entered(&batches), [14; 4]);
    assert_eq!(out.late_rows(), 0);
}

#[test]
fn watermark_fires_only_completed_windows_then_forwards() {
    let s = schema(&[("k", DataType::Utf8), ("ts", ts_ms())]);
    let input = |keys: Vec<&str>, ts: Vec<i64>, entered: Vec<i64>| {
        batch(
            &s,
            vec![
                Arc::new(StringArray::from(keys)),
                Arc::new(TimestampMillisecondArray::from(ts)),
            ],
            entered,
        )
    };
    let mut op = create(
        &s,
        spec(
            WindowKind::Tumbling { size_ms: 10 },
            &["k"],
            vec![Agg::count_all("n")],
        ),
    );
    let mut out = Emitter::new();
    op.on_data(
        0,
        input(
            vec!["a", "b", "a", "a"],
            vec![5, 12, 3, 15],
            vec![1, 2, 3, 4],
        ),
        &mut out,
    )
    .unwrap();
    op.on_watermark(wm(10, 77), &mut out).unwrap();
    let msgs = out.take_messages();
    assert_eq!(trace(&msgs), ["data:a|0|10|2", "wm:10"]);
    assert_eq!(entered(&data(&msgs)), [77]);

    // 11 is on time; 9 is behind the watermark (10): late, never counted in.
    op.on_data(0, input(vec!["a", "b"], vec![11, 9], vec![5, 6]), &mut out)
        .unwrap();
    assert_eq!(out.late_rows(), 1);
    op.on_watermark(wm(19, 80), &mut out).unwrap();
    assert_eq!(
        trace(&out.take_messages()),
        ["wm:19"],
        "[10,20) is still open at 19"
    );
    op.on_watermark(wm(20, 88), &mut out).unwrap();
    let msgs = out.take_messages();
    assert_eq!(trace(&msgs), ["data:a|10|20|2,b|10|20|1", "wm:20"]);
    assert_eq!(entered(&data(&msgs)), [88, 88]);

    op.on_data(0, input(vec!["c"], vec![25], vec![3]), &mut out)
        .unwrap();
    op.on_end(&mut out).unwrap();
    let msgs = out.take_messages();
    assert_eq!(trace(&msgs), ["data:c|20|30|1"]);
    // The largest entered time seen on input over the whole run.
    assert_eq!(entered(&data(&msgs)), [6]);
}

#[test]
fn hopping_with_two_key_columns() {
    let s = schema(&[
        ("region", DataType::Utf8),
        ("shop", DataType::Int64),
        ("v", DataType::Int64),
        ("ts", ts_ms()),
    ]);
    let input = batch(
        &s,
        vec![
            Arc::new(StringArray::from(vec!["a", "a", "a", "b"])),
            Arc::new(Int64Array::from(vec![1, 1, 2, 1])),
            Arc::new(Int64Array::from(vec![1, 2, 4, 8])),
            Arc::new(TimestampMillisecondArray::from(vec![2, 7, 8, 12])),
        ],
        vec![1, 2, 3, 4],
    );
    let mut op = create(
        &s,
        spec(
            WindowKind::Hopping {
                size_ms: 10,
                slide_ms: 5,
            },
            &["region", "shop"],
            vec![Agg::count_all("n"), Agg::sum("v", "s")],
        ),
    );
    let mut out = Emitter::new();
    op.on_data(0, input, &mut out).unwrap();
    op.on_watermark(wm(10, 50), &mut out).unwrap();
    let msgs = out.take_messages();
    // Windows ending at 5 and 10 fire together, ordered by end.
    let fired = rows(&data(&msgs));
    assert_eq!(fired[0], "a|1|-5|5|1|1");
    assert_eq!(
        sorted_rows(&data(&msgs)),
        ["a|1|-5|5|1|1", "a|1|0|10|2|3", "a|2|0|10|1|4"]
    );
    assert!(matches!(msgs.last(), Some(Message::Watermark(_))));
    op.on_end(&mut out).unwrap();
    let rest = data(&out.take_messages());
    let ends: Vec<String> = rows(&rest)
        .iter()
        .map(|r| r.split('|').nth(3).unwrap().to_string())
        .collect();
    assert_eq!(ends, ["15", "15", "15", "20"]);
    assert_eq!(
        sorted_rows(&rest),
        [
            "a|1|5|15|1|2",
            "a|2|5|15|1|4",
            "b|1|10|20|1|8",
            "b|1|5|15|1|8"
        ]
    );
}

#[test]
fn late_rows_are_counted_and_written_to_the_side_output() {
    let s = schema(&[("k", DataType::Utf8), ("ts", DataType::Int64)]);
    let side = CollectSink::new();
    let mut spec = spec(
        WindowKind::Tumbling { size_ms: 10 },
        &["k"],
        vec![Agg::count_all("n")],
    );
    spec.late = LatePolicy::SideOutput(Arc::new(side.clone()));
    let mut op = create(&s, spec);
    let mut out = Emitter::new();
    op.on_watermark(wm(100, 1), &mut out).unwrap();
    let input = batch(
        &s,
        vec![
            Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
            Arc::new(Int64Array::from(vec![50, 150, 99, 100])),
        ],
        vec![1, 2, 3, 4],
    );
    op.on_data(0, input, &mut out).unwrap();
    assert_eq!(out.late_rows(), 2);
    let late = side.batches();
    assert_eq!(rows(&late), ["a|50", "c|99"]);
    assert_eq!(late[0].schema(), s, "side output has user columns only");
    out.take_messages();
    op.on_end(&mut out).unwrap();
    assert_eq!(
        sorted_rows(&data(&out.take_messages())),
        ["b|150|160|1", "d|100|110|1"]
    );
}

#[test]
fn late_rows_are_counted_under_the_drop_policy() {
    let s = kvx_schema();
    let mut op = create(
        &s,
        spec(
            WindowKind::Tumbling { size_ms: 10 },
            &["k"],
            vec![Agg::count_all("n")],
        ),
    );
    let mut out = Emitter::new();
    op.on_watermark(wm(20, 1), &mut out).unwrap();
    op.on_data(
        0,
        kvx(&[(1, None, None, 5), (1, None, None, 19)], vec![1, 2]),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.late_rows(), 2);
    out.take_messages();
    op.on_end(&mut out).unwrap();
    assert!(out.messages().is_empty());
}

#[test]
fn types_of_aggregate_inputs() {
    let s = schema(&[
        ("i", DataType::Int32),
        ("f", DataType::Float32),
        ("t", ts_ms()),
        ("ts", DataType::Timestamp(TimeUnit::Second, None)),
    ]);
    let factory = WindowFactory::new(
        s.clone(),
        spec(
            WindowKind::Tumbling { size_ms: 60_000 },
            &[],
            vec![
                Agg::sum("i", "si"),
                Agg::sum("f", "sf"),
                Agg::min("t", "first"),
                Agg::max("t", "last"),
                Agg::avg("i", "ai"),
            ],
        ),
    )
    .unwrap();
    let types: Vec<String> = factory
        .output_schema()
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    let ts = ts_ms().to_string();
    assert_eq!(types, [&ts, &ts, "Int64", "Float64", &ts, &ts, "Float64"]);
    let mut op = factory.create(0, 1).unwrap();
    let mut out = Emitter::new();
    let input = batch(
        &s,
        vec![
            Arc::new(Int32Array::from(vec![Some(1), None, Some(4)])),
            Arc::new(Float32Array::from(vec![0.5, 0.25, 1.0])),
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(700),
                Some(300),
                None,
            ])),
            // Event time in seconds: 0 s, 59 s, 60 s.
            Arc::new(TimestampSecondArray::from(vec![0, 59, 60])),
        ],
        vec![1, 2, 3],
    );
    op.on_data(0, input, &mut out).unwrap();
    op.on_end(&mut out).unwrap();
    let batches = data(&out.take_messages());
    assert_eq!(batches[0].schema().field(4).data_type(), &ts_ms());
    // No keys: one group per window.
    assert_eq!(
        rows(&batches),
        [
            "0|60000|1|0.75|300|700|1.0",
            "60000|120000|4|1.0|null|null|4.0"
        ]
    );
}

#[test]
fn integer_sum_overflow_is_an_error() {
    let s = schema(&[("v", DataType::UInt64), ("ts", DataType::Int64)]);
    let mut op = create(
        &s,
        spec(
            WindowKind::Tumbling { size_ms: 10 },
            &[],
            vec![Agg::sum("v", "s")],
        ),
    );
    let mut out = Emitter::new();
    let input = |v: Vec<u64>| {
        let n = v.len();
        batch(
            &s,
            vec![
                Arc::new(UInt64Array::from(v)),
                Arc::new(Int64Array::from(vec![1; n])),
            ],
            vec![0; n],
        )
    };
    let err = op
        .on_data(0, input(vec![i64::MAX as u64, 1]), &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("sum(v) AS s overflowed"), "{err}");
    // A UInt64 beyond Int64 is an error too, not a silent null.
    assert!(op.on_data(0, input(vec![u64::MAX]), &mut out).is_err());
}

#[test]
fn null_event_time_is_an_error_not_a_panic() {
    let s = schema(&[("ts", DataType::Int64)]);
    let mut op = create(
        &s,
        spec(
            WindowKind::Tumbling { size_ms: 10 },
            &[],
            vec![Agg::count_all("n")],
        ),
    );
    let input = batch(
        &s,
        vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        vec![0, 0],
    );
    let err = op.on_data(0, input, &mut Emitter::new()).unwrap_err();
    assert!(err.to_string().contains("'ts'"), "{err}");
    let extreme = batch(
        &s,
        vec![Arc::new(Int64Array::from(vec![i64::MAX, i64::MIN]))],
        vec![0, 0],
    );
    assert!(op.on_data(0, extreme, &mut Emitter::new()).is_err());
}

#[test]
fn invalid_specs_are_rejected_with_clear_errors() {
    let s = schema(&[
        ("k", DataType::Utf8),
        ("v", DataType::Int64),
        ("ts", ts_ms()),
    ]);
    let err = |kind: WindowKind, keys: &[&str], aggs: Vec<Agg>| {
        WindowFactory::new(s.clone(), spec(kind, keys, aggs))
            .err()
            .expect("rejected")
            .to_string()
    };
    let tumble = WindowKind::Tumbling { size_ms: 10 };
    let count = || vec![Agg::count_all("n")];
    assert!(err(WindowKind::Tumbling { size_ms: 0 }, &[], count()).contains("positive"));
    let hop = |size_ms, slide_ms| WindowKind::Hopping { size_ms, slide_ms };
    assert!(err(hop(10, 0), &[], count()).contains("slide"));
    assert!(err(hop(10, 20), &[], count()).contains("slide"));
    assert!(err(hop(10, 3), &[], count()).contains("multiple"));
    assert!(err(hop(86_400_000, 1), &[], count()).contains("at most"));
    let e = err(tumble, &["nope"], count());
    assert!(
        e.contains("unknown column 'nope'") && e.contains("k, v, ts"),
        "{e}"
    );
    let e = err(tumble, &[], vec![Agg::sum("k", "s")]);
    assert!(e.contains("'k' has type Utf8"), "{e}");
    let e = err(
        tumble,
        &[],
        vec![Agg {
            func: millrace_ops::AggFunc::Avg,
            column: None,
            output: "a".into(),
        }],
    );
    assert!(e.contains("needs a column"), "{e}");
    let e = err(tumble, &["k"], vec![Agg::count_all("k")]);
    assert!(e.contains("'k'") && e.contains("more than once"), "{e}");
    let e = err(tumble, &[], vec![Agg::count_all("window_end")]);
    assert!(e.contains("more than once"), "{e}");
    let mut bad_time = spec(tumble, &[], count());
    bad_time.event_time = "k".into();
    let e = WindowFactory::new(s.clone(), bad_time)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("'k' has type Utf8"), "{e}");
    // count(col) works on any type.
    assert!(WindowFactory::new(s.clone(), spec(tumble, &[], vec![Agg::count("k", "n")])).is_ok());
}

#[test]
fn dictionary_keys_keep_their_type() {
    use arrow::array::DictionaryArray;
    use arrow::datatypes::Int32Type;
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let s = schema(&[("k", dict.clone()), ("ts", DataType::Int64)]);
    let keys: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
    let input = batch(
        &s,
        vec![Arc::new(keys), Arc::new(Int64Array::from(vec![1, 2, 3]))],
        vec![1, 2, 3],
    );
    let mut op = create(
        &s,
        spec(
            WindowKind::Tumbling { size_ms: 10 },
            &["k"],
            vec![Agg::count_all("n")],
        ),
    );
    let mut out = Emitter::new();
    op.on_data(0, input, &mut out).unwrap();
    op.on_end(&mut out).unwrap();
    let batches = data(&out.take_messages());
    assert_eq!(batches[0].schema().field(0).data_type(), &dict);
    assert_eq!(sorted_rows(&batches), ["a|0|10|2", "b|0|10|1"]);
}

#[test]
fn factory_name_describes_the_window() {
    let s = kvx_schema();
    let f = WindowFactory::new(
        s,
        spec(
            WindowKind::Hopping {
                size_ms: 60_000,
                slide_ms: 10_000,
            },
            &["k"],
            vec![Agg::count_all("n"), Agg::sum("v", "total")],
        ),
    )
    .unwrap();
    assert_eq!(
        f.name(),
        "window(hopping 60000ms every 10000ms by [k]: count(*) AS n, sum(v) AS total)"
    );
}

/// Deterministic xorshift generator: no dependency, reproducible failures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

/// One output row, compared exactly: floats are summed in the same (arrival)
/// order by both sides, so they agree bit for bit.
#[derive(Debug, Clone, PartialEq, Default)]
struct Out {
    end: i64,
    k: i64,
    s: String,
    start: i64,
    n: i64,
    nv: i64,
    sum: Option<i64>,
    min: Option<i64>,
    max: Option<i64>,
    avg: Option<f64>,
    fmax: Option<f64>,
    fsum: Option<f64>,
}

fn decode(batches: &[RecordBatch]) -> Vec<Out> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    let mut out = Vec::new();
    for b in batches {
        let int = |i: usize| -> Vec<Option<i64>> {
            let a: ArrayRef = arrow::compute::cast(b.column(i), &DataType::Int64).unwrap();
            a.as_primitive::<Int64Type>().iter().collect()
        };
        let float = |i: usize| -> Vec<Option<f64>> {
            b.column(i).as_primitive::<Float64Type>().iter().collect()
        };
        let keys = b.column(1).as_string::<i32>();
        let (k, start, end, n, nv, sum, min, max) = (
            int(0),
            int(2),
            int(3),
            int(4),
            int(5),
            int(6),
            int(7),
            int(8),
        );
        let (avg, fmax, fsum) = (float(9), float(10), float(11));
        for r in 0..b.num_rows() {
            assert!(keys.is_valid(r));
            out.push(Out {
                end: end[r].unwrap(),
                k: k[r].unwrap(),
                s: keys.value(r).to_string(),
                start: start[r].unwrap(),
                n: n[r].unwrap(),
                nv: nv[r].unwrap(),
                sum: sum[r],
                min: min[r],
                max: max[r],
                avg: avg[r],
                fmax: fmax[r],
                fsum: fsum[r],
            });
        }
    }
    out
}

/// The values of `v` and `x` of one row, as the naive model keeps them.
type NaiveRow = (Option<i64>, Option<f64>);

/// One input batch being generated, column by column.
#[derive(Default)]
struct Columns {
    k: Vec<i64>,
    s: Vec<&'static str>,
    v: Vec<Option<i64>>,
    x: Vec<Option<f64>>,
    ts: Vec<i64>,
}

fn randomized_against_naive(kind: WindowKind, seed: u64) {
    let (size, slide) = match kind {
        WindowKind::Tumbling { size_ms } => (size_ms, size_ms),
        WindowKind::Hopping { size_ms, slide_ms } => (size_ms, slide_ms),
    };
    let s = schema(&[
        ("k", DataType::Int64),
        ("s", DataType::Utf8),
        ("v", DataType::Int64),
        ("x", DataType::Float64),
        ("ts", ts_ms()),
    ]);
    let factory = WindowFactory::new(
        s.clone(),
        spec(
            kind,
            &["k", "s"],
            vec![
                Agg::count_all("n"),
                Agg::count("v", "nv"),
                Agg::sum("v", "sum"),
                Agg::min("v", "min"),
                Agg::max("v", "max"),
                Agg::avg("v", "avg"),
                Agg::max("x", "fmax"),
                Agg::sum("x", "fsum"),
            ],
        ),
    )
    .unwrap();
    let mut op = factory.create(0, 1).unwrap();
    let mut out = Emitter::new();
    let mut rng = Rng(seed);

    // The naive model: every (window end, key) → its rows' values, in order.
    let mut naive: std::collections::BTreeMap<(i64, i64, String), Vec<NaiveRow>> =
        Default::default();
    let mut naive_late = 0u64;
    let mut current_wm = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut row = 0i64;
    let total_rows = 10_000;
    while row < total_rows {
        let len = (1 + rng.below(200)).min(total_rows - row);
        let mut cols = Columns::default();
        for _ in 0..len {
            // Time advances 3 ms a row, with up to 400 ms of disorder.
            let ts = row * 3 - rng.below(400);
            let k = rng.below(7);
            let sk = ["x", "y", "z"][rng.below(3) as usize];
            let v = (rng.below(10) > 0).then(|| rng.below(2001) - 1000);
            let x = (rng.below(10) > 1).then(|| rng.below(1000) as f64 / 8.0);
            cols.k.push(k);
            cols.s.push(sk);
            cols.v.push(v);
            cols.x.push(x);
            cols.ts.push(ts);
            row += 1;
            if ts < current_wm {
                naive_late += 1;
                continue;
            }
            // Every start = j*slide with start <= ts < start + size.
            let mut start = (ts - size).div_euclid(slide) * slide + slide;
            while start <= ts {
                naive
                    .entry((start + size, k, sk.to_string()))
                    .or_default()
                    .push((v, x));
                start += slide;
            }
        }
        max_ts = max_ts.max(*cols.ts.iter().max().unwrap());
        let entered = vec![row; len as usize];
        let input = batch(
            &s,
            vec![
                Arc::new(Int64Array::from(cols.k)),
                Arc::new(StringArray::from(cols.s)),
                Arc::new(Int64Array::from(cols.v)),
                Arc::new(Float64Array::from(cols.x)),
                Arc::new(TimestampMillisecondArray::from(cols.ts)),
            ],
            entered,
        );
        op.on_data(0, input, &mut out).unwrap();
        // A bounded-disorder watermark that some rows still fall behind.
        if rng.below(3) == 0 && max_ts - 300 > current_wm {
            current_wm = max_ts - 300;
            op.on_watermark(wm(current_wm, row), &mut out).unwrap();
        }
    }
    op.on_end(&mut out).unwrap();
    assert_eq!(out.late_rows(), naive_late);
    assert!(naive_late > 0, "the test should exercise late rows");

    // Results precede the watermark that fired them, in order of window end.
    let mut results = Vec::new();
    let mut last_end = i64::MIN;
    for m in out.take_messages() {
        match m {
            Message::Data(b) => {
                let decoded = decode(std::slice::from_ref(&b));
                for r in &decoded {
                    assert!(r.end >= last_end, "output out of window-end order");
                    last_end = r.end;
                }
                results.extend(decoded);
            }
            Message::Watermark(w) => assert!(last_end <= w.time_ms),
            _ => {}
        }
    }
    results.sort_by(|a, b| (a.end, a.k, &a.s).cmp(&(b.end, b.k, &b.s)));

    let expected: Vec<Out> = naive
        .into_iter()
        .map(|((end, k, s), values)| {
            let vs: Vec<i64> = values.iter().filter_map(|v| v.0).collect();
            let xs: Vec<f64> = values.iter().filter_map(|v| v.1).collect();
            let some = !vs.is_empty();
            Out {
                end,
                k,
                s,
                start: end - size,
                n: values.len() as i64,
                nv: vs.len() as i64,
                sum: some.then(|| vs.iter().sum()),
                min: vs.iter().copied().min(),
                max: vs.iter().copied().max(),
                avg: some.then(|| vs.iter().map(|&v| v as f64).sum::<f64>() / vs.len() as f64),
                fmax: xs.iter().copied().reduce(f64::max),
                fsum: (!xs.is_empty()).then(|| xs.iter().sum()),
            }
        })
        .collect();
    assert_eq!(results.len(), expected.len());
    for (got, want) in results.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}

#[test]
fn randomized_tumbling_matches_naive() {
    randomized_against_naive(WindowKind::Tumbling { size_ms: 50 }, 0x9E37_79B9_7F4A_7C15);
}

#[test]
fn randomized_hopping_matches_naive() {
    randomized_against_naive(
        WindowKind::Hopping {
            size_ms: 60,
            slide_ms: 20,
        },
        0xD1B5_4A32_D192_ED03,
    );
}
