//! The graph: nodes in topological order, named outputs, and a builder.
//!
//! Storage is an arena (`Vec<Node>`, ids are positions) because every pass walks nodes in
//! order and the text form prints them that way; [`Graph::petgraph`] gives the same graph
//! as a petgraph `DiGraph` for graph algorithms (neighbourhoods, DOT, cycle checks).

use crate::infer::{check_leaf, infer};
use crate::{IrError, NodeId, Op, TensorType};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One IR node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    /// Readable and stable across compiles of the same model and options
    /// (`blk.3.attn_q_rope.cos_mul`); unique within the graph.
    pub name: String,
    #[serde(flatten)]
    pub op: Op,
    pub inputs: Vec<NodeId>,
    #[serde(flatten)]
    pub ty: TensorType,
}

/// A named graph result (`logits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub node: NodeId,
}

/// Facts about the whole graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphMeta {
    /// Model name, for reports.
    pub name: String,
    /// Architecture the graph was lowered from (`qwen2`, `llama`).
    pub arch: String,
    /// Largest value the symbolic cache length may take.
    pub max_ctx: u64,
    /// Anything else worth keeping (hyper-parameters, source file), in insertion order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A dataflow graph for one decode step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub meta: GraphMeta,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
}

/// Size figures of a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub nodes: u64,
    /// Nodes that need a kernel (neither leaves nor views).
    pub compute_nodes: u64,
    /// Bytes of all weight tensors the graph references, as stored.
    pub weight_bytes: u64,
    /// Weight bytes one decode step reads: whole matrices for products, casts and plain
    /// operands, one row per token for gathered tables.
    pub weight_bytes_per_token: u64,
    /// Bytes of persistent state (the KV cache) at `max_ctx`.
    pub state_bytes: u64,
    /// Bytes of every compute node's value at `max_ctx`, unaliased: an upper bound on
    /// activation memory before buffer planning.
    pub activation_bytes: u64,
}

impl Graph {
    /// The node with this id. Ids come from this graph; a foreign id is a caller bug that
    /// verified graphs never produce.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index())
    }

    /// Look a node up by id (`%12`, `12`) or by name.
    pub fn find(&self, key: &str) -> Option<NodeId> {
        let numeric = key.strip_prefix('%').unwrap_or(key);
        if let Ok(n) = numeric.parse::<u32>() {
            if (n as usize) < self.nodes.len() {
                return Some(NodeId(n));
            }
        }
        self.nodes.iter().find(|n| n.name == key).map(|n| n.id)
    }

    /// The output with this name.
    pub fn output(&self, name: &str) -> Option<NodeId> {
        self.outputs.iter().find(|o| o.name == name).map(|o| o.node)
    }

    /// For every node, the nodes that use it (in order, with repeats for repeated operands).
    pub fn users(&self) -> Vec<Vec<NodeId>> {
        let mut users = vec![Vec::new(); self.nodes.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                if let Some(u) = users.get_mut(i.index()) {
                    u.push(n.id);
                }
            }
        }
        users
    }

    /// Size figures (byte counts saturate rather than overflow).
    pub fn stats(&self) -> Stats {
        let ctx = self.meta.max_ctx;
        let mut s = Stats {
            nodes: self.nodes.len() as u64,
            compute_nodes: 0,
            weight_bytes: 0,
            weight_bytes_per_token: 0,
            state_bytes: 0,
            activation_bytes: 0,
        };
        let users = self.users();
        for n in &self.nodes {
            let bytes = n.ty.bytes(ctx).unwrap_or(u64::MAX);
            match n.op {
                Op::Weight { .. } => {
                    s.weight_bytes = s.weight_bytes.saturating_add(bytes);
                    let only_gathered = users[n.id.index()].iter().all(|u| self.nodes[u.index()].op == Op::Gather);
                    let rows = n.ty.shape.first().and_then(|d| d.as_const()).unwrap_or(1).max(1);
                    let read = if only_gathered { bytes / rows } else { bytes };
                    s.weight_bytes_per_token = s.weight_bytes_per_token.saturating_add(read);
                }
                Op::State => s.state_bytes = s.state_bytes.saturating_add(bytes),
                _ if n.op.is_compute() => {
                    s.compute_nodes += 1;
                    s.activation_bytes = s.activation_bytes.saturating_add(bytes);
                }
                _ => {}
            }
        }
        s
    }

    /// The graph as a petgraph `DiGraph` whose node indices equal node ids and whose edge
    /// weights are operand positions (edge `a → b` with weight `k`: `a` is operand `k` of `b`).
    pub fn petgraph(&self) -> DiGraph<NodeId, u32> {
        let mut g = DiGraph::with_capacity(self.nodes.len(), self.nodes.len() * 2);
        for n in &self.nodes {
            g.add_node(n.id);
        }
        for n in &self.nodes {
            for (k, &i) in n.inputs.iter().enumerate() {
                if i.index() < self.nodes.len() {
                    g.add_edge(NodeIndex::new(i.index()), NodeIndex::new(n.id.index()), k as u32);
                }
            }
        }
        g
    }

    /// Serialize to the JSON form.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse the JSON form and verify it.
    pub fn from_json(s: &str) -> Result<Graph, IrError> {
        let g: Graph = serde_json::from_str(s).map_err(|e| IrError::Json(e.to_string()))?;
        g.verify()?;
        Ok(g)
    }
}

