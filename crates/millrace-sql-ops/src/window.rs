//! Windows, in one place: their kinds and parameters, the window value a
//! query sees, which window(s) each row belongs to, when a row is late, and
//! which windows a watermark closes. Window aggregates, window joins and
//! top-N per window all place, expire and fire windows through this module.
//!
//! * **Kinds.** `tumble(ts, size)`: `[k·size, (k+1)·size)`; `hop(ts, slide,
//!   size)`: windows of `size` starting every `slide`, so a row is in about
//!   `size / slide` of them; `session(ts, gap)`: per key, rows closer than
//!   `gap` share a window that ends `gap` after its last row. Windows are
//!   aligned to the Unix epoch. [`WindowKind::validate`] is the one check of
//!   their parameters.
//! * **The window value** is a struct column `{start, end}` of millisecond
//!   timestamps (`end` exclusive). A `GROUP BY` over a window function
//!   produces it; a later stage that groups, joins or ranks by that column
//!   works on the same windows ([`WindowAssign::Column`]).
//! * **Lateness.** A row assigned from event time is late when its time is
//!   below the operator's watermark (the largest it received); a row that
//!   already carries its window is late when that window's end is at or
//!   below the watermark (the window has fired downstream). Late rows never
//!   enter a window, so no row lands in a window that already fired; the
//!   operator hands them to [`Emitter::late`](millrace_core::Emitter::late),
//!   which counts them and, when asked, sends them to the late output.
//! * **Firing.** A watermark `W` closes every window with `end <= W`, in
//!   order of `(end, start)` ([`take_closed`]); an operator emits their
//!   results before it forwards `W`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StructArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use millrace_core::time::{event_times_ms, is_event_time_type};
use millrace_core::{Error, Result};

use crate::df_err;

pub const WINDOW_START: &str = "start";

/// A hopping window copies each row into `size / slide` windows; beyond this
/// the work per row (and the state) is almost surely a mistake in the query.
pub const MAX_WINDOWS_PER_ROW: i64 = 10_000;
pub const WINDOW_END: &str = "end";

fn bound_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, None),
        false,
    )
}

/// The fields of a window struct.
pub fn window_fields() -> Fields {
    Fields::from(vec![bound_field(WINDOW_START), bound_field(WINDOW_END)])
}

/// The type of a window column.
pub fn window_type() -> DataType {
    DataType::Struct(window_fields())
}

/// True if `dt` is a window column's type.
pub fn is_window_type(dt: &DataType) -> bool {
    *dt == window_type()
}

/// A window column from parallel `starts` and `ends` (milliseconds).
pub fn window_array(starts: Vec<i64>, ends: Vec<i64>) -> ArrayRef {
    let starts: ArrayRef = Arc::new(TimestampMillisecondArray::from(starts));
    let ends: ArrayRef = Arc::new(TimestampMillisecondArray::from(ends));
    Arc::new(StructArray::new(window_fields(), vec![starts, ends], None))
}

/// Starts and ends (milliseconds) of a window column.
pub fn window_bounds(array: &ArrayRef) -> Result<(Vec<i64>, Vec<i64>)> {
    let s = window_struct(array)?;
    let read = |i: usize| -> Vec<i64> { window_field(s, i).to_vec() };
    Ok((read(0), read(1)))
}

/// `array` as a window column: a struct of start and end, without nulls.
fn window_struct(array: &ArrayRef) -> Result<&StructArray> {
    let Some(s) = array.as_struct_opt() else {
        return Err(Error::Other(format!(
            "expected a window column {{start, end}}, found {}",
            array.data_type()
        )));
    };
    if s.null_count() > 0 || !is_window_type(s.data_type()) {
        return Err(Error::Other(format!(
            "expected a non-null window column {{start, end}}, found {}",
            array.data_type()
        )));
    }
    Ok(s)
}

/// Field `i` (0: start, 1: end) of a window column, in milliseconds.
fn window_field(s: &StructArray, i: usize) -> &[i64] {
    s.column(i)
        .as_primitive::<TimestampMillisecondType>()
        .values()
}

/// The window functions of streaming SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed windows `[k·size, (k+1)·size)`.
    Tumble { size_ms: i64 },
    /// Windows of `size` starting every `slide`: a row is in `size / slide` windows.
    Hop { slide_ms: i64, size_ms: i64 },
    /// Per key, rows closer than `gap` in event time share a window, which
    /// ends `gap` after its last row.
    Session { gap_ms: i64 },
}

