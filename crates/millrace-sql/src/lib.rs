//! Streaming SQL for millrace.
//!
//! A pipeline file declares tables (sources and sinks), views and
//! `INSERT INTO sink SELECT …` statements. DataFusion parses, plans and
//! optimizes each query; [`planner`] maps the optimized logical plan onto a
//! millrace dataflow, with windows, joins and top-N as streaming operators
//! from `millrace-sql-ops`. All INSERTs of one file run as one pipeline.
//!
//! ```no_run
//! let sql = "
//!   CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '100000');
//!   CREATE TABLE out WITH (connector = 'console');
//!   INSERT INTO out SELECT auction, price FROM bid WHERE auction % 123 = 0;";
//! let job = millrace_sql::SqlPipeline::plan(sql).unwrap();
//! println!("{}", job.explain().unwrap());
//! job.run().unwrap();
//! ```

pub mod api;
pub mod catalog;
pub mod error;
mod flink;
pub mod interval;
pub mod planner;
pub mod script;
pub mod settings;
pub mod tables;
pub mod udf;

pub(crate) use datafusion::sql::sqlparser;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use datafusion::common::DFSchema;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column as PhysColumn};
use datafusion::sql::planner::SqlToRel;
use datafusion::sql::sqlparser::ast::{Query, Statement};
use millrace_core::SinkFactory;
use millrace_runtime::{Pipeline, RunSummary, StopHandle};

use crate::catalog::Catalog;
pub use crate::error::{SqlError, SqlResult};
use crate::planner::StreamPlanner;
use crate::script::{ScriptStatement, parse_script};
pub use crate::settings::HttpSetting;
use crate::settings::Settings;
use crate::tables::Table;

/// A DataFusion error as one line a user can read (no backtrace, no
/// internal wrapping).
pub fn plan_message(e: &DataFusionError) -> String {
    e.strip_backtrace()
}

/// How to plan a file beyond what it says.
#[derive(Default, Clone)]
pub struct PlanOptions {
    /// `(name, value)` pairs applied after the file's own `SET`s; a name
    /// `table.option` instead replaces that option of a table's `WITH (...)`
    /// (e.g. `bid.events` = `100000`).
    pub overrides: Vec<(String, String)>,
    /// Sinks that replace the named tables' connectors (tests collect output
    /// this way).
    pub sinks: HashMap<String, Arc<dyn SinkFactory>>,
    /// Where checkpoints go when the file sets no `checkpoint_dir`; without
    /// either, `.millrace/checkpoints` in the working directory.
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// Where a checkpointing run starts from (the latest checkpoint unless
    /// told otherwise).
    pub start_from: Option<millrace_runtime::checkpoint::StartFrom>,
    /// Told which checkpoint the run continues, before it starts.
    pub announce: Option<millrace_runtime::checkpoint::Announce>,
}

/// `(table, option, value)`.
type TableOverride = (String, String, String);
/// `(setting, value)`.
type SettingOverride = (String, String);

impl PlanOptions {
    fn split_overrides(&self) -> SqlResult<(Vec<SettingOverride>, Vec<TableOverride>)> {
        let mut settings = Vec::new();
        let mut tables = Vec::new();
        for (name, value) in &self.overrides {
            match name.split_once('.') {
                // `alert.<name>` is a setting, not a table's option.
                Some(("alert", _)) => settings.push((name.clone(), value.clone())),
                Some((table, key)) if !table.is_empty() && !key.is_empty() => {
                    tables.push((table.to_lowercase(), key.to_lowercase(), value.clone()))
                }
                Some(_) => {
                    return Err(SqlError::new(format!(
                        "override '{name}': expected table.option"
                    )));
                }
                None => settings.push((name.clone(), value.clone())),
            }
        }
        Ok((settings, tables))
    }
}

/// One `INSERT INTO`, planned and optimized by DataFusion.
struct Insert {
    line: u64,
    sink: String,
    plan: LogicalPlan,
}

