//! Behaviour of the window aggregate, driven message by message. Each output
//! row is rendered as its group columns (a window as `[start,end)`), its
//! aggregates, then `@entered`; watermarks as `watermark T`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, DictionaryArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Int32Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::DFSchema;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{
    avg, count, count_distinct, first_value, max, min, sum,
};
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::{LoweredAggregate, LoweredAggregateBuilder};
use datafusion::physical_expr::expressions::Column;
use datafusion::prelude::{Expr, col, lit};
use millrace_core::batch::attach_entered_now;
use millrace_core::{
    ENTERED_COLUMN, Emitter, Error, Message, Operator, OperatorFactory, Snapshot, Watermark,
};

use super::*;
use crate::join::test_util::{carrying_windows, with_window_column};
use crate::round_trip::{
    Step, assert_partial_rescales, assert_rescales, assert_rescales_only_one_to_one,
    assert_round_trip, render_with, route,
};
use crate::window::{WindowAssign, WindowKind, is_window_type, window_array, window_bounds};

/// The input of most tests: `ts` (ms), `user` (nullable), `region`,
/// `amount` (nullable), `price`.
fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("user", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, true),
        Field::new("price", DataType::Float64, false),
    ]))
}

type Event<'a> = (i64, Option<&'a str>, &'a str, Option<i64>, f64);

/// A batch of events, every row entered at `entered`.
fn events(entered: i64, rows: &[Event]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.3))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.4))),
    ];
    let batch = RecordBatch::try_new(events_schema(), columns).unwrap();
    attach_entered_now(&batch, entered).unwrap()
}

fn column(schema: &SchemaRef, name: &str) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new_with_schema(name, schema).unwrap())
}

/// Lowers logical aggregates the way the SQL planner does.
fn lower(schema: &SchemaRef, exprs: &[Expr]) -> Vec<LoweredAggregate> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
    exprs
        .iter()
        .map(|e| {
            LoweredAggregateBuilder::new(
                e,
                &df_schema,
                schema,
                &ExecutionProps::new(),
                &PhysicalPlanningContext::default(),
            )
            .build()
            .unwrap()
        })
        .collect()
}

fn time(schema: &SchemaRef, kind: WindowKind) -> WindowAssign {
    WindowAssign::Time {
        time: column(schema, "ts"),
        kind,
    }
}

/// The events, hopping windows of 10 ms every 5 ms, and a count and a sum
/// of `amount` per window and group.
fn hop_count_and_total() -> (SchemaRef, WindowAssign, [Expr; 2]) {
    let input = events_schema();
    let assign = time(
        &input,
        WindowKind::Hop {
            slide_ms: 5,
            size_ms: 10,
        },
    );
    let aggs = [count_all().alias("n"), sum(col("amount")).alias("total")];
    (input, assign, aggs)
}

/// A spec grouping by `keys` (input columns) with the window at
/// `window_position`, and the output schema the planner would derive.
fn spec(
    input: SchemaRef,
    assign: WindowAssign,
    keys: &[&str],
    window_position: usize,
    aggs: &[Expr],
) -> WindowAggSpec {
    let aggs = lower(&input, aggs);
    let mut fields: Vec<FieldRef> = keys
        .iter()
        .map(|k| Arc::new(input.field_with_name(k).unwrap().clone()))
        .collect();
    fields.insert(
        window_position,
        Arc::new(Field::new("window", window_type(), false)),
    );
    fields.extend(aggs.iter().map(|a| a.aggregate.field()));
    WindowAggSpec {
        name: "window_agg".into(),
        keys: keys.iter().map(|k| column(&input, k)).collect(),
        input_schema: input,
        assign,
        window_position,
        aggs,
        output_schema: Arc::new(Schema::new(fields)),
        phase: AggPhase::Single,
        emit_best: None,
    }
}

/// Drives one operator instance and renders what it emits.
struct Harness {
    op: Box<dyn Operator>,
    out: Emitter,
}

impl Harness {
    fn new(spec: WindowAggSpec) -> Self {
        let factory = WindowAggFactory::new(spec).unwrap();
        Self {
            op: factory.create(0, 1).unwrap(),
            out: Emitter::new(),
        }
    }

    /// Feeds a batch; data only goes out when a watermark fires it.
    fn data(&mut self, batch: RecordBatch) {
        self.op.on_data(0, batch, &mut self.out).unwrap();
        assert!(self.out.messages().is_empty(), "emitted before a watermark");
    }

    fn watermark(&mut self, time_ms: i64, entered_ns: i64) -> Vec<String> {
        let wm = Watermark {
            time_ms,
            entered_ns,
        };
        self.op.on_watermark(wm, &mut self.out).unwrap();
        render(self.out.take_messages())
    }

    fn end(&mut self) -> Vec<String> {
        self.op.on_end(&mut self.out).unwrap();
        render(self.out.take_messages())
    }

    fn late_rows(&self) -> u64 {
        self.out.late_rows()
    }
}

fn render(messages: Vec<Message>) -> Vec<String> {
    render_with(messages, render_rows)
}

fn render_rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("null");
    let schema = batch.schema();
    let cells: Vec<Vec<String>> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if is_window_type(c.data_type()) {
                let (starts, ends) = window_bounds(c).unwrap();
                starts
                    .iter()
                    .zip(&ends)
                    .map(|(s, e)| format!("[{s},{e})"))
                    .collect()
            } else {
                let fmt = ArrayFormatter::try_new(c.as_ref(), &options).unwrap();
                let prefix = if f.name() == ENTERED_COLUMN { "@" } else { "" };
                (0..c.len())
                    .map(|i| format!("{prefix}{}", fmt.value(i)))
                    .collect()
            }
        })
        .collect();
    (0..batch.num_rows())
        .map(|r| {
            let row: Vec<&str> = cells.iter().map(|c| c[r].as_str()).collect();
            row.join(" ")
        })
        .collect()
}

