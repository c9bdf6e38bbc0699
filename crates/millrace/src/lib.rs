//! millrace: a stream processing engine for pipelines where latency is the
//! product. This crate is the command line and the built-in demo pipelines;
//! the engine lives in `millrace-runtime`, sources and sinks in
//! `millrace-connectors`, streaming SQL and the Rust API ([`api`]) in
//! `millrace-sql` over the operators of `millrace-sql-ops`.

pub mod allocator;
pub mod bench;
pub mod demo;
pub mod fuzzing;
pub mod generate;
#[cfg(feature = "kafka")]
pub mod kafka_tools;
#[cfg(feature = "http")]
pub mod monitor;
pub mod progress;
pub mod summary_json;

pub use millrace_connectors as connectors;
pub use millrace_core as core;
pub use millrace_runtime as runtime;
pub use millrace_sql as sql;
pub use millrace_sql::api;
