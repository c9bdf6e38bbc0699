//! Turning a chunk of lines into Arrow rows, and finding exactly which lines are bad.
//!
//! The fast path feeds every line of a chunk to one Arrow decoder (arrow-json or
//! arrow-csv) and flushes once, so clean input costs one vectorized decode per
//! chunk. After each line it checks that the decoder took exactly one whole record,
//! so a line holding two JSON objects, or half of one, cannot be silently merged
//! with its neighbours. If anything is off, the chunk falls back to decoding its
//! lines one at a time, which names the bad lines precisely and keeps the good
//! ones, in order.
//!
//! Columns are decoded as nullable and checked afterwards, so a missing value
//! in a non-nullable or event-time column is reported against its row and
//! column rather than as an error for the whole chunk. So is a timestamp
//! outside the range every unit can represent (nanoseconds since 1970 in an
//! i64: 1677-09-21 to 2262-04-11), which could not be converted, compared
//! in another unit or written back as a date.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, make_array};
use arrow::buffer::Buffer;
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use millrace_core::time::timestamp_bounds;
use millrace_core::{Error, Result};

use super::FileFormat;
use super::shape::{JsonShape, date_only, is_date_only};

/// Rows decoded per Arrow batch on the fast path; a chunk larger than this is
/// flushed in several pieces and concatenated.
const BULK_BATCH: usize = 4096;

/// The deepest nesting of JSON arrays and objects a record may have (as
/// serde_json's default). Deeper records are bad records, found before any
/// decoder sees them: arrow-json recurses once per level on some paths, and
/// a hostile line of a few hundred KB would overflow a worker's stack.
pub const MAX_JSON_DEPTH: usize = 128;

/// The outcome of decoding one chunk.
pub(crate) struct Decoded {
    /// The good rows, in line order, with the declared schema (`None` if none).
    pub batch: Option<RecordBatch>,
    /// Bad records as (index into the chunk's records, reason), in order.
    pub bad: Vec<(usize, String)>,
}

/// One Arrow decoder, whichever the format.
enum Inner {
    Json(arrow::json::reader::Decoder),
    // Boxed: the CSV decoder is several times the size of the JSON one.
    Csv(Box<arrow::csv::reader::Decoder>),
}

impl Inner {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        match self {
            Inner::Json(d) => d.decode(buf),
            Inner::Csv(d) => d.decode(buf),
        }
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        match self {
            Inner::Json(d) => d.flush(),
            Inner::Csv(d) => d.flush(),
        }
    }

    /// Records buffered and not yet flushed, counting a partial one (JSON).
    fn pending(&self, batch_size: usize) -> usize {
        match self {
            Inner::Json(d) => d.len(),
            Inner::Csv(d) => batch_size - d.capacity(),
        }
    }

    fn has_partial(&self) -> bool {
        match self {
            Inner::Json(d) => d.has_partial_record(),
            // arrow-csv does not count a record until its terminator is seen, so
            // an unterminated quote shows up as a record that never arrived.
            Inner::Csv(_) => false,
        }
    }
}

pub(crate) struct ChunkDecoder {
    format: FileFormat,
    declared: SchemaRef,
    /// The declared schema with every top-level column nullable.
    relaxed: SchemaRef,
    /// Columns that must not be null, with the reason given when one is.
    checks: Vec<(usize, String)>,
    /// Timestamp columns with the least and greatest value allowed, in
    /// their unit (`millrace_core::time::timestamp_bounds`).
    ranges: Vec<(usize, i64, i64)>,
    /// The event-time column, its units per millisecond (`Int64`: 1) and
    /// how far ahead of the wall clock its values may be, when bounded.
    future: Option<(usize, i64, Duration)>,
    /// The event-time column and its units per millisecond.
    event_time: Option<(usize, i64)>,
    /// The timestamp columns.
    timestamp_columns: Vec<usize>,
    /// The JSON records' value rules (`shape.rs`); `None` for CSV.
    shape: Option<JsonShape>,
    /// Scratch for `shape`.
    seen: Vec<bool>,
    /// (CSV) The last line ended inside a quoted field: the lines up to the
    /// one that closes it are not records of their own.
    in_quoted_field: bool,
    /// Each record is a message of its own (Kafka): a quoted field never
    /// continues into the next one.
    messages: bool,
    /// Fast-path decoder; dropped after an error since its state is then unknown.
    bulk: Option<Inner>,
    /// Slow-path decoder for one line at a time (small, cheap to rebuild).
    single: Option<Inner>,
}