#[test]
fn tumble_groups_by_two_keys_with_out_of_order_rows() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let aggs = [count_all().alias("n"), sum(col("amount")).alias("total")];
    let mut h = Harness::new(spec(input, assign, &["user", "region"], 0, &aggs));
    h.data(events(
        7,
        &[
            (3, Some("a"), "eu", Some(1), 0.0),
            (12, Some("a"), "eu", Some(2), 0.0),
            (1, Some("b"), "us", Some(3), 0.0),
        ],
    ));
    h.data(events(
        9,
        &[
            (7, Some("a"), "eu", Some(4), 0.0),
            (5, Some("b"), "eu", Some(5), 0.0),
            (15, Some("b"), "us", Some(6), 0.0),
        ],
    ));
    assert_eq!(h.watermark(9, 50), vec!["watermark 9"]);
    // [0,10) closes at 10; groups in order of first appearance; fired rows
    // carry the closing watermark's entered time.
    assert_eq!(
        h.watermark(10, 100),
        vec![
            "[0,10) a eu 2 5 @100",
            "[0,10) b us 1 3 @100",
            "[0,10) b eu 1 5 @100",
            "watermark 10",
        ]
    );
    // At end of input the rest fires with the largest entered time seen.
    assert_eq!(h.end(), vec!["[10,20) a eu 1 2 @9", "[10,20) b us 1 6 @9"]);
    assert_eq!(h.late_rows(), 0);
}

#[test]
fn rows_behind_the_watermark_are_counted_and_left_out() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let aggs = [count_all().alias("n"), sum(col("amount")).alias("total")];
    let mut h = Harness::new(spec(input, assign, &[], 0, &aggs));
    h.data(events(1, &[(2, Some("a"), "eu", Some(1), 0.0)]));
    assert_eq!(h.watermark(5, 10), vec!["watermark 5"]);
    // 4 is behind the watermark 5; 9 is not, and its window is still open.
    h.data(events(
        2,
        &[
            (4, Some("a"), "eu", Some(100), 0.0),
            (9, Some("a"), "eu", Some(2), 0.0),
        ],
    ));
    assert_eq!(h.late_rows(), 1);
    assert_eq!(h.watermark(10, 20), vec!["[0,10) 2 3 @20", "watermark 10"]);
    // A watermark that goes back changes nothing: 9 stays late, and it is
    // not forwarded.
    assert_eq!(h.watermark(3, 30), Vec::<String>::new());
    h.data(events(
        3,
        &[
            (9, Some("a"), "eu", Some(100), 0.0),
            (10, Some("a"), "eu", Some(4), 0.0),
        ],
    ));
    assert_eq!(h.late_rows(), 2);
    assert_eq!(h.end(), vec!["[10,20) 1 4 @3"]);
}

#[test]
fn only_watermarks_that_reach_a_window_end_are_forwarded() {
    let input = events_schema();
    // Hop 10 every 4: windows end at ..., 2, 6, 10, 14, ...
    let assign = time(
        &input,
        WindowKind::Hop {
            slide_ms: 4,
            size_ms: 10,
        },
    );
    let mut h = Harness::new(spec(input, assign, &[], 0, &[count_all().alias("n")]));
    // The first watermark is forwarded: consumers learn where time starts.
    assert_eq!(h.watermark(1, 10), vec!["watermark 1"]);
    assert_eq!(h.watermark(2, 11), vec!["watermark 2"]);
    // 3..5 lie between the ends 2 and 6.
    for t in 3..6 {
        assert_eq!(h.watermark(t, 12), Vec::<String>::new(), "watermark {t}");
    }
    h.data(events(1, &[(7, Some("a"), "eu", Some(1), 0.0)]));
    // 9 passes the end 6 (no window there), 13 passes 10: the window [0,10)
    // fires and the watermark follows it.
    assert_eq!(h.watermark(9, 13), vec!["watermark 9"]);
    assert_eq!(h.watermark(13, 14), vec!["[0,10) 1 @14", "watermark 13"]);
    assert_eq!(h.watermark(13, 15), Vec::<String>::new());
    // A jump over several ends is one watermark.
    assert_eq!(h.watermark(30, 16), vec!["[4,14) 1 @16", "watermark 30"]);
}

