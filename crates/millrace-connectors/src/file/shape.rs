//! What arrow-json accepts but a record of declared columns must not hold.
//!
//! arrow-json is lenient where a stream processor must not be: it turns
//! `1.5` into 1 and `-2^63-1` into `i64::MIN` for an integer column, `"42"`
//! into 42, `"NaN"`, `"Infinity"` and `1e400` into null for a float column,
//! and keeps the last of two values of one key. Before any decoder sees a
//! JSON record, [`JsonShape::check`] walks its top-level object once
//! (iteratively, skipping nested values) and refuses those, naming the
//! column and the value. It also notes which timestamp columns were given
//! as numbers, so the decoder can read those as [`TIMESTAMP_NUMBER_UNIT`]
//! whatever the column's precision.
//!
//! Anything else that is wrong (a missing comma, a value of the wrong kind
//! altogether) is left to arrow-json, which rejects it; this walk never
//! fails on malformed input, it just stops looking.

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

/// The unit of a number given for a timestamp column: milliseconds since
/// the Unix epoch, what Kafka and most producers write.
pub const TIMESTAMP_NUMBER_UNIT: TimeUnit = TimeUnit::Millisecond;

/// What a declared column's value must look like.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A whole number within the type's range.
    Integer {
        min: i128,
        max: i128,
        sql: &'static str,
    },
    /// A finite number within the type's range.
    Float { max: f64, sql: &'static str },
    /// A string (parsed by the decoder) or a whole number of
    /// [`TIMESTAMP_NUMBER_UNIT`]; bit `bit` of the mask says which.
    Timestamp { bit: u32 },
    /// Checked by the decoder alone.
    Other,
}

pub(crate) struct JsonShape {
    /// Each declared column's key (as written between the quotes) and what
    /// its value must be.
    columns: Vec<(Vec<u8>, String, Expect)>,
    /// The timestamp columns, by their bit in a check's mask.
    timestamps: Vec<usize>,
}

