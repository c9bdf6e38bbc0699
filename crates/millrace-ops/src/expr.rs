//! A small vectorized expression language over Arrow record batches.
//!
//! An [`Expr`] is a tree of column references, literals and operators. It is
//! type-checked against a schema with [`Expr::data_type`] (so a pipeline fails
//! when it is built, with a message naming the column or the types at fault)
//! and evaluated a whole batch at a time with [`Expr::evaluate`], one Arrow
//! kernel call per tree node: no per-row interpretation.
//!
//! Guarantees and semantics:
//! * Literals are evaluated as Arrow [`Scalar`]s, so `price > 1000` compares
//!   the column against one value without materializing a column of 1000s.
//! * Arithmetic and comparison operands are coerced to a common type before
//!   the kernel runs: two different integer types meet at `Int64`, an integer
//!   and a float at `Float64`, `Utf8` and `LargeUtf8` at `LargeUtf8`. Other
//!   mixes are rejected by [`Expr::data_type`].
//! * Nulls propagate (`NULL + 1` is null, `NULL = NULL` is null); `AND`/`OR`
//!   use SQL three-valued (Kleene) logic, so `false AND NULL` is `false`.
//! * Integer arithmetic is checked: overflow and division by zero are errors
//!   (the pipeline stops with the Arrow error), never a panic or a silent wrap.
//!   Float division by zero follows IEEE 754 (`inf`/`NaN`).
//! * `CAST` and the implicit coercions fail on values that do not fit (as SQL
//!   `CAST` does) rather than turning them into nulls.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{AsArray, Int64Array};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use arrow::record_batch::RecordBatch;
//! use millrace_ops::{col, lit};
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("price", DataType::Int64, true)]));
//! let batch = RecordBatch::try_new(
//!     schema.clone(),
//!     vec![Arc::new(Int64Array::from(vec![Some(900), Some(1500), None]))],
//! )?;
//! let expensive = col("price").gt(lit(1000));
//! assert_eq!(expensive.to_string(), "(price > 1000)");
//! assert_eq!(expensive.data_type(&schema)?, DataType::Boolean);
//! let result = expensive.evaluate(&batch)?;
//! let values: Vec<Option<bool>> = result.as_boolean().iter().collect();
//! assert_eq!(values, [Some(false), Some(true), None]);
//! # Ok::<(), millrace_core::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Datum, Float64Array, Int64Array, NullArray, Scalar,
    StringArray, UInt32Array, new_null_array,
};
use arrow::compute::kernels::{boolean, cmp, numeric};
use arrow::compute::{CastOptions, can_cast_types, cast_with_options, take};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use millrace_core::{ENTERED_COLUMN, Error, Result};

/// A constant value in an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Int64(i64),
    Float64(f64),
    Utf8(String),
    Boolean(bool),
    Null,
}

impl Literal {
    pub fn data_type(&self) -> DataType {
        match self {
            Literal::Int64(_) => DataType::Int64,
            Literal::Float64(_) => DataType::Float64,
            Literal::Utf8(_) => DataType::Utf8,
            Literal::Boolean(_) => DataType::Boolean,
            Literal::Null => DataType::Null,
        }
    }

    /// A one-element array holding the value (the payload of a `Scalar`).
    fn to_array(&self) -> ArrayRef {
        match self {
            Literal::Int64(v) => Arc::new(Int64Array::from(vec![*v])),
            Literal::Float64(v) => Arc::new(Float64Array::from(vec![*v])),
            Literal::Utf8(v) => Arc::new(StringArray::from(vec![v.as_str()])),
            Literal::Boolean(v) => Arc::new(BooleanArray::from(vec![*v])),
            Literal::Null => Arc::new(NullArray::new(1)),
        }
    }
}

impl From<i64> for Literal {
    fn from(v: i64) -> Self {
        Literal::Int64(v)
    }
}