/// A pipeline file, planned onto a dataflow and ready to run.
pub struct SqlPipeline {
    pipeline: Pipeline,
    tables: HashMap<String, Table>,
    /// Tables in the order they were declared (for explain).
    table_order: Vec<String>,
    /// Tables some query reads.
    scanned: Vec<String>,
    inserts: Vec<(u64, String)>,
    http: Option<HttpSetting>,
    alerts: Vec<(String, String)>,
    alert_webhook: Option<String>,
}

impl SqlPipeline {
    /// Plans a pipeline file with the settings it declares.
    pub fn plan(sql: &str) -> SqlResult<Self> {
        Self::plan_with(sql, &PlanOptions::default())
    }

    /// Plans a pipeline file with overrides (see [`PlanOptions`]).
    ///
    /// A panic inside planning (a bug, ours or a library's) is returned as an
    /// error rather than taking the process down with the user's SQL.
    pub fn plan_with(sql: &str, options: &PlanOptions) -> SqlResult<Self> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::plan_inner(sql, options)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(SqlError::new(format!(
                "internal error while planning (please report it with the SQL): {what}"
            )))
        })
    }

    fn plan_inner(sql: &str, options: &PlanOptions) -> SqlResult<Self> {
        let (setting_overrides, table_overrides) = options.split_overrides()?;
        let statements = parse_script(sql)?;
        let mut catalog = Catalog::new();
        let mut tables: HashMap<String, Table> = HashMap::new();
        let mut table_order = Vec::new();
        let mut settings = Settings::default();
        let mut inserts = Vec::new();
        for statement in statements {
            let line = statement.line;
            match statement.item {
                ScriptStatement::Set { name, value } => {
                    settings::apply(&mut settings, &name, &value)
                        .map_err(|e| e.in_statement(line))?;
                }
                ScriptStatement::CreateTable(mut decl) => {
                    for (table, key, value) in &table_overrides {
                        if *table == decl.name {
                            decl.options.retain(|(k, _)| k != key);
                            decl.options.push((key.clone(), value.clone()));
                        }
                    }
                    if catalog.contains(&decl.name) {
                        return Err(SqlError::at(
                            line,
                            format!("'{}' is already declared", decl.name),
                        ));
                    }
                    let declared = SqlToRel::new(&catalog)
                        .build_schema(decl.columns.clone())
                        .map_err(|e| {
                            SqlError::at(line, format!("table {}: {}", decl.name, plan_message(&e)))
                        })?;
                    let mut table = tables::resolve(&decl, Arc::new(declared), line)?;
                    if let Some(sink) = options.sinks.get(&decl.name) {
                        table.connector.sink = Some(sink.clone());
                    }
                    catalog.add_table(&decl.name, table.schema.clone());
                    table_order.push(decl.name.clone());
                    tables.insert(decl.name.clone(), table);
                }
                ScriptStatement::CreateView { name, query } => {
                    if catalog.contains(&name) {
                        return Err(SqlError::at(line, format!("'{name}' is already declared")));
                    }
                    let plan = plan_query(&catalog, query)
                        .map_err(|e| SqlError::at(line, format!("view {name}: {e}")))?;
                    catalog.add_view(&name, plan);
                }
                ScriptStatement::Insert { table, query } => {
                    let Some(sink) = tables.get(&table) else {
                        return Err(SqlError::at(
                            line,
                            format!(
                                "INSERT INTO {table}: no such table (declare it first with CREATE TABLE {table} WITH (connector = 'console'))"
                            ),
                        ));
                    };
                    if sink.connector.sink.is_none() {
                        let option = |key: &str| {
                            (sink.options.iter())
                                .find(|(k, _)| k == key)
                                .map_or(String::new(), |(_, v)| v.to_lowercase())
                        };
                        let why = match option("connector").as_str() {
                            "file" => format!(
                                "the file connector writes JSON lines only, and this table's format is '{}'                                  (write to a table with format = 'json')",
                                option("format")
                            ),
                            other => format!("the {other} connector can only be read"),
                        };
                        return Err(SqlError::at(line, format!("INSERT INTO {table}: {why}")));
                    }
                    let plan = plan_query(&catalog, query)
                        .and_then(|p| {
                            catalog
                                .state()
                                .optimize(&p)
                                .map_err(|e| SqlError::new(plan_message(&e)))
                        })
                        .map_err(|e| {
                            SqlError::at(line, format!("INSERT INTO {table}: {}", e.message))
                        })?;
                    if std::env::var_os("MILLRACE_DEBUG_PLAN").is_some() {
                        eprintln!(
                            "INSERT INTO {table} (line {line}):\n{}",
                            plan.display_indent()
                        );
                    }
                    inserts.push(Insert {
                        line,
                        sink: table,
                        plan,
                    });
                }
            }
        }
        for (name, value) in &setting_overrides {
            settings::apply(&mut settings, name, value)?;
        }
        if let Some(mut c) = settings.checkpoint_config()? {
            c.dir = settings
                .checkpoint_dir
                .clone()
                .or_else(|| options.checkpoint_dir.clone())
                .unwrap_or_else(|| ".millrace/checkpoints".into());
            if let Some(start) = &options.start_from {
                c.start_from = start.clone();
            }
            c.announce = options.announce.clone();
            settings.config.checkpoint = Some(c);
        }
        for (table, key, _) in &table_overrides {
            if !tables.contains_key(table) {
                return Err(SqlError::new(format!(
                    "--set {table}.{key}: the file declares no table '{table}'"
                )));
            }
        }
        settings.config.validate()?;
        if inserts.is_empty() {
            return Err(SqlError::new(
                "the file has no INSERT INTO statement, so there is nothing to run",
            ));
        }

        let pipeline = Pipeline::new(settings.config.clone());
        let scanned = {
            let mut planner = StreamPlanner::new(&pipeline, &tables, &settings);
            for insert in &inserts {
                let context = |e: SqlError| {
                    SqlError::at(
                        insert.line,
                        format!("INSERT INTO {}: {}", insert.sink, e.message),
                    )
                };
                let planned = planner.plan(&insert.plan).map_err(context)?;
                let sink = &tables[&insert.sink];
                let stream = conform_to_sink(planned, sink).map_err(context)?;
                let factory = sink.connector.sink.clone().expect("checked above");
                let factory = settings
                    .config
                    .latency_target
                    .and_then(|target| factory.for_latency_target(target))
                    .unwrap_or(factory);
                stream.sink_arc(factory).map_err(|e| context(e.into()))?;
            }
            planner.check_late_rows_routed()?;
            planner.scanned()
        };
        Ok(Self {
            pipeline,
            tables,
            table_order,
            scanned,
            inserts: inserts.iter().map(|i| (i.line, i.sink.clone())).collect(),
            http: settings.http.clone(),
            alerts: settings.alerts.clone(),
            alert_webhook: settings.alert_webhook.clone(),
        })
    }

    /// The dataflow: sources with their watermark strategies, then the
    /// runtime's plan (operators, parallelism, fused chains, exchanges).
    pub fn explain(&self) -> SqlResult<String> {
        let mut out = String::new();
        let config = self.pipeline.config();
        out.push_str(&format!(
            "settings: parallelism {}, workers {}, batch_size {}, latency_target {}\n",
            config.parallelism,
            config.workers,
            config.batch_size,
            config
                .latency_target
                .map(|d| format!("{d:?}"))
                .unwrap_or_else(|| "none".into())
        ));
        out.push_str("sources:\n");
        for name in &self.table_order {
            let t = &self.tables[name];
            if self.scanned.contains(name) {
                let options: Vec<String> = t
                    .options
                    .iter()
                    .map(|(k, v)| format!("{k} = '{v}'"))
                    .collect();
                out.push_str(&format!(
                    "  {name}: {}; {}\n",
                    options.join(", "),
                    t.watermark_strategy()
                ));
            }
        }
        out.push_str("sinks:\n");
        for (line, sink) in &self.inserts {
            out.push_str(&format!("  {sink} (INSERT on line {line})\n"));
        }
        out.push_str("dataflow:\n");
        out.push_str(&self.pipeline.explain()?);
        Ok(millrace_sql_ops::window::tidy_intervals(&out))
    }

    /// The stable ids of the dataflow's nodes and the plan's fingerprint:
    /// planning the same file again gives the same (`millrace_core::state`).
    pub fn fingerprint(&self) -> millrace_core::PlanFingerprint {
        self.pipeline.fingerprint()
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.pipeline.stop_handle()
    }

    /// The run's counters, readable while it runs (`Pipeline::live`).
    pub fn live(&self) -> millrace_runtime::LiveRun {
        self.pipeline.live()
    }

    /// `SET http`, if the file (or an override) set it.
    pub fn http(&self) -> Option<&HttpSetting> {
        self.http.as_ref()
    }

    /// The `SET alert.<name>` rules, (name, rule) in order.
    pub fn alerts(&self) -> &[(String, String)] {
        &self.alerts
    }

    /// `SET alert_webhook`.
    pub fn alert_webhook(&self) -> Option<&str> {
        self.alert_webhook.as_deref()
    }

    /// The configuration the pipeline runs with (settings applied).
    pub fn config(&self) -> millrace_runtime::PipelineConfig {
        self.pipeline.config()
    }

    /// Runs until every source ends (or the stop handle is used).
    pub fn run(self) -> millrace_core::Result<RunSummary> {
        self.pipeline.run()
    }
}