impl JsonShape {
    /// The rules for `schema`; an error if it has more timestamp columns
    /// than a check's mask holds (64).
    pub(crate) fn new(schema: &SchemaRef) -> Result<Self, String> {
        let mut timestamps = Vec::new();
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let expect = match f.data_type() {
                    DataType::Int8 => int(i8::MIN as i128, i8::MAX as i128, "TINYINT"),
                    DataType::Int16 => int(i16::MIN as i128, i16::MAX as i128, "SMALLINT"),
                    DataType::Int32 => int(i32::MIN as i128, i32::MAX as i128, "INT"),
                    DataType::Int64 => int(i64::MIN as i128, i64::MAX as i128, "BIGINT"),
                    DataType::UInt8 => int(0, u8::MAX as i128, "TINYINT UNSIGNED"),
                    DataType::UInt16 => int(0, u16::MAX as i128, "SMALLINT UNSIGNED"),
                    DataType::UInt32 => int(0, u32::MAX as i128, "INT UNSIGNED"),
                    DataType::UInt64 => int(0, u64::MAX as i128, "BIGINT UNSIGNED"),
                    DataType::Float32 => Expect::Float {
                        max: f32::MAX as f64,
                        sql: "FLOAT",
                    },
                    DataType::Float64 => Expect::Float {
                        max: f64::MAX,
                        sql: "DOUBLE",
                    },
                    DataType::Timestamp(..) => {
                        timestamps.push(i);
                        Expect::Timestamp {
                            bit: timestamps.len() as u32 - 1,
                        }
                    }
                    _ => Expect::Other,
                };
                (f.name().as_bytes().to_vec(), f.name().clone(), expect)
            })
            .collect();
        if timestamps.len() > 64 {
            return Err(format!(
                "{} TIMESTAMP columns: a JSON table may have at most 64",
                timestamps.len()
            ));
        }
        Ok(JsonShape {
            columns,
            timestamps,
        })
    }

    /// The timestamp columns, in the order of a check's mask bits.
    pub(crate) fn timestamp_columns(&self) -> &[usize] {
        &self.timestamps
    }

    /// Checks one record; on success, the mask of timestamp columns given
    /// as numbers. `seen` is scratch space (one flag per column). Only a
    /// record that is exactly one JSON object, nested at most `max_depth`
    /// deep, reaches a decoder: arrow-json also takes objects without
    /// commas between members, or with text after them, and recurses on
    /// the latter's errors.
    pub(crate) fn check(
        &self,
        record: &[u8],
        seen: &mut Vec<bool>,
        max_depth: usize,
    ) -> Result<u64, String> {
        seen.clear();
        seen.resize(self.columns.len(), false);
        let mut numbers = 0u64;
        let mut next_hint = 0;
        let mut at = Cursor { text: record, i: 0 };
        at.skip_ws();
        if !at.eat(b'{') {
            return Err("invalid JSON record: a record must be one JSON object".into());
        }
        at.skip_ws();
        let mut closed = at.eat(b'}');
        while !closed {
            at.skip_ws();
            if at.peek() != Some(b'"') {
                return Err(at.unexpected("a key"));
            }
            let Some(key) = at.string() else {
                return Err(incomplete());
            };
            at.skip_ws();
            if !at.eat(b':') {
                return Err(at.unexpected("':'"));
            }
            at.skip_ws();
            // The record's object is one level.
            let value = match at.value(max_depth.saturating_sub(1)) {
                Ok(Some(v)) => v,
                Ok(None) => return Err(incomplete()),
                Err(()) => {
                    return Err(format!(
                        "invalid JSON record: arrays and objects nested deeper than \
                         {max_depth} levels"
                    ));
                }
            };
            // Producers write keys in one order: try the column after the
            // last one found first.
            if let Some(c) = self.column_of(key, next_hint) {
                next_hint = c + 1;
                let (_, name, expect) = &self.columns[c];
                if std::mem::replace(&mut seen[c], true) {
                    return Err(format!("key '{name}' appears twice in the record"));
                }
                if check_value(name, *expect, value)?
                    && let Expect::Timestamp { bit } = expect
                {
                    numbers |= 1 << bit;
                }
            }
            at.skip_ws();
            closed = at.eat(b'}');
            if !closed && !at.eat(b',') {
                return Err(at.unexpected("',' or '}'"));
            }
        }
        at.skip_ws();
        match at.peek() {
            None => Ok(numbers),
            Some(b'{') => Err(
                "more than one JSON record on the line (expected exactly one object per line)"
                    .into(),
            ),
            Some(_) => Err(at.unexpected("the end of the line")),
        }
    }

    /// The declared column whose key is `raw` (the bytes between the
    /// quotes, escapes undone when there are any), trying `hint` first.
    fn column_of(&self, raw: &[u8], hint: usize) -> Option<usize> {
        if raw.contains(&b'\\') {
            let quoted = [b"\"", raw, b"\""].concat();
            let key: String = serde_json::from_slice(&quoted).ok()?;
            return self.columns.iter().position(|(k, ..)| k == key.as_bytes());
        }
        if self.columns.get(hint).is_some_and(|(k, ..)| k == raw) {
            return Some(hint);
        }
        self.columns.iter().position(|(k, ..)| k == raw)
    }
}

fn incomplete() -> String {
    "incomplete JSON record (each record must be one complete object on one line)".into()
}

fn int(min: i128, max: i128, sql: &'static str) -> Expect {
    Expect::Integer { min, max, sql }
}

