//! Dispatch groups: which IR nodes each kernel of a schedule computes.
//!
//! A group *covers* a set of compute nodes and *materializes* some of them (writes their
//! values to memory where later groups or the checker can read them). Provenance is what
//! lets the checker look inside a fused kernel: every compute node of the graph is covered
//! by exactly one group ([`check_coverage`]). Without fusion (-O0) each compute node is its
//! own group.

use crate::{Graph, IrError, NodeId};
use serde::{Deserialize, Serialize};

/// The nodes one dispatch computes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Every compute node this dispatch evaluates, in topological order.
    pub covers: Vec<NodeId>,
    /// The covered nodes whose values it writes out.
    pub outputs: Vec<NodeId>,
}

/// One group per compute node, in node order: the -O0 schedule.
pub fn unfused(g: &Graph) -> Vec<Group> {
    g.nodes.iter().filter(|n| n.op.is_compute()).map(|n| Group { covers: vec![n.id], outputs: vec![n.id] }).collect()
}

/// Check that every compute node is covered by exactly one group, that groups cover only
/// compute nodes, and that each group's outputs are among the nodes it covers.
pub fn check_coverage(g: &Graph, groups: &[Group]) -> Result<(), IrError> {
    let mut owner: Vec<Option<usize>> = vec![None; g.nodes.len()];
    for (k, grp) in groups.iter().enumerate() {
        if grp.outputs.is_empty() {
            return Err(IrError::Graph(format!("dispatch {k} materializes nothing")));
        }
        for &id in &grp.covers {
            let n = g.node(id).ok_or_else(|| IrError::Graph(format!("dispatch {k} covers missing node {id}")))?;
            if !n.op.is_compute() {
                return Err(IrError::Graph(format!("dispatch {k} covers {id} ({}), which needs no kernel", n.op)));
            }
            if let Some(prev) = owner[id.index()].replace(k) {
                return Err(IrError::Graph(format!("node {id} ({}) is covered by dispatches {prev} and {k}", n.name)));
            }
        }
        if let Some(o) = grp.outputs.iter().find(|o| !grp.covers.contains(o)) {
            return Err(IrError::Graph(format!("dispatch {k} outputs {o}, which it does not cover")));
        }
    }
    if let Some(n) = g.nodes.iter().find(|n| n.op.is_compute() && owner[n.id.index()].is_none()) {
        return Err(IrError::Graph(format!("node {} ({}, {}) is computed by no dispatch", n.id, n.name, n.op)));
    }
    Ok(())
}
