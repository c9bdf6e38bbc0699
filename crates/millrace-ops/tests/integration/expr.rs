//! Expression language: typing, evaluation and error reporting, over small
//! hand-checked tables.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use millrace_ops::{Expr, col, lit, lit_null};

use crate::common::{batch, schema};

/// a: Int64, b: Int64, f: Float64, s: Utf8, i: Int32; four rows with nulls.
fn table() -> RecordBatch {
    let s = schema(&[
        ("a", DataType::Int64),
        ("b", DataType::Int64),
        ("f", DataType::Float64),
        ("s", DataType::Utf8),
        ("i", DataType::Int32),
    ]);
    batch(
        &s,
        vec![
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(4)])),
            Arc::new(Int64Array::from(vec![Some(10), Some(20), Some(30), None])),
            Arc::new(Float64Array::from(vec![
                Some(0.5),
                None,
                Some(2.0),
                Some(-1.5),
            ])),
            Arc::new(StringArray::from(vec![
                Some("x"),
                Some("y"),
                None,
                Some("x"),
            ])),
            Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
        ],
        vec![100, 101, 102, 103],
    )
}

fn eval(e: &Expr) -> ArrayRef {
    e.evaluate(&table()).expect("evaluates")
}

fn ints(a: &ArrayRef) -> Vec<Option<i64>> {
    a.as_primitive::<Int64Type>().iter().collect()
}

fn floats(a: &ArrayRef) -> Vec<Option<f64>> {
    a.as_primitive::<Float64Type>().iter().collect()
}

fn bools(a: &ArrayRef) -> Vec<Option<bool>> {
    a.as_boolean().iter().collect()
}

fn user_schema() -> arrow::datatypes::SchemaRef {
    millrace_core::strip_entered(&table()).schema()
}

#[test]
fn integer_arithmetic_propagates_nulls() {
    assert_eq!(
        ints(&eval(&(col("a") + col("b")))),
        [Some(11), Some(22), None, None]
    );
    assert_eq!(
        ints(&eval(&(col("a") * lit(3) - lit(1)))),
        [Some(2), Some(5), None, Some(11)]
    );
    assert_eq!(
        ints(&eval(&(col("b") / lit(4)))),
        [Some(2), Some(5), Some(7), None]
    );
    assert_eq!(
        ints(&eval(&(col("b") % lit(7)))),
        [Some(3), Some(6), Some(2), None]
    );
    assert_eq!(
        ints(&eval(&-col("a"))),
        [Some(-1), Some(-2), None, Some(-4)]
    );
}

#[test]
fn mixed_int_and_float_coerce_to_float() {
    let e = col("a") + col("f");
    assert_eq!(e.data_type(&user_schema()).unwrap(), DataType::Float64);
    assert_eq!(floats(&eval(&e)), [Some(1.5), None, None, Some(2.5)]);

    // Int32 column against a float literal, and Int32 against Int64 literal.
    assert_eq!(
        bools(&eval(&col("i").gt(lit(2.5)))),
        [Some(false), Some(false), Some(true), Some(true)]
    );
    let e = col("i") * lit(10);
    assert_eq!(e.data_type(&user_schema()).unwrap(), DataType::Int64);
    assert_eq!(ints(&eval(&e)), [Some(10), Some(20), Some(30), Some(40)]);
}

#[test]
fn comparisons_on_numbers_and_strings() {
    assert_eq!(
        bools(&eval(&col("a").lt_eq(lit(2)))),
        [Some(true), Some(true), None, Some(false)]
    );
    assert_eq!(
        bools(&eval(&col("a").not_eq(col("i")))),
        [Some(false), Some(false), None, Some(false)]
    );
    assert_eq!(
        bools(&eval(&col("s").eq(lit("x")))),
        [Some(true), Some(false), None, Some(true)]
    );
    assert_eq!(
        bools(&eval(&col("s").gt_eq(lit("y")))),
        [Some(false), Some(true), None, Some(false)]
    );
}

#[test]
fn null_handling_is_three_valued() {
    assert_eq!(
        bools(&eval(&col("a").is_null())),
        [Some(false), Some(false), Some(true), Some(false)]
    );
    // NULL + 1 is null; NULL = NULL is null.
    assert_eq!(
        ints(&eval(&(lit_null() + lit(1)))),
        [None, None, None, None]
    );
    assert_eq!(bools(&eval(&lit_null().eq(lit_null()))), [None; 4]);
    // Kleene logic: false AND null = false, true OR null = true.
    let a_gt_1 = col("a").gt(lit(1)); // [false, true, null, true]
    assert_eq!(
        bools(&eval(&a_gt_1.clone().and(col("b").gt(lit(15))))),
        [Some(false), Some(true), None, None]
    );
    assert_eq!(
        bools(&eval(&a_gt_1.clone().or(col("b").gt(lit(15))))),
        [Some(false), Some(true), Some(true), Some(true)]
    );
    assert_eq!(
        bools(&eval(&a_gt_1.not())),
        [Some(true), Some(false), None, Some(false)]
    );
}