fn plan_query(catalog: &Catalog, query: Box<Query>) -> SqlResult<LogicalPlan> {
    SqlToRel::new(catalog)
        .sql_statement_to_plan(Statement::Query(query))
        .map_err(|e| SqlError::new(plan_message(&e)))
}

/// The last projection before a sink: the sink's column names, in its
/// declared types (when it declares columns).
fn conform_to_sink(planned: planner::Planned, sink: &Table) -> SqlResult<millrace_runtime::Stream> {
    let have: &DFSchema = &planned.schema;
    let want = &sink.schema;
    let target: Vec<Field> = if want.fields().is_empty() {
        have.fields().iter().map(|f| f.as_ref().clone()).collect()
    } else {
        if want.fields().len() != have.fields().len() {
            let names = |fields: Vec<String>| fields.join(", ");
            return Err(SqlError::new(format!(
                "the query gives {} column(s) ({}) but table {} has {} ({})",
                have.fields().len(),
                names(have.fields().iter().map(|f| f.name().clone()).collect()),
                sink.name,
                want.fields().len(),
                names(want.fields().iter().map(|f| f.name().clone()).collect()),
            )));
        }
        for (i, (h, w)) in have.fields().iter().zip(want.fields()).enumerate() {
            if !arrow::compute::can_cast_types(h.data_type(), w.data_type()) {
                return Err(SqlError::new(format!(
                    "column {} ('{}') is {} but table {} declares '{}' as {}",
                    i + 1,
                    h.name(),
                    h.data_type(),
                    sink.name,
                    w.name(),
                    w.data_type()
                )));
            }
        }
        want.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect()
    };
    let exprs: Vec<Arc<dyn PhysicalExpr>> = have
        .fields()
        .iter()
        .zip(&target)
        .enumerate()
        .map(|(i, (h, t))| {
            let c: Arc<dyn PhysicalExpr> = Arc::new(PhysColumn::new(h.name(), i));
            if h.data_type() == t.data_type() {
                c
            } else {
                Arc::new(CastExpr::new(c, t.data_type().clone(), None)) as Arc<dyn PhysicalExpr>
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(target));
    Ok(planned.stream.project(exprs, schema)?.get())
}
