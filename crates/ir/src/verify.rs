//! Graph verification.
//!
//! # Contract
//! If [`Graph::verify`] returns `Ok`, no backend may panic on the graph: every id is in
//! range and names an earlier node (so the node list is a topological order), every op has
//! an allowed operand count and operand types for which [`crate::infer`] gives exactly the
//! stored type, every leaf's declared type is well-formed (ranks ≤ 4, no zero or overflowing
//! sizes, whole quantization blocks), every symbolic length fits the axis it indexes at
//! `max_ctx`, every cache write targets a `state` leaf written by no other node, and every
//! output names a node. Backends may still fail — out of memory, a missing tensor — but with
//! an error, never a panic.

use crate::infer::{check_leaf, infer};
use crate::{Dim, Graph, IrError, NodeId, Op};
use std::collections::HashMap;

/// Largest `max_ctx` a graph may declare (positions travel as `i32`).
pub const MAX_CTX_LIMIT: u64 = i32::MAX as u64;

impl Graph {
    /// Check the graph against the contract above.
    pub fn verify(&self) -> Result<(), IrError> {
        if self.meta.max_ctx == 0 || self.meta.max_ctx > MAX_CTX_LIMIT {
            return Err(IrError::Graph(format!("max_ctx {} is not in 1..={MAX_CTX_LIMIT}", self.meta.max_ctx)));
        }
        if self.nodes.len() >= u32::MAX as usize {
            return Err(IrError::Graph("too many nodes".into()));
        }
        let mut names: HashMap<&str, NodeId> = HashMap::with_capacity(self.nodes.len());
        let mut writers: HashMap<NodeId, NodeId> = HashMap::new();
        for (pos, n) in self.nodes.iter().enumerate() {
            let id = NodeId(pos as u32);
            if n.id != id {
                return Err(IrError::BadId { node: id, found: n.id });
            }
            if n.name.is_empty() {
                return Err(IrError::node(id, &n.op, "empty name"));
            }
            if let Some(&first) = names.get(n.name.as_str()) {
                return Err(IrError::DuplicateName { node: id, first, name: n.name.clone() });
            }
            names.insert(&n.name, id);
            let (lo, hi) = n.op.arity();
            if n.inputs.len() < lo || n.inputs.len() > hi {
                return Err(IrError::node(id, &n.op, format!("takes {lo}..={hi} operands, got {}", n.inputs.len())));
            }
            for &i in &n.inputs {
                if i >= id {
                    return Err(IrError::NotTopological { node: id, op: n.op.name(), input: i });
                }
            }
            if n.op.is_leaf() {
                check_leaf(&n.op, &n.ty).map_err(|r| IrError::node(id, &n.op, r))?;
                continue;
            }
            let tys: Vec<_> = n.inputs.iter().map(|i| &self.nodes[i.index()].ty).collect();
            let ty = infer(&n.op, &tys).map_err(|r| IrError::node(id, &n.op, r))?;
            if ty != n.ty {
                return Err(IrError::node(id, &n.op, format!("declared type {} but operands give {ty}", n.ty)));
            }
            self.check_bounds(id, n, &mut writers)?;
        }
        let mut out_names: HashMap<&str, ()> = HashMap::new();
        for o in &self.outputs {
            if o.node.index() >= self.nodes.len() {
                return Err(IrError::Graph(format!("output {:?} names missing node {}", o.name, o.node)));
            }
            if o.name.is_empty() || out_names.insert(&o.name, ()).is_some() {
                return Err(IrError::Graph(format!("output name {:?} is empty or repeated", o.name)));
            }
        }
        Ok(())
    }

    /// Per-op invariants that need the graph, not just operand types.
    fn check_bounds(&self, id: NodeId, n: &crate::Node, writers: &mut HashMap<NodeId, NodeId>) -> Result<(), IrError> {
        let ctx = self.meta.max_ctx;
        let operand = |k: usize| &self.nodes[n.inputs[k].index()];
        match &n.op {
            Op::Slice { axis, start: _, len } => {
                let a = operand(0);
                if let (Dim::Sym(_), Some(size)) = (len, a.ty.shape[*axis as usize].as_const()) {
                    if size < ctx {
                        return Err(IrError::node(
                            id,
                            &n.op,
                            format!("axis of size {size} is shorter than max_ctx {ctx}"),
                        ));
                    }
                }
            }
            Op::CacheWrite { axis } => {
                let cache = operand(0);
                if cache.op != Op::State {
                    return Err(IrError::node(id, &n.op, format!("writes {} ({}), not a state", cache.id, cache.op)));
                }
                if let Some(prev) = writers.insert(cache.id, id) {
                    return Err(IrError::node(id, &n.op, format!("state {} is already written by {prev}", cache.id)));
                }
                let size = cache.ty.shape[*axis as usize].as_const().unwrap_or(0);
                if size < ctx {
                    return Err(IrError::node(
                        id,
                        &n.op,
                        format!("cache axis of size {size} is shorter than max_ctx {ctx}"),
                    ));
                }
            }
            Op::Input { .. }
            | Op::Weight { .. }
            | Op::Const { .. }
            | Op::State
            | Op::Neg
            | Op::Exp
            | Op::Sigmoid
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Cos
            | Op::Sin
            | Op::Cast { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::ReduceSum { .. }
            | Op::ReduceMean { .. }
            | Op::ReduceMax { .. }
            | Op::ArgMax { .. }
            | Op::MatMul { .. }
            | Op::Reshape { .. }
            | Op::Gather
            | Op::RopeRotate { .. }
            | Op::RopeAngles { .. } => {}
        }
        if n.ty.bytes(ctx).is_none() {
            return Err(IrError::node(id, &n.op, format!("byte size of {} at max_ctx overflows", n.ty)));
        }
        Ok(())
    }
}