/// With `emit_best`, each window emits only its groups at the top by the
/// ranked aggregate, ties kept: the rows of the full output whose rank
/// (one more than the groups strictly better in the window) is within the
/// limit.
#[test]
fn emit_best_keeps_each_windows_groups_ranked_within_the_limit() {
    let (input, assign, aggs) = hop_count_and_total();
    let full = spec(input.clone(), assign.clone(), &["region"], 0, &aggs);
    // Seven regions over 20 ms of event time: windows get several groups,
    // with tied counts.
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    let rows: Vec<Event> = (0..300usize)
        .map(|i| {
            (
                ((i * 7) % 20) as i64,
                Some("u"),
                names[(i * i) % 7],
                Some(i as i64 % 5),
                0.0,
            )
        })
        .collect();
    let run = |spec: WindowAggSpec| {
        let mut h = Harness::new(spec);
        h.data(events(1, &rows));
        h.end()
    };
    let all = run(full.clone());
    for (limit, descending, ranked) in [(1, true, 0), (2, true, 1), (2, false, 0)] {
        let best = WindowAggSpec {
            emit_best: Some(EmitBest {
                aggregate: ranked,
                options: SortOptions {
                    descending,
                    nulls_first: false,
                },
                limit,
            }),
            ..full.clone()
        };
        // The full output's rows, "window region n total @entered".
        let value =
            |line: &str| -> i64 { line.split(' ').nth(2 + ranked).unwrap().parse().unwrap() };
        let window = |line: &str| line.split(' ').next().unwrap().to_string();
        let want: Vec<String> = all
            .iter()
            .filter(|line| {
                let better = all
                    .iter()
                    .filter(|o| window(o) == window(line))
                    .filter(|o| {
                        if descending {
                            value(o) > value(line)
                        } else {
                            value(o) < value(line)
                        }
                    })
                    .count();
                better < limit
            })
            .cloned()
            .collect();
        let got = run(best);
        assert!(got.len() < all.len(), "some groups are left out");
        assert_eq!(
            got, want,
            "limit {limit}, descending {descending}, by {ranked}"
        );
    }
    // Sessions, partial phases and a missing aggregate are refused.
    let bad = WindowAggSpec {
        emit_best: Some(EmitBest {
            aggregate: 5,
            options: SortOptions::default(),
            limit: 1,
        }),
        ..full
    };
    assert!(plan_error(bad).contains("no aggregate 5"));
}

#[test]
fn hop_puts_each_row_in_size_over_slide_windows() {
    let (input, assign, aggs) = hop_count_and_total();
    let mut h = Harness::new(spec(input, assign, &[], 0, &aggs));
    h.data(events(
        1,
        &[
            (3, Some("a"), "eu", Some(1), 0.0),
            (7, Some("a"), "eu", Some(10), 0.0),
            (12, Some("a"), "eu", Some(100), 0.0),
        ],
    ));
    // 3 ∈ [-5,5) [0,10); 7 ∈ [0,10) [5,15); 12 ∈ [5,15) [10,20).
    assert_eq!(
        h.watermark(15, 42),
        vec![
            "[-5,5) 1 1 @42",
            "[0,10) 2 11 @42",
            "[5,15) 2 110 @42",
            "watermark 15",
        ]
    );
    assert_eq!(h.end(), vec!["[10,20) 1 100 @1"]);
}

#[test]
fn count_distinct_and_filter() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let aggs = [
        count_distinct(col("user")).alias("users"),
        // count(*) FILTER (..): count_all() is an alias, so count a literal.
        count(lit(1i64))
            .filter(col("amount").gt(lit(2i64)))
            .build()
            .unwrap()
            .alias("big"),
        sum(col("amount"))
            .filter(col("user").eq(lit("a")))
            .build()
            .unwrap()
            .alias("by_a"),
    ];
    let mut h = Harness::new(spec(input, assign, &["region"], 1, &aggs));
    h.data(events(
        1,
        &[
            (1, Some("a"), "eu", Some(1), 0.0),
            (2, Some("b"), "eu", Some(5), 0.0),
            (3, Some("a"), "eu", Some(3), 0.0),
            // A NULL condition (amount > 2 on a null amount) selects nothing.
            (4, Some("c"), "us", None, 0.0),
            (5, None, "eu", Some(7), 0.0),
        ],
    ));
    // eu: users {a, b} (null not counted), big = 5, 3, 7; by_a = 1 + 3.
    // us: one user, nothing big, no row of a → sum is null.
    assert_eq!(
        h.watermark(10, 5),
        vec![
            "eu [0,10) 2 3 4 @5",
            "us [0,10) 1 0 null @5",
            "watermark 10"
        ]
    );
}

#[test]
fn sum_avg_min_max_with_a_null_key_and_null_values() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 100 });
    let aggs = [
        sum(col("amount")).alias("sum"),
        avg(col("price")).alias("avg"),
        min(col("amount")).alias("min"),
        max(col("amount")).alias("max"),
        count(col("amount")).alias("count"),
    ];
    let mut h = Harness::new(spec(input, assign, &["user"], 1, &aggs));
    h.data(events(
        1,
        &[
            (10, Some("a"), "eu", Some(4), 1.0),
            (20, None, "eu", Some(-2), 2.0),
            (30, Some("a"), "eu", None, 4.0),
            (40, None, "eu", Some(8), 3.0),
            (50, Some("a"), "eu", Some(-6), 1.0),
            (60, Some("b"), "eu", None, 0.5),
        ],
    ));
    // A null user is a group of its own; nulls are skipped by the
    // aggregates, and a group with only null values sums to null.
    assert_eq!(
        h.watermark(100, 9),
        vec![
            "a [0,100) -2 2.0 -6 4 2 @9",
            "null [0,100) 6 2.5 -2 8 2 @9",
            "b [0,100) null 0.5 null null 0 @9",
            "watermark 100",
        ]
    );
}

