//! `tumble`, `hop` and `session`: the window functions of streaming SQL.
//!
//! To DataFusion they are scalar functions returning the window struct
//! `{start, end}`, so `GROUP BY tumble(date_time, INTERVAL '10' SECOND)`
//! plans and type-checks like any grouping expression. The streaming planner
//! recognizes them and builds window operators; they are never evaluated row by
//! row in a stream. (`tumble` can be: a row has exactly one tumbling window, so
//! batch queries may use it too. `hop` and `session` cannot: a row has several
//! hopping windows, and a session depends on other rows.)

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use millrace_core::time::{event_times_ms, is_event_time_type};
use millrace_sql_ops::window::{WindowKind, window_array, window_type};

use crate::interval::scalar_interval_ms;

/// The three window functions, ready to register.
pub fn window_functions() -> Vec<Arc<ScalarUDF>> {
    [WindowFn::Tumble, WindowFn::Hop, WindowFn::Session]
        .into_iter()
        .map(|f| Arc::new(ScalarUDF::new_from_impl(WindowUdf::new(f))))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum WindowFn {
    Tumble,
    Hop,
    Session,
}

impl WindowFn {
    fn name(self) -> &'static str {
        match self {
            WindowFn::Tumble => "tumble",
            WindowFn::Hop => "hop",
            WindowFn::Session => "session",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            WindowFn::Tumble => "tumble(event_time, INTERVAL '10' SECOND)",
            WindowFn::Hop => {
                "hop(event_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) (slide, then size)"
            }
            WindowFn::Session => "session(event_time, INTERVAL '10' SECOND) (the gap)",
        }
    }

    fn arity(self) -> usize {
        match self {
            WindowFn::Hop => 3,
            _ => 2,
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowUdf {
    function: WindowFn,
    signature: Signature,
}

impl WindowUdf {
    fn new(function: WindowFn) -> Self {
        Self {
            function,
            signature: Signature::any(function.arity(), Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        self.function.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let f = self.function;
        if args.len() != f.arity() {
            return plan_err!("{} takes {} arguments: {}", f.name(), f.arity(), f.usage());
        }
        if !is_event_time_type(&args[0]) {
            return plan_err!(
                "{}: the first argument must be the event-time column (a TIMESTAMP or BIGINT of milliseconds), found {}; usage: {}",
                f.name(),
                args[0],
                f.usage()
            );
        }
        for a in &args[1..] {
            if !matches!(a, DataType::Interval(_)) {
                return plan_err!(
                    "{}: window sizes must be INTERVAL literals, found {a}; usage: {}",
                    f.name(),
                    f.usage()
                );
            }
        }
        Ok(window_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let f = self.function;
        if f != WindowFn::Tumble {
            return exec_err!(
                "{}() gives each row several windows; it can only be used in GROUP BY or a join condition of a streaming query",
                f.name()
            );
        }
        let size = match &args.args[1] {
            ColumnarValue::Scalar(v) => scalar_interval_ms(v).map_err(|e| {
                datafusion::error::DataFusionError::Execution(format!("tumble: {e}"))
            })?,
            ColumnarValue::Array(_) => return exec_err!("tumble: the size must be a literal"),
        };
        if size <= 0 {
            return exec_err!("tumble: the size must be positive");
        }
        let times: ArrayRef = args.args[0].to_array(args.number_rows)?;
        if times.null_count() > 0 {
            return exec_err!("tumble: event time is null");
        }
        let times = event_times_ms(&times, "event time")
            .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
        let starts: Vec<i64> = times.iter().map(|t| t - t.rem_euclid(size)).collect();
        let ends = starts.iter().map(|s| s + size).collect();
        Ok(ColumnarValue::Array(window_array(starts, ends)))
    }
}

/// A window function call found in a plan: what it computes over which column.
pub struct WindowCall<'a> {
    pub kind: WindowKind,
    pub time: &'a Expr,
}

/// If `expr` is a call of a window function (possibly aliased), its kind and
/// event-time argument; an error when it is one with bad arguments.
pub fn as_window_call(expr: &Expr) -> std::result::Result<Option<WindowCall<'_>>, String> {
    let expr = match expr {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::ScalarFunction(call) = expr else {
        return Ok(None);
    };
    let name = call.func.name();
    let function = match name {
        "tumble" => WindowFn::Tumble,
        "hop" => WindowFn::Hop,
        "session" => WindowFn::Session,
        _ => return Ok(None),
    };
    let ms = |i: usize| -> std::result::Result<i64, String> {
        let v = match call.args.get(i) {
            Some(Expr::Literal(v, _)) => v,
            _ => {
                return Err(format!(
                    "{name}: window sizes must be INTERVAL literals; usage: {}",
                    function.usage()
                ));
            }
        };
        let ms = scalar_interval_ms(v).map_err(|e| format!("{name}: {e}"))?;
        if ms <= 0 {
            return Err(format!("{name}: window sizes must be positive"));
        }
        Ok(ms)
    };
    let kind = match function {
        WindowFn::Tumble => WindowKind::Tumble { size_ms: ms(1)? },
        WindowFn::Hop => {
            let (slide_ms, size_ms) = (ms(1)?, ms(2)?);
            if size_ms % slide_ms != 0 {
                return Err(format!(
                    "hop: the size ({size_ms} ms) must be a multiple of the slide ({slide_ms} ms)"
                ));
            }
            WindowKind::Hop { slide_ms, size_ms }
        }
        WindowFn::Session => WindowKind::Session { gap_ms: ms(1)? },
    };
    Ok(Some(WindowCall {
        kind,
        time: &call.args[0],
    }))
}
