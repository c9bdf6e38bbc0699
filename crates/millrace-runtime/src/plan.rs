//! From the graph a user built to the tasks that run: operator fusion.
//!
//! A node joins the chain of its input when nothing needs a queue between
//! them: it has exactly one input, read `Forward`, at the same parallelism,
//! and that input feeds nothing else. Every other node starts a new chain;
//! chains meet through exchanges over bounded channels.

use std::fmt::Write;

use crate::exchange::Partitioning;
use crate::graph::{Graph, NodeOp};

/// A fused chain of nodes, run as `parallelism` task instances.
pub(crate) struct Chain {
    /// Node ids, head first.
    pub nodes: Vec<usize>,
    pub parallelism: usize,
}

/// How one chain reads the output of another.
pub(crate) struct ChainEdge {
    pub from_chain: usize,
    pub to_chain: usize,
    /// Logical input index at the receiving head (0, 1, …).
    pub input: usize,
    pub partitioning: Partitioning,
    /// Instance i sends only to instance i (forward at equal parallelism).
    pub one_to_one: bool,
}

pub(crate) struct Plan {
    pub chains: Vec<Chain>,
    pub edges: Vec<ChainEdge>,
}

impl Plan {
    pub fn build(g: &Graph) -> millrace_core::Result<Plan> {
        if g.nodes.is_empty() {
            return Err(millrace_core::Error::plan("the pipeline has no sources"));
        }
        let consumers = |id: usize| {
            g.nodes
                .iter()
                .filter(|n| n.inputs.iter().any(|e| e.from == id))
                .count()
        };
        for (id, node) in g.nodes.iter().enumerate() {
            if !matches!(node.op, NodeOp::Sink(_)) && consumers(id) == 0 {
                return Err(millrace_core::Error::plan(format!(
                    "'{}' has no consumer: end every stream in a sink",
                    node.name
                )));
            }
        }
        let mut chain_of = vec![usize::MAX; g.nodes.len()];
        let mut chains: Vec<Chain> = Vec::new();
        let mut edges = Vec::new();
        // Nodes are added only after their inputs, so id order is topological.
        for (id, node) in g.nodes.iter().enumerate() {
            let fusable = match node.inputs.as_slice() {
                [e] => {
                    let from = &g.nodes[e.from];
                    e.partitioning == Partitioning::Forward
                        && from.parallelism == node.parallelism
                        && consumers(e.from) == 1
                }
                _ => false,
            };
            if fusable {
                let c = chain_of[node.inputs[0].from];
                chains[c].nodes.push(id);
                chain_of[id] = c;
                continue;
            }
            let c = chains.len();
            chains.push(Chain {
                nodes: vec![id],
                parallelism: node.parallelism,
            });
            chain_of[id] = c;
            for (input, e) in node.inputs.iter().enumerate() {
                let from_par = g.nodes[e.from].parallelism;
                let one_to_one =
                    e.partitioning == Partitioning::Forward && from_par == node.parallelism;
                // Forward between different parallelisms means "spread evenly".
                let partitioning = if e.partitioning == Partitioning::Forward && !one_to_one {
                    Partitioning::RoundRobin
                } else {
                    e.partitioning.clone()
                };
                edges.push(ChainEdge {
                    from_chain: chain_of[e.from],
                    to_chain: c,
                    input,
                    partitioning,
                    one_to_one,
                });
            }
        }
        Ok(Plan { chains, edges })
    }

    /// Human-readable dataflow: tasks, fused operators, exchanges, watermarks.
    pub fn explain(&self, g: &Graph) -> String {
        let mut s = String::new();
        for (c, chain) in self.chains.iter().enumerate() {
            let names: Vec<&str> = chain
                .nodes
                .iter()
                .map(|&n| g.nodes[n].name.as_str())
                .collect();
            let _ = writeln!(s, "task {c} [parallelism {}]", chain.parallelism);
            let _ = writeln!(s, "    {}", names.join("  →  "));
            for e in self.edges.iter().filter(|e| e.from_chain == c) {
                let how = if e.one_to_one {
                    "forward".to_string()
                } else {
                    e.partitioning.to_string()
                };
                let _ = writeln!(s, "    └─ {how} ─▶ task {} (input {})", e.to_chain, e.input);
            }
        }
        let _ = writeln!(s, "watermarks:");
        for node in &g.nodes {
            if let NodeOp::Source { event_time, .. } = &node.op {
                match event_time {
                    Some(et) => {
                        let idle = et
                            .idle_timeout
                            .map_or("none".to_string(), |d| format!("{} ms", d.as_millis()));
                        let _ = writeln!(
                            s,
                            "    {}: {} − {} ms, idle timeout {}",
                            node.name, et.column, et.max_out_of_orderness_ms, idle
                        );
                    }
                    None => {
                        let _ = writeln!(s, "    {}: none (no event time)", node.name);
                    }
                }
            }
        }
        s
    }
}
