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
///
/// A dispatch writes one value. `outputs` lists the covered nodes equal to it: one node, or
/// several where the rewrites proved nodes equal (`a·b` and `b·a`), which then share storage.
/// The interior of a fused group (covered, not output) is never written to memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Every compute node this dispatch evaluates, in topological order.
    pub covers: Vec<NodeId>,
    /// The covered nodes whose value it writes out; the first is the one it computes.
    pub outputs: Vec<NodeId>,
    /// Which kernel computes it, with its operands.
    #[serde(default, skip_serializing_if = "Kernel::is_node")]
    pub kernel: Kernel,
}

impl Group {
    /// The -O0 group of one compute node.
    pub fn single(id: NodeId) -> Group {
        Group { covers: vec![id], outputs: vec![id], kernel: Kernel::Node }
    }

    /// The node whose value the dispatch writes.
    pub fn value(&self) -> Option<NodeId> {
        self.outputs.first().copied()
    }
}

/// The kernel of a dispatch. Operands name the IR nodes holding their values (views
/// included); attributes (rope mode, axes, shapes) are read off the covered nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kernel {
    /// The op of the group's first output, on its own IR operands (the -O0 kernel).
    #[default]
    Node,
    /// `x · rsqrt(mean(x², last axis) + eps) · weight`.
    RmsNorm { x: NodeId, eps: NodeId, weight: NodeId },
    /// `softmax(x · scale)` over the last axis (`scale` a scalar; absent means 1).
    Softmax { x: NodeId, scale: Option<NodeId> },
    /// `x · cos + rope_rotate(x) · sin`.
    Rope { x: NodeId, cos: NodeId, sin: NodeId },
    /// `silu(gate) · up = gate · σ(gate) · up`.
    SwiGlu { gate: NodeId, up: NodeId },
    /// `x · weightᵀ + addend` (a bias or a residual; broadcast like `add`).
    MatvecAdd { x: NodeId, weight: NodeId, addend: NodeId },
    /// `silu(x · gateᵀ) · (x · upᵀ)`: two projections of one input and their SwiGLU.
    MatvecSwiGlu { x: NodeId, gate: NodeId, up: NodeId },
    /// One decode step of attention: `softmax((q · k[:ctx]ᵀ) · scale) · v[:ctx]`, reading the
    /// first `ctx` positions of the caches `k_cache`, `v_cache` (the cache-write nodes).
    Attention { q: NodeId, k_cache: NodeId, v_cache: NodeId, scale: NodeId },
    /// `rope(rms_norm(x, eps, weight), cos, sin)` per head (rows of the head dimension): the
    /// per-head query/key norms of Qwen3, with the RoPE after them.
    NormRope { x: NodeId, eps: NodeId, weight: NodeId, cos: NodeId, sin: NodeId },
    /// `cache_write(cache, rope(rms_norm(x, eps, weight), cos, sin), pos)`: the key path of the
    /// same, stored at `pos`.
    NormRopeCacheWrite { cache: NodeId, x: NodeId, eps: NodeId, weight: NodeId, cos: NodeId, sin: NodeId, pos: NodeId },
    /// `cache_write(cache, rope(x, cos, sin), pos)`: rotate and store at `pos`.
    RopeCacheWrite { cache: NodeId, x: NodeId, cos: NodeId, sin: NodeId, pos: NodeId },
    /// `cache_write(cache, reshape(x · weightᵀ (+ addend)), pos)`: a projection (a value row,
    /// with its bias if any) stored straight into the cache at `pos`.
    MatvecCacheWrite { cache: NodeId, x: NodeId, weight: NodeId, addend: Option<NodeId>, pos: NodeId },
}

impl Kernel {
    /// Whether this is the plain one-node kernel.
    pub fn is_node(&self) -> bool {
        matches!(self, Kernel::Node)
    }

    /// A short name for reports and DOT labels.
    pub fn name(&self) -> &'static str {
        match self {
            Kernel::Node => "node",
            Kernel::RmsNorm { .. } => "rms_norm",
            Kernel::Softmax { .. } => "softmax",
            Kernel::Rope { .. } => "rope",
            Kernel::SwiGlu { .. } => "swiglu",
            Kernel::MatvecAdd { .. } => "matvec_add",
            Kernel::MatvecSwiGlu { .. } => "matvec_swiglu",
            Kernel::Attention { .. } => "attention",
            Kernel::RopeCacheWrite { .. } => "rope_cache_write",
            Kernel::MatvecCacheWrite { .. } => "matvec_cache_write",
            Kernel::NormRope { .. } => "norm_rope",
            Kernel::NormRopeCacheWrite { .. } => "norm_rope_cache_write",
        }
    }

    /// The operand nodes, in declaration order.
    pub fn operands(&self) -> Vec<NodeId> {
        match self {
            Kernel::Node => Vec::new(),
            Kernel::RmsNorm { x, eps, weight } => vec![*x, *eps, *weight],
            Kernel::Softmax { x, scale } => std::iter::once(*x).chain(*scale).collect(),
            Kernel::Rope { x, cos, sin } => vec![*x, *cos, *sin],
            Kernel::SwiGlu { gate, up } => vec![*gate, *up],
            Kernel::MatvecAdd { x, weight, addend } => vec![*x, *weight, *addend],
            Kernel::MatvecSwiGlu { x, gate, up } => vec![*x, *gate, *up],
            Kernel::Attention { q, k_cache, v_cache, scale } => vec![*q, *k_cache, *v_cache, *scale],
            Kernel::RopeCacheWrite { cache, x, cos, sin, pos } => vec![*cache, *x, *cos, *sin, *pos],
            Kernel::NormRope { x, eps, weight, cos, sin } => vec![*x, *eps, *weight, *cos, *sin],
            Kernel::NormRopeCacheWrite { cache, x, eps, weight, cos, sin, pos } => {
                vec![*cache, *x, *eps, *weight, *cos, *sin, *pos]
            }
            Kernel::MatvecCacheWrite { cache, x, weight, addend, pos } => {
                [*cache, *x, *weight].into_iter().chain(*addend).chain([*pos]).collect()
            }
        }
    }
}

/// One group per compute node, in node order: the -O0 schedule.
pub fn unfused(g: &Graph) -> Vec<Group> {
    g.nodes.iter().filter(|n| n.op.is_compute()).map(|n| Group::single(n.id)).collect()
}

/// One group per compute node among `members`, in node order.
pub fn unfused_subset(g: &Graph, members: &[NodeId]) -> Vec<Group> {
    members.iter().filter(|&&id| g.node(id).is_some_and(|n| n.op.is_compute())).map(|&id| Group::single(id)).collect()
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
