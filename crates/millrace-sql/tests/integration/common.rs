//! Shared test helpers: run a SQL pipeline into memory, run DataFusion batch
//! SQL over the same rows, and compare results as sorted row strings.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use millrace_core::{CollectSink, SinkFactory, SourceFactory, SourcePoll, strip_entered};
use millrace_runtime::RunSummary;
use millrace_sql::{PlanOptions, SqlPipeline};

/// Runs `sql` with `overrides`, collecting what is inserted into `out`.
pub fn run_sql(sql: &str, overrides: &[(&str, &str)]) -> (Vec<RecordBatch>, RunSummary) {
    let sink = CollectSink::new();
    let mut sinks: HashMap<String, Arc<dyn SinkFactory>> = HashMap::new();
    sinks.insert("out".into(), Arc::new(sink.clone()));
    let options = PlanOptions {
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        sinks,
        ..Default::default()
    };
    let job = SqlPipeline::plan_with(sql, &options).unwrap_or_else(|e| panic!("plan failed: {e}"));
    let summary = job.run().unwrap_or_else(|e| panic!("run failed: {e}"));
    let batches = sink.batches().iter().map(strip_entered).collect();
    (batches, summary)
}

/// Every row a source produces (one instance).
pub fn read_all(source: &dyn SourceFactory) -> Vec<RecordBatch> {
    let mut reader = source.create(0, 1).unwrap();
    let mut out = Vec::new();
    loop {
        match reader.poll_batch(4096).unwrap() {
            SourcePoll::Batch(b) => {
                if b.num_rows() > 0 {
                    out.push(strip_entered(&b));
                }
            }
            SourcePoll::Pending { .. } => {}
            SourcePoll::Exhausted => return out,
        }
    }
}

/// Runs batch SQL with DataFusion over in-memory tables.
pub fn batch_sql(tables: &[(&str, Vec<RecordBatch>)], sql: &str) -> Vec<RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = SessionContext::new();
        for (name, batches) in tables {
            let schema = batches[0].schema();
            let table = MemTable::try_new(schema, vec![batches.clone()]).unwrap();
            ctx.register_table(*name, Arc::new(table)).unwrap();
        }
        let df = ctx
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("batch SQL failed: {e}"));
        df.collect().await.unwrap()
    })
}

/// Rows as strings (floats in scientific notation), sorted: results compared
/// as multisets.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<Box<dyn Fn(usize) -> String>> = b
            .columns()
            .iter()
            .map(|c| -> Box<dyn Fn(usize) -> String> {
                if c.data_type() == &DataType::Float64 {
                    let c = c.clone();
                    Box::new(move |i| {
                        if c.is_null(i) {
                            "NULL".into()
                        } else {
                            format!("{:.9e}", c.as_primitive::<Float64Type>().value(i))
                        }
                    })
                } else {
                    let c = c.clone();
                    let options = options.clone();
                    Box::new(move |i| {
                        ArrayFormatter::try_new(c.as_ref(), &options)
                            .unwrap()
                            .value(i)
                            .to_string()
                    })
                }
            })
            .collect();
        for i in 0..b.num_rows() {
            let row: Vec<String> = formatters.iter().map(|f| f(i)).collect();
            out.push(row.join(" | "));
        }
    }
    out.sort();
    out
}

/// Asserts two multisets of rows are equal, showing the first difference.
/// Floats may differ in the last bits (sums added in another order).
pub fn assert_same_rows(streaming: &[RecordBatch], batch: &[RecordBatch], what: &str) {
    let (s, b) = (rows(streaming), rows(batch));
    let same = s.len() == b.len() && s.iter().zip(&b).all(|(x, y)| same_row(x, y));
    if !same {
        let first = s
            .iter()
            .zip(&b)
            .position(|(x, y)| !same_row(x, y))
            .unwrap_or(s.len().min(b.len()));
        panic!(
            "{what}: streaming gave {} rows, batch {}; first difference at sorted row {first}:\n  streaming: {:?}\n  batch:     {:?}",
            s.len(),
            b.len(),
            s.get(first),
            b.get(first)
        );
    }
}

fn same_row(a: &str, b: &str) -> bool {
    a == b || {
        let (x, y): (Vec<&str>, Vec<&str>) = (a.split(" | ").collect(), b.split(" | ").collect());
        x.len() == y.len()
            && x.iter().zip(&y).all(|(p, q)| {
                p == q
                    || match (p.parse::<f64>(), q.parse::<f64>()) {
                        (Ok(p), Ok(q)) => (p - q).abs() <= 1e-9 * p.abs().max(q.abs()),
                        _ => false,
                    }
            })
    }
}

/// Late rows counted by all operators of a run.
pub fn late_rows(summary: &RunSummary) -> u64 {
    summary.operators.iter().map(|o| o.late_rows).sum()
}