/// So that an unsuffixed integer (`lit(5)`, which Rust types as `i32`) works.
impl From<i32> for Literal {
    fn from(v: i32) -> Self {
        Literal::Int64(v.into())
    }
}

impl From<f64> for Literal {
    fn from(v: f64) -> Self {
        Literal::Float64(v)
    }
}

impl From<&str> for Literal {
    fn from(v: &str) -> Self {
        Literal::Utf8(v.to_string())
    }
}

impl From<String> for Literal {
    fn from(v: String) -> Self {
        Literal::Utf8(v)
    }
}

impl From<bool> for Literal {
    fn from(v: bool) -> Self {
        Literal::Boolean(v)
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int64(v) => write!(f, "{v}"),
            // `{:?}` keeps the decimal point (`1.0`), so a float reads as one.
            Literal::Float64(v) => write!(f, "{v:?}"),
            Literal::Utf8(v) => write!(f, "'{}'", v.replace('\'', "''")),
            Literal::Boolean(v) => write!(f, "{v}"),
            Literal::Null => write!(f, "NULL"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinaryOp {
    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }

    fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
        )
    }

    fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}

impl fmt::Display for BinaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// An expression over the columns of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(String),
    Literal(Literal),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Not(Box<Expr>),
    Negate(Box<Expr>),
    IsNull(Box<Expr>),
    Cast {
        expr: Box<Expr>,
        to: DataType,
    },
}

/// A reference to column `name`.
pub fn col(name: &str) -> Expr {
    Expr::Column(name.to_string())
}

/// A constant: `lit(5)`, `lit(2.5)`, `lit("eu")`, `lit(true)`.
pub fn lit(v: impl Into<Literal>) -> Expr {
    Expr::Literal(v.into())
}

/// The SQL `NULL` constant.
pub fn lit_null() -> Expr {
    Expr::Literal(Literal::Null)
}

impl Expr {
    fn binary(self, op: BinaryOp, right: Expr) -> Expr {
        Expr::Binary {
            op,
            left: Box::new(self),
            right: Box::new(right),
        }
    }

