//! The streaming planner: an optimized DataFusion logical plan becomes a
//! millrace dataflow.
//!
//! Each logical node maps to a [`Planned`] stream: the runtime stream plus
//! what the planner must know that DataFusion does not — which column holds
//! the event time the watermark tracks, and which columns are windows. That
//! knowledge decides what is allowed: a `GROUP BY` needs a window (else its
//! state grows forever), a window needs the event time, a join needs a window
//! or a time interval.
//!
//! Runtime streams name their columns with DataFusion's qualified names
//! (`b.price`), which are unique within a node, so hash exchanges can name
//! key columns; operators themselves address columns by position.

mod aggregate;
mod at_window_max;
pub(crate) mod expr;
mod join;
mod late;
mod projection;
mod topn;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column as PhysColumn};
use millrace_runtime::{Pipeline, Stream};
use millrace_sql_ops::eval::{ExprFilterFactory, ExprProjectFactory};
use millrace_sql_ops::window::WindowKind;

use crate::error::{SqlError, SqlResult};
use crate::settings::Settings;
use crate::tables::Table;
pub use expr::Lowering;
pub use projection::PlannedStream;

/// A planned logical node.
#[derive(Clone)]
pub struct Planned {
    pub stream: PlannedStream,
    /// The logical schema of the node (its columns, by position).
    pub schema: DFSchemaRef,
    /// Column that carries the event time the watermark tracks.
    pub event_time: Option<usize>,
    /// Window columns (`{start, end}`) and the window kind that made each.
    pub windows: HashMap<usize, WindowKind>,
    /// Name of the event-time column of the sources below, kept even where
    /// a projection dropped it (for error messages that suggest a fix).
    pub time_hint: Option<String>,
    /// The source table whose rows these are, row for row, when it routes
    /// its late rows (`late_rows`): the next windowed operator sends them.
    pub late_of: Option<String>,
}

