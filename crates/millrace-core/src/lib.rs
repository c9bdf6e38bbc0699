//! Shared vocabulary of millrace: the in-band [`Message`]s that travel every
//! channel, the reserved *entered* column that carries each row's ingest time
//! for honest latency, event-time helpers, the error type, the traits by
//! which sources, operators and sinks plug into the runtime, and the key
//! groups that place keyed rows and keyed state on instances.
//!
//! Nothing here knows about threads or graphs; the runtime builds on it.

pub mod batch;
pub mod error;
pub mod key_groups;
pub mod message;
pub mod operator;
pub mod sink;
pub mod source;
pub mod state;
pub mod time;

pub use arrow;
pub use batch::{
    ENTERED_COLUMN, attach_entered, attach_entered_now, batch_bytes, entered_column,
    schema_with_entered, schema_without_entered, strip_entered,
};
pub use error::{Error, Result};
pub use message::{BarrierId, Message, Watermark};
pub use operator::{Emitter, Operator, OperatorFactory, StateSize};
pub use sink::{CollectSink, SinkCommitter, SinkFactory, SinkWriter};
pub use source::{EventTime, SourceFactory, SourcePoll, SourceReader, SourceStats};
pub use state::{Epoch, OperatorId, PlanFingerprint, Snapshot};
