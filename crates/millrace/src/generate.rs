//! `millrace gen`: writes a generator's events to a file or stdout, so other
//! engines (or a file-source pipeline) can be fed exactly the same events.
//!
//! Reads the generator directly (one reader, no pipeline): the output is the
//! deterministic sequence for the seed, in event order.

use std::io::Write;

use arrow::record_batch::RecordBatch;
use millrace_core::{Error, Result, SourceFactory, SourcePoll, strip_entered};

/// Output encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenFormat {
    /// One JSON object per line.
    Json,
    /// Comma-separated with a header line.
    Csv,
}

/// Writes every event of `source` (which must be bounded and unpaced) to
/// `out`; returns the number of rows written.
pub fn write_events(
    source: &dyn SourceFactory,
    format: GenFormat,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut reader = source.create(0, 1)?;
    let mut rows = 0u64;
    let mut csv_header = true;
    let io = |e: std::io::Error| Error::io("<output>", e);
    loop {
        let batch = match reader.poll_batch(8192)? {
            SourcePoll::Batch(b) => strip_entered(&b),
            SourcePoll::Exhausted => break,
            SourcePoll::Pending { .. } => {
                return Err(Error::plan("gen needs an unpaced generator (no emit rate)"));
            }
        };
        rows += batch.num_rows() as u64;
        match format {
            GenFormat::Json => write_json(&batch, out)?,
            GenFormat::Csv => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(csv_header)
                    .build(Vec::new());
                w.write(&batch)?;
                out.write_all(&w.into_inner()).map_err(io)?;
                csv_header = false;
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(rows)
}

fn write_json(batch: &RecordBatch, out: &mut dyn Write) -> Result<()> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    out.write_all(&w.into_inner())
        .map_err(|e| Error::io("<output>", e))
}