    // These builder methods deliberately shadow `PartialEq::eq` & co. in method
    // syntax: `col("a").eq(lit(1))` builds an expression, as in DataFusion.
    pub fn eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Eq, other)
    }
    pub fn not_eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::NotEq, other)
    }
    pub fn lt(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Lt, other)
    }
    pub fn lt_eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::LtEq, other)
    }
    pub fn gt(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Gt, other)
    }
    pub fn gt_eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::GtEq, other)
    }
    pub fn and(self, other: Expr) -> Expr {
        self.binary(BinaryOp::And, other)
    }
    pub fn or(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Or, other)
    }
    #[allow(clippy::should_implement_trait)] // `!expr` works too (std::ops::Not below)
    pub fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }
    pub fn is_null(self) -> Expr {
        Expr::IsNull(Box::new(self))
    }
    pub fn cast(self, to: DataType) -> Expr {
        Expr::Cast {
            expr: Box::new(self),
            to,
        }
    }

    /// Columns this expression reads, each once, in order of first use.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_columns(&mut out);
        out
    }

    fn collect_columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Column(name) => {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            Expr::Literal(_) => {}
            Expr::Binary { left, right, .. } => {
                left.collect_columns(out);
                right.collect_columns(out);
            }
            Expr::Not(e) | Expr::Negate(e) | Expr::IsNull(e) | Expr::Cast { expr: e, .. } => {
                e.collect_columns(out)
            }
        }
    }

    /// The type this expression evaluates to over `schema`, or an error that
    /// names the unknown column or the incompatible types.
    pub fn data_type(&self, schema: &Schema) -> Result<DataType> {
        match self {
            Expr::Column(name) => match schema.field_with_name(name) {
                Ok(field) => Ok(field.data_type().clone()),
                Err(_) => Err(unknown_column(name, schema)),
            },
            Expr::Literal(v) => Ok(v.data_type()),
            Expr::Binary { op, left, right } => {
                let lt = left.data_type(schema)?;
                let rt = right.data_type(schema)?;
                Ok(coerce_binary(*op, &lt, &rt)
                    .map_err(|why| self.type_error(why))?
                    .1)
            }
            Expr::Not(e) => match e.data_type(schema)? {
                DataType::Boolean | DataType::Null => Ok(DataType::Boolean),
                other => Err(self.type_error(format!("NOT needs a Boolean operand, got {other}"))),
            },
            Expr::Negate(e) => match e.data_type(schema)? {
                t if is_signed_numeric(&t) => Ok(t),
                DataType::Null => Ok(DataType::Int64),
                other => Err(self.type_error(format!(
                    "negation needs a signed integer or float operand, got {other}"
                ))),
            },
            Expr::IsNull(e) => {
                e.data_type(schema)?;
                Ok(DataType::Boolean)
            }
            Expr::Cast { expr, to } => {
                let from = expr.data_type(schema)?;
                if can_cast_types(&from, to) {
                    Ok(to.clone())
                } else {
                    Err(self.type_error(format!("cannot cast {from} to {to}")))
                }
            }
        }
    }

    fn type_error(&self, why: String) -> Error {
        Error::plan(format!("type error in expression {self}: {why}"))
    }

    /// Evaluates over every row of `batch`; the result has one value per row.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        match self.eval(batch)? {
            Value::Array(a) => Ok(a),
            Value::Scalar(s) => broadcast(&s, batch.num_rows()),
        }
    }

    fn eval(&self, batch: &RecordBatch) -> Result<Value> {
        match self {
            Expr::Column(name) => match batch.schema_ref().index_of(name) {
                Ok(i) => Ok(Value::Array(batch.column(i).clone())),
                Err(_) => Err(unknown_column(name, batch.schema_ref())),
            },
            Expr::Literal(v) => Ok(Value::Scalar(v.to_array())),
            Expr::Binary { op, left, right } => {
                let l = left.eval(batch)?;
                let r = right.eval(batch)?;
                let (operand, _) = coerce_binary(*op, l.data_type(), r.data_type())
                    .map_err(|why| self.type_error(why))?;
                let l = l.cast_to(&operand)?;
                let r = r.cast_to(&operand)?;
                apply_binary(*op, l, r, batch.num_rows())
            }
            Expr::Not(e) => {
                let v = e.eval(batch)?.cast_to(&DataType::Boolean)?;
                v.map(|a| Ok(Arc::new(boolean::not(a.as_boolean())?) as ArrayRef))
            }
            Expr::Negate(e) => {
                let v = e.eval(batch)?;
                let v = if v.data_type() == &DataType::Null {
                    v.cast_to(&DataType::Int64)?
                } else {
                    v
                };
                v.map(|a| Ok(numeric::neg(a.as_ref())?))
            }
            Expr::IsNull(e) => e
                .eval(batch)?
                .map(|a| Ok(Arc::new(boolean::is_null(a.as_ref())?) as ArrayRef)),
            Expr::Cast { expr, to } => expr.eval(batch)?.cast_to(to),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(name) => f.write_str(name),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Binary { op, left, right } => write!(f, "({left} {op} {right})"),
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::Negate(e) => write!(f, "-{e}"),
            Expr::IsNull(e) => write!(f, "{e} IS NULL"),
            Expr::Cast { expr, to } => write!(f, "CAST({expr} AS {to})"),
        }
    }
}

/// `expr` as [`Display`](fmt::Display) shows it, without the outer parentheses
/// of a binary expression: `price > 1000` rather than `(price > 1000)`, for
/// operator names such as `filter(price > 1000)`.
pub fn display_bare(expr: &Expr) -> String {
    match expr {
        Expr::Binary { op, left, right } => format!("{left} {op} {right}"),
        other => other.to_string(),
    }
}