/// Whether `value` (the raw token) fits `expect`: `Ok(true)` for a number,
/// `Ok(false)` for anything the decoder checks itself, or why not.
fn check_value(name: &str, expect: Expect, value: &[u8]) -> Result<bool, String> {
    let shown = || {
        let text = String::from_utf8_lossy(value);
        let mut t: String = text.chars().take(40).collect();
        if text.chars().count() > 40 {
            t.push('…');
        }
        t
    };
    let is_number = matches!(value.first(), Some(b'-' | b'0'..=b'9'));
    let is_string = value.first() == Some(&b'"');
    let fraction = || value.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
    match expect {
        Expect::Other => Ok(false),
        Expect::Integer { sql, .. } | Expect::Float { sql, .. } if is_string => Err(format!(
            "column '{name}': the string {} where a {sql} number is expected",
            shown()
        )),
        Expect::Integer { min, max, sql } if is_number => {
            if fraction() {
                return Err(format!(
                    "column '{name}': {} is not a whole number ({sql})",
                    shown()
                ));
            }
            match whole_number(value) {
                Some(v) if (min..=max).contains(&v) => Ok(true),
                _ => Err(format!(
                    "column '{name}': {} is out of range for {sql}",
                    shown()
                )),
            }
        }
        Expect::Float { max, sql } if is_number => {
            // Up to 15 significant digits and no exponent: always finite.
            if value.len() <= 16 && !value.iter().any(|b| matches!(b, b'e' | b'E')) {
                return Ok(true);
            }
            match std::str::from_utf8(value)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
            {
                Some(v) if v.abs() <= max => Ok(true),
                _ => Err(format!(
                    "column '{name}': {} is out of range for {sql}",
                    shown()
                )),
            }
        }
        Expect::Timestamp { .. } if is_string && is_date_only(&value[1..value.len() - 1]) => {
            Err(date_only(name, &shown()))
        }
        Expect::Timestamp { .. } if is_number => {
            if fraction() {
                return Err(format!(
                    "column '{name}': {} is not a whole number of milliseconds",
                    shown()
                ));
            }
            match whole_number(value) {
                Some(v) if i64::try_from(v).is_ok() => Ok(true),
                _ => Err(format!(
                    "column '{name}': {} is out of range for a timestamp",
                    shown()
                )),
            }
        }
        _ => Ok(false),
    }
}

/// Whether a timestamp's text is a date alone (`2024-01-01`): arrow reads
/// it as midnight, which hides a line cut short after its date.
pub(crate) fn is_date_only(text: &[u8]) -> bool {
    let text = text.trim_ascii();
    text.len() == 10
        && text.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// The reason a date alone is refused for timestamp column `name`.
pub(crate) fn date_only(name: &str, shown: &str) -> String {
    format!(
        "column '{name}': {shown} is a date without a time of day (write \
         {shown}T00:00:00 for midnight)"
    )
}

/// An optionally negative run of digits as a number; `None` if it is not
/// one or has more digits than any integer column holds.
fn whole_number(value: &[u8]) -> Option<i128> {
    let (negative, digits) = match value.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, value),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits
        .iter()
        .fold(0i128, |n, d| n * 10 + i128::from(d - b'0'));
    Some(if negative { -magnitude } else { magnitude })
}

