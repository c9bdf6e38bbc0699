//! Projections planned one over another become one operator.
//!
//! DataFusion's plan and this planner's own rewrites stack projections: the
//! window bounds taken from a window column, renames for a subquery's alias,
//! the order of a join's columns, the sink's casts. A window's result may
//! go through several (as in q5), each paying its per-call cost on the
//! cold path of a one-row result. So a planned projection stays pending
//! until something other than a projection reads it; a projection over a
//! pending one is composed with it, reading the first one's input directly.
//!
//! Composing substitutes the inner expressions for the outer's column
//! references. It is done only when it cannot change a result or add work:
//! every inner expression already has its declared type (the projection
//! operator casts to the declared type, and a substituted expression would
//! skip that cast), and an inner expression that computes something (not a
//! column) is read at most once.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysColumn;
use millrace_core::OperatorFactory;
use millrace_runtime::Stream;
use millrace_sql_ops::eval::ExprProjectFactory;

use crate::error::SqlResult;

/// A planned node's runtime stream: built, or a projection not yet built.
#[derive(Clone)]
pub enum PlannedStream {
    Ready(Stream),
    Projection(Rc<Pending>),
}

/// A projection of `input`, built into the dataflow when first read.
pub struct Pending {
    input: Stream,
    factory: Arc<ExprProjectFactory>,
    /// Once built, every reader shares the one operator.
    built: RefCell<Option<Stream>>,
}

impl From<Stream> for PlannedStream {
    fn from(stream: Stream) -> Self {
        PlannedStream::Ready(stream)
    }
}

impl PlannedStream {
    /// The runtime stream, building a pending projection into the dataflow.
    pub fn get(&self) -> Stream {
        match self {
            PlannedStream::Ready(stream) => stream.clone(),
            PlannedStream::Projection(p) => p
                .built
                .borrow_mut()
                .get_or_insert_with(|| p.input.apply(p.factory.clone()))
                .clone(),
        }
    }

    /// User schema of the stream.
    pub fn schema(&self) -> SchemaRef {
        match self {
            PlannedStream::Ready(stream) => stream.schema(),
            PlannedStream::Projection(p) => p.factory.output_schema(),
        }
    }

    /// `exprs` (over this stream's columns) as a projection with output
    /// schema `schema`, composed with this stream when it is a projection
    /// not yet built and composing is safe (module doc).
    pub fn project(
        &self,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> SqlResult<PlannedStream> {
        if let PlannedStream::Projection(inner) = self
            && inner.built.borrow().is_none()
            && let Some(composed) = compose(&exprs, inner)
        {
            return pending(inner.input.clone(), composed, schema);
        }
        pending(self.get(), exprs, schema)
    }
}

fn pending(
    input: Stream,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
) -> SqlResult<PlannedStream> {
    let factory = Arc::new(ExprProjectFactory::new(schema, exprs, None)?);
    Ok(PlannedStream::Projection(Rc::new(Pending {
        input,
        factory,
        built: RefCell::new(None),
    })))
}

/// `outer` with `inner`'s expressions in place of its column references,
/// when that is safe (module doc); `None` otherwise.
fn compose(outer: &[Arc<dyn PhysicalExpr>], inner: &Pending) -> Option<Vec<Arc<dyn PhysicalExpr>>> {
    let input: Arc<Schema> = inner.input.schema();
    let inner_exprs = inner.factory.exprs();
    let declared = inner.factory.output_schema();
    for (expr, field) in inner_exprs.iter().zip(declared.fields()) {
        if expr.data_type(&input).ok()? != *field.data_type() {
            return None;
        }
    }
    let mut reads = vec![0usize; inner_exprs.len()];
    let mut out_of_range = false;
    for expr in outer {
        expr.apply(|e| {
            if let Some(c) = e.downcast_ref::<PhysColumn>() {
                match reads.get_mut(c.index()) {
                    Some(n) => *n += 1,
                    None => out_of_range = true,
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .ok()?;
    }
    if out_of_range {
        return None;
    }
    let computed_read_twice = inner_exprs
        .iter()
        .zip(&reads)
        .any(|(e, &n)| n > 1 && e.downcast_ref::<PhysColumn>().is_none());
    if computed_read_twice {
        return None;
    }
    outer
        .iter()
        .map(|expr| {
            expr.clone()
                .transform(|e| match e.downcast_ref::<PhysColumn>() {
                    // In range: checked above.
                    Some(c) => Ok(Transformed::yes(inner_exprs[c.index()].clone())),
                    None => Ok(Transformed::no(e)),
                })
                .map(|t| t.data)
                .ok()
        })
        .collect()
}
