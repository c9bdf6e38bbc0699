//! The millrace dataflow runtime.
//!
//! A pipeline is a graph of sources, operators and sinks, each with a
//! parallelism. Consecutive operators with the same partitioning are fused
//! into one task; tasks talk through bounded channels that carry data and
//! control (`Watermark`, `Barrier`, `Idle`, `End`) in band; pinned worker
//! threads, one per core, run the tasks cooperatively.
