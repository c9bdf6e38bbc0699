//! Apache Kafka: a source that reads a topic's partitions with their
//! offsets in checkpoints, and a sink that writes a topic at least once or
//! exactly once. Built on librdkafka (the `rdkafka` crate).
//!
//! # Source ([`KafkaSource`])
//!
//! * **Partitions are split by number**: instance `i` of `p` reads the
//!   partitions `k` with `k mod p == i`, assigned directly (no consumer
//!   group rebalancing: the checkpoint, not the group, says who reads
//!   what). An instance without partitions declares itself idle.
//! * **The checkpoint is the truth.** A reader's position holds, for each of
//!   its partitions, the next offset to read, the offset to stop at (a
//!   bounded read) and the largest event time read. Offsets are also
//!   committed to the consumer group at each barrier, for lag monitoring
//!   only; a restore never reads them.
//! * **Per-partition watermarks.** An instance's watermark is the least of
//!   its partitions' largest event times (minus the bound), over the
//!   partitions that are not idle: a partition without a message for the
//!   idle timeout stops holding the watermark back until it has one again.
//! * **Vectorized decoding.** A poll gathers up to a batch of messages and
//!   decodes their values at once with the file source's decoder (the same
//!   JSON and CSV rules, `crate::file`), then appends the metadata columns
//!   the table asked for ([`Metadata`]).
//! * **Bad messages** follow the file source's policies ([`OnError`]):
//!   `fail` names topic, partition and offset; `skip` counts; a dead-letter
//!   file gets `{"source","partition","offset","reason","raw"}`.
//! * Reads use `isolation.level = read_committed` unless told otherwise,
//!   so aborted transactions (an exactly-once writer's failed epochs) are
//!   never read.
//!
//! # Sink ([`KafkaSink`])
//!
//! Each row becomes one message: its value the row encoded as JSON, CSV or
//! raw text, its key a column's value (partitioned by key with Kafka's
//! default murmur2 hash) or none.
//!
//! * `at_least_once`: an idempotent producer per instance; a checkpoint
//!   completes only once every row written before its barrier is
//!   acknowledged by the broker.
//! * `exactly_once`: see `commit.rs`. Each epoch's messages are staged in
//!   the checkpoint and produced in one Kafka transaction, with a progress
//!   record naming the epoch, once the checkpoint is durable.

mod block_on;
mod client;
mod commit;
mod metadata;
mod position;
mod reader;
mod sink;
mod source;
pub mod testing;
#[cfg(test)]
pub(crate) mod tests;

pub use client::Connection;
pub use metadata::Metadata;
pub use sink::{Delivery, KafkaSink};
pub use source::{KafkaSource, StartFrom, StopAt};

pub use crate::file::OnError;

/// How message values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// One JSON object per message.
    Json,
    /// One CSV record per message (no header), columns by position.
    Csv { delimiter: u8 },
    /// The value itself, as the table's one text (or binary) column.
    Raw,
}

impl ValueFormat {
    pub fn name(&self) -> &'static str {
        match self {
            ValueFormat::Json => "json",
            ValueFormat::Csv { .. } => "csv",
            ValueFormat::Raw => "raw",
        }
    }
}