#[test]
fn literal_only_expressions_fill_every_row() {
    assert_eq!(ints(&eval(&(lit(2) + lit(3)))), [Some(5); 4]);
    let s = eval(&lit("eu"));
    assert_eq!(s.len(), 4);
    assert_eq!(s.as_string::<i32>().value(3), "eu");
}

#[test]
fn cast_converts_and_fails_on_bad_values() {
    let s = schema(&[("t", DataType::Utf8)]);
    let good = batch(
        &s,
        vec![Arc::new(StringArray::from(vec![Some("12"), None]))],
        vec![1, 2],
    );
    let e = col("t").cast(DataType::Int64) + lit(1);
    assert_eq!(ints(&e.evaluate(&good).unwrap()), [Some(13), None]);
    let bad = batch(
        &s,
        vec![Arc::new(StringArray::from(vec!["12", "twelve"]))],
        vec![1, 2],
    );
    assert!(e.evaluate(&bad).is_err());
    let err = col("t")
        .cast(DataType::Struct(Default::default()))
        .data_type(&s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot cast Utf8"), "{err}");
}

#[test]
fn unknown_column_lists_available_columns() {
    let err = (col("a") + col("zz"))
        .data_type(&user_schema())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown column 'zz'"), "{err}");
    assert!(err.contains("available columns: a, b, f, s, i"), "{err}");
    let err = col("zz").evaluate(&table()).unwrap_err().to_string();
    assert!(err.contains("unknown column 'zz'"), "{err}");
    assert!(!err.contains("__entered_ns"), "{err}");
}

#[test]
fn type_mismatch_names_both_types_and_the_expression() {
    let err = (col("s") + lit(1))
        .data_type(&user_schema())
        .unwrap_err()
        .to_string();
    assert!(err.contains("Utf8") && err.contains("Int64"), "{err}");
    assert!(err.contains("(s + 1)"), "{err}");
    let err = col("s")
        .lt(col("a"))
        .data_type(&user_schema())
        .unwrap_err()
        .to_string();
    assert!(err.contains("Utf8") && err.contains("Int64"), "{err}");
    let err = col("a")
        .and(lit(true))
        .data_type(&user_schema())
        .unwrap_err()
        .to_string();
    assert!(err.contains("Boolean"), "{err}");
    assert!(col("s").not().data_type(&user_schema()).is_err());
    assert!((-col("s")).data_type(&user_schema()).is_err());
}

#[test]
fn integer_divide_by_zero_and_overflow_are_errors() {
    let err = (col("a") / lit(0)).evaluate(&table()).unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("divide by zero"),
        "{err}"
    );
    assert!((col("a") % lit(0)).evaluate(&table()).is_err());
    assert!((col("a") + lit(i64::MAX)).evaluate(&table()).is_err());
    // Floats follow IEEE 754.
    let inf = eval(&(col("f") / lit(0.0)));
    assert_eq!(inf.as_primitive::<Float64Type>().value(0), f64::INFINITY);
}

#[test]
fn data_type_matches_evaluated_type() {
    let exprs = [
        col("a") + col("i"),
        col("f") * lit(2),
        col("i") + col("i"),
        col("s").eq(lit("x")),
        col("a").is_null().or(lit(false)),
        lit_null() + col("f"),
        col("i").cast(DataType::Utf8),
    ];
    for e in exprs {
        let declared = e.data_type(&user_schema()).unwrap();
        assert_eq!(&declared, eval(&e).data_type(), "{e}");
    }
}

#[test]
fn display_and_columns() {
    assert_eq!(col("price").gt(lit(1000)).to_string(), "(price > 1000)");
    let e = (col("a") + col("b")) * lit(2.0);
    assert_eq!(e.to_string(), "((a + b) * 2.0)");
    assert_eq!(
        col("s").eq(lit("it's")).not().to_string(),
        "NOT (s = 'it''s')"
    );
    assert_eq!(col("a").is_null().to_string(), "a IS NULL");
    assert_eq!(
        col("a").cast(DataType::Float64).to_string(),
        "CAST(a AS Float64)"
    );
    let e = col("b")
        .gt(col("a"))
        .and(col("a").lt(lit(3)).or(col("c").is_null()));
    assert_eq!(e.columns(), ["b", "a", "c"]);
}

#[test]
fn boolean_column_filters() {
    let s = schema(&[("ok", DataType::Boolean)]);
    let b = batch(
        &s,
        vec![Arc::new(BooleanArray::from(vec![
            Some(true),
            None,
            Some(false),
        ]))],
        vec![1, 2, 3],
    );
    let r = (!col("ok")).evaluate(&b).unwrap();
    assert_eq!(bools(&r), [Some(false), None, Some(true)]);
}
