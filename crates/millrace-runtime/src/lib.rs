//! The millrace dataflow runtime.
//!
//! A pipeline is a graph of sources, operators and sinks, each with a
//! parallelism ([`graph`]). Consecutive operators with the same partitioning
//! are fused into one task (`plan`); tasks talk through bounded channels
//! (`channel`) that carry data and control (`Watermark`, `Barrier`,
//! `Idle`, `End`) in band; exchanges (`exchange`, `output`) partition
//! between tasks; each task merges its inputs in one place (`gate`: minimum
//! watermark, barrier alignment); pinned worker threads (`worker`), one per
//! core, run the tasks cooperatively; [`metrics`] counts and times it all.

mod alignment;
mod batching;
mod channel;
pub mod checkpoint;
mod coalesce;
mod exchange;
mod gate;
pub mod graph;
pub mod live;
pub mod metrics;
mod output;
mod plan;
mod run;
mod task;
pub mod trace;
mod worker;

pub use batching::BatchPolicy;
pub use channel::{ChannelCapacity, ChannelStats};
pub use coalesce::ExchangeBatchingMode;
pub use exchange::Partitioning;
pub use graph::{DEFAULT_BATCH_SIZE, DEFAULT_TRACE_INTERVAL, Pipeline, PipelineConfig, Stream};
pub use live::{LiveAttempt, LiveRun};
pub use metrics::{LatencySummary, OperatorSummary, RunSummary};
pub use worker::{IdleStrategy, StopHandle};