#[test]
fn rows_carrying_their_window_are_grouped_by_it() {
    let input = Arc::new(Schema::new(vec![
        Field::new("w", window_type(), false),
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let batch = |entered: i64, windows: &[(i64, i64)], ks: &[&str], vs: &[i64]| {
        let columns: Vec<ArrayRef> = vec![
            window_array(
                windows.iter().map(|w| w.0).collect(),
                windows.iter().map(|w| w.1).collect(),
            ),
            Arc::new(StringArray::from_iter_values(ks)),
            Arc::new(Int64Array::from(vs.to_vec())),
        ];
        let b = RecordBatch::try_new(input.clone(), columns).unwrap();
        attach_entered_now(&b, entered).unwrap()
    };
    let assign = WindowAssign::Column {
        window: column(&input, "w"),
    };
    let aggs = [sum(col("v")).alias("total")];
    let mut h = Harness::new(spec(input.clone(), assign, &["k"], 1, &aggs));
    h.data(batch(
        1,
        &[(0, 10), (10, 20), (0, 10), (0, 10), (5, 10)],
        &["x", "x", "y", "x", "x"],
        &[1, 2, 3, 4, 9],
    ));
    // Windows with the same end fire in order of start.
    assert_eq!(
        h.watermark(10, 7),
        vec![
            "x [0,10) 5 @7",
            "y [0,10) 3 @7",
            "x [5,10) 9 @7",
            "watermark 10"
        ]
    );
    // A carried window that already fired is late.
    h.data(batch(2, &[(0, 10), (10, 20)], &["x", "y"], &[100, 7]));
    assert_eq!(h.late_rows(), 1);
    assert_eq!(h.end(), vec!["x [10,20) 2 @2", "y [10,20) 7 @2"]);
}

#[test]
fn dictionary_keys_come_out_with_their_declared_type() {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let input = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("k", dict.clone(), false),
    ]));
    let keys: DictionaryArray<Int32Type> = vec!["x", "y", "x"].into_iter().collect();
    let columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(keys)];
    let batch = RecordBatch::try_new(input.clone(), columns).unwrap();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let mut h = Harness::new(spec(input, assign, &["k"], 1, &[count_all().alias("n")]));
    h.data(attach_entered_now(&batch, 1).unwrap());
    h.op.on_end(&mut h.out).unwrap();
    let messages = h.out.take_messages();
    let Message::Data(out) = &messages[0] else {
        panic!("expected data, got {messages:?}");
    };
    assert_eq!(out.column(0).data_type(), &dict);
    assert_eq!(render(messages), vec!["x [0,10) 2 @1", "y [0,10) 1 @1"]);
}

#[test]
fn barriers_pass_through() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let mut h = Harness::new(spec(input, assign, &[], 0, &[count_all().alias("n")]));
    h.data(events(1, &[(1, None, "eu", None, 0.0)]));
    h.op.on_barrier(3, &mut h.out).unwrap();
    assert_eq!(render(h.out.take_messages()), vec!["Barrier(3)"]);
    assert_eq!(h.end(), vec!["[0,10) 1 @1"]);
}

#[test]
fn sessions_merge_fire_per_key_and_flush_at_end() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Session { gap_ms: 10 });
    let aggs = [
        count_all().alias("n"),
        sum(col("amount"))
            .filter(col("amount").gt(lit(1i64)))
            .build()
            .unwrap()
            .alias("big"),
    ];
    let mut h = Harness::new(spec(input, assign, &["user"], 0, &aggs));
    // a: [0,10) and [15,25); b: [3,13).
    h.data(events(
        1,
        &[
            (15, Some("a"), "eu", Some(2), 0.0),
            (0, Some("a"), "eu", Some(1), 0.0),
            (3, Some("b"), "eu", Some(5), 0.0),
        ],
    ));
    // 8 opens [8,18), which overlaps both sessions of a: one session [0,25).
    // 25 opens [25,35), which only touches it and stays apart.
    h.data(events(
        2,
        &[
            (8, Some("a"), "eu", Some(4), 0.0),
            (25, Some("a"), "eu", Some(8), 0.0),
        ],
    ));
    assert_eq!(h.watermark(12, 10), vec!["watermark 12"]);
    assert_eq!(
        h.watermark(13, 20),
        vec!["[3,13) b 1 5 @20", "watermark 13"]
    );
    assert_eq!(
        h.watermark(25, 30),
        vec!["[0,25) a 3 6 @30", "watermark 25"]
    );
    // 20 is behind the watermark; 40 opens a new session of b.
    h.data(events(
        3,
        &[
            (20, Some("a"), "eu", Some(100), 0.0),
            (40, Some("b"), "eu", Some(1), 0.0),
        ],
    ));
    assert_eq!(h.late_rows(), 1);
    assert_eq!(h.end(), vec!["[25,35) a 1 8 @3", "[40,50) b 1 null @3"]);
}

#[test]
fn sessions_grow_backwards_and_bridge_across_batches() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Session { gap_ms: 10 });
    let aggs = [
        count_distinct(col("region")).alias("regions"),
        min(col("ts")).alias("first"),
    ];
    let mut h = Harness::new(spec(input, assign, &[], 0, &aggs));
    h.data(events(1, &[(20, None, "eu", None, 0.0)])); // [20,30)
    h.data(events(2, &[(12, None, "us", None, 0.0)])); // back: [12,30)
    h.data(events(3, &[(35, None, "eu", None, 0.0)])); // apart: [35,45)
    // 29 opens [29,39), overlapping both: one session [12,45).
    h.data(events(4, &[(29, None, "ap", None, 0.0)]));
    assert_eq!(h.watermark(44, 8), vec!["watermark 44"]);
    assert_eq!(h.watermark(45, 9), vec!["[12,45) 3 12 @9", "watermark 45"]);
    assert_eq!(h.end(), Vec::<String>::new());
}

#[test]
fn large_fires_go_out_in_slices() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let mut h = Harness::new(spec(
        input,
        assign,
        &["amount"],
        0,
        &[count_all().alias("n")],
    ));
    let rows: Vec<Event> = (0..70_000).map(|i| (1, None, "eu", Some(i), 0.0)).collect();
    h.data(events(1, &rows));
    h.op.on_end(&mut h.out).unwrap();
    let sizes: Vec<usize> = h.out.take_messages().iter().map(Message::rows).collect();
    assert_eq!(sizes, vec![65_536, 4_464]);
}

