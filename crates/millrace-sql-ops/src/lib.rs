//! Streaming operators for SQL plans.
//!
//! The SQL planner (`millrace-sql`) lowers DataFusion logical plans to these
//! operators. They evaluate DataFusion physical expressions and reuse
//! DataFusion's accumulators, so every scalar and aggregate function
//! DataFusion offers works in a streaming query, while windowing, watermarks,
//! lateness and state stay ours.

pub mod eval;
pub mod join;
pub mod topn;
pub mod window;
pub mod window_agg;

mod rescale;
#[cfg(test)]
mod round_trip;
mod snapshot;

use std::collections::HashMap;

use datafusion::error::DataFusionError;

/// Results are emitted in batches of at most this many rows, so one large
/// window or one hot key does not become one huge message in a channel
/// bounded in rows.
pub(crate) const MAX_OUTPUT_ROWS: usize = 64 * 1024;

/// A hash map with a fast, randomly seeded hasher, for operator state.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A DataFusion error as an engine error (the message is kept whole).
pub fn df_err(e: DataFusionError) -> millrace_core::Error {
    millrace_core::Error::Other(e.to_string())
}
