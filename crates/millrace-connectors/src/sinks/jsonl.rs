//! The JSON-lines file sink: each row one JSON object on its own line
//! (arrow-json; a null value is written as `null`, its key kept, so every
//! line names every column).
//!
//! At-least-once ([`SinkFactory::create`]): all instances share one file,
//! truncated when the first instance is created; each batch is encoded off
//! the lock and written with one call, so rows of different instances never
//! interleave within a line, and rows are visible once written.
//!
//! Exactly-once ([`SinkFactory::committer`]): see [`super::jsonl_commit`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::json::WriterBuilder;
use arrow::json::writer::LineDelimited;
use arrow::record_batch::RecordBatch;
use millrace_core::time::unsupported_timestamp;
use millrace_core::{Error, Result, SinkCommitter, SinkFactory, SinkWriter};

use super::JsonLinesCommitter;
use super::lock;

/// Writes every row as one JSON object per line to one file.
#[derive(Clone)]
pub struct JsonLinesSink {
    path: PathBuf,
    /// Opened (and truncated) by the first `create`, then shared.
    file: Arc<Mutex<Option<BufWriter<File>>>>,
    /// Commits epochs through [`JsonLinesCommitter`] when the pipeline
    /// checkpoints (the default); off: rows are visible once written, and
    /// a recovery may write some again.
    exactly_once: bool,
}

impl JsonLinesSink {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesSink {
            path: path.into(),
            file: Arc::new(Mutex::new(None)),
            exactly_once: true,
        }
    }

    /// Writes rows as they come even when the pipeline checkpoints.
    pub fn at_least_once(mut self) -> Self {
        self.exactly_once = false;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Appends `batch` to `out` as JSON lines, one object per row, each line
/// ended by `\n`. Both forms of the sink encode through here, so they write
/// the same bytes for the same rows.
/// A timestamp outside the supported range is refused, naming its column
/// and value: arrow-json would write error text in its place.
pub(crate) fn encode_json_lines(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        if let Some((path, value)) = unsupported_timestamp(column.as_ref()) {
            return Err(Error::Other(format!(
                "column '{}{path}' holds the timestamp {value}, outside those that can be \
                 written (1677-09-21 to 2262-04-11)",
                field.name(),
            )));
        }
    }
    let mut encoder = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(out);
    encoder.write(batch)?;
    encoder.finish()?;
    Ok(())
}

impl SinkFactory for JsonLinesSink {
    fn name(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        format!("jsonl:{name}")
    }

    fn create(&self, _: usize, _: usize, _: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        let mut file = lock(&self.file);
        if file.is_none() {
            let f = File::create(&self.path).map_err(|e| Error::io(&self.path, e))?;
            *file = Some(BufWriter::new(f));
        }
        drop(file);
        Ok(Box::new(self.clone()))
    }

    fn committer(&self) -> Option<Arc<dyn SinkCommitter>> {
        self.exactly_once
            .then(|| Arc::new(JsonLinesCommitter::new(&self.path)) as Arc<dyn SinkCommitter>)
    }
}

impl SinkWriter for JsonLinesSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // Encode without the lock; only the write itself is serialized.
        let mut bytes = Vec::new();
        encode_json_lines(batch, &mut bytes)?;
        let mut file = lock(&self.file);
        let Some(out) = file.as_mut() else {
            return Err(Error::Other(format!(
                "{}: JSON-lines sink written before it was created",
                self.path.display()
            )));
        };
        out.write_all(&bytes).map_err(|e| Error::io(&self.path, e))
    }

    fn finish(&mut self) -> Result<()> {
        match lock(&self.file).as_mut() {
            Some(out) => out.flush().map_err(|e| Error::io(&self.path, e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sinks::tests::batch;

    #[test]
    fn json_lines_writes_one_object_per_row_from_all_instances() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "stale content from an earlier run\n").expect("seed file");
        let sink = JsonLinesSink::new(&path);
        let b1 = batch(&[1, 2], &[Some("a"), None], &[1.5, 2.0]);
        let b2 = batch(&[3], &[Some("q\"uote")], &[-0.25]);
        let mut w0 = sink.create(0, 2, b1.schema()).expect("create 0");
        let mut w1 = sink.create(1, 2, b1.schema()).expect("create 1");
        w0.write(&b1).expect("write");
        w1.write(&b2).expect("write");
        w0.finish().expect("finish");
        w1.finish().expect("finish");
        let text = std::fs::read_to_string(&path).expect("read output");
        let expected = [
            r#"{"id":1,"name":"a","price":1.5}"#,
            r#"{"id":2,"name":null,"price":2.0}"#,
            r#"{"id":3,"name":"q\"uote","price":-0.25}"#,
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        assert!(text.ends_with('\n'));
    }

    /// arrow-json writes error text in place of a timestamp it cannot format;
    /// the sink refuses the batch instead, naming the column (a struct's
    /// field too) and the value.
    #[test]
    fn an_unsupported_timestamp_is_refused_never_written_as_text() {
        use arrow::array::{Array, ArrayRef, StructArray, TimestampMillisecondArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
        let start: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            0,
            9_000_000_000_000_000_000,
        ]));
        let window = StructArray::from(vec![(
            Arc::new(Field::new("start", ms.clone(), true)),
            start.clone(),
        )]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", ms, true),
            Field::new("window", window.data_type().clone(), true),
        ]));
        let ok = RecordBatch::try_new(
            schema.clone(),
            vec![start.slice(0, 1), Arc::new(window.slice(0, 1))],
        )
        .unwrap();
        let mut out = Vec::new();
        encode_json_lines(&ok, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ts\":\"1970-01-01T00:00:00\",\"window\":{\"start\":\"1970-01-01T00:00:00\"}}\n"
        );
        let bad_window = RecordBatch::try_new(
            schema.clone(),
            vec![start.slice(0, 1).clone(), Arc::new(window.slice(1, 1))],
        );
        let err = encode_json_lines(&bad_window.unwrap(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'window.start'") && err.contains("9000000000000000000"),
            "{err}"
        );
        let bad_ts = RecordBatch::try_new(
            schema,
            vec![start.slice(1, 1), Arc::new(window.slice(0, 1))],
        )
        .unwrap();
        let err = encode_json_lines(&bad_ts, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'ts'") && !err.contains("ERROR"), "{err}");
    }

    #[test]
    fn json_lines_reports_the_path_when_it_cannot_create_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing-dir").join("out.jsonl");
        let sink = JsonLinesSink::new(&path);
        let schema = batch(&[], &[], &[]).schema();
        match sink.create(0, 1, schema) {
            Err(Error::Io { path: p, .. }) => assert_eq!(p, path),
            Err(other) => panic!("expected Io error, got {other}"),
            Ok(_) => panic!("expected Io error, got a writer"),
        }
    }

    /// A null is written as `null` (nested too), so every line names every
    /// column and a reader cannot mistake a null for a missing column.
    #[test]
    fn nulls_are_written_as_null() {
        use arrow::array::{Array, ArrayRef, Int64Array, StringArray, StructArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let inner = Arc::new(Field::new("n", DataType::Int64, true));
        let nested = StructArray::from(vec![(
            inner,
            Arc::new(Int64Array::from(vec![None, Some(2)])) as ArrayRef,
        )]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("s", nested.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int64Array::from(vec![None, Some(7)])),
                Arc::new(nested),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        encode_json_lines(&batch, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"k\":\"a\",\"v\":null,\"s\":{\"n\":null}}\n{\"k\":null,\"v\":7,\"s\":{\"n\":2}}\n"
        );
    }
}
