//! Sinks that ship with millrace: a console table, a JSON-lines file, and a
//! discard sink for benchmarks.
//!
//! * [`ConsoleSink`] prints one aligned table as rows come: the header
//!   once, column widths set by the header and the first batch (a wider
//!   value later widens its own line only). It stops after `max_rows` rows
//!   in total and closes the table when the run ends, with a line that says
//!   how many rows were not shown: a human reading the console always knows
//!   the output was cut.
//! * [`JsonLinesSink`] writes each row as one JSON object per line
//!   ([`jsonl`]); its exactly-once form, [`JsonLinesCommitter`], stages each
//!   epoch and appends it to the file only once its checkpoint is durable
//!   ([`jsonl_commit`]).
//! * [`DiscardSink`] drops everything and counts rows across instances.

pub mod jsonl;
pub mod jsonl_commit;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use millrace_core::{Error, Result, SinkFactory, SinkWriter};

pub use jsonl::JsonLinesSink;
pub use jsonl_commit::JsonLinesCommitter;

/// Locks `m`, recovering the data if another thread panicked while holding it:
/// a sink's buffered output is still worth writing.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Default number of rows the console sink prints.
pub const DEFAULT_CONSOLE_ROWS: usize = 50;

/// Where console output goes and how much has gone there.
struct ConsoleState {
    shown: usize,
    total: u64,
    footer_written: bool,
    /// Each column's width, once the header is out.
    widths: Option<Vec<usize>>,
}

/// Prints batches as aligned tables, at most `max_rows` rows in total.
#[derive(Clone)]
pub struct ConsoleSink {
    out: Arc<Mutex<dyn Write + Send>>,
    /// Name used in I/O errors.
    label: &'static str,
    max_rows: usize,
    state: Arc<Mutex<ConsoleState>>,
}

impl Default for ConsoleSink {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleSink {
    /// Writes to standard output.
    pub fn new() -> Self {
        Self::with_out(Arc::new(Mutex::new(std::io::stdout())), "<stdout>")
    }

    /// Writes to `out` (tests capture output this way).
    pub fn to_writer(out: Arc<Mutex<dyn Write + Send>>) -> Self {
        Self::with_out(out, "<console>")
    }

    fn with_out(out: Arc<Mutex<dyn Write + Send>>, label: &'static str) -> Self {
        ConsoleSink {
            out,
            label,
            max_rows: DEFAULT_CONSOLE_ROWS,
            state: Arc::new(Mutex::new(ConsoleState {
                shown: 0,
                total: 0,
                footer_written: false,
                widths: None,
            })),
        }
    }

    /// Prints at most `n` rows in total (default 50).
    pub fn with_max_rows(mut self, n: usize) -> Self {
        self.max_rows = n;
        self
    }

    fn emit(&self, text: &str) -> Result<()> {
        let mut out = lock(&self.out);
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| Error::io(self.label, e))
    }
}

impl SinkFactory for ConsoleSink {
    fn name(&self) -> String {
        "console".into()
    }

    fn create(&self, _: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(self.clone()))
    }

    fn max_parallelism(&self) -> Option<usize> {
        // One table stream: interleaved tables from several writers are unreadable.
        Some(1)
    }
}

impl SinkWriter for ConsoleSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut state = lock(&self.state);
        state.total += batch.num_rows() as u64;
        let room = self.max_rows.saturating_sub(state.shown);
        if room == 0 {
            return Ok(());
        }
        let rows = room.min(batch.num_rows());
        let cells = cells(&batch.slice(0, rows))?;
        let mut text = String::new();
        let widths = match &state.widths {
            Some(widths) => widths.clone(),
            None => {
                let names: Vec<String> = (batch.schema().fields().iter())
                    .map(|f| f.name().clone())
                    .collect();
                let widths: Vec<usize> = (0..names.len())
                    .map(|c| {
                        let cells = cells.iter().map(|row| row[c].chars().count());
                        cells.fold(names[c].chars().count(), usize::max)
                    })
                    .collect();
                text.push_str(&border(&widths));
                text.push_str(&line(&names, &widths));
                text.push_str(&border(&widths));
                state.widths = Some(widths.clone());
                widths
            }
        };
        for row in &cells {
            text.push_str(&line(row, &widths));
        }
        state.shown += rows;
        self.emit(&text)
    }

    fn finish(&mut self) -> Result<()> {
        let mut state = lock(&self.state);
        if state.footer_written {
            return Ok(());
        }
        state.footer_written = true;
        let mut text = state.widths.as_deref().map(border).unwrap_or_default();
        let hidden = state.total - state.shown as u64;
        if hidden > 0 {
            let total = state.total;
            text.push_str(&format!("… {hidden} more rows not shown ({total} total)\n"));
        }
        drop(state);
        if text.is_empty() {
            return Ok(());
        }
        self.emit(&text)
    }
}

/// Each row of `batch` as text, cell by cell (a null as nothing, as
/// arrow's tables show it).
fn cells(batch: &RecordBatch) -> Result<Vec<Vec<String>>> {
    let options = FormatOptions::default();
    let formatters = (batch.columns().iter())
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect())
        .collect())
}

