//! Durations written in SQL, as milliseconds.
//!
//! Two places need them: the `WATERMARK` bound (sqlparser's `INTERVAL`
//! syntax, read before DataFusion sees the file) and window sizes (DataFusion
//! interval literals in the logical plan). Months and years have no fixed
//! length, so neither place accepts them.

use datafusion::common::ScalarValue;

use crate::sqlparser::ast::{DateTimeField, Expr, Interval, Value};

const MS_PER: [(&str, i64); 6] = [
    ("millisecond", 1),
    ("second", 1000),
    ("minute", 60_000),
    ("hour", 3_600_000),
    ("day", 86_400_000),
    ("week", 7 * 86_400_000),
];

fn unit_ms(unit: &str) -> Option<i64> {
    let unit = unit.to_lowercase();
    let unit = match unit.as_str() {
        "ms" | "milli" | "millis" => "millisecond",
        "s" | "sec" | "secs" => "second",
        "m" | "min" | "mins" => "minute",
        "h" | "hr" | "hrs" => "hour",
        "d" => "day",
        "w" => "week",
        u => u.strip_suffix('s').unwrap_or(u),
    };
    MS_PER
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, ms)| *ms)
}

/// `INTERVAL '2' SECOND`, `INTERVAL '1.5 seconds'`, `INTERVAL '10' MINUTE`.
pub fn interval_ms(interval: &Interval) -> Result<i64, String> {
    let text = match interval.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            other => return Err(format!("unsupported interval value {other}")),
        },
        other => return Err(format!("unsupported interval value {other}")),
    };
    if interval.last_field.is_some() {
        return Err("compound intervals (e.g. DAY TO SECOND) are not supported".into());
    }
    let unit = match &interval.leading_field {
        None => None,
        Some(DateTimeField::Millisecond | DateTimeField::Milliseconds) => Some("millisecond"),
        Some(DateTimeField::Second | DateTimeField::Seconds) => Some("second"),
        Some(DateTimeField::Minute | DateTimeField::Minutes) => Some("minute"),
        Some(DateTimeField::Hour | DateTimeField::Hours) => Some("hour"),
        Some(DateTimeField::Day | DateTimeField::Days) => Some("day"),
        Some(DateTimeField::Week(_) | DateTimeField::Weeks) => Some("week"),
        Some(other) => return Err(format!("interval unit {other} has no fixed length")),
    };
    duration_text_ms(&text, unit)
}

/// `2` with a unit, or `2 seconds` / `1.5s` / `500 ms` on its own.
pub fn duration_text_ms(text: &str, unit: Option<&str>) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match unit {
        Some(u) => (text, u.to_string()),
        None => {
            let split = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
                .unwrap_or(text.len());
            (text[..split].trim(), text[split..].trim().to_string())
        }
    };
    if unit.is_empty() {
        return Err(format!("'{text}' has no unit (e.g. '2 seconds')"));
    }
    let per =
        unit_ms(&unit).ok_or_else(|| format!("unknown or variable-length time unit '{unit}'"))?;
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{number}' is not a number"))?;
    let ms = value * per as f64;
    if !ms.is_finite() || ms.abs() > i64::MAX as f64 / 2.0 {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(ms.round() as i64)
}

/// A DataFusion interval literal as milliseconds.
pub fn scalar_interval_ms(value: &ScalarValue) -> Result<i64, String> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Ok(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Ok(v.days as i64 * 86_400_000 + v.milliseconds as i64)
        }
        ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalYearMonth(Some(_)) => {
            Err("months and years have no fixed length; use days, hours, minutes or seconds".into())
        }
        other => Err(format!("expected an INTERVAL, found {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_common_spellings() {
        assert_eq!(duration_text_ms("2", Some("second")), Ok(2000));
        assert_eq!(duration_text_ms("1.5 seconds", None), Ok(1500));
        assert_eq!(duration_text_ms("500ms", None), Ok(500));
        assert_eq!(duration_text_ms("10 min", None), Ok(600_000));
        assert!(duration_text_ms("2", None).is_err());
        assert!(duration_text_ms("1 month", None).is_err());
        assert!(duration_text_ms("x seconds", None).is_err());
    }
}
