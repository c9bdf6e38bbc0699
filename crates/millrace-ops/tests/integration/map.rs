//! Filter, project and with_column: rows, schemas, names, event time, and the
//! entered column staying aligned with its rows.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_core::{Emitter, Message, OperatorFactory, Watermark};
use millrace_ops::{FilterFactory, ProjectFactory, col, lit};

use crate::common::{batch, data, entered, rows, schema};

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// id, price, region, ts — entered times 1000 + id.
fn bids() -> (SchemaRef, RecordBatch) {
    let s = schema(&[
        ("id", DataType::Int64),
        ("price", DataType::Float64),
        ("region", DataType::Utf8),
        ("ts", ts_type()),
    ]);
    let b = batch(
        &s,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
            Arc::new(Float64Array::from(vec![
                Some(500.0),
                Some(1500.0),
                None,
                Some(2500.0),
                Some(1000.0),
            ])),
            Arc::new(StringArray::from(vec!["eu", "us", "eu", "eu", "us"])),
            Arc::new(TimestampMillisecondArray::from(vec![10, 20, 30, 40, 50])),
        ],
        vec![1001, 1002, 1003, 1004, 1005],
    );
    (s, b)
}

fn run(factory: &dyn OperatorFactory, input: RecordBatch) -> Vec<Message> {
    let mut op = factory.create(0, 1).unwrap();
    let mut out = Emitter::new();
    op.on_data(0, input, &mut out).unwrap();
    out.take_messages()
}

#[test]
fn filter_keeps_true_rows_drops_nulls_and_keeps_entered_aligned() {
    let (s, b) = bids();
    let f = FilterFactory::new(s.clone(), Some("ts".into()), col("price").gt(lit(1000))).unwrap();
    assert_eq!(f.name(), "filter(price > 1000)");
    assert_eq!(f.output_schema(), s);
    assert_eq!(f.output_event_time().as_deref(), Some("ts"));
    let out = data(&run(&f, b));
    // Row 3 has a null price: the predicate is null, the row is dropped.
    assert_eq!(rows(&out), ["2|1500.0|us|20", "4|2500.0|eu|40"]);
    assert_eq!(entered(&out), [1002, 1004]);
}

#[test]
fn filter_passes_whole_batch_and_emits_nothing_when_no_row_matches() {
    let (s, b) = bids();
    let all = FilterFactory::new(s.clone(), None, col("id").gt(lit(0))).unwrap();
    let out = data(&run(&all, b.clone()));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0], b);
    let none = FilterFactory::new(s, None, col("region").eq(lit("apac"))).unwrap();
    assert!(run(&none, b).is_empty());
}

#[test]
fn filter_forwards_watermarks() {
    let (s, _) = bids();
    let f = FilterFactory::new(s, None, col("id").gt(lit(0))).unwrap();
    let mut op = f.create(0, 1).unwrap();
    let mut out = Emitter::new();
    let wm = Watermark {
        time_ms: 5,
        entered_ns: 9,
    };
    op.on_watermark(wm, &mut out).unwrap();
    assert!(matches!(out.messages(), [Message::Watermark(w)] if *w == wm));
}

#[test]
fn filter_rejects_non_boolean_predicate() {
    let (s, _) = bids();
    let err = FilterFactory::new(s.clone(), None, col("price") + lit(1))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Boolean") && err.contains("Float64"), "{err}");
    let err = FilterFactory::new(s, None, col("nope").gt(lit(1)))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown column 'nope'"), "{err}");
}

#[test]
fn project_computes_renames_and_tracks_event_time() {
    let (s, b) = bids();
    let p = ProjectFactory::new(
        s,
        Some("ts".into()),
        vec![
            ("bid".into(), col("id")),
            ("eur".into(), col("price") * lit(0.5)),
            ("at".into(), col("ts")),
        ],
    )
    .unwrap();
    assert_eq!(p.name(), "project(bid, eur, at)");
    assert_eq!(p.output_event_time().as_deref(), Some("at"));
    let fields: Vec<(String, DataType)> = p
        .output_schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        fields,
        [
            ("bid".into(), DataType::Int64),
            ("eur".into(), DataType::Float64),
            ("at".into(), ts_type())
        ]
    );
    let out = data(&run(&p, b));
    assert_eq!(
        rows(&out),
        [
            "1|250.0|10",
            "2|750.0|20",
            "3|null|30",
            "4|1250.0|40",
            "5|500.0|50"
        ]
    );
    assert_eq!(entered(&out), [1001, 1002, 1003, 1004, 1005]);
    assert_eq!(out[0].schema().fields().len(), 4); // 3 user + entered
}

#[test]
fn project_loses_event_time_when_it_is_computed_or_dropped() {
    let (s, _) = bids();
    let dropped =
        ProjectFactory::new(s.clone(), Some("ts".into()), vec![("id".into(), col("id"))]).unwrap();
    assert_eq!(dropped.output_event_time(), None);
    let computed = ProjectFactory::new(
        s,
        Some("ts".into()),
        vec![("ts".into(), col("ts").cast(DataType::Int64) + lit(1))],
    )
    .unwrap();
    assert_eq!(computed.output_event_time(), None);
}

#[test]
fn project_rejects_duplicate_names_and_bad_expressions() {
    let (s, _) = bids();
    let err = ProjectFactory::new(
        s.clone(),
        None,
        vec![("x".into(), col("id")), ("x".into(), col("price"))],
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("'x'") && err.contains("more than once"),
        "{err}"
    );
    let err = ProjectFactory::new(s, None, vec![("y".into(), col("region") * lit(2))])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Utf8"), "{err}");
}

#[test]
fn with_column_appends_or_replaces_in_place() {
    let (s, b) = bids();
    let add = ProjectFactory::with_column(
        s.clone(),
        Some("ts".into()),
        "expensive",
        col("price").gt_eq(lit(1500)),
    )
    .unwrap();
    assert_eq!(add.name(), "with_column(expensive = price >= 1500)");
    assert_eq!(add.output_event_time().as_deref(), Some("ts"));
    let out = data(&run(&add, b.clone()));
    assert_eq!(
        rows(&out),
        [
            "1|500.0|eu|10|false",
            "2|1500.0|us|20|true",
            "3|null|eu|30|null",
            "4|2500.0|eu|40|true",
            "5|1000.0|us|50|false"
        ]
    );
    assert_eq!(entered(&out), [1001, 1002, 1003, 1004, 1005]);

    let replace =
        ProjectFactory::with_column(s, Some("ts".into()), "price", col("price") + lit(1)).unwrap();
    let names: Vec<String> = replace
        .output_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "price", "region", "ts"]);
    let out = data(&run(&replace, b));
    assert_eq!(rows(&out)[0], "1|501.0|eu|10");
}

#[test]
fn project_of_literals_keeps_row_count() {
    let (s, b) = bids();
    let p = ProjectFactory::new(s, None, vec![("one".into(), lit(1))]).unwrap();
    let out = data(&run(&p, b));
    assert_eq!(rows(&out), ["1", "1", "1", "1", "1"]);
}