/// `+----+-------+`: a table border for columns of `widths`.
fn border(widths: &[usize]) -> String {
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    format!("+{}+\n", dashes.join("+"))
}

/// `| 1  | apple |`: one row, each cell padded to its column's width.
fn line(cells: &[String], widths: &[usize]) -> String {
    let padded: Vec<String> = (cells.iter().zip(widths))
        .map(|(cell, w)| format!(" {cell:<w$} "))
        .collect();
    format!("|{}|\n", padded.join("|"))
}

/// Drops every batch and counts its rows; for benchmarks.
#[derive(Clone, Default)]
pub struct DiscardSink {
    rows: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

impl DiscardSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows received by all instances so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Batches received by all instances so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

impl SinkFactory for DiscardSink {
    fn name(&self) -> String {
        "discard".into()
    }

    fn create(&self, _: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter for DiscardSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        // Relaxed: the counts are read after the pipeline has joined its threads.
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    pub(super) fn batch(ids: &[i64], names: &[Option<&str>], prices: &[f64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
                Arc::new(Float64Array::from(prices.to_vec())),
            ],
        )
        .expect("valid batch")
    }

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).expect("utf-8 output")
        }
    }

    fn console(max_rows: Option<usize>) -> (ConsoleSink, Capture) {
        let capture = Capture::default();
        let out: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(capture.clone()));
        let sink = ConsoleSink::to_writer(out);
        let sink = match max_rows {
            Some(n) => sink.with_max_rows(n),
            None => sink,
        };
        (sink, capture)
    }

    #[test]
    fn console_prints_an_aligned_table() {
        let (sink, capture) = console(None);
        assert_eq!(sink.max_parallelism(), Some(1));
        let b = batch(&[1, 22], &[Some("apple"), None], &[1.5, 10.25]);
        let mut w = sink.create(0, 1, b.schema()).expect("create");
        w.write(&b).expect("write");
        w.finish().expect("finish");
        let expected = "\
+----+-------+-------+
| id | name  | price |
+----+-------+-------+
| 1  | apple | 1.5   |
| 22 |       | 10.25 |
+----+-------+-------+
";
        assert_eq!(capture.text(), expected);
    }

    #[test]
    fn console_stops_at_max_rows_and_says_how_many_were_hidden() {
        let (sink, capture) = console(Some(3));
        let b1 = batch(&[1, 2], &[Some("a"), Some("b")], &[1.0, 2.0]);
        let b2 = batch(
            &[3, 4, 5],
            &[Some("c"), Some("d"), Some("e")],
            &[3.0, 4.0, 5.0],
        );
        let b3 = batch(&[6], &[Some("f")], &[6.0]);
        let mut w = sink.create(0, 1, b1.schema()).expect("create");
        for b in [&b1, &b2, &b3] {
            w.write(b).expect("write");
        }
        w.finish().expect("finish");
        let expected = "\
+----+------+-------+
| id | name | price |
+----+------+-------+
| 1  | a    | 1.0   |
| 2  | b    | 2.0   |
| 3  | c    | 3.0   |
+----+------+-------+
… 3 more rows not shown (6 total)
";
        assert_eq!(capture.text(), expected);
    }

    /// One table however many batches: the header once, widths from the
    /// first batch; a wider value later widens its own line only.
    #[test]
    fn console_prints_one_table_across_batches() {
        let (sink, capture) = console(None);
        let b1 = batch(&[1], &[Some("ab")], &[1.5]);
        let b2 = batch(&[22, 3], &[None, Some("wider")], &[2.0, 3.0]);
        let mut w = sink.create(0, 1, b1.schema()).expect("create");
        w.write(&b1).expect("write");
        w.write(&b2).expect("write");
        w.finish().expect("finish");
        let expected = "\
+----+------+-------+
| id | name | price |
+----+------+-------+
| 1  | ab   | 1.5   |
| 22 |      | 2.0   |
| 3  | wider | 3.0   |
+----+------+-------+
";
        assert_eq!(capture.text(), expected);
    }

    #[test]
    fn console_without_cutoff_prints_no_footer() {
        let (sink, capture) = console(Some(2));
        let b = batch(&[1, 2], &[Some("a"), Some("b")], &[1.0, 2.0]);
        let mut w = sink.create(0, 1, b.schema()).expect("create");
        w.write(&b).expect("write");
        w.finish().expect("finish");
        assert!(!capture.text().contains("not shown"), "{}", capture.text());
        assert_eq!(capture.text().lines().count(), 6);
    }

    #[test]
    fn discard_counts_rows_across_instances() {
        let sink = DiscardSink::new();
        let b = batch(&[1, 2, 3], &[None, None, None], &[0.0, 0.0, 0.0]);
        let mut w0 = sink.create(0, 2, b.schema()).expect("create");
        let mut w1 = sink.create(1, 2, b.schema()).expect("create");
        w0.write(&b).expect("write");
        w1.write(&b.slice(0, 1)).expect("write");
        w1.write(&b).expect("write");
        w0.finish().expect("finish");
        assert_eq!(sink.rows(), 7);
        assert_eq!(sink.batches(), 3);
    }
}
