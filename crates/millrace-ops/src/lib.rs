//! Built-in operators: vectorized expressions (filter, project, computed
//! columns) and keyed event-time windows.
//!
//! * [`expr`]: the expression language ([`col`], [`lit`], operators), typed
//!   against a schema and evaluated a batch at a time with Arrow kernels.
//! * [`map`]: stateless operators built on it ([`FilterFactory`],
//!   [`ProjectFactory`]).
//! * [`window`]: tumbling and hopping keyed aggregates over event time
//!   ([`WindowFactory`]), with late-row accounting.
//!
//! Every factory checks names and types when it is built, so a bad pipeline
//! fails before it runs; at run time user data can make an operator return an
//! error (overflow, division by zero, null event time) but never panic.

pub mod expr;
pub mod map;
pub mod window;

pub use expr::{BinaryOp, Expr, Literal, col, lit, lit_null};
pub use map::{FilterFactory, ProjectFactory};
pub use window::{Agg, AggFunc, LatePolicy, WindowFactory, WindowKind, WindowSpec};
