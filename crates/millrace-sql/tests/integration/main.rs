//! The crate's integration tests, one binary: each linked test binary carries
//! all of DataFusion and arrow, so one per file cost minutes of linking and
//! gigabytes of disk on a cold build. Run one module with
//! `cargo test -p millrace-sql --test integration <module>::`.

mod api;
mod common;
mod errors;
mod explain;
mod flink;
mod iot;
mod late_rows;
mod nexmark;
mod plan_identity;
mod semantics;
mod window_joins;
