//! Logical expressions to physical ones, with the streaming checks.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};

use crate::error::{SqlError, SqlResult};

/// Lowers expressions for operators (one per planner: the execution
/// properties are shared by every expression of a pipeline).
pub struct Lowering {
    props: ExecutionProps,
    ctx: PhysicalPlanningContext,
}

impl Lowering {
    pub fn new() -> Self {
        Self {
            props: ExecutionProps::new(),
            ctx: PhysicalPlanningContext::default(),
        }
    }

    pub fn props(&self) -> &ExecutionProps {
        &self.props
    }

    pub fn ctx(&self) -> &PhysicalPlanningContext {
        &self.ctx
    }

    /// A physical expression for a row-by-row operator. `hop` and `session`
    /// cannot be evaluated per row (`tumble` can: one window per row).
    pub fn expr(&self, e: &Expr, schema: &DFSchema) -> SqlResult<Arc<dyn PhysicalExpr>> {
        reject_multi_window_calls(e)?;
        Ok(create_physical_expr(e, schema, &self.props, &self.ctx)?)
    }
}

impl Default for Lowering {
    fn default() -> Self {
        Self::new()
    }
}

fn reject_multi_window_calls(e: &Expr) -> SqlResult<()> {
    let mut bad = None;
    e.apply(|node| {
        if let Expr::ScalarFunction(f) = node
            && matches!(f.func.name(), "hop" | "session")
        {
            bad = Some(f.func.name().to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match bad {
        Some(name) => Err(SqlError::new(format!(
            "{name}() can only be used in GROUP BY (or a join condition): it gives each row several windows"
        ))),
        None => Ok(()),
    }
}