macro_rules! arith_op {
    ($trait:ident, $method:ident, $op:expr) => {
        impl std::ops::$trait for Expr {
            type Output = Expr;
            fn $method(self, rhs: Expr) -> Expr {
                self.binary($op, rhs)
            }
        }
    };
}

arith_op!(Add, add, BinaryOp::Add);
arith_op!(Sub, sub, BinaryOp::Sub);
arith_op!(Mul, mul, BinaryOp::Mul);
arith_op!(Div, div, BinaryOp::Div);
arith_op!(Rem, rem, BinaryOp::Rem);

impl std::ops::Neg for Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        Expr::Negate(Box::new(self))
    }
}

impl std::ops::Not for Expr {
    type Output = Expr;
    fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }
}

/// An intermediate result: a full column, or one value standing for every row.
enum Value {
    Array(ArrayRef),
    /// A one-element array, passed to kernels as a `Scalar`.
    Scalar(ArrayRef),
}

impl Value {
    fn data_type(&self) -> &DataType {
        match self {
            Value::Array(a) | Value::Scalar(a) => a.data_type(),
        }
    }

    fn map(self, f: impl FnOnce(&ArrayRef) -> Result<ArrayRef>) -> Result<Value> {
        Ok(match self {
            Value::Array(a) => Value::Array(f(&a)?),
            Value::Scalar(a) => Value::Scalar(f(&a)?),
        })
    }

    fn cast_to(self, to: &DataType) -> Result<Value> {
        if self.data_type() == to {
            return Ok(self);
        }
        // Fail on values that do not fit rather than nulling them silently.
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        self.map(|a| Ok(cast_with_options(a, to, &options)?))
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Value::Scalar(_))
    }

    fn datum(&self) -> Box<dyn Datum + '_> {
        match self {
            Value::Array(a) => Box::new(a),
            Value::Scalar(a) => Box::new(Scalar::new(a)),
        }
    }

    /// A full column of `rows` values (needed by kernels without scalar support).
    fn into_array(self, rows: usize) -> Result<ArrayRef> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(s) => broadcast(&s, rows),
        }
    }
}

/// Repeats the single value of `scalar` `rows` times.
fn broadcast(scalar: &ArrayRef, rows: usize) -> Result<ArrayRef> {
    if scalar.is_null(0) {
        return Ok(new_null_array(scalar.data_type(), rows));
    }
    let indices = UInt32Array::from(vec![0u32; rows]);
    Ok(take(scalar.as_ref(), &indices, None)?)
}

fn apply_binary(op: BinaryOp, l: Value, r: Value, rows: usize) -> Result<Value> {
    let both_scalar = l.is_scalar() && r.is_scalar();
    let result: ArrayRef = if op.is_logical() {
        // The Kleene kernels take arrays of equal length only.
        let len = if both_scalar { 1 } else { rows };
        let la = l.into_array(len)?;
        let ra = r.into_array(len)?;
        let (la, ra) = (la.as_boolean(), ra.as_boolean());
        Arc::new(match op {
            BinaryOp::And => boolean::and_kleene(la, ra)?,
            _ => boolean::or_kleene(la, ra)?,
        })
    } else {
        let (ld, rd) = (l.datum(), r.datum());
        let (ld, rd) = (ld.as_ref(), rd.as_ref());
        match op {
            BinaryOp::Eq => Arc::new(cmp::eq(ld, rd)?),
            BinaryOp::NotEq => Arc::new(cmp::neq(ld, rd)?),
            BinaryOp::Lt => Arc::new(cmp::lt(ld, rd)?),
            BinaryOp::LtEq => Arc::new(cmp::lt_eq(ld, rd)?),
            BinaryOp::Gt => Arc::new(cmp::gt(ld, rd)?),
            BinaryOp::GtEq => Arc::new(cmp::gt_eq(ld, rd)?),
            BinaryOp::Add => numeric::add(ld, rd)?,
            BinaryOp::Sub => numeric::sub(ld, rd)?,
            BinaryOp::Mul => numeric::mul(ld, rd)?,
            BinaryOp::Div => numeric::div(ld, rd)?,
            BinaryOp::Rem => numeric::rem(ld, rd)?,
            BinaryOp::And | BinaryOp::Or => unreachable!("handled above"),
        }
    };
    Ok(if both_scalar {
        Value::Scalar(result)
    } else {
        Value::Array(result)
    })
}

