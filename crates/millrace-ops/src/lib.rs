//! Built-in operators: vectorized expressions (filter, project, computed
//! columns) and keyed event-time windows.

pub mod expr;
pub mod map;
pub mod window;

pub use expr::{BinaryOp, Expr, Literal, col, lit, lit_null};
pub use map::{FilterFactory, ProjectFactory};
pub use window::{Agg, AggFunc, LatePolicy, WindowFactory, WindowKind, WindowSpec};