impl ChunkDecoder {
    /// Builds the decoders, which also checks that Arrow can decode every
    /// declared column type in this format.
    pub(crate) fn new(
        format: FileFormat,
        declared: SchemaRef,
        event_time: Option<&str>,
    ) -> Result<Self> {
        let relaxed = relax(&declared);
        let checks = declared
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                if Some(f.name().as_str()) == event_time {
                    Some((
                        i,
                        format!("event-time column '{}' is missing or null", f.name()),
                    ))
                } else if !f.is_nullable() {
                    Some((
                        i,
                        format!("non-nullable column '{}' is missing or null", f.name()),
                    ))
                } else {
                    None
                }
            })
            .collect();
        let ranges = declared
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f.data_type() {
                DataType::Timestamp(unit, _) => {
                    let (lo, hi) = timestamp_bounds(*unit);
                    Some((i, lo, hi))
                }
                // An event time of BIGINT milliseconds.
                DataType::Int64 if Some(f.name().as_str()) == event_time => {
                    let (lo, hi) = timestamp_bounds(TimeUnit::Millisecond);
                    Some((i, lo, hi))
                }
                _ => None,
            })
            .collect();
        let event_time = event_time.and_then(|name| {
            let (i, f) = declared.fields().find(name)?;
            let per_ms = match f.data_type() {
                DataType::Timestamp(TimeUnit::Second, _) => 0,
                DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
                DataType::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000,
                _ => 1,
            };
            Some((i, per_ms))
        });
        let shape = match format {
            FileFormat::Json => Some(JsonShape::new(&declared).map_err(Error::plan)?),
            FileFormat::Csv { .. } => None,
        };
        let timestamp_columns = declared
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.data_type(), DataType::Timestamp(..)))
            .map(|(i, _)| i)
            .collect();
        let mut this = ChunkDecoder {
            format,
            declared,
            relaxed,
            checks,
            ranges,
            future: None,
            event_time,
            timestamp_columns,
            shape,
            seen: Vec::new(),
            in_quoted_field: false,
            messages: false,
            bulk: None,
            single: None,
        };
        this.bulk = Some(this.build(BULK_BATCH)?);
        Ok(this)
    }

    /// (CSV) A timestamp column holding a date alone, so that a line cut
    /// short right after a date is not read as midnight.
    fn csv_date_only(&self, line: &[u8], delimiter: u8) -> Option<String> {
        if self.timestamp_columns.is_empty() {
            return None;
        }
        // Quotes as arrow-csv reads them (`ends_in_quoted_field`): one
        // opens a field only at its start; inside, `""` is a quote.
        let (mut column, mut start, mut inside) = (0, 0, false);
        let mut i = 0;
        while i <= line.len() {
            match line.get(i) {
                Some(b'"') if inside && line.get(i + 1) == Some(&b'"') => i += 1,
                Some(b'"') if inside => inside = false,
                Some(b'"') if i == start => inside = true,
                Some(&b) if b != delimiter || inside => {}
                _ => {
                    let field = line[start..i].trim_ascii();
                    let field = field
                        .strip_prefix(b"\"")
                        .and_then(|f| f.strip_suffix(b"\""))
                        .unwrap_or(field);
                    if self.timestamp_columns.contains(&column) && is_date_only(field) {
                        let name = self.declared.field(column).name();
                        return Some(date_only(name, &String::from_utf8_lossy(field)));
                    }
                    column += 1;
                    start = i + 1;
                }
            }
            i += 1;
        }
        None
    }

    /// Records are whole messages, not lines of one file: nothing carries
    /// over from one to the next (an unterminated quote is that record's
    /// fault alone).
    pub(crate) fn for_messages(mut self) -> Self {
        self.messages = true;
        self
    }

    /// A new file begins: nothing carries over from the last one.
    pub(crate) fn start_file(&mut self) {
        self.in_quoted_field = false;
    }

    /// Event times more than `bound` ahead of the wall clock become bad
    /// records (`None`: any is accepted).
    pub(crate) fn with_max_future(mut self, bound: Option<Duration>) -> Self {
        self.future = match (self.event_time, bound) {
            (Some((col, per_ms)), Some(bound)) => Some((col, per_ms, bound)),
            _ => None,
        };
        self
    }

    fn build(&self, batch_size: usize) -> Result<Inner> {
        build_inner(&self.format, self.relaxed.clone(), batch_size)
    }

    /// Decodes the records `records` (byte ranges of `data`, each followed by
    /// a `\n` at `data[end]`).
    pub(crate) fn decode(&mut self, data: &[u8], records: &[(usize, usize)]) -> Result<Decoded> {
        if records.is_empty() {
            return Ok(Decoded {
                batch: None,
                bad: Vec::new(),
            });
        }
        // What must be refused before a decoder sees it (JSON only): too
        // deep, or values arrow-json would bend (`shape.rs`). Per record,
        // the reason, or the timestamp columns it gave as numbers.
        // (CSV) the lines that continue a quoted field opened on an earlier
        // line: that line is refused as unterminated, and these with it.
        let mut early: Vec<Result<u64, String>> = Vec::new();
        if let Some(shape) = &self.shape {
            early.reserve(records.len());
            for &(start, end) in records {
                early.push(shape.check(&data[start..end], &mut self.seen, MAX_JSON_DEPTH));
            }
        } else if let FileFormat::Csv { delimiter, .. } = self.format {
            early.reserve(records.len());
            for &(start, end) in records {
                let line = &data[start..end];
                let continues = self.in_quoted_field && !self.messages;
                self.in_quoted_field = ends_in_quoted_field(line, delimiter, continues);
                early.push(if continues {
                    Err(
                        "continues a quoted field from the line before (a quoted field may not \
                         span lines)"
                            .to_string(),
                    )
                } else if std::str::from_utf8(line).is_err() {
                    // arrow-csv can let a multi-byte sequence cut by a
                    // delimiter into a string column unchecked.
                    Err("invalid UTF-8".to_string())
                } else {
                    self.csv_date_only(line, delimiter).map_or(Ok(0), Err)
                });
            }
        }
        let numbers = |i: usize| {
            early
                .get(i)
                .and_then(|r| r.as_ref().ok())
                .copied()
                .unwrap_or(0)
        };
        if early.iter().all(Result::is_ok)
            && let Some(batch) = self.decode_bulk(data, records)?
        {
            // Usually no record gave a timestamp as a number: no masks.
            let masks: Vec<u64> = if early.iter().any(|r| matches!(r, Ok(m) if *m != 0)) {
                (0..records.len()).map(numbers).collect()
            } else {
                Vec::new()
            };
            let batch = self.numbers_as_ms(batch, &masks)?;
            let violations = self.violations(&batch);
            if violations.is_empty() {
                return Ok(Decoded {
                    batch: Some(self.to_declared(&batch)?),
                    bad: Vec::new(),
                });
            }
            let mut keep = vec![true; batch.num_rows()];
            for (row, _) in &violations {
                keep[*row] = false;
            }
            let good = filter_record_batch(&batch, &BooleanArray::from(keep))?;
            return Ok(Decoded {
                batch: self.nonempty_declared(&good)?,
                bad: violations,
            });
        }

        // Slow path: one line at a time, to name exactly the bad ones.
        let mut good = Vec::with_capacity(records.len());
        let mut bad = Vec::new();
        for (i, &(start, end)) in records.iter().enumerate() {
            if let Some(Err(reason)) = early.get(i) {
                bad.push((i, reason.clone()));
                continue;
            }
            let row = self.decode_one(&data[start..=end]).and_then(|row| {
                self.numbers_as_ms(row, &[numbers(i)])
                    .map_err(|e| e.to_string())
            });
            match row {
                Ok(row) => match self.violations(&row).into_iter().next() {
                    Some((_, reason)) => bad.push((i, reason)),
                    None => good.push(row),
                },
                Err(reason) => bad.push((i, reason)),
            }
        }
        let batch = match good.len() {
            0 => None,
            _ => {
                let all = concat_batches(&self.relaxed, &good)?;
                Some(self.to_declared(&all)?)
            }
        };
        Ok(Decoded { batch, bad })
    }

    /// Reads the numbers given for timestamp columns (bit `b` of row `r`'s
    /// mask: column `b` of the shape's timestamp columns) as milliseconds,
    /// whatever the column's unit: arrow-json took them in the column's
    /// unit. Out-of-range products saturate, and the range check refuses
    /// them.
    fn numbers_as_ms(&self, batch: RecordBatch, masks: &[u64]) -> Result<RecordBatch> {
        let Some(shape) = &self.shape else {
            return Ok(batch);
        };
        let any = masks.iter().fold(0, |a, m| a | m);
        if any == 0 {
            return Ok(batch);
        }
        let mut columns = batch.columns().to_vec();
        for (bit, &col) in shape.timestamp_columns().iter().enumerate() {
            if any & (1 << bit) == 0 {
                continue;
            }
            let DataType::Timestamp(unit, _) = columns[col].data_type().clone() else {
                continue;
            };
            let scale = |v: i64| match unit {
                TimeUnit::Second => v.div_euclid(1000),
                TimeUnit::Millisecond => v,
                TimeUnit::Microsecond => v.saturating_mul(1000),
                TimeUnit::Nanosecond => v.saturating_mul(1_000_000),
            };
            if unit == TimeUnit::Millisecond {
                continue;
            }
            let data = columns[col].to_data();
            let values: Vec<i64> = data.buffer::<i64>(0)[..data.len()]
                .iter()
                .zip(masks)
                .map(|(&v, m)| if m & (1 << bit) != 0 { scale(v) } else { v })
                .collect();
            let scaled = data
                .into_builder()
                .offset(0)
                .buffers(vec![Buffer::from_vec(values)])
                .build()?;
            columns[col] = make_array(scaled);
        }
        Ok(RecordBatch::try_new_with_options(
            batch.schema(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }

    /// The whole chunk in one decoder, or `None` if any line did not decode to
    /// exactly one record (the caller then goes line by line).
    fn decode_bulk(
        &mut self,
        data: &[u8],
        records: &[(usize, usize)],
    ) -> Result<Option<RecordBatch>> {
        let mut decoder = match self.bulk.take() {
            Some(d) => d,
            None => self.build(BULK_BATCH)?,
        };
        match bulk_into(&mut decoder, data, records) {
            Ok(Some(parts)) => {
                // Only a decoder that finished cleanly is reused.
                self.bulk = Some(decoder);
                let batch = match parts.len() {
                    1 => parts.into_iter().next(),
                    _ => Some(concat_batches(&self.relaxed, &parts)?),
                };
                Ok(batch)
            }
            Ok(None) | Err(_) => Ok(None),
        }
    }

    /// Decodes one line (with its `\n`) to a one-row batch, or says why not.
    fn decode_one(&mut self, line: &[u8]) -> Result<RecordBatch, String> {
        let mut decoder = match self.single.take() {
            Some(d) => d,
            // Room for two records, so a line holding two is seen as such.
            None => self.build(2).map_err(|e| e.to_string())?,
        };
        let outcome = single_into(&mut decoder, line);
        match outcome {
            Ok(batch) => {
                self.single = Some(decoder);
                Ok(batch)
            }
            Err(err) => Err(match (&self.format, err) {
                (_, SingleError::Reason(r)) => r,
                (FileFormat::Json, SingleError::Arrow(e)) => json_reason(&e),
                (FileFormat::Csv { .. }, SingleError::Arrow(e)) => self.explain_csv(line, &e),
            }),
        }
    }

    /// A precise reason for a CSV line the typed decoder rejected: arrow-csv's
    /// own messages carry its internal line counter and 0-based column indexes,
    /// which would mislead next to our physical line numbers.
    fn explain_csv(&self, line: &[u8], typed: &ArrowError) -> String {
        let text_fields: Vec<Field> = self
            .relaxed
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect();
        let texts = match decode_with(&self.format, text_fields.clone(), line) {
            Ok(batch) => batch,
            Err(e) => {
                let msg = arrow_reason(&e);
                return if msg.contains("part way through record") {
                    "unterminated quoted field (a quoted field may not span lines)".to_string()
                } else if msg.contains("invalid UTF-8") {
                    "invalid UTF-8".to_string()
                } else {
                    scrub_line_refs(&msg)
                };
            }
        };
        // The fields split fine, so some value does not parse as its column's
        // type: find the first such column.
        for (i, field) in self.relaxed.fields().iter().enumerate() {
            if field.data_type() == &DataType::Utf8 {
                continue;
            }
            let mut probe = text_fields.clone();
            probe[i] = field.as_ref().clone();
            if decode_with(&self.format, probe, line).is_err() {
                let value = texts
                    .column(i)
                    .as_string_opt::<i32>()
                    .filter(|a| !a.is_empty() && a.is_valid(0))
                    .map(|a| a.value(0).to_string())
                    .unwrap_or_default();
                return format!(
                    "column '{}': cannot parse {value:?} as {}",
                    field.name(),
                    field.data_type()
                );
            }
        }
        scrub_line_refs(&arrow_reason(typed))
    }

    /// Rows that hold a null where the declared schema forbids one, or a
    /// timestamp out of range, with the reason for the first offending
    /// column of each, in row order.
    fn violations(&self, batch: &RecordBatch) -> Vec<(usize, String)> {
        let mut reasons: Option<Vec<Option<String>>> = None;
        for (col, reason) in &self.checks {
            let Some(nulls) = batch.column(*col).logical_nulls() else {
                continue;
            };
            if nulls.null_count() == 0 {
                continue;
            }
            let slots = reasons.get_or_insert_with(|| vec![None; batch.num_rows()]);
            for row in nulls
                .iter()
                .enumerate()
                .filter(|(_, valid)| !valid)
                .map(|(r, _)| r)
            {
                slots[row].get_or_insert_with(|| reason.clone());
            }
        }
        for &(col, lo, hi) in &self.ranges {
            let column = batch.column(col);
            let data = column.to_data();
            // Every timestamp unit is an i64; `buffer` starts at the offset.
            let values = &data.buffer::<i64>(0)[..data.len()];
            if !values.iter().any(|v| *v < lo || *v > hi) {
                continue;
            }
            let slots = reasons.get_or_insert_with(|| vec![None; batch.num_rows()]);
            for (row, v) in values.iter().enumerate() {
                if (*v < lo || *v > hi) && column.is_valid(row) {
                    slots[row].get_or_insert_with(|| {
                        format!(
                            "column '{}': {v} is outside the supported timestamps \
                             ({lo} to {hi} in its unit: 1677-09-21 to 2262-04-11)",
                            self.declared.field(col).name()
                        )
                    });
                }
            }
        }
        if let Some((col, per_ms, bound)) = self.future {
            let wall_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let limit_ms = wall_ms.saturating_add(bound.as_millis().min(i64::MAX as u128) as i64);
            // In the column's unit (`per_ms` 0: seconds).
            let limit = match per_ms {
                0 => limit_ms / 1000,
                n => limit_ms.saturating_mul(n),
            };
            let to_ms = |v: i64| match per_ms {
                0 => v.saturating_mul(1000),
                n => v / n,
            };
            let column = batch.column(col);
            let data = column.to_data();
            let values = &data.buffer::<i64>(0)[..data.len()];
            if values.iter().any(|v| *v > limit) {
                let slots = reasons.get_or_insert_with(|| vec![None; batch.num_rows()]);
                for (row, v) in values.iter().enumerate() {
                    if *v > limit && column.is_valid(row) {
                        slots[row].get_or_insert_with(|| {
                            let ahead_ms = to_ms(*v).saturating_sub(wall_ms);
                            format!(
                                "event-time column '{}': {v} is {} ahead of the wall clock, \
                                 more than max_future ({})",
                                self.declared.field(col).name(),
                                show_span_ms(ahead_ms),
                                show_span_ms(bound.as_millis() as i64)
                            )
                        });
                    }
                }
            }
        }
        reasons
            .map(|slots| {
                slots
                    .into_iter()
                    .enumerate()
                    .filter_map(|(row, r)| r.map(|r| (row, r)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Re-labels a checked batch with the declared (non-relaxed) schema.
    fn to_declared(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.declared.clone(),
            batch.columns().to_vec(),
            &options,
        )?)
    }

    fn nonempty_declared(&self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        self.to_declared(batch).map(Some)
    }
}

/// A span of milliseconds in the largest whole unit that reads well.
fn show_span_ms(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms >= size {
            return format!("{:.1} {unit}", ms as f64 / size as f64);
        }
    }
    format!("{ms} ms")
}

/// `schema` with every top-level field nullable (nested fields unchanged).
fn relax(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn build_inner(format: &FileFormat, schema: SchemaRef, batch_size: usize) -> Result<Inner> {
    Ok(match format {
        FileFormat::Json => Inner::Json(
            arrow::json::ReaderBuilder::new(schema)
                .with_batch_size(batch_size)
                .build_decoder()?,
        ),
        FileFormat::Csv { delimiter, .. } => Inner::Csv(Box::new(
            // The header line is skipped by the reader, which knows line numbers.
            arrow::csv::ReaderBuilder::new(schema)
                .with_header(false)
                .with_delimiter(*delimiter)
                .with_batch_size(batch_size)
                .build_decoder(),
        )),
    })
}

/// Feeds each record to `decoder`; `Ok(None)` if one did not yield exactly one record.
fn bulk_into(
    decoder: &mut Inner,
    data: &[u8],
    records: &[(usize, usize)],
) -> Result<Option<Vec<RecordBatch>>, ArrowError> {
    let mut parts = Vec::with_capacity(records.len() / BULK_BATCH + 1);
    for &(start, end) in records {
        if decoder.pending(BULK_BATCH) >= BULK_BATCH {
            parts.extend(decoder.flush()?);
        }
        let before = decoder.pending(BULK_BATCH);
        let line = &data[start..=end];
        let used = decoder.decode(line)?;
        if used != line.len() || decoder.has_partial() || decoder.pending(BULK_BATCH) != before + 1
        {
            return Ok(None);
        }
    }
    parts.extend(decoder.flush()?);
    Ok(Some(parts))
}

enum SingleError {
    Arrow(ArrowError),
    Reason(String),
}

impl From<ArrowError> for SingleError {
    fn from(e: ArrowError) -> Self {
        SingleError::Arrow(e)
    }
}

fn single_into(decoder: &mut Inner, line: &[u8]) -> Result<RecordBatch, SingleError> {
    let used = decoder.decode(line)?;
    if decoder.has_partial() {
        return Err(SingleError::Reason(
            "incomplete JSON record (each record must be one complete object on one line)"
                .to_string(),
        ));
    }
    let batch = decoder.flush()?;
    let rows = batch.as_ref().map_or(0, |b| b.num_rows());
    match (batch, rows, used == line.len()) {
        (Some(batch), 1, true) => Ok(batch),
        (_, 0, _) => Err(SingleError::Reason(match decoder {
            Inner::Json(_) => "no JSON record on the line".to_string(),
            Inner::Csv(_) => {
                "unterminated quoted field (a quoted field may not span lines)".to_string()
            }
        })),
        _ => Err(SingleError::Reason(
            match decoder {
                Inner::Json(_) => {
                    "more than one JSON record on the line (expected exactly one object per line)"
                }
                Inner::Csv(_) => "more than one CSV record on the line (expected exactly one)",
            }
            .to_string(),
        )),
    }
}

/// Decodes one line with a throw-away decoder for `fields` (used to explain CSV errors).
fn decode_with(
    format: &FileFormat,
    fields: Vec<Field>,
    line: &[u8],
) -> Result<RecordBatch, ArrowError> {
    let schema = Arc::new(Schema::new(fields));
    let mut decoder = build_inner(format, schema, 2).map_err(|e| match e {
        Error::Arrow(a) => a,
        other => ArrowError::ExternalError(Box::new(other)),
    })?;
    decoder.decode(line)?;
    decoder
        .flush()?
        .ok_or_else(|| ArrowError::CsvError("Cannot flush part way through record".to_string()))
}

/// The message of an Arrow error without the variant's prefix ("Json error: ...").
pub(crate) fn arrow_reason(e: &ArrowError) -> String {
    match e {
        ArrowError::JsonError(s)
        | ArrowError::CsvError(s)
        | ArrowError::ParseError(s)
        | ArrowError::InvalidArgumentError(s)
        | ArrowError::SchemaError(s)
        | ArrowError::CastError(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON decode error in the words of the schema: a column name where
/// arrow-json says "field", and "invalid JSON record" for syntax errors.
/// Whether a CSV line ends inside a quoted field (`starts_inside`: it
/// began inside one). A quote opens a field only at its start; inside one,
/// `""` is a quote and a single `"` closes it.
fn ends_in_quoted_field(line: &[u8], delimiter: u8, starts_inside: bool) -> bool {
    let (mut inside, mut field_start) = (starts_inside, !starts_inside);
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if inside {
            if b == b'"' {
                if line.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    inside = false;
                }
            }
        } else if b == b'"' && field_start {
            inside = true;
        }
        field_start = !inside && b == delimiter;
        i += 1;
    }
    inside
}

fn json_reason(e: &ArrowError) -> String {
    let msg = arrow_reason(e);
    match msg.strip_prefix("whilst decoding field '") {
        Some(rest) => format!("column '{rest}"),
        None => format!("invalid JSON record: {msg}"),
    }
}

/// Removes arrow-csv's "at line N"/"for line N" (its own counter, not the
/// file's) and the "Row data" echo (the raw line is reported separately).
fn scrub_line_refs(msg: &str) -> String {
    let mut s = match msg.find(". Row data:") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    };
    for pat in [" for line ", " at line "] {
        while let Some(i) = s.find(pat) {
            let digits = s[i + pat.len()..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits == 0 {
                break;
            }
            s.replace_range(i..i + pat.len() + digits, "");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    /// `lines` as the reader lays them out: each followed by `\n`.
    fn layout(lines: &[String]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut data = Vec::new();
        let mut records = Vec::new();
        for l in lines {
            let start = data.len();
            data.extend_from_slice(l.as_bytes());
            records.push((start, data.len()));
            data.push(b'\n');
        }
        (data, records)
    }

    fn ids(batch: &RecordBatch) -> Vec<i64> {
        batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn clean_chunks_take_the_fast_path_in_several_flushes() {
        let n = BULK_BATCH * 2 + 7;
        for (format, line) in [
            (
                FileFormat::Json,
                (|i| format!("{{\"id\":{i},\"v\":\"x\"}}")) as fn(usize) -> String,
            ),
            (
                FileFormat::Csv {
                    has_header: false,
                    delimiter: b',',
                },
                |i| format!("{i},x"),
            ),
        ] {
            let lines: Vec<String> = (0..n).map(line).collect();
            let (data, records) = layout(&lines);
            let mut decoder = ChunkDecoder::new(format.clone(), schema(), None).expect("decoder");
            let batch = decoder
                .decode_bulk(&data, &records)
                .expect("no internal error")
                .expect("fast path");
            assert_eq!(ids(&batch), (0..n as i64).collect::<Vec<_>>(), "{format:?}");
            // The decoder is reused for the next chunk.
            assert!(decoder.bulk.is_some());
            let again = decoder
                .decode(&data[..records[1].1 + 1], &records[..2])
                .expect("decode");
            assert_eq!(again.batch.as_ref().map(ids), Some(vec![0, 1]));
        }
    }

    #[test]
    fn misaligned_records_leave_the_fast_path() {
        // Two objects on one line and one object over two lines: the record
        // count matches the line count, but the lines are wrong.
        let lines: Vec<String> = ["{\"id\":1}{\"id\":2}", "{\"id\":", "3}", "{\"id\":4}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (data, records) = layout(&lines);
        let mut decoder = ChunkDecoder::new(FileFormat::Json, schema(), None).expect("decoder");
        assert!(
            decoder
                .decode_bulk(&data, &records)
                .expect("no internal error")
                .is_none()
        );
        let decoded = decoder.decode(&data, &records).expect("decode");
        assert_eq!(decoded.batch.as_ref().map(ids), Some(vec![4]));
        let bad: Vec<usize> = decoded.bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, [0, 1, 2]);

        // Two objects on one line, no partial record anywhere: caught by the count.
        let lines = vec!["{\"id\":1}{\"id\":2}".to_string(), "{\"id\":4}".to_string()];
        let (data, records) = layout(&lines);
        assert!(
            decoder
                .decode_bulk(&data, &records)
                .expect("no internal error")
                .is_none()
        );
        let decoded = decoder.decode(&data, &records).expect("decode");
        assert_eq!(decoded.batch.as_ref().map(ids), Some(vec![4]));
        assert_eq!(decoded.bad.len(), 1);
    }

    #[test]
    fn scrub_removes_arrow_line_numbers() {
        assert_eq!(
            scrub_line_refs("incorrect number of fields for line 1, expected 3 got 2"),
            "incorrect number of fields, expected 3 got 2"
        );
        assert_eq!(
            scrub_line_refs(
                "Error while parsing value 'x' for column 1 at line 7. Row data: '[x]'"
            ),
            "Error while parsing value 'x' for column 1"
        );
        assert_eq!(scrub_line_refs("at line end"), "at line end");
    }
}
