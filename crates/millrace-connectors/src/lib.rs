//! Sources and sinks that ship with millrace.
//!
//! * Generators: [`nexmark`] (the standard auction benchmark) and [`iot`]
//!   (device telemetry with bounded disorder).
//! * Files: newline-delimited JSON and CSV with a declared schema and an
//!   error policy for bad lines ([`file`]).
//! * [`kafka`] (feature `kafka`, on by default): topics read by partition
//!   with offsets in checkpoints, and written at least once or exactly once
//!   (transactions bound to checkpoints).
//! * Sinks: console table, JSON-lines file (at-least-once, or exactly-once
//!   with checkpoints), discard ([`sinks`]).
//! * [`proctime`]: any source with a processing-time column.

mod dead_letter;
pub mod file;
pub mod iot;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod nexmark;
pub mod proctime;
#[cfg(test)]
mod resume_check;
mod rng;
pub mod sinks;