fn plan_error(spec: WindowAggSpec) -> String {
    match WindowAggFactory::new(spec) {
        Err(Error::Plan(msg)) => msg,
        Err(other) => panic!("expected a plan error, got {other}"),
        Ok(_) => panic!("expected a plan error"),
    }
}

#[test]
fn specs_the_operator_cannot_run_are_refused_when_planned() {
    let input = events_schema();
    let tumble = time(&input, WindowKind::Tumble { size_ms: 10 });

    let ordered = first_value(col("amount"), vec![col("ts").sort(true, false)]);
    let msg = plan_error(spec(input.clone(), tumble.clone(), &[], 0, &[ordered]));
    assert!(msg.contains("ORDER BY"), "{msg}");

    let mut short = spec(input.clone(), tumble.clone(), &["user"], 0, &[count_all()]);
    short.output_schema = Arc::new(short.output_schema.project(&[0, 1]).unwrap());
    let msg = plan_error(short);
    assert!(msg.contains("has 2 column(s); expected 3"), "{msg}");

    let mut mistyped = spec(input.clone(), tumble.clone(), &[], 0, &[count_all()]);
    mistyped.output_schema = Arc::new(Schema::new(vec![
        Field::new("window", window_type(), false),
        Field::new("n", DataType::Int32, false),
    ]));
    let msg = plan_error(mistyped);
    assert!(msg.contains("declared Int32 but aggregate"), "{msg}");

    let zero_gap = time(&input, WindowKind::Session { gap_ms: 0 });
    let msg = plan_error(spec(input.clone(), zero_gap, &[], 0, &[count_all()]));
    assert!(msg.contains("session gap must be positive"), "{msg}");

    let mut misplaced = spec(input, tumble, &[], 0, &[count_all()]);
    misplaced.window_position = 1;
    let msg = plan_error(misplaced);
    assert!(msg.contains("window position 1 is out of range"), "{msg}");
}

#[test]
fn the_factory_describes_itself() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10_000 });
    let aggs = [count_all().alias("n")];
    let factory = WindowAggFactory::new(spec(input, assign, &["user"], 0, &aggs)).unwrap();
    assert_eq!(factory.name(), "window_agg");
    assert_eq!(factory.output_event_time(), None);
    assert_eq!(factory.output_schema().fields().len(), 3);
    assert!(
        factory
            .describe()
            .starts_with("window_agg: tumble 10s on ts@0 by [user@1]: "),
        "{}",
        factory.describe()
    );
}

#[test]
fn peak_state_counts_the_entries_of_the_open_windows_before_they_fire() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let aggs = [count_all().alias("n")];
    let mut h = Harness::new(spec(input, assign, &["region"], 0, &aggs));
    assert_eq!(h.op.peak_state(), Some(Default::default()));
    // Window [0,10): regions eu, us, eu; window [10,20): eu.
    h.data(events(
        1,
        &[
            (1, None, "eu", None, 0.0),
            (2, None, "us", None, 0.0),
            (3, None, "eu", None, 0.0),
            (11, None, "eu", None, 0.0),
        ],
    ));
    h.watermark(10, 2);
    let peak = h.op.peak_state().unwrap();
    // Three entries were open when [0,10) fired: (eu, us) and (eu).
    assert_eq!(peak.keys, 3);
    assert!(
        peak.key_bytes > 0 && peak.bytes > peak.key_bytes,
        "{peak:?}"
    );
    // Firing frees state but the peak stays.
    h.end();
    assert_eq!(h.op.peak_state().unwrap().keys, 3);
}