impl Planned {
    /// The node's runtime schema: logical fields under qualified names.
    fn runtime_schema(schema: &DFSchemaRef) -> SchemaRef {
        let fields: Vec<Field> = schema
            .iter()
            .map(|(q, f)| {
                let name = match q {
                    Some(q) => format!("{q}.{}", f.name()),
                    None => f.name().clone(),
                };
                f.as_ref().clone().with_name(name)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// Plans queries of one pipeline onto its dataflow.
pub struct StreamPlanner<'a> {
    pipeline: &'a Pipeline,
    tables: &'a HashMap<String, Table>,
    /// One source node per table, shared by every scan of it.
    sources: HashMap<String, Stream>,
    /// Every subplan planned so far: a subplan that occurs twice (a view
    /// read by both sides of a join, as in Nexmark q5, or by two INSERTs)
    /// becomes one node with two consumers, so its work is done once.
    planned: HashMap<LogicalPlan, Planned>,
    lowering: Lowering,
    /// Plan keyless window aggregates in two phases (`SET two_phase_aggregation`).
    two_phase_aggregation: bool,
    /// Source tables whose late rows have been routed.
    late_routed: HashSet<String>,
}

impl<'a> StreamPlanner<'a> {
    pub fn new(
        pipeline: &'a Pipeline,
        tables: &'a HashMap<String, Table>,
        settings: &Settings,
    ) -> Self {
        Self {
            pipeline,
            tables,
            two_phase_aggregation: settings.two_phase_aggregation,
            sources: HashMap::new(),
            planned: HashMap::new(),
            lowering: Lowering::new(),
            late_routed: HashSet::new(),
        }
    }

    /// Tables read by the plans so far.
    pub fn scanned(&self) -> Vec<String> {
        self.sources.keys().cloned().collect()
    }

    /// Plans `plan` (already optimized), reusing what an equal subplan
    /// planned before.
    pub fn plan(&mut self, plan: &LogicalPlan) -> SqlResult<Planned> {
        if let Some(done) = self.planned.get(plan) {
            return Ok(done.clone());
        }
        let planned = self.plan_node(plan)?;
        self.planned.insert(plan.clone(), planned.clone());
        Ok(planned)
    }

    fn plan_node(&mut self, plan: &LogicalPlan) -> SqlResult<Planned> {
        match plan {
            LogicalPlan::TableScan(scan) => self.scan(scan),
            LogicalPlan::Projection(p) => {
                let input = self.plan(&p.input)?;
                self.project(input, p)
            }
            LogicalPlan::Filter(f) => {
                if let Some(top) = topn::match_top_n(f)? {
                    let input = self.plan(top.input)?;
                    let mut ranked = self.top_n(input, &top, top.window_schema)?;
                    for p in top.projections.iter().rev() {
                        ranked = self.project(ranked, p)?;
                    }
                    return Ok(ranked);
                }
                let input = self.plan(&f.input)?;
                self.filter(input, &f.predicate, plan.schema())
            }
            LogicalPlan::SubqueryAlias(a) => {
                let input = self.plan(&a.input)?;
                Ok(Planned {
                    schema: a.schema.clone(),
                    ..input
                })
            }
            LogicalPlan::Aggregate(agg) => {
                let input = self.plan(&agg.input)?;
                self.aggregate(input, agg)
            }
            LogicalPlan::Join(j) => {
                if let Some(m) = at_window_max::match_at_window_max(j)
                    && let Some(planned) = self.at_window_max(&m, j)?
                {
                    return Ok(planned);
                }
                let left = self.plan(&j.left)?;
                let right = self.plan(&j.right)?;
                self.join(left, right, j)
            }
            LogicalPlan::Union(u) => {
                let inputs = u
                    .inputs
                    .iter()
                    .map(|i| self.plan(i))
                    .collect::<SqlResult<Vec<_>>>()?;
                self.union(inputs, &u.schema)
            }
            LogicalPlan::Window(_) => Err(SqlError::new(
                "window functions (OVER ...) over a stream are supported only as top-N per window: \
                 SELECT ... FROM (SELECT ..., ROW_NUMBER() OVER (PARTITION BY window ORDER BY x DESC) AS rn FROM ...) WHERE rn <= N \
                 (or RANK() to keep ties)",
            )),
            LogicalPlan::Sort(_) => Err(SqlError::new(
                "ORDER BY over an unbounded stream would wait forever for its first row; \
                 rank within windows instead: ROW_NUMBER() OVER (PARTITION BY window ORDER BY ...) <= N",
            )),
            LogicalPlan::Limit(_) => Err(SqlError::new(
                "LIMIT over a stream is not supported (a stream never ends); use top-N per window, \
                 or the console sink's max_rows option to print only the first rows",
            )),
            LogicalPlan::Distinct(_) => Err(SqlError::new(
                "DISTINCT (or UNION without ALL) over a stream keeps every row seen forever; \
                 use UNION ALL, or GROUP BY with a window to de-duplicate within windows",
            )),
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Err(SqlError::new(
                "a streaming query must read from a table (SELECT without FROM, or VALUES, is not a stream)",
            )),
            other => Err(SqlError::new(format!(
                "{} is not supported in a streaming query",
                node_name(other)
            ))),
        }
    }

    fn scan(&mut self, scan: &datafusion::logical_expr::TableScan) -> SqlResult<Planned> {
        let name = scan.table_name.table().to_string();
        let Some(table) = self.tables.get(&name) else {
            return Err(SqlError::new(format!(
                "table '{name}' is not a declared table"
            )));
        };
        if scan.fetch.is_some() {
            return Err(SqlError::new("LIMIT over a stream is not supported"));
        }
        let source = match self.sources.get(&name) {
            Some(s) => s.clone(),
            None => {
                let Some(factory) = table.connector.source.clone() else {
                    return Err(SqlError::new(format!(
                        "table '{name}' cannot be read: its connector only writes (declare columns for a file table to read it)"
                    )));
                };
                let mut stream = self.pipeline.source_arc(factory);
                if table.watermark.is_some()
                    && let Some(event_time) = table.event_time()
                {
                    stream = stream.with_event_time(event_time)?;
                }
                self.sources.insert(name.clone(), stream.clone());
                stream
            }
        };
        // The scan reads the table's columns (by name from the source's, cast
        // to the declared types). Filters DataFusion pushed into the scan see
        // every column of the table; the projection then keeps what the
        // query uses.
        let source_schema = source.schema();
        let qualified =
            DFSchema::try_from_qualified_schema(scan.table_name.clone(), &table.schema)?;
        let wanted: Vec<usize> = match &scan.projection {
            Some(p) if scan.filters.is_empty() => p.clone(),
            _ => (0..table.schema.fields().len()).collect(),
        };
        let mut exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::with_capacity(wanted.len());
        for &i in &wanted {
            let field = table.schema.field(i);
            let idx = source_schema.index_of(field.name()).map_err(|_| {
                SqlError::new(format!(
                    "table '{name}': column '{}' is not produced by its source",
                    field.name()
                ))
            })?;
            let column: Arc<dyn PhysicalExpr> = Arc::new(PhysColumn::new(field.name(), idx));
            exprs.push(
                if source_schema.field(idx).data_type() == field.data_type() {
                    column
                } else {
                    Arc::new(CastExpr::new(column, field.data_type().clone(), None))
                },
            );
        }
        let read_schema: DFSchemaRef = if scan.filters.is_empty() {
            scan.projected_schema.clone()
        } else {
            Arc::new(qualified)
        };
        let source = PlannedStream::from(source);
        let stream = if is_identity(&exprs, source_schema.fields().len()) {
            source
        } else {
            source.project(exprs, Planned::runtime_schema(&read_schema))?
        };
        let event_time_of = |schema: &DFSchemaRef| {
            table
                .event_time()
                .and_then(|e| schema.iter().position(|(_, f)| *f.name() == e.column))
        };
        let mut planned = Planned {
            stream,
            schema: read_schema.clone(),
            event_time: event_time_of(&read_schema),
            windows: HashMap::new(),
            time_hint: table.event_time().map(|e| e.column),
            late_of: table.late_rows.as_ref().map(|_| name.clone()),
        };
        if scan.filters.is_empty() {
            return Ok(planned);
        }
        for filter in &scan.filters {
            planned = self.filter(planned, filter, &read_schema)?;
        }
        // Then keep the projected columns.
        let projection = scan
            .projection
            .clone()
            .unwrap_or_else(|| (0..table.schema.fields().len()).collect());
        let exprs: Vec<Arc<dyn PhysicalExpr>> = projection
            .iter()
            .map(|&i| {
                Arc::new(PhysColumn::new(table.schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>
            })
            .collect();
        let schema = scan.projected_schema.clone();
        Ok(Planned {
            stream: planned
                .stream
                .project(exprs, Planned::runtime_schema(&schema))?,
            event_time: event_time_of(&schema),
            schema,
            ..planned
        })
    }

    fn project(&mut self, input: Planned, p: &Projection) -> SqlResult<Planned> {
        let mut exprs = Vec::with_capacity(p.expr.len());
        let mut event_time = None;
        let mut windows = HashMap::new();
        for (i, e) in p.expr.iter().enumerate() {
            let e = e.clone().unalias_nested().data;
            if let Expr::Column(c) = &e {
                let idx = input.schema.index_of_column(c)?;
                if input.event_time == Some(idx) && event_time.is_none() {
                    event_time = Some(i);
                }
                if let Some(kind) = input.windows.get(&idx) {
                    windows.insert(i, *kind);
                }
            }
            exprs.push(self.lowering.expr(&e, &input.schema)?);
        }
        let stream = if is_identity(&exprs, input.schema.fields().len()) {
            input.stream
        } else {
            input
                .stream
                .project(exprs, Planned::runtime_schema(&p.schema))?
        };
        Ok(Planned {
            stream,
            schema: p.schema.clone(),
            event_time,
            windows,
            time_hint: input.time_hint,
            late_of: input.late_of,
        })
    }

    fn filter(
        &mut self,
        input: Planned,
        predicate: &Expr,
        schema: &DFSchemaRef,
    ) -> SqlResult<Planned> {
        let predicate = self.lowering.expr(predicate, &input.schema)?;
        let f = ExprFilterFactory::new(Planned::runtime_schema(schema), predicate, None);
        Ok(Planned {
            stream: input.stream.get().apply(Arc::new(f)).into(),
            schema: schema.clone(),
            ..input
        })
    }

    fn union(&mut self, inputs: Vec<Planned>, schema: &DFSchemaRef) -> SqlResult<Planned> {
        if let Some(table) = inputs.iter().find_map(|i| i.late_of.as_ref()) {
            return Err(SqlError::new(format!(
                "table '{table}' sets late_rows, but its rows meet others in a UNION before a windowed operator, which could not tell whose late rows it has; window each table apart, or drop late_rows"
            )));
        }
        let runtime = Planned::runtime_schema(schema);
        // Each input is cast and renamed to the union's columns first.
        let mut streams = Vec::with_capacity(inputs.len());
        for input in &inputs {
            let exprs = input
                .schema
                .iter()
                .enumerate()
                .zip(runtime.fields())
                .map(|((i, (_, have)), want)| {
                    let column: Arc<dyn PhysicalExpr> = Arc::new(PhysColumn::new(have.name(), i));
                    if have.data_type() == want.data_type() {
                        column
                    } else {
                        Arc::new(datafusion::physical_expr::expressions::CastExpr::new(
                            column,
                            want.data_type().clone(),
                            None,
                        )) as Arc<dyn PhysicalExpr>
                    }
                })
                .collect();
            let f = ExprProjectFactory::new(runtime.clone(), exprs, None)?;
            streams.push(input.stream.get().apply(Arc::new(f)));
        }
        let mut stream = streams[0].clone();
        for other in &streams[1..] {
            stream = stream.union(other)?;
        }
        let same = |get: &dyn Fn(&Planned) -> Option<usize>| {
            let first = get(&inputs[0]);
            inputs
                .iter()
                .all(|i| get(i) == first)
                .then_some(first)
                .flatten()
        };
        let event_time = same(&|p: &Planned| p.event_time);
        let mut windows = HashMap::new();
        for (idx, kind) in &inputs[0].windows {
            if inputs.iter().all(|i| i.windows.get(idx) == Some(kind)) {
                windows.insert(*idx, *kind);
            }
        }
        Ok(Planned {
            stream: stream.into(),
            schema: schema.clone(),
            event_time,
            windows,
            time_hint: inputs[0].time_hint.clone(),
            late_of: None,
        })
    }
}

/// True if `exprs` pass the `n` input columns through in order.
fn is_identity(exprs: &[Arc<dyn PhysicalExpr>], n: usize) -> bool {
    exprs.len() == n
        && exprs.iter().enumerate().all(|(i, e)| {
            e.downcast_ref::<PhysColumn>()
                .is_some_and(|c| c.index() == i)
        })
}

fn node_name(plan: &LogicalPlan) -> String {
    let text = plan.display().to_string();
    text.split([':', '('])
        .next()
        .unwrap_or("this plan node")
        .trim()
        .to_string()
}

/// A stream exchanged by key, ready for a keyed operator.
pub(super) struct Keyed {
    pub stream: Stream,
    /// Runtime schema of `stream`: the input's columns, then any computed key columns.
    pub schema: SchemaRef,
    /// Key expressions over `schema`.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
}

impl Keyed {
    /// The column rows are routed by, when it is the only key and a column
    /// of the input as it is (nothing was computed for the exchange): a
    /// phase before the exchange can then read the input itself.
    pub fn single_input_column(&self, input: &Planned) -> Option<&str> {
        let [key] = self.keys.as_slice() else {
            return None;
        };
        let column = key.downcast_ref::<PhysColumn>()?;
        (self.schema.fields().len() == input.stream.schema().fields().len())
            .then(|| self.schema.field(column.index()).name().as_str())
    }
}

impl StreamPlanner<'_> {
    /// Routes rows by `keys` (all rows to one instance when there are none).
    /// Keys that are not plain columns are computed into extra columns first,
    /// since the exchange hashes named columns.
    pub(super) fn keyed(&self, input: &Planned, keys: &[Expr]) -> SqlResult<Keyed> {
        let base = input.stream.schema();
        if keys.is_empty() {
            return Ok(Keyed {
                stream: input.stream.get().rebalance(),
                schema: base,
                keys: Vec::new(),
            });
        }
        let mut names = Vec::with_capacity(keys.len());
        let mut physical: Vec<Arc<dyn PhysicalExpr>> = Vec::with_capacity(keys.len());
        let mut extra_fields = Vec::new();
        let mut extra_exprs = Vec::new();
        for k in keys {
            let k = k.clone().unalias_nested().data;
            if let Expr::Column(c) = &k {
                let idx = input.schema.index_of_column(c)?;
                let name = base.field(idx).name().clone();
                physical.push(Arc::new(PhysColumn::new(&name, idx)));
                names.push(name);
            } else {
                let expr = self.lowering.expr(&k, &input.schema)?;
                let idx = base.fields().len() + extra_fields.len();
                let name = format!("__key{idx}");
                let dt =
                    datafusion::logical_expr::ExprSchemable::get_type(&k, input.schema.as_ref())?;
                extra_fields.push(Field::new(&name, dt, true));
                extra_exprs.push(expr);
                physical.push(Arc::new(PhysColumn::new(&name, idx)));
                names.push(name);
            }
        }
        let (stream, schema) = if extra_fields.is_empty() {
            (input.stream.get(), base)
        } else {
            let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.extend(extra_fields);
            let schema: SchemaRef = Arc::new(Schema::new(fields));
            let mut exprs: Vec<Arc<dyn PhysicalExpr>> = base
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| Arc::new(PhysColumn::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
                .collect();
            exprs.extend(extra_exprs);
            let f = ExprProjectFactory::new(schema.clone(), exprs, None)?;
            (input.stream.get().apply(Arc::new(f)), schema)
        };
        Ok(Keyed {
            stream: stream.key_by(names)?,
            schema,
            keys: physical,
        })
    }
}
