//! What DataFusion's SQL planner may refer to: our tables and views, the
//! built-in functions, and the window functions.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::view::ViewTable;
use datafusion::common::{Result as DfResult, TableReference, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::builder::LogicalTableSource;
use datafusion::logical_expr::planner::ExprPlanner;
use datafusion::logical_expr::{
    AggregateUDF, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF,
};
use datafusion::optimizer::OptimizerRule;
use datafusion::sql::planner::ContextProvider;

use crate::udf::window_functions;

/// Optimizer rules we leave out: they rewrite into shapes a stream should not
/// take. `single_distinct_aggregation_to_group_by` turns `count(DISTINCT x)`
/// into two aggregates (twice the state, for a speedup that only matters to
/// batch execution). `eliminate_join` turns inner joins whose right columns
/// are unused into semi joins, which the window join does not offer yet.
/// `extract_leaf_expressions` moves struct field accesses out of filters,
/// aggregates and joins into projections below them: a join `ON a.w['start']
/// = b.w['start']` would then compare two anonymous timestamp columns, no
/// longer bounds of windows the join planner can recognize (projections'
/// field accesses are still pushed down, by `push_down_leaf_projections`).
const SKIPPED_RULES: [&str; 3] = [
    "single_distinct_aggregation_to_group_by",
    "eliminate_join",
    "extract_leaf_expressions",
];

pub struct Catalog {
    state: SessionState,
    tables: HashMap<String, Arc<dyn TableSource>>,
    window_fns: HashMap<String, Arc<ScalarUDF>>,
}

impl Catalog {
    pub fn new() -> Self {
        let defaults = SessionStateBuilder::new().with_default_features().build();
        let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = defaults
            .optimizers()
            .iter()
            .filter(|r| !SKIPPED_RULES.contains(&r.name()))
            .cloned()
            .collect();
        let state = SessionStateBuilder::new_from_existing(defaults)
            .with_optimizer_rules(rules)
            .build();
        let window_fns = window_functions()
            .into_iter()
            .map(|f| (f.name().to_string(), f))
            .collect();
        Self {
            state,
            tables: HashMap::new(),
            window_fns,
        }
    }

    pub fn state(&self) -> &SessionState {
        &self.state
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }

    /// A streaming table (source or sink) with this schema.
    pub fn add_table(&mut self, name: &str, schema: SchemaRef) {
        self.tables
            .insert(name.to_string(), Arc::new(LogicalTableSource::new(schema)));
    }

    /// A view: scans of it are replaced by its plan while planning.
    pub fn add_view(&mut self, name: &str, plan: LogicalPlan) {
        let view = ViewTable::new(plan, None);
        self.tables
            .insert(name.to_string(), provider_as_source(Arc::new(view)));
    }

    /// Names of all tables and views, sorted (for "did you mean" messages).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.keys().cloned().collect();
        names.sort();
        names
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

impl ContextProvider for Catalog {
    fn get_table_source(&self, name: TableReference) -> DfResult<Arc<dyn TableSource>> {
        let key = name.table();
        match self.tables.get(key) {
            Some(t) if name.schema().is_none() => Ok(t.clone()),
            _ => {
                let known = self.names();
                let known = if known.is_empty() {
                    "none declared yet".to_string()
                } else {
                    known.join(", ")
                };
                plan_err!(
                    "table '{name}' not found (declare it with CREATE TABLE or CREATE VIEW before use; known: {known})"
                )
            }
        }
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.window_fns
            .get(name)
            .or_else(|| self.state.scalar_functions().get(name))
            .cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.state.scalar_functions().keys().cloned().collect();
        names.extend(self.window_fns.keys().cloned());
        names
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}
