//! The dead-letter file of a source: one JSON object per bad record.
//!
//! Every instance of a source shares one writer, opened (in append mode, so
//! earlier runs' records are kept) on first use. Each record is written as one
//! whole line under the lock, so lines from different instances never interleave.
//!
//! Append mode is also what a restore needs: a reader moved back to a
//! checkpointed position reads again the lines after it, and the bad ones
//! among them were already written before the failure. Dead letters are
//! therefore at least once (a restore may repeat the records written after
//! its checkpoint, never lose one); the file is not transactional, and
//! truncating it back to the checkpoint would need its length in the
//! position of every instance that shares it.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use millrace_core::{Error, Result};

/// A bad record on its way to the dead-letter file.
pub(crate) struct DeadRecord<'a> {
    /// The input: a file's path, a Kafka topic.
    pub source: &'a str,
    pub place: Place,
    pub reason: &'a str,
    pub raw: &'a [u8],
}

/// Where in its input a bad record was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Place {
    /// A file's 1-based physical line.
    Line(u64),
    /// A Kafka message.
    Message { partition: i32, offset: i64 },
}

pub(crate) struct DeadLetter {
    path: PathBuf,
    writer: Mutex<Option<BufWriter<File>>>,
}

impl DeadLetter {
    pub(crate) fn new(path: PathBuf) -> Self {
        DeadLetter {
            path,
            writer: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<BufWriter<File>>> {
        // A panic elsewhere while holding the lock leaves at worst a partly
        // buffered line; losing the whole dead-letter output would be worse.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `records` and flushes, so the file is complete whenever a
    /// poll returns (a crash later cannot lose records already counted).
    pub(crate) fn write_all(&self, records: &[DeadRecord<'_>]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut guard = self.lock();
        let writer = match guard.as_mut() {
            Some(w) => w,
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| Error::io(&self.path, e))?;
                guard.insert(BufWriter::new(file))
            }
        };
        let mut line = String::new();
        for r in records {
            line.clear();
            encode(r, &mut line);
            writer
                .write_all(line.as_bytes())
                .map_err(|e| Error::io(&self.path, e))?;
        }
        writer.flush().map_err(|e| Error::io(&self.path, e))
    }

    pub(crate) fn flush(&self) -> Result<()> {
        match self.lock().as_mut() {
            Some(w) => w.flush().map_err(|e| Error::io(&self.path, e)),
            None => Ok(()),
        }
    }
}

/// `{"source":…,"line":N,"reason":…,"raw":…}` (for a Kafka message
/// `"partition":P,"offset":O` in place of the line) plus a newline, keys in
/// that order (a reader scanning the file by eye wants where before what).
pub(crate) fn encode(r: &DeadRecord<'_>, out: &mut String) {
    let text = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    out.push_str("{\"source\":");
    out.push_str(&text(r.source));
    match r.place {
        Place::Line(line) => {
            out.push_str(",\"line\":");
            out.push_str(&line.to_string());
        }
        Place::Message { partition, offset } => {
            out.push_str(",\"partition\":");
            out.push_str(&partition.to_string());
            out.push_str(",\"offset\":");
            out.push_str(&offset.to_string());
        }
    }
    out.push_str(",\"reason\":");
    out.push_str(&text(r.reason));
    out.push_str(",\"raw\":");
    out.push_str(&text(&String::from_utf8_lossy(r.raw)));
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_one_json_object_with_escapes() {
        let mut out = String::new();
        encode(
            &DeadRecord {
                source: "/in/a.json",
                place: Place::Line(7),
                reason: "bad \"quote\"",
                raw: b"{\"x\":\t\xff}",
            },
            &mut out,
        );
        assert_eq!(
            out,
            "{\"source\":\"/in/a.json\",\"line\":7,\"reason\":\"bad \\\"quote\\\"\",\"raw\":\"{\\\"x\\\":\\t\u{fffd}}\"}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(out.trim_end()).expect("valid JSON");
        assert_eq!(parsed["line"], 7);

        out.clear();
        encode(
            &DeadRecord {
                source: "orders",
                place: Place::Message {
                    partition: 3,
                    offset: 41,
                },
                reason: "r",
                raw: b"x",
            },
            &mut out,
        );
        assert_eq!(
            out,
            "{\"source\":\"orders\",\"partition\":3,\"offset\":41,\"reason\":\"r\",\"raw\":\"x\"}\n"
        );
    }
}
