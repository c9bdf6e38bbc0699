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

use datafusion::error::DataFusionError;

/// A DataFusion error as an engine error (the message is kept whole).
pub fn df_err(e: DataFusionError) -> millrace_core::Error {
    millrace_core::Error::Other(e.to_string())
}
