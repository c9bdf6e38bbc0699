//! From the graph a user built to the tasks that run: operator fusion.
//!
//! A node joins the task of its input when nothing needs a queue between
//! them: it has exactly one input, read `Forward`, at the same parallelism.
//! An input may feed several fused nodes, so a task is a tree rooted at its
//! head: a node's output goes to the nodes fused after it and to its
//! exchanges, one after the other, in the same poll. Every other node
//! starts a new task; tasks meet through exchanges over bounded channels.

use std::fmt::Write;

use crate::exchange::Partitioning;
use crate::graph::{Graph, NodeOp};

/// A fused tree of nodes, run as `parallelism` task instances.
pub(crate) struct Chain {
    /// Node ids, head first; every node comes after the node it reads.
    pub nodes: Vec<usize>,
    /// For each of `nodes`, the position in `nodes` of the node it reads
    /// (`None` for the head).
    pub reads: Vec<Option<usize>>,
    pub parallelism: usize,
}

/// How one chain reads the output of another.
pub(crate) struct ChainEdge {
    pub from_chain: usize,
    /// The graph node of `from_chain` whose output is sent.
    pub from_node: usize,
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
            let fused_after = match node.inputs.as_slice() {
                [e] if matches!(node.op, NodeOp::Late { .. }) => Some(e.from),
                [e] if e.partitioning == Partitioning::Forward
                    && g.nodes[e.from].parallelism == node.parallelism =>
                {
                    Some(e.from)
                }
                _ => None,
            };
            if let Some(from) = fused_after {
                let c = chain_of[from];
                let chain = &mut chains[c];
                let at = chain.nodes.iter().position(|&n| n == from);
                chain.nodes.push(id);
                chain.reads.push(at);
                chain_of[id] = c;
                continue;
            }
            let c = chains.len();
            chains.push(Chain {
                nodes: vec![id],
                reads: vec![None],
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
                    from_node: e.from,
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
            let _ = writeln!(s, "task {c} [parallelism {}]", chain.parallelism);
            self.explain_run(g, c, 0, "    ", "", &mut s);
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

    /// Writes the nodes of chain `c` from position `at` for as long as each
    /// feeds exactly one fused node and no exchange (`a  →  b  →  c`), then
    /// what the last one feeds: each fused branch, indented under it, and
    /// each exchange.
    fn explain_run(
        &self,
        g: &Graph,
        c: usize,
        mut at: usize,
        indent: &str,
        lead: &str,
        s: &mut String,
    ) {
        let chain = &self.chains[c];
        let fused_after = |at: usize| -> Vec<usize> {
            (0..chain.nodes.len())
                .filter(|&k| chain.reads[k] == Some(at))
                .collect()
        };
        let edges_from = |at: usize| {
            self.edges
                .iter()
                .filter(move |e| e.from_node == chain.nodes[at])
        };
        let mut names = vec![g.nodes[chain.nodes[at]].name.as_str()];
        loop {
            match fused_after(at).as_slice() {
                [next] if edges_from(at).next().is_none() => {
                    at = *next;
                    names.push(g.nodes[chain.nodes[at]].name.as_str());
                }
                _ => break,
            }
        }
        let _ = writeln!(s, "{indent}{lead}{}", names.join("  →  "));
        let inner = format!("{indent}{}", " ".repeat(lead.chars().count()));
        for branch in fused_after(at) {
            self.explain_run(g, c, branch, &inner, "└─ ", s);
        }
        for e in edges_from(at) {
            let how = if e.one_to_one {
                "forward".to_string()
            } else {
                e.partitioning.to_string()
            };
            let _ = writeln!(
                s,
                "{inner}└─ {how} ─▶ task {} (input {})",
                e.to_chain, e.input
            );
        }
    }
}
