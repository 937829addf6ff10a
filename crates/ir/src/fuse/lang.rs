//! The IR as egg terms.
//!
//! A window of the graph (one layer) becomes an e-graph over [`egg::SymbolLang`]. Each
//! compute or view node is an e-node whose symbol is the op's mnemonic, refined where
//! patterns must tell cases apart (`matmul.t` / `matmul.n`, `reduce_mean.last` for a
//! reduction over the last axis); an op's attributes travel as a first child, a leaf whose
//! symbol is the op itself in JSON (`attr:{…}`), so patterns can bind them with a variable
//! and equal attributes hash-cons to one leaf. Everything outside the window and every IR
//! leaf is an opaque leaf named after its node: `w:17` (weight), `c:4` (constant), `n:3`
//! (other leaves and outer nodes). Fused kernels are symbols `F.<kind>`.

use crate::{Graph, Node, NodeId, Op};
use egg::{Id, Symbol, SymbolLang};
use std::collections::HashMap;

/// The attribute leaf of an op, if its mnemonic does not say everything.
fn attr_leaf(op: &Op) -> Option<String> {
    match op {
        Op::Neg
        | Op::Exp
        | Op::Sigmoid
        | Op::Sqrt
        | Op::Rsqrt
        | Op::Cos
        | Op::Sin
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::MatMul { .. }
        | Op::Gather
        | Op::Input { .. }
        | Op::Weight { .. }
        | Op::Const { .. }
        | Op::State => None,
        Op::Cast { .. }
        | Op::ReduceSum { .. }
        | Op::ReduceMean { .. }
        | Op::ReduceMax { .. }
        | Op::ArgMax { .. }
        | Op::Reshape { .. }
        | Op::Slice { .. }
        | Op::RopeRotate { .. }
        | Op::RopeAngles { .. }
        | Op::CacheWrite { .. } => serde_json::to_string(op).ok().map(|j| format!("attr:{j}")),
    }
}

/// The symbol of a compute or view node.
fn op_symbol(g: &Graph, n: &Node) -> String {
    let last_axis =
        |axis: u32| n.inputs.first().and_then(|&i| g.node(i)).is_some_and(|a| a.ty.shape.len() == axis as usize + 1);
    match &n.op {
        Op::MatMul { transpose_rhs: true } => "matmul.t".into(),
        Op::MatMul { transpose_rhs: false } => "matmul.n".into(),
        Op::ReduceSum { axis } | Op::ReduceMean { axis } | Op::ReduceMax { axis } | Op::ArgMax { axis }
            if last_axis(*axis) =>
        {
            format!("{}.last", n.op.name())
        }
        op => op.name().into(),
    }
}

/// The leaf standing for node `n` when it is not expanded.
fn leaf_symbol(n: &Node) -> String {
    match &n.op {
        Op::Weight { .. } => format!("w:{}", n.id.index()),
        Op::Const { .. } => format!("c:{}", n.id.index()),
        _ => format!("n:{}", n.id.index()),
    }
}

/// The node a leaf symbol stands for.
pub fn leaf_node(sym: Symbol) -> Option<NodeId> {
    let s = sym.as_str();
    let rest = s.strip_prefix("w:").or_else(|| s.strip_prefix("c:")).or_else(|| s.strip_prefix("n:"))?;
    rest.parse::<u32>().ok().map(NodeId)
}

/// Whether the leaf symbol is a weight.
pub fn is_weight(sym: Symbol) -> bool {
    sym.as_str().starts_with("w:")
}

/// The op an e-node stands for, if it is an IR op (not a leaf, an attribute or a fused kernel).
pub fn decode_op(node: &SymbolLang, attr_of: impl Fn(Id) -> Option<Op>) -> Option<Op> {
    let s = node.op.as_str();
    let attr = || node.children.first().and_then(|&c| attr_of(c));
    Some(match s {
        "neg" => Op::Neg,
        "exp" => Op::Exp,
        "sigmoid" => Op::Sigmoid,
        "sqrt" => Op::Sqrt,
        "rsqrt" => Op::Rsqrt,
        "cos" => Op::Cos,
        "sin" => Op::Sin,
        "add" => Op::Add,
        "sub" => Op::Sub,
        "mul" => Op::Mul,
        "div" => Op::Div,
        "gather" => Op::Gather,
        "matmul.t" => Op::MatMul { transpose_rhs: true },
        "matmul.n" => Op::MatMul { transpose_rhs: false },
        _ if s.starts_with("F.") || s.contains(':') => return None,
        _ => attr()?,
    })
}

/// The op an attribute leaf holds.
pub fn attr_op(sym: Symbol) -> Option<Op> {
    serde_json::from_str(sym.as_str().strip_prefix("attr:")?).ok()
}

/// Whether an e-node's operands start with an attribute leaf (so IR operands come after it).
pub fn has_attr(node: &SymbolLang, is_attr: impl Fn(Id) -> bool) -> bool {
    node.children.first().is_some_and(|&c| is_attr(c))
}

/// A window of the graph as an e-graph: `class[i]` is the e-class of node `i` (for nodes of
/// the window and the leaves they read), `members` the window's nodes.
pub struct Window {
    pub egraph: egg::EGraph<SymbolLang, ()>,
    pub class: HashMap<NodeId, Id>,
    /// The window's compute and view nodes, in order, with the e-node each was added as.
    pub members: Vec<(NodeId, SymbolLang)>,
}

impl Window {
    /// Add the nodes `members` (in topological order) of `g`; operands outside become leaves.
    pub fn build(g: &Graph, members: &[NodeId]) -> Window {
        let mut egraph = egg::EGraph::<SymbolLang, ()>::default();
        let mut class: HashMap<NodeId, Id> = HashMap::new();
        let mut kept = Vec::new();
        for &id in members {
            let Some(n) = g.node(id) else { continue };
            if n.op.is_leaf() {
                continue;
            }
            let mut children = Vec::with_capacity(n.inputs.len() + 1);
            if let Some(a) = attr_leaf(&n.op) {
                children.push(egraph.add(SymbolLang::leaf(a)));
            }
            for &i in &n.inputs {
                let c = match class.get(&i) {
                    Some(&c) => c,
                    None => {
                        let Some(x) = g.node(i) else { continue };
                        let c = egraph.add(SymbolLang::leaf(leaf_symbol(x)));
                        class.insert(i, c);
                        c
                    }
                };
                children.push(c);
            }
            let enode = SymbolLang::new(op_symbol(g, n), children);
            let c = egraph.add(enode.clone());
            class.insert(id, c);
            kept.push((id, enode));
        }
        egraph.rebuild();
        Window { egraph, class, members: kept }
    }

    /// The canonical class of node `id`.
    pub fn class_of(&self, id: NodeId) -> Option<Id> {
        self.class.get(&id).map(|&c| self.egraph.find(c))
    }
}
