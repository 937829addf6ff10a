//! DOT (Graphviz) export, with filters for graphs too big to draw whole.
//!
//! A filter selects nodes (one layer, or the neighbourhood of a node); operands of selected
//! nodes that fall outside the selection are drawn dashed as boundary nodes, so every drawn
//! edge has both ends. Clusters (fusion groups) become `subgraph cluster_*` boxes.

use crate::{names, Graph, NodeId, Op, OpClass};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;

/// A labelled set of nodes drawn as one box (a fusion group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub label: String,
    pub nodes: Vec<NodeId>,
}

/// What to draw.
#[derive(Debug, Clone, Default)]
pub struct DotOptions {
    /// Only the nodes of this layer (named `blk.{layer}.…`).
    pub layer: Option<u32>,
    /// Only nodes within `radius` edges (either direction) of this node.
    pub around: Option<(NodeId, u32)>,
    /// Draw this node in red.
    pub highlight: Option<NodeId>,
    /// Boxes around groups of nodes.
    pub clusters: Vec<Cluster>,
}

/// The selected nodes for `opts`, in id order.
pub fn select(g: &Graph, opts: &DotOptions) -> BTreeSet<NodeId> {
    let mut sel: BTreeSet<NodeId> = match opts.layer {
        Some(layer) => g.nodes.iter().filter(|n| names::layer_of(&n.name) == Some(layer)).map(|n| n.id).collect(),
        None => g.nodes.iter().map(|n| n.id).collect(),
    };
    if let Some((center, radius)) = opts.around {
        let near = neighbourhood(g, center, radius);
        sel.retain(|id| near.contains(id));
    }
    sel
}

/// Nodes within `radius` edges of `center`, following edges either way.
pub fn neighbourhood(g: &Graph, center: NodeId, radius: u32) -> BTreeSet<NodeId> {
    let pg = g.petgraph();
    let mut seen = BTreeSet::new();
    if center.index() >= g.nodes.len() {
        return seen;
    }
    let mut queue = VecDeque::from([(center, 0u32)]);
    seen.insert(center);
    while let Some((id, d)) = queue.pop_front() {
        if d == radius {
            continue;
        }
        let ix = petgraph::graph::NodeIndex::new(id.index());
        for dir in [Direction::Incoming, Direction::Outgoing] {
            for e in pg.edges_directed(ix, dir) {
                let other = if dir == Direction::Incoming { e.source() } else { e.target() };
                let other = NodeId(other.index() as u32);
                if seen.insert(other) {
                    queue.push_back((other, d + 1));
                }
            }
        }
    }
    seen
}

/// Render `g` as DOT.
pub fn to_dot(g: &Graph, opts: &DotOptions) -> String {
    let sel = select(g, opts);
    let boundary: BTreeSet<NodeId> = sel
        .iter()
        .filter_map(|id| g.node(*id))
        .flat_map(|n| n.inputs.iter().copied())
        .filter(|i| !sel.contains(i))
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "digraph {} {{", esc(&g.meta.name));
    // newrank: rank the whole graph at once rather than cluster by cluster; Graphviz 2.43's
    // per-cluster ranking fails ("trouble in init_rank") on some fused-dispatch clusterings
    // (Qwen3's per-head norms next to the attention ones).
    s.push_str(
        "  rankdir=TB;\n  newrank=true;\n  node [fontname=\"Helvetica\", fontsize=10];\n  edge [color=\"#555555\"];\n",
    );
    let mut clustered = BTreeSet::new();
    for (k, c) in opts.clusters.iter().enumerate() {
        let members: Vec<NodeId> = c.nodes.iter().copied().filter(|id| sel.contains(id)).collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(s, "  subgraph cluster_{k} {{");
        let _ = writeln!(
            s,
            "    label={}; style=\"rounded,filled\"; fillcolor=\"#f4f4ff\"; color=\"#8888cc\";",
            esc(&c.label)
        );
        for id in members {
            if clustered.insert(id) {
                let _ = writeln!(s, "    {}", node_stmt(g, id, opts.highlight, false));
            }
        }
        s.push_str("  }\n");
    }
    for &id in sel.iter().filter(|id| !clustered.contains(id)) {
        let _ = writeln!(s, "  {}", node_stmt(g, id, opts.highlight, false));
    }
    for &id in &boundary {
        let _ = writeln!(s, "  {}", node_stmt(g, id, opts.highlight, true));
    }
    for &id in &sel {
        if let Some(n) = g.node(id) {
            for (k, i) in n.inputs.iter().enumerate() {
                let label = if n.inputs.len() > 1 { format!(" [label=\"{k}\"]") } else { String::new() };
                let _ = writeln!(s, "  n{} -> n{}{label};", i.0, id.0);
            }
        }
    }
    s.push_str("}\n");
    s
}

fn node_stmt(g: &Graph, id: NodeId, highlight: Option<NodeId>, boundary: bool) -> String {
    let Some(n) = g.node(id) else { return String::new() };
    let detail = match &n.op {
        Op::Weight { tensor } if *tensor != n.name => format!("weight {tensor}"),
        Op::Const { value } => format!("const {value}"),
        op => op.name().to_string(),
    };
    let label = format!("{} {}\n{}\n{}", n.id, n.name, detail, n.ty);
    let (shape, fill) = match n.op.class() {
        OpClass::Leaf => match n.op {
            Op::Weight { .. } => ("note", "#fff2cc"),
            Op::State => ("cylinder", "#e2f0d9"),
            _ => ("invhouse", "#eeeeee"),
        },
        OpClass::MatMul => ("box", "#dae8fc"),
        OpClass::Reduce => ("box", "#ffe6cc"),
        OpClass::State => ("box", "#e2f0d9"),
        OpClass::Elementwise | OpClass::Movement | OpClass::Positional => ("box", "#ffffff"),
    };
    let mut attrs = format!(
        "shape={shape}, style=\"filled{}\", fillcolor=\"{fill}\"",
        if n.op.is_view() || boundary { ",dashed" } else { "" }
    );
    if boundary {
        attrs.push_str(", fontcolor=\"#777777\"");
    }
    if highlight == Some(id) {
        attrs = format!("shape={shape}, style=\"filled,bold\", fillcolor=\"#ff6666\", color=\"#cc0000\", penwidth=3");
    }
    format!("n{} [label={}, {attrs}];", id.0, esc(&label))
}

/// A DOT quoted string.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
