//! The crate's integration tests, one binary: each linked test binary carries
//! all of DataFusion and arrow, so one per file cost minutes of linking and
//! gigabytes of disk on a cold build. Run one module with
//! `cargo test -p millrace --test integration <module>::`.

mod breakdown;
mod chaos;
mod checkpoints;
mod cli;
mod common;
mod fuzz_seeds;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "http")]
mod monitor;
mod runtime;
mod windows;
