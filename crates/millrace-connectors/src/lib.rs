//! Sources and sinks that ship with millrace.
//!
//! * Generators: [`nexmark`] (the standard auction benchmark) and [`iot`]
//!   (device telemetry with bounded disorder).
//! * Files: newline-delimited JSON and CSV with a declared schema and an
//!   error policy for bad lines ([`file`]).
//! * Sinks: console table, JSON-lines file (at-least-once, or exactly-once
//!   with checkpoints), discard ([`sinks`]).
//! * [`proctime`]: any source with a processing-time column.

pub mod file;
pub mod iot;
pub mod nexmark;
pub mod proctime;
#[cfg(test)]
mod resume_check;
mod rng;
pub mod sinks;