/// Drives the partial phase of `spec` on each of `parts` (one operator per
/// upstream instance, each fed its rows then `watermarks`) into one final
/// operator, passing every message on in the order an exchange could
/// deliver them: each partial's output in order, the partials interleaved.
fn two_phase(spec: &WindowAggSpec, parts: &[Vec<RecordBatch>], watermarks: &[i64]) -> Vec<String> {
    let (partial, last) = spec.split_two_phase().unwrap();
    let partial = WindowAggFactory::new(partial).unwrap();
    let mut last = Harness::new(last);
    let mut partials: Vec<Harness> = parts
        .iter()
        .map(|_| Harness {
            op: partial.create(0, parts.len()).unwrap(),
            out: Emitter::new(),
        })
        .collect();
    for (p, batches) in partials.iter_mut().zip(parts) {
        for b in batches {
            p.data(b.clone());
        }
    }
    let mut seen = Vec::new();
    // The final phase's watermark is the smallest its inputs forwarded.
    let mut forwarded = vec![i64::MIN; parts.len()];
    let mut deliver =
        |last: &mut Harness, i: usize, messages: Vec<Message>, seen: &mut Vec<String>| {
            for m in messages {
                match m {
                    Message::Data(b) => last.data(b),
                    Message::Watermark(wm) => {
                        forwarded[i] = wm.time_ms;
                        let min = *forwarded.iter().min().unwrap();
                        if min > i64::MIN {
                            seen.extend(last.watermark(min, wm.entered_ns));
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        };
    for (w, &time_ms) in watermarks.iter().enumerate() {
        for (i, p) in partials.iter_mut().enumerate() {
            let wm = Watermark {
                time_ms,
                entered_ns: 1000 + w as i64,
            };
            p.op.on_watermark(wm, &mut p.out).unwrap();
            deliver(&mut last, i, p.out.take_messages(), &mut seen);
        }
    }
    for (i, p) in partials.iter_mut().enumerate() {
        p.op.on_end(&mut p.out).unwrap();
        deliver(&mut last, i, p.out.take_messages(), &mut seen);
    }
    seen.extend(last.end());
    seen
}

#[test]
fn two_phases_over_split_input_give_the_single_phase_results() {
    let input = events_schema();
    let aggs = [
        count_all().alias("n"),
        sum(col("amount")).alias("total"),
        avg(col("price")).alias("mean"),
        min(col("amount")).alias("low"),
        max(col("price")).alias("high"),
        count_distinct(col("user")).alias("users"),
        count(lit(1i64))
            .filter(col("region").eq(lit("eu")))
            .build()
            .unwrap()
            .alias("eu"),
    ];
    // 60 rows over [0, 30) ms, some amounts and users null.
    let rows: Vec<Event> = (0..60i64)
        .map(|i| {
            let user = ["a", "b", "c"][(i % 3) as usize];
            (
                (i * 7) % 30,
                (i % 5 != 0).then_some(user),
                if i % 4 == 0 { "eu" } else { "us" },
                (i % 6 != 0).then_some(i),
                i as f64 / 4.0,
            )
        })
        .collect();
    let watermarks = [5, 10, 12, 20, 25];
    for kind in [
        WindowKind::Tumble { size_ms: 10 },
        WindowKind::Hop {
            slide_ms: 5,
            size_ms: 10,
        },
    ] {
        let spec = spec(input.clone(), time(&input, kind), &[], 0, &aggs);
        // One phase, all rows at once: the answer.
        let mut single = Harness::new(spec.clone());
        single.data(events(1, &rows));
        let mut want: Vec<String> = Vec::new();
        for &t in &watermarks {
            want.extend(single.watermark(t, 0));
        }
        want.extend(single.end());
        let want: Vec<String> = want
            .into_iter()
            .filter(|l| !l.starts_with("watermark"))
            .map(|l| l.split(" @").next().unwrap().to_string())
            .collect();
        // Two phases: rows split over three partial instances, one of them
        // with no rows at all, in batches of uneven size.
        let parts = vec![
            vec![events(1, &rows[..7]), events(1, &rows[7..30])],
            vec![events(1, &rows[30..31]), events(1, &rows[31..])],
            vec![],
        ];
        let got: Vec<String> = two_phase(&spec, &parts, &watermarks)
            .into_iter()
            .filter(|l| !l.starts_with("watermark"))
            .map(|l| l.split(" @").next().unwrap().to_string())
            .collect();
        assert!(want.len() >= 3, "{kind}: {want:?}");
        assert_eq!(got, want, "{kind}");
    }
}

/// q5's maximum: rows carrying their window (counts per auction), no keys.
/// Split over two instances, the two phases give what one phase gives over
/// all rows, for each window (hand-checked: [0,10) max 9 min 1, [5,15) max
/// 8 min 2, [10,20) max 7 min 7).
#[test]
fn two_phases_over_carried_windows_give_the_single_phase_results() {
    let input = Arc::new(Schema::new(vec![
        Field::new("w", window_type(), false),
        Field::new("v", DataType::Int64, false),
    ]));
    let batch = |windows: &[(i64, i64)], vs: &[i64]| {
        let columns: Vec<ArrayRef> = vec![
            window_array(
                windows.iter().map(|w| w.0).collect(),
                windows.iter().map(|w| w.1).collect(),
            ),
            Arc::new(Int64Array::from(vs.to_vec())),
        ];
        attach_entered_now(&RecordBatch::try_new(input.clone(), columns).unwrap(), 1).unwrap()
    };
    let assign = WindowAssign::Column {
        window: column(&input, "w"),
    };
    let aggs = [max(col("v")).alias("high"), min(col("v")).alias("low")];
    let spec = spec(input.clone(), assign, &[], 0, &aggs);
    let a = batch(&[(0, 10), (0, 10), (5, 15)], &[1, 9, 2]);
    let b = batch(&[(5, 15), (0, 10), (10, 20)], &[8, 4, 7]);
    let watermarks = [10, 15, 20];
    let mut single = Harness::new(spec.clone());
    single.data(a.clone());
    single.data(b.clone());
    let mut want: Vec<String> = Vec::new();
    for &t in &watermarks {
        want.extend(single.watermark(t, 0));
    }
    let strip = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .filter(|l| !l.starts_with("watermark"))
            .map(|l| l.split(" @").next().unwrap().to_string())
            .collect()
    };
    let want = strip(want);
    assert_eq!(want, vec!["[0,10) 9 1", "[5,15) 8 2", "[10,20) 7 7"]);
    assert_eq!(
        strip(two_phase(&spec, &[vec![a], vec![b]], &watermarks)),
        want
    );
}

#[test]
fn only_keyless_tumbling_hopping_and_carried_aggregates_split_in_two() {
    let input = events_schema();
    let aggs = [avg(col("price")).alias("mean")];
    let tumble = time(&input, WindowKind::Tumble { size_ms: 10 });
    let keyed = spec(input.clone(), tumble.clone(), &["user"], 0, &aggs);
    assert!(keyed.split_two_phase().is_err());
    let session = time(&input, WindowKind::Session { gap_ms: 10 });
    assert!(
        spec(input.clone(), session, &[], 0, &aggs)
            .split_two_phase()
            .is_err()
    );
    let (partial, last) = spec(input, tumble, &[], 0, &aggs)
        .split_two_phase()
        .unwrap();
    assert!(partial.split_two_phase().is_err());
    // A final phase fed something other than a partial's states (avg keeps
    // a count and a sum) is refused.
    let wrong = WindowAggSpec {
        input_schema: last.output_schema.clone(),
        ..last.clone()
    };
    let err = WindowAggFactory::new(wrong).err().unwrap().to_string();
    assert!(err.contains("final phase reads the window"), "{err}");
}

/// An out-of-order stream over ~420 ms of event time with a few late rows:
/// batches of rows for each instance of `parallelism` (rows split by user),
/// each batch followed by a watermark 7 ms behind the largest time so far.
fn round_trip_steps(parallelism: usize) -> Vec<Vec<Step>> {
    let users = ["a", "b", "c", "d", "e"];
    let mut steps = vec![Vec::new(); parallelism];
    let mut max_ts = vec![i64::MIN; parallelism];
    for b in 0..24i64 {
        let mut rows: Vec<Vec<Event>> = vec![Vec::new(); parallelism];
        for r in 0..9i64 {
            let n = b * 9 + r;
            // Rising 1 ms a row with a 20 ms gap every 20 rows (sessions
            // close), jittered back and forth by up to 11 ms (7 and 12 are
            // coprime, so neighbours jitter apart): some rows land behind
            // the watermark.
            let ts = n + n / 20 * 20 + (n * 7 % 12) - 6;
            let u = (n * 31 % 5) as usize;
            let amount = (n % 4 != 0).then_some(n % 13);
            rows[u % parallelism].push((ts.max(0), Some(users[u]), "eu", amount, n as f64));
        }
        for (i, rows) in rows.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            max_ts[i] = max_ts[i].max(rows.iter().map(|r| r.0).max().unwrap());
            steps[i].push(Step::data(0, events(b, &rows)));
            steps[i].push(Step::Watermark(max_ts[i] - 7));
        }
    }
    steps
}

/// Round trips at every cut, at parallelism 1 and 2; the runs must fire
/// windows before and after the cut for the check to mean something.
fn assert_window_agg_round_trips(kind: WindowKind) {
    let input = events_schema();
    let aggs = [
        count_all().alias("n"),
        sum(col("amount")).alias("total"),
        count_distinct(col("amount")).alias("distinct"),
        avg(col("price")).alias("mean"),
    ];
    for parallelism in [1, 2] {
        for keys in [&[][..], &["user"][..]] {
            let assign = time(&input, kind);
            let spec = spec(input.clone(), assign, keys, 0, &aggs);
            let factory = WindowAggFactory::new(spec).unwrap();
            let steps = round_trip_steps(parallelism);
            for cut in 0..=steps.iter().map(Vec::len).max().unwrap() {
                let outputs = assert_round_trip(&factory, &steps, cut);
                let rows = outputs.concat();
                assert!(rows.iter().filter(|r| !r.starts_with("watermark")).count() > 5);
            }
        }
    }
}

#[test]
fn tumble_state_round_trips_through_a_snapshot() {
    assert_window_agg_round_trips(WindowKind::Tumble { size_ms: 10 });
}

#[test]
fn hop_state_round_trips_through_a_snapshot() {
    assert_window_agg_round_trips(WindowKind::Hop {
        slide_ms: 5,
        size_ms: 15,
    });
}

#[test]
fn session_state_round_trips_through_a_snapshot() {
    assert_window_agg_round_trips(WindowKind::Session { gap_ms: 4 });
}

#[test]
fn a_snapshot_of_another_plan_is_refused() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let factory = WindowAggFactory::new(spec(
        input.clone(),
        assign,
        &["user"],
        0,
        &[count_all().alias("n")],
    ))
    .unwrap();
    let mut op = factory.create(0, 1).unwrap();
    let mut out = Emitter::new();
    op.on_data(
        0,
        events(1, &[(3, Some("a"), "eu", Some(1), 0.0)]),
        &mut out,
    )
    .unwrap();
    let snapshot = op.snapshot().unwrap();
    // Two aggregates where the snapshot holds one.
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let other = WindowAggFactory::new(spec(
        input,
        assign,
        &["user"],
        0,
        &[count_all().alias("n"), sum(col("amount")).alias("t")],
    ))
    .unwrap();
    let err = other.restore(0, 1, &snapshot).err().expect("refused");
    assert!(err.to_string().contains("snapshot"), "{err}");
}

#[test]
fn an_empty_snapshot_restores_a_fresh_operator() {
    let input = events_schema();
    let assign = time(&input, WindowKind::Tumble { size_ms: 10 });
    let factory =
        WindowAggFactory::new(spec(input, assign, &["user"], 0, &[count_all().alias("n")]))
            .unwrap();
    let mut op = factory
        .restore(0, 1, &millrace_core::Snapshot::none())
        .unwrap();
    let mut out = Emitter::new();
    op.on_data(
        0,
        events(1, &[(3, Some("a"), "eu", Some(1), 0.0)]),
        &mut out,
    )
    .unwrap();
    op.on_end(&mut out).unwrap();
    assert_eq!(render(out.take_messages()), vec!["[0,10) a 1 @1"]);
}

/// Pairs of parallelisms (old, new) the rescale checks run: fewer and
/// more instances, from one and into one.
const RESCALES: &[(usize, usize)] = &[(2, 1), (2, 3), (1, 2), (3, 2)];

/// Every row of `round_trip_steps` in one stream, as one instance reads it.
fn one_stream() -> Vec<Step> {
    round_trip_steps(1).remove(0)
}

/// Rescales at every cut of window aggregates of `kind` by `user`: each
/// group goes to the instance owning its user's key group.
fn assert_keyed_window_agg_rescales(kind: WindowKind) {
    let input = events_schema();
    let aggs = [
        count_all().alias("n"),
        sum(col("amount")).alias("total"),
        count_distinct(col("amount")).alias("distinct"),
        avg(col("price")).alias("mean"),
    ];
    let spec = spec(input.clone(), time(&input, kind), &["user"], 0, &aggs);
    let factory = WindowAggFactory::new(spec).unwrap();
    let ran = assert_rescales(&factory, &one_stream(), &[&["user"]], RESCALES);
    assert!(
        ran.rows > 500 && ran.late_rows > 0 && ran.state_rows > 500,
        "{ran:?}"
    );
}

#[test]
fn tumble_state_rescales_by_key_group() {
    assert_keyed_window_agg_rescales(WindowKind::Tumble { size_ms: 10 });
}

#[test]
fn hop_state_rescales_by_key_group() {
    assert_keyed_window_agg_rescales(WindowKind::Hop {
        slide_ms: 5,
        size_ms: 15,
    });
}

/// A gap of 10 ms: a user's rows, some 5 ms apart, make sessions that
/// stay open across many steps until a 20 ms pause.
#[test]
fn session_state_rescales_by_key_group() {
    assert_keyed_window_agg_rescales(WindowKind::Session { gap_ms: 10 });
}

/// Without keys, over windows the rows carry: the input is routed by the
/// window column, and each window's groups go with it.
#[test]
fn carried_window_state_rescales_by_window() {
    let input = with_window_column(&events_schema());
    let assign = WindowAssign::Column {
        window: column(&input, "w"),
    };
    let aggs = [count_all().alias("n"), sum(col("amount")).alias("total")];
    let factory = WindowAggFactory::new(spec(input, assign, &[], 0, &aggs)).unwrap();
    // Windows of 1 ms: a row carries `[ts, ts + 1)`, which the watermark
    // has passed exactly when the row is behind it.
    let steps = carrying_windows(&one_stream(), "ts", 1);
    let ran = assert_rescales(&factory, &steps, &[&["w"]], RESCALES);
    assert!(
        ran.rows > 100 && ran.late_rows > 0 && ran.state_rows > 50,
        "{ran:?}"
    );
}

/// Two phases: the partial phase's states may go anywhere (its parts of a
/// window merge, there and in the final phase), the final phase's go with
/// their window, by which the partial phase's rows are routed to it.
#[test]
fn two_phase_state_rescales() {
    let input = events_schema();
    let aggs = [
        count_all().alias("n"),
        avg(col("price")).alias("mean"),
        count_distinct(col("amount")).alias("distinct"),
    ];
    let tumble = time(&input, WindowKind::Tumble { size_ms: 10 });
    let (partial, last) = spec(input, tumble, &[], 0, &aggs)
        .split_two_phase()
        .unwrap();
    let partial = WindowAggFactory::new(partial).unwrap();
    let last = WindowAggFactory::new(last).unwrap();
    // Any split of the partial phase's input will do.
    let ran = assert_partial_rescales(&partial, &last, &one_stream(), &[&["user"]], RESCALES);
    assert!(
        ran.rows > 100 && ran.late_rows > 0 && ran.state_rows > 50,
        "{ran:?}"
    );
    // The final phase reads what two partial instances send (input split
    // by user), each window's states at different times, and their
    // watermarks merged by the minimum, as the runtime merges inputs.
    let partials = route(&one_stream(), &[&["user"]], 2);
    let mut ops: Vec<_> = (0..2).map(|i| partial.create(i, 2).unwrap()).collect();
    let mut sent = [i64::MIN; 2];
    let mut merged = i64::MIN;
    let mut states = Vec::new();
    for step in 0..partials.iter().map(Vec::len).max().unwrap() {
        for (i, op) in ops.iter_mut().enumerate() {
            let mut out = Emitter::new();
            match partials[i].get(step) {
                Some(Step::Data { batch, .. }) => op.on_data(0, batch.clone(), &mut out).unwrap(),
                Some(Step::Watermark(t)) => op.on_watermark(wm(*t), &mut out).unwrap(),
                None => {}
            }
            for m in out.take_messages() {
                match m {
                    Message::Data(b) => states.push(Step::data(0, b)),
                    Message::Watermark(w) => sent[i] = w.time_ms,
                    _ => {}
                }
            }
            let least = sent[0].min(sent[1]);
            if least > merged {
                merged = least;
                states.push(Step::Watermark(merged));
            }
        }
    }
    let ran = assert_rescales(&last, &states, &[&["window"]], RESCALES);
    assert!(ran.rows > 100 && ran.state_rows > 20, "{ran:?}");
}

/// Without keys over windows of event time every row meets at one
/// instance: its state rescales from one instance to one, and otherwise
/// is refused by name.
#[test]
fn state_without_partitioned_input_only_rescales_one_to_one() {
    let input = events_schema();
    let tumble = time(&input, WindowKind::Tumble { size_ms: 10 });
    let spec = spec(input, tumble, &[], 0, &[count_all().alias("n")]);
    let factory = WindowAggFactory::new(spec).unwrap();
    let mut op = factory.create(0, 1).unwrap();
    let mut out = Emitter::new();
    op.on_data(
        0,
        events(1, &[(3, Some("a"), "eu", Some(1), 0.0)]),
        &mut out,
    )
    .unwrap();
    let snapshot = op.snapshot().unwrap();
    let same = factory.rescale(std::slice::from_ref(&snapshot), 1).unwrap();
    let mut restored = factory.restore(0, 1, &same[0]).unwrap();
    restored.on_end(&mut out).unwrap();
    assert_eq!(render(out.take_messages()), vec!["[0,10) 1 @1"]);
    let says = "operator 'window_agg' cannot be restored at another parallelism";
    assert_rescales_only_one_to_one(&factory, &snapshot, (2, 3), says);
    let fresh = factory.rescale(&[Snapshot::none(), Snapshot::none()], 3);
    assert!(fresh.unwrap().iter().all(Snapshot::is_empty));
}

fn wm(time_ms: i64) -> Watermark {
    Watermark {
        time_ms,
        entered_ns: time_ms,
    }
}