impl WindowKind {
    /// The first window end after `t`, for tumbling and hopping windows
    /// (`None` for session windows, whose ends depend on the rows). Windows
    /// start at multiples of the slide, so their ends are `size` past one.
    pub fn next_end_after(&self, t: i64) -> Option<i64> {
        let (size, slide) = match *self {
            WindowKind::Tumble { size_ms } => (size_ms, size_ms),
            WindowKind::Hop { slide_ms, size_ms } => (size_ms, slide_ms),
            WindowKind::Session { .. } => return None,
        };
        let phase = size.rem_euclid(slide);
        let past = (i128::from(t) - i128::from(phase)).rem_euclid(i128::from(slide));
        let next = i128::from(t) - past + i128::from(slide);
        Some(i64::try_from(next).unwrap_or(i64::MAX))
    }

    /// Checks the parameters: a positive size, slide and gap, and at most
    /// [`MAX_WINDOWS_PER_ROW`] windows per row. (A slide larger than the
    /// size is allowed: the windows sample the stream, and rows between
    /// them belong to none.)
    pub fn validate(&self) -> Result<()> {
        let positive = |what: &str, ms: i64| {
            if ms > 0 {
                Ok(())
            } else {
                Err(Error::plan(format!(
                    "{} {what} must be positive, got {ms} ms",
                    self.function()
                )))
            }
        };
        match *self {
            WindowKind::Tumble { size_ms } => positive("size", size_ms),
            WindowKind::Session { gap_ms } => positive("gap", gap_ms),
            WindowKind::Hop { slide_ms, size_ms } => {
                positive("size", size_ms)?;
                positive("slide", slide_ms)?;
                let per_row = size_ms / slide_ms + i64::from(size_ms % slide_ms != 0);
                if per_row > MAX_WINDOWS_PER_ROW {
                    return Err(Error::plan(format!(
                        "{self} puts each row in {per_row} windows; at most {MAX_WINDOWS_PER_ROW} are supported (use a larger slide)"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The SQL function name.
    pub fn function(&self) -> &'static str {
        match self {
            WindowKind::Tumble { .. } => "tumble",
            WindowKind::Hop { .. } => "hop",
            WindowKind::Session { .. } => "session",
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowKind::Tumble { size_ms } => write!(f, "tumble {}", show_ms(*size_ms)),
            WindowKind::Hop { slide_ms, size_ms } => {
                write!(f, "hop {} every {}", show_ms(*size_ms), show_ms(*slide_ms))
            }
            WindowKind::Session { gap_ms } => write!(f, "session gap {}", show_ms(*gap_ms)),
        }
    }
}

/// `10s`, `1500ms`, `5min`, `1d`: durations as explain output shows them.
pub fn show_ms(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1000, "s"),
    ];
    for (unit, suffix) in UNITS {
        if ms != 0 && ms % unit == 0 {
            return format!("{}{suffix}", ms / unit);
        }
    }
    format!("{ms}ms")
}

/// `text` with each interval literal as DataFusion names it in a column
/// (`IntervalMonthDayNano("IntervalMonthDayNano { months: 0, days: 0,
/// nanoseconds: 10000000000 }")`) written as a duration (`10s`), for
/// `explain`: the names of unaliased window calls hold such literals.
pub fn tidy_intervals(text: &str) -> String {
    const INNER: &str = "IntervalMonthDayNano { months: ";
    const OUTER: &str = "IntervalMonthDayNano(\"";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(INNER) {
        let Some(close) = rest[at..].find('}').map(|c| at + c) else {
            break;
        };
        let Some(shown) = show_interval(&rest[at + INNER.len()..close]) else {
            out.push_str(&rest[..close + 1]);
            rest = &rest[close + 1..];
            continue;
        };
        // Drop the wrapper around the inner form too, when it is there.
        let (start, end) = match rest[..at].strip_suffix(OUTER) {
            Some(before) if rest[close + 1..].starts_with("\")") => (before.len(), close + 3),
            _ => (at, close + 1),
        };
        out.push_str(&rest[..start]);
        out.push_str(&shown);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `0, days: 0, nanoseconds: 10000000000 ` (what follows `months: `) as
/// `10s`; months and days as `2mon`, `3d`, added in front.
fn show_interval(fields: &str) -> Option<String> {
    let mut parts = fields.split(',').map(str::trim);
    let months: i64 = parts.next()?.parse().ok()?;
    let days: i64 = parts.next()?.strip_prefix("days: ")?.parse().ok()?;
    let nanos: i64 = parts
        .next()?
        .strip_prefix("nanoseconds: ")?
        .trim()
        .parse()
        .ok()?;
    let mut shown = Vec::new();
    if months != 0 {
        shown.push(format!("{months}mon"));
    }
    if days != 0 {
        shown.push(format!("{days}d"));
    }
    if nanos % 1_000_000 == 0 {
        if nanos != 0 || shown.is_empty() {
            shown.push(show_ms(nanos / 1_000_000));
        }
    } else {
        shown.push(format!("{nanos}ns"));
    }
    Some(shown.join(" "))
}

/// How an operator finds the window(s) of each row.
#[derive(Clone, Debug)]
pub enum WindowAssign {
    /// From the row's event time (`time` evaluates to a timestamp or Int64 ms).
    Time {
        time: Arc<dyn PhysicalExpr>,
        kind: WindowKind,
    },
    /// The row carries its window: `window` evaluates to a window column.
    Column { window: Arc<dyn PhysicalExpr> },
}

/// Row `row` of a batch belongs to window `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub row: u32,
    pub start: i64,
    pub end: i64,
}

impl WindowAssign {
    /// Short description for plans: `tumble 10s on date_time`, `window column`.
    pub fn describe(&self) -> String {
        match self {
            WindowAssign::Time { time, kind } => format!("{kind} on {time}"),
            WindowAssign::Column { window } => format!("windows of {window}"),
        }
    }

    /// Checks that the rows of `schema` can be placed: an event time of a
    /// timestamp or Int64 type and valid window parameters, or a window
    /// column of the window type. Sessions only `if sessions`: they depend
    /// on the other rows of a key, and only a window aggregate tracks that.
    pub fn validate(&self, schema: &Schema, sessions: bool) -> Result<()> {
        match self {
            WindowAssign::Time { time, kind } => {
                if !sessions && matches!(kind, WindowKind::Session { .. }) {
                    return Err(Error::plan(
                        "session windows are not supported here; compute the sessions with a window aggregate first and use its window column",
                    ));
                }
                let dt = time.data_type(schema).map_err(df_err)?;
                if !is_event_time_type(&dt) {
                    return Err(Error::plan(format!(
                        "the event time of {} is {time} of type {dt}; expected a timestamp or Int64 milliseconds",
                        kind.function()
                    )));
                }
                kind.validate()
            }
            WindowAssign::Column { window } => {
                let dt = window.data_type(schema).map_err(df_err)?;
                if !is_window_type(&dt) {
                    return Err(Error::plan(format!(
                        "window column {window} has type {dt}; expected {}",
                        window_type()
                    )));
                }
                Ok(())
            }
        }
    }

    /// The window kind when assigned from event time.
    pub fn kind(&self) -> Option<WindowKind> {
        match self {
            WindowAssign::Time { kind, .. } => Some(*kind),
            WindowAssign::Column { .. } => None,
        }
    }

    /// Event times (ms) of `batch`'s rows; only for [`WindowAssign::Time`].
    pub fn event_times(&self, batch: &RecordBatch) -> Result<Vec<i64>> {
        match self {
            WindowAssign::Time { time, .. } => {
                let array = evaluate(time, batch)?;
                event_times_ms(&array, &time.to_string())
            }
            WindowAssign::Column { .. } => Err(Error::Other(
                "rows that carry their window have no event time to assign from".into(),
            )),
        }
    }

    /// The window every row of `batch` carries, when they all carry the same
    /// one (a window aggregate's firing sends a batch per window); `None`
    /// for windows from event time, rows in several windows, or a column
    /// [`WindowAssign::assign`] would refuse. Compares the bounds with the
    /// first row's, building no membership per row.
    pub fn single_window(&self, batch: &RecordBatch) -> Result<Option<(i64, i64)>> {
        let WindowAssign::Column { window } = self else {
            return Ok(None);
        };
        let array = evaluate(window, batch)?;
        let Ok(s) = window_struct(&array) else {
            return Ok(None);
        };
        let bounds = |i: usize| {
            let values = window_field(s, i);
            let first = *values.first()?;
            values.iter().all(|&v| v == first).then_some(first)
        };
        Ok(bounds(0).zip(bounds(1)))
    }

    /// The window `[start, end)` that holds every row of `batch`, when one
    /// does and none of the rows is late: a tumbling window whose bounds
    /// hold the earliest and the latest event time, or the window every row
    /// carries. `None` otherwise (hopping windows put each row in several),
    /// and [`WindowAssign::assign`] places the rows one by one. A batch from
    /// a busy source mostly falls in one window, and this spares it a
    /// membership per row and their sort.
    pub fn whole_batch_window(
        &self,
        batch: &RecordBatch,
        watermark: i64,
    ) -> Result<Option<(i64, i64)>> {
        let (start, end) = match self {
            WindowAssign::Time {
                kind: WindowKind::Tumble { size_ms },
                ..
            } => {
                let times = self.event_times(batch)?;
                let (Some(&min), Some(&max)) = (times.iter().min(), times.iter().max()) else {
                    return Ok(None);
                };
                if min < watermark {
                    return Ok(None);
                }
                // Outside representable time: `assign` says so.
                let Some((start, end)) = min
                    .checked_sub(min.rem_euclid(*size_ms))
                    .and_then(|start| Some((start, start.checked_add(*size_ms)?)))
                else {
                    return Ok(None);
                };
                if max >= end {
                    return Ok(None);
                }
                (start, end)
            }
            WindowAssign::Time { .. } => return Ok(None),
            WindowAssign::Column { .. } => match self.single_window(batch)? {
                Some((start, end)) if end > watermark => (start, end),
                _ => return Ok(None),
            },
        };
        Ok(Some((start, end)))
    }

    /// Appends to `out` every (row, window) membership of `batch` for
    /// tumbling, hopping and carried windows, and to `late` the rows behind
    /// the watermark, which get none. Session windows depend on other rows
    /// of the same key, so their operators call [`WindowAssign::event_times`]
    /// instead.
    pub fn assign(
        &self,
        batch: &RecordBatch,
        watermark: i64,
        out: &mut Vec<Assignment>,
        late: &mut Vec<u32>,
    ) -> Result<()> {
        match self {
            WindowAssign::Time { kind, .. } => {
                let (size, slide) = match *kind {
                    WindowKind::Tumble { size_ms } => (size_ms, size_ms),
                    WindowKind::Hop { slide_ms, size_ms } => (size_ms, slide_ms),
                    WindowKind::Session { .. } => {
                        return Err(Error::Other(
                            "session windows are assigned per key, not per row".into(),
                        ));
                    }
                };
                for (row, ts) in self.event_times(batch)?.into_iter().enumerate() {
                    if ts < watermark {
                        late.push(row as u32);
                        continue;
                    }
                    // Latest window start at or before ts, then earlier ones
                    // while the window still covers ts.
                    let no_window = || {
                        Error::Other(format!(
                            "event time {ts} ms has no window of {size} ms: it would begin or \
                             end outside the representable times"
                        ))
                    };
                    let mut start = ts.checked_sub(ts.rem_euclid(slide)).ok_or_else(no_window)?;
                    while start > ts.saturating_sub(size) {
                        let end = start.checked_add(size).ok_or_else(no_window)?;
                        out.push(Assignment {
                            row: row as u32,
                            start,
                            end,
                        });
                        match start.checked_sub(slide) {
                            Some(earlier) => start = earlier,
                            None => break,
                        }
                    }
                }
            }
            WindowAssign::Column { window } => {
                let array = evaluate(window, batch)?;
                let (starts, ends) = window_bounds(&array)?;
                for (row, (start, end)) in starts.into_iter().zip(ends).enumerate() {
                    if end <= watermark {
                        late.push(row as u32);
                        continue;
                    }
                    out.push(Assignment {
                        row: row as u32,
                        start,
                        end,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Removes and returns the windows, keyed by `(end, start)`, that end at or
/// before `up_to` (every window for `None`, i.e. at end of input), in order.
/// Pops them off the front: splitting the map would allocate a new root
/// for the windows left open, on the path of every firing.
pub fn take_closed<V>(
    windows: &mut BTreeMap<(i64, i64), V>,
    up_to: Option<i64>,
) -> Vec<((i64, i64), V)> {
    let mut closed = Vec::new();
    while let Some(entry) = windows.first_entry() {
        if up_to.is_some_and(|w| entry.key().0 > w) {
            break;
        }
        closed.push(entry.remove_entry());
    }
    closed
}

/// Evaluates a physical expression to an array with one value per row.
pub fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(df_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::Schema;
    use datafusion::physical_expr::expressions::Column;

    fn batch(ts: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ts))]).unwrap()
    }

    fn time(kind: WindowKind) -> WindowAssign {
        WindowAssign::Time {
            time: Arc::new(Column::new("ts", 0)),
            kind,
        }
    }

    #[test]
    fn a_single_window_is_found_only_when_every_row_carries_it() {
        let schema = Arc::new(Schema::new(vec![Field::new("w", window_type(), false)]));
        let assign = WindowAssign::Column {
            window: Arc::new(Column::new("w", 0)),
        };
        let of = |starts: Vec<i64>, ends: Vec<i64>| {
            let b = RecordBatch::try_new(schema.clone(), vec![window_array(starts, ends)]).unwrap();
            assign.single_window(&b).unwrap()
        };
        assert_eq!(of(vec![0, 0, 0], vec![10, 10, 10]), Some((0, 10)));
        assert_eq!(of(vec![0, 0, 2], vec![10, 10, 12]), None);
        assert_eq!(of(vec![0, 0], vec![10, 12]), None, "same start, other end");
        assert_eq!(of(vec![], vec![]), None);
        let by_time = time(WindowKind::Tumble { size_ms: 10 });
        assert_eq!(by_time.single_window(&batch(vec![1, 2])).unwrap(), None);
    }

    #[test]
    fn a_whole_batch_window_is_found_only_when_assign_would_give_every_row_that_one() {
        // Checked against `assign`: Some(w) exactly when every row gets w
        // and no row is late.
        let by_assign = |assign: &WindowAssign, b: &RecordBatch, wm: i64| {
            let (mut out, mut late) = (Vec::new(), Vec::new());
            assign.assign(b, wm, &mut out, &mut late).unwrap();
            let first = out.first().map(|a| (a.start, a.end));
            (late.is_empty()
                && out.len() == b.num_rows()
                && out.iter().all(|a| Some((a.start, a.end)) == first))
            .then_some(first)
            .flatten()
        };
        let tumble = time(WindowKind::Tumble { size_ms: 10 });
        let hop = time(WindowKind::Hop {
            slide_ms: 5,
            size_ms: 10,
        });
        for (ts, wm, want) in [
            (vec![12, 10, 19], 0, Some((10, 20))),
            (vec![-3, -9], -20, Some((-10, 0))),
            (vec![12, 20], 0, None),
            (vec![12, 9], 0, None),
            (vec![12, 13], 13, None),
            (vec![12, 13], 12, Some((10, 20))),
            (vec![], 0, None),
        ] {
            let b = batch(ts.clone());
            let got = tumble.whole_batch_window(&b, wm).unwrap();
            assert_eq!(got, want, "tumble {ts:?} watermark {wm}");
            if !ts.is_empty() {
                assert_eq!(got, by_assign(&tumble, &b, wm), "{ts:?} against assign");
            }
            assert_eq!(hop.whole_batch_window(&b, wm).unwrap(), None);
        }
        let schema = Arc::new(Schema::new(vec![Field::new("w", window_type(), false)]));
        let carried = WindowAssign::Column {
            window: Arc::new(Column::new("w", 0)),
        };
        let b = RecordBatch::try_new(schema, vec![window_array(vec![0, 0], vec![10, 10])]).unwrap();
        assert_eq!(carried.whole_batch_window(&b, 9).unwrap(), Some((0, 10)));
        assert_eq!(carried.whole_batch_window(&b, 10).unwrap(), None, "late");
    }

    /// An event time whose window would end past i64 is an error naming
    /// it, never an overflow; the whole-batch shortcut leaves it to assign.
    #[test]
    fn windows_past_the_end_of_time_are_an_error_not_an_overflow() {
        for kind in [
            WindowKind::Tumble { size_ms: 10_000 },
            WindowKind::Hop {
                slide_ms: 5_000,
                size_ms: 10_000,
            },
        ] {
            let assign = time(kind);
            let b = batch(vec![i64::MAX - 5, i64::MAX - 4]);
            assert_eq!(assign.whole_batch_window(&b, 0).unwrap(), None);
            let (mut out, mut late) = (Vec::new(), Vec::new());
            let err = assign.assign(&b, 0, &mut out, &mut late).unwrap_err();
            assert!(err.to_string().contains("has no window"), "{err}");
            let (mut out, mut late) = (Vec::new(), Vec::new());
            let err = assign
                .assign(&batch(vec![i64::MIN + 5]), i64::MIN, &mut out, &mut late)
                .unwrap_err();
            assert!(err.to_string().contains("has no window"), "{err}");
        }
    }

    #[test]
    fn tumble_assigns_one_window_and_skips_late_rows() {
        let (mut out, mut late) = (Vec::new(), Vec::new());
        time(WindowKind::Tumble { size_ms: 10 })
            .assign(&batch(vec![0, 9, 10, -1, 25, 4]), 5, &mut out, &mut late)
            .unwrap();
        assert_eq!(late, vec![0, 3, 5]); // 0, -1 and 4 are below the watermark 5
        let got: Vec<(u32, i64, i64)> = out.iter().map(|a| (a.row, a.start, a.end)).collect();
        assert_eq!(got, vec![(1, 0, 10), (2, 10, 20), (4, 20, 30)]);
    }

    #[test]
    fn hop_assigns_size_over_slide_windows() {
        let mut out = Vec::new();
        time(WindowKind::Hop {
            slide_ms: 2,
            size_ms: 6,
        })
        .assign(&batch(vec![7, -3]), i64::MIN, &mut out, &mut Vec::new())
        .unwrap();
        let got: Vec<(u32, i64, i64)> = out.iter().map(|a| (a.row, a.start, a.end)).collect();
        // 7 is in [6,12), [4,10), [2,8); -3 is in [-4,2), [-6,0), [-8,-2).
        assert_eq!(
            got,
            vec![
                (0, 6, 12),
                (0, 4, 10),
                (0, 2, 8),
                (1, -4, 2),
                (1, -6, 0),
                (1, -8, -2)
            ]
        );
    }

    #[test]
    fn carried_windows_are_late_once_their_end_passed() {
        let windows = window_array(vec![0, 10, 20], vec![10, 20, 30]);
        let schema = Arc::new(Schema::new(vec![Field::new("w", window_type(), false)]));
        let b = RecordBatch::try_new(schema, vec![windows]).unwrap();
        let assign = WindowAssign::Column {
            window: Arc::new(Column::new("w", 0)),
        };
        let (mut out, mut late) = (Vec::new(), Vec::new());
        assign.assign(&b, 20, &mut out, &mut late).unwrap();
        assert_eq!(late, vec![0, 1]);
        assert_eq!(
            out,
            vec![Assignment {
                row: 2,
                start: 20,
                end: 30
            }]
        );
    }

    #[test]
    fn next_window_end_is_the_first_end_strictly_after() {
        let tumble = WindowKind::Tumble { size_ms: 10 };
        assert_eq!(tumble.next_end_after(0), Some(10));
        assert_eq!(tumble.next_end_after(9), Some(10));
        assert_eq!(tumble.next_end_after(10), Some(20));
        assert_eq!(tumble.next_end_after(-1), Some(0));
        // Hop 10 every 4: windows [-4, 6), [0, 10), [4, 14): ends 6, 10, 14.
        let hop = WindowKind::Hop {
            slide_ms: 4,
            size_ms: 10,
        };
        assert_eq!(hop.next_end_after(5), Some(6));
        assert_eq!(hop.next_end_after(6), Some(10));
        assert_eq!(hop.next_end_after(13), Some(14));
        assert_eq!(tumble.next_end_after(i64::MIN), Some(i64::MIN + 8));
        assert_eq!(tumble.next_end_after(i64::MAX), Some(i64::MAX));
        assert_eq!(WindowKind::Session { gap_ms: 5 }.next_end_after(0), None);
    }

    #[test]
    fn durations_print_in_the_largest_whole_unit() {
        assert_eq!(show_ms(10_000), "10s");
        assert_eq!(show_ms(1500), "1500ms");
        assert_eq!(show_ms(86_400_000), "1d");
        assert_eq!(show_ms(0), "0ms");
    }
}

#[cfg(test)]
mod tidy_tests {
    use super::tidy_intervals;

    #[test]
    fn interval_literals_in_names_read_as_durations() {
        let name = r#"hop(bid.date_time,IntervalMonthDayNano("IntervalMonthDayNano { months: 0, days: 0, nanoseconds: 2000000000 }"),IntervalMonthDayNano("IntervalMonthDayNano { months: 0, days: 0, nanoseconds: 10000000000 }"))"#;
        assert_eq!(tidy_intervals(name), "hop(bid.date_time,2s,10s)");
        let bare = "x IntervalMonthDayNano { months: 1, days: 2, nanoseconds: 1500 } y";
        assert_eq!(tidy_intervals(bare), "x 1mon 2d 1500ns y");
        let odd = "IntervalMonthDayNano { months: what }";
        assert_eq!(tidy_intervals(odd), odd);
        assert_eq!(tidy_intervals("no interval"), "no interval");
    }
}