/// Builds a graph node by node, inferring types and keeping names unique.
#[derive(Debug)]
pub struct GraphBuilder {
    graph: Graph,
    names: HashMap<String, NodeId>,
}

impl GraphBuilder {
    pub fn new(meta: GraphMeta) -> GraphBuilder {
        GraphBuilder { graph: Graph { meta, nodes: Vec::new(), outputs: Vec::new() }, names: HashMap::new() }
    }

    /// Add a leaf with its declared type.
    pub fn leaf(&mut self, name: impl Into<String>, op: Op, ty: TensorType) -> Result<NodeId, IrError> {
        let id = self.next_id();
        check_leaf(&op, &ty).map_err(|r| IrError::node(id, &op, r))?;
        self.insert(name.into(), op, Vec::new(), ty)
    }

    /// Add a computed node; its type is inferred from its operands.
    pub fn push(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeId]) -> Result<NodeId, IrError> {
        let id = self.next_id();
        let (lo, hi) = op.arity();
        if inputs.len() < lo || inputs.len() > hi || op.is_leaf() {
            return Err(IrError::node(id, &op, format!("takes {lo}..={hi} operands, got {}", inputs.len())));
        }
        let mut tys = Vec::with_capacity(inputs.len());
        for &i in inputs {
            let n = self.graph.node(i).ok_or(IrError::NotTopological { node: id, op: op.name(), input: i })?;
            tys.push(&n.ty);
        }
        let ty = infer(&op, &tys).map_err(|r| IrError::node(id, &op, r))?;
        self.insert(name.into(), op, inputs.to_vec(), ty)
    }

    /// The type of an existing node.
    pub fn ty(&self, id: NodeId) -> Option<&TensorType> {
        self.graph.node(id).map(|n| &n.ty)
    }

    /// The name of an existing node.
    pub fn name(&self, id: NodeId) -> Option<&str> {
        self.graph.node(id).map(|n| n.name.as_str())
    }

    /// Name a result of the graph.
    pub fn output(&mut self, name: impl Into<String>, node: NodeId) {
        self.graph.outputs.push(Output { name: name.into(), node });
    }

    /// Finish and verify.
    pub fn finish(self) -> Result<Graph, IrError> {
        self.graph.verify()?;
        Ok(self.graph)
    }

    fn next_id(&self) -> NodeId {
        NodeId(self.graph.nodes.len() as u32)
    }

    fn insert(&mut self, name: String, op: Op, inputs: Vec<NodeId>, ty: TensorType) -> Result<NodeId, IrError> {
        let id = self.next_id();
        if let Some(&first) = self.names.get(&name) {
            return Err(IrError::DuplicateName { node: id, first, name });
        }
        if name.is_empty() {
            return Err(IrError::node(id, &op, "empty name"));
        }
        self.names.insert(name.clone(), id);
        self.graph.nodes.push(Node { id, name, op, inputs, ty });
        Ok(id)
    }
}