/// For a binary operator over operand types `l` and `r`: the type both operands
/// are cast to, and the result type. `Err` explains the mismatch.
fn coerce_binary(
    op: BinaryOp,
    l: &DataType,
    r: &DataType,
) -> std::result::Result<(DataType, DataType), String> {
    let mismatch = || format!("operator {op} cannot combine {l} and {r}");
    if op.is_logical() {
        let ok = |t: &DataType| matches!(t, DataType::Boolean | DataType::Null);
        return if ok(l) && ok(r) {
            Ok((DataType::Boolean, DataType::Boolean))
        } else {
            Err(format!("{} (both sides must be Boolean)", mismatch()))
        };
    }
    if op.is_comparison() {
        let operand = numeric_operand(l, r)
            .or_else(|| string_operand(l, r))
            .or_else(|| match (l, r) {
                (DataType::Null, DataType::Null) => Some(DataType::Boolean),
                (DataType::Null, t) | (t, DataType::Null) if is_comparable(t) => Some(t.clone()),
                _ if l == r && is_comparable(l) => Some(l.clone()),
                _ => None,
            })
            .ok_or_else(mismatch)?;
        return Ok((operand, DataType::Boolean));
    }
    let operand = numeric_operand(l, r).ok_or_else(mismatch)?;
    Ok((operand.clone(), operand))
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

fn is_numeric(t: &DataType) -> bool {
    t.is_integer() || t.is_floating()
}

fn is_signed_numeric(t: &DataType) -> bool {
    t.is_signed_integer() || t.is_floating()
}

/// Types the comparison kernels accept for two operands of that same type.
fn is_comparable(t: &DataType) -> bool {
    t.is_primitive()
        || matches!(
            t,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
        )
}

/// Common type of two numeric operands (`Null` adopts the other side's type).
fn numeric_operand(l: &DataType, r: &DataType) -> Option<DataType> {
    let numeric_or_null = |t: &DataType| is_numeric(t) || t == &DataType::Null;
    if !numeric_or_null(l) || !numeric_or_null(r) {
        return None;
    }
    Some(match (l, r) {
        (DataType::Null, DataType::Null) => DataType::Int64,
        (DataType::Null, t) | (t, DataType::Null) => t.clone(),
        _ if l == r => l.clone(),
        _ if is_integer(l) && is_integer(r) => DataType::Int64,
        _ => DataType::Float64,
    })
}

/// Common type of two different string types.
fn string_operand(l: &DataType, r: &DataType) -> Option<DataType> {
    use DataType::{LargeUtf8, Utf8, Utf8View};
    match (l, r) {
        (Utf8, Utf8) => Some(Utf8),
        (LargeUtf8, Utf8 | LargeUtf8 | Utf8View) | (Utf8 | Utf8View, LargeUtf8) => Some(LargeUtf8),
        (Utf8View, Utf8 | Utf8View) | (Utf8, Utf8View) => Some(Utf8View),
        _ => None,
    }
}

fn unknown_column(name: &str, schema: &Schema) -> Error {
    Error::plan(format!(
        "unknown column '{name}'; available columns: {}",
        user_columns(schema)
    ))
}

/// The user columns of `schema` (the entered column hidden), comma-separated,
/// for error messages that name what could have been meant.
pub(crate) fn user_columns(schema: &Schema) -> String {
    let names: Vec<&str> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| *n != ENTERED_COLUMN)
        .collect();
    names.join(", ")
}
