//! The messages every channel carries, in order.
//!
//! Data and control travel the same bounded channels so their relative order is
//! exact: a watermark never overtakes the rows it is about, and a barrier cuts
//! the stream at one precise point (Chandy–Lamport, as in Flink).

use arrow::record_batch::RecordBatch;

/// Identifies one checkpoint barrier; barriers are numbered from 1 upward.
pub type BarrierId = u64;

/// An event-time watermark: no row with event time `< time_ms` will follow on
/// this stream. A window `[start, end)` is complete once `time_ms >= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// Event time in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// When the input that advanced this watermark entered the engine
    /// (nanoseconds on [`crate::time::now_ns`]'s clock). Results that the
    /// watermark makes final inherit this as their entered time, so their
    /// latency counts from the event that closed them.
    pub entered_ns: i64,
}

#[derive(Debug, Clone)]
pub enum Message {
    Data(RecordBatch),
    Watermark(Watermark),
    /// Checkpoint barrier: everything before it belongs to checkpoint `id`.
    Barrier(BarrierId),
    /// The sender has no data for now (declared idle timeout passed). The
    /// receiver leaves this input out of its minimum watermark until the input
    /// sends a watermark or data again.
    Idle,
    /// The sender will send nothing more.
    End,
}

impl Message {
    /// Rows carried (0 for control messages).
    pub fn rows(&self) -> usize {
        match self {
            Message::Data(b) => b.num_rows(),
            _ => 0,
        }
    }

    /// Bytes of Arrow buffers carried (0 for control messages).
    pub fn bytes(&self) -> usize {
        match self {
            Message::Data(b) => crate::batch::batch_bytes(b),
            _ => 0,
        }
    }
}