/// A position in one record's bytes; every step checks the bounds.
struct Cursor<'a> {
    text: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.i += usize::from(hit);
        hit
    }

    /// Why the record is refused where the cursor stands.
    fn unexpected(&self, wanted: &str) -> String {
        match self.peek() {
            None => incomplete(),
            Some(b) => format!(
                "invalid JSON record: {wanted} expected at byte {}, found {:?}",
                self.i + 1,
                char::from(b)
            ),
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    /// A string at the cursor: its bytes between the quotes (escapes kept).
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.i + 1;
        let mut i = start;
        loop {
            i += memchr::memchr2(b'"', b'\\', self.text.get(i..)?)?;
            if self.text[i] == b'"' {
                self.i = i + 1;
                return self.text.get(start..i);
            }
            i += 2;
        }
    }

    /// The value at the cursor, as its raw token (a nested array or
    /// object whole); `Ok(None)` if the record ends inside it, `Err` if it
    /// nests deeper than `max_depth`.
    fn value(&mut self, max_depth: usize) -> Result<Option<&'a [u8]>, ()> {
        let start = self.i;
        match self.peek() {
            None => return Ok(None),
            Some(b'"') => {
                if self.string().is_none() {
                    return Ok(None);
                }
            }
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        None => return Ok(None),
                        Some(b'"') => {
                            if self.string().is_none() {
                                return Ok(None);
                            }
                            continue;
                        }
                        Some(b'{' | b'[') => {
                            depth += 1;
                            if depth > max_depth {
                                return Err(());
                            }
                        }
                        Some(b'}' | b']') => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        Some(_) => {}
                    }
                    self.i += 1;
                }
            }
            Some(_) => {
                // A scalar ends where a separator, a bracket, a quote or a
                // colon begins (the last two only follow it in bad JSON).
                while !matches!(
                    self.peek(),
                    None | Some(
                        b',' | b'}'
                            | b']'
                            | b'{'
                            | b'['
                            | b'"'
                            | b':'
                            | b' '
                            | b'\t'
                            | b'\r'
                            | b'\n'
                    )
                ) {
                    self.i += 1;
                }
            }
        }
        Ok(self.text.get(start..self.i))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn shape() -> JsonShape {
        JsonShape::new(&Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("small", DataType::Int8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("name", DataType::Utf8, true),
        ])))
        .unwrap()
    }

    fn check(record: &str) -> Result<u64, String> {
        shape().check(record.as_bytes(), &mut Vec::new(), 128)
    }

    #[test]
    fn values_arrow_would_bend_are_refused_by_column() {
        for (record, says) in [
            (
                r#"{"id": 1.5}"#,
                "column 'id': 1.5 is not a whole number (BIGINT)",
            ),
            (r#"{"id": 1e3}"#, "not a whole number"),
            (r#"{"id": -9223372036854775809}"#, "out of range for BIGINT"),
            (r#"{"small": 128}"#, "out of range for TINYINT"),
            (
                r#"{"id": "42"}"#,
                "column 'id': the string \"42\" where a BIGINT",
            ),
            (r#"{"x": "NaN"}"#, "the string \"NaN\" where a DOUBLE"),
            (r#"{"x": "Infinity"}"#, "the string"),
            (
                r#"{"x": 1e400}"#,
                "column 'x': 1e400 is out of range for DOUBLE",
            ),
            (
                r#"{"id": 8, "name": "a", "id": 9}"#,
                "key 'id' appears twice",
            ),
            (r#"{"i\u0064": 8, "id": 9}"#, "key 'id' appears twice"),
            (r#"{"ts": 1.5}"#, "not a whole number of milliseconds"),
            (
                r#"{"ts": 99999999999999999999}"#,
                "out of range for a timestamp",
            ),
        ] {
            let err = check(record).unwrap_err();
            assert!(err.contains(says), "{record}: {err}");
        }
    }

    /// Only exactly one JSON object passes: arrow-json would also take
    /// members without commas (and so values these rules never saw), or
    /// text after the object (whose error it formats recursively).
    #[test]
    fn anything_but_one_json_object_is_refused() {
        let deep = format!(
            r#"{{"id":1}}{}{}"#,
            "[".repeat(300_000),
            "]".repeat(300_000)
        );
        for (record, says) in [
            (
                r#"{"name":"x" "ts":1700000000000}"#,
                "',' or '}' expected at byte 13",
            ),
            (r#"{"x":1"id":1.5}"#, "',' or '}' expected"),
            (r#"{,"id":1}"#, "a key expected"),
            (r#"{"id":1,}"#, "a key expected"),
            (r#"{"id" 3}"#, "':' expected"),
            (r#"{"id":3"#, "incomplete JSON record"),
            (r#"{"name": "unterminated"#, "incomplete JSON record"),
            (r#"{"a": [[[["#, "incomplete JSON record"),
            ("{", "incomplete JSON record"),
            (r#"{"id":8}{"id":9}"#, "more than one JSON record"),
            (deep.as_str(), "the end of the line expected"),
            ("[1, 2]", "a record must be one JSON object"),
            ("not json", "a record must be one JSON object"),
        ] {
            let err = check(record).unwrap_err();
            assert!(
                err.contains(says),
                "{}: {err}",
                &record[..record.len().min(40)]
            );
        }
    }

    #[test]
    fn good_records_pass_and_timestamp_numbers_are_noted() {
        for (record, mask) in [
            (
                r#"{"id": -9223372036854775808, "small": -128, "x": -1.5e300}"#,
                0,
            ),
            (r#"{"ts": 1700000000000, "name": "{\"id\": 1.5}"}"#, 1),
            (r#"{"ts": "2024-01-01T00:00:00", "x": null, "id": null}"#, 0),
            (
                r#"{"other": [1, {"id": "x"}, "]"], "id": 3, "extra": {"id": 1.5}}"#,
                0,
            ),
            (r#" { "id" : 3 , "ts" : 5 } "#, 1),
            ("{}", 0),
        ] {
            assert_eq!(check(record), Ok(mask), "{record}");
        }
    }
}
