//! The interpreter: evaluates a graph one decode step at a time (this file: binding the
//! weights, the step loop, batched products, capture; `eval.rs`: one node's value).

mod eval;

use crate::kernels::{self, Precision};
use crate::ops;
use crate::tensor::Tensor;
use crate::CpuError;
use apr_ir::{DType, Graph, Node, NodeId, Op};
use apr_ir_model::quant;
use std::collections::{HashMap, HashSet};

/// Where weight bytes come from (a memory-mapped model file).
pub trait WeightSource {
    /// The stored bytes of tensor `name`, in its file dtype.
    fn tensor_bytes(&self, name: &str) -> Result<&[u8], String>;
}

impl WeightSource for apr_ir_model::Model {
    fn tensor_bytes(&self, name: &str) -> Result<&[u8], String> {
        apr_ir_model::Model::tensor_bytes(self, name).map_err(|e| e.to_string())
    }
}

/// Which node values a step records, for the checker's taps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Capture {
    #[default]
    None,
    All,
    Nodes(HashSet<NodeId>),
}

impl Capture {
    fn wants(&self, id: NodeId) -> bool {
        match self {
            Capture::None => false,
            Capture::All => true,
            Capture::Nodes(s) => s.contains(&id),
        }
    }
}

/// How matrix products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// Parallel, straight from packed blocks (the default).
    #[default]
    Fast,
    /// The definitions, for testing the fast ones.
    Naive,
}

/// The results of one step.
#[derive(Debug, Clone, Default)]
pub struct StepResult {
    /// Graph outputs by name (`logits`).
    pub outputs: Vec<(String, Tensor)>,
    /// Captured node values. A `cache_write` node's value is the rows in use of its cache.
    pub captured: HashMap<NodeId, Tensor>,
}

impl StepResult {
    pub fn output(&self, name: &str) -> Option<&Tensor> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

#[derive(Debug)]
struct WeightRef<'a> {
    dtype: DType,
    bytes: &'a [u8],
    /// The same rows re-encoded for a faster kernel (see [`Interpreter::new`]).
    repacked: Option<kernels::Repacked>,
}

/// Most bytes of re-encoded weights an interpreter keeps (beyond them, weights stay as stored).
const REPACK_BUDGET: usize = 2 << 30;

/// A value during a step.
enum Val<'a, 'g> {
    T(Tensor),
    /// A weight decoded once when the interpreter was built (a norm gain, a bias).
    D(&'g Tensor),
    W(&'g WeightRef<'a>),
    /// The persistent buffer of this state node.
    S(NodeId),
}

impl Val<'_, '_> {
    /// The value as a tensor, if it is one (computed or decoded).
    fn tensor(&self) -> Option<&Tensor> {
        match self {
            Val::T(t) => Some(t),
            Val::D(t) => Some(t),
            Val::W(_) | Val::S(_) => None,
        }
    }
}

/// The reference interpreter of one graph over one set of weights.
pub struct Interpreter<'a> {
    graph: &'a Graph,
    weights: Vec<Option<WeightRef<'a>>>,
    states: HashMap<NodeId, Vec<f32>>,
    /// Weights read as plain values (norm gains, biases), decoded once.
    dense: HashMap<NodeId, Tensor>,
    /// Index of the last node that reads each node (for freeing values early).
    last_use: Vec<usize>,
    /// Products of one value with weight matrices, keyed by the first of them: all of them
    /// (the first included, in graph order), computed together when that one is reached.
    siblings: HashMap<NodeId, Vec<NodeId>>,
    kernels: Kernels,
    precision: Precision,
}

impl<'a> Interpreter<'a> {
    /// Bind a verified graph to its weights. Fails if a weight is missing or its size does
    /// not match the graph's type for it.
    ///
    /// Matrices that products read in a layout with a faster kernel are re-encoded here, once
    /// ([`kernels::repack`]: `q5_0` and `q6_k` rows become 32 signed bytes with f32 scales per
    /// block, 36/22 and 320/210 of the file's bytes, the same values and with AVX2 bit-for-bit
    /// the same products), up to 2 GiB of re-encoded bytes in all; [`Interpreter::with_repacking`]
    /// turns this off.
    pub fn new(graph: &'a Graph, weights: &'a dyn WeightSource) -> Result<Interpreter<'a>, CpuError> {
        Interpreter::bind(graph, weights, REPACK_BUDGET)
    }

    /// [`Interpreter::new`] without the load-time re-encoding: products read the stored layout
    /// (the same results, ~1.2–1.5× slower per step for `q5_0`/`q6_k`). For a few steps, such
    /// as `run`'s parity gate, this is cheaper than a pass over every matrix that writes half
    /// as many bytes again (seconds and gigabytes on a 7B model).
    pub fn new_stored(graph: &'a Graph, weights: &'a dyn WeightSource) -> Result<Interpreter<'a>, CpuError> {
        Interpreter::bind(graph, weights, 0)
    }

    fn bind(
        graph: &'a Graph,
        weights: &'a dyn WeightSource,
        repack_budget: usize,
    ) -> Result<Interpreter<'a>, CpuError> {
        graph.verify()?;
        let mut ws = Vec::with_capacity(graph.nodes.len());
        let mut states = HashMap::new();
        for n in &graph.nodes {
            ws.push(match &n.op {
                Op::Weight { tensor } => {
                    let bytes = weights
                        .tensor_bytes(tensor)
                        .map_err(|reason| CpuError::Weight { name: tensor.clone(), reason })?;
                    let want = n.ty.bytes(graph.meta.max_ctx).unwrap_or(u64::MAX);
                    if bytes.len() as u64 != want {
                        return Err(CpuError::Weight {
                            name: tensor.clone(),
                            reason: format!("holds {} bytes, {} needs {want}", bytes.len(), n.ty),
                        });
                    }
                    Some(WeightRef { dtype: n.ty.dtype, bytes, repacked: None })
                }
                _ => None,
            });
            if n.op == Op::State {
                let len = n.ty.bytes(0).unwrap_or(0) / 4;
                let len = usize::try_from(len).map_err(|_| CpuError::node(n, "state too large"))?;
                let mut buf = Vec::new();
                buf.try_reserve_exact(len)
                    .map_err(|_| CpuError::node(n, format!("cannot allocate {} of state", n.ty)))?;
                buf.resize(len, 0.0);
                states.insert(n.id, buf);
            }
        }
        // Weights that some op reads as a plain value rather than through a matmul (as its
        // right operand), a gather (as its table) or a cast are decoded once, here.
        let mut dense = HashMap::new();
        for user in &graph.nodes {
            for (k, i) in user.inputs.iter().enumerate() {
                let packed_use =
                    matches!((&user.op, k), (Op::MatMul { .. }, 1) | (Op::Gather, 0) | (Op::Cast { .. }, 0));
                let Some(w) = ws.get(i.index()).and_then(|w| w.as_ref()) else { continue };
                if packed_use || dense.contains_key(i) {
                    continue;
                }
                let node = &graph.nodes[i.index()];
                let shape = concrete(node, 1);
                let mut data = vec![0.0; shape.iter().product()];
                quant::dequantize(w.dtype, w.bytes, &mut data).map_err(|e| CpuError::node(node, e.to_string()))?;
                dense.insert(*i, Tensor::f32(shape, data));
            }
        }
        let mut budget = repack_budget;
        for user in &graph.nodes {
            let (Op::MatMul { transpose_rhs: true }, Some(i)) = (&user.op, user.inputs.get(1)) else { continue };
            let Some(Some(w)) = ws.get_mut(i.index()) else { continue };
            let node = &graph.nodes[i.index()];
            let shape = concrete(node, 1);
            let (Some(&k), Some(rows)) =
                (shape.last(), shape.len().checked_sub(1).map(|r| shape[..r].iter().product()))
            else {
                continue;
            };
            if w.repacked.is_some() {
                continue;
            }
            // A matrix that cannot be re-encoded, or not within the budget (or memory for it),
            // keeps its stored layout.
            if kernels::repacked_len(w.dtype, rows, k).is_none_or(|n| n > budget) {
                continue;
            }
            if let Ok(Some(r)) = kernels::repack(w.dtype, w.bytes, rows, k) {
                budget = budget.saturating_sub(r.bytes().len());
                w.repacked = Some(r);
            }
        }
        let mut last_use: Vec<usize> = (0..graph.nodes.len()).collect();
        for n in &graph.nodes {
            for i in &n.inputs {
                last_use[i.index()] = n.id.index();
            }
        }
        for o in &graph.outputs {
            last_use[o.node.index()] = usize::MAX;
        }
        // Products `x · Wᵀ` of one value `x` with several weight matrices (q/k/v, gate/up):
        // they depend on nothing computed after the first of them, so they can run as one.
        let mut by_lhs: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for n in &graph.nodes {
            let (Op::MatMul { transpose_rhs: true }, [lhs, rhs]) = (&n.op, n.inputs.as_slice()) else { continue };
            let is_matrix = ws.get(rhs.index()).is_some_and(Option::is_some)
                && !dense.contains_key(rhs)
                && graph.nodes[rhs.index()].ty.shape.len() == 2;
            if is_matrix {
                by_lhs.entry(*lhs).or_default().push(n.id);
            }
        }
        let siblings = by_lhs.into_values().filter(|v| v.len() > 1).filter_map(|v| Some((*v.first()?, v))).collect();
        Ok(Interpreter {
            graph,
            weights: ws,
            states,
            dense,
            last_use,
            siblings,
            kernels: Kernels::Fast,
            precision: Precision::Exact,
        })
    }

    /// Choose the matrix-product kernels.
    pub fn with_kernels(mut self, kernels: Kernels) -> Interpreter<'a> {
        self.kernels = kernels;
        self
    }

    /// Choose how products with weight matrices treat activations: [`Precision::Exact`] (the
    /// default, the reference semantics) or the opt-in [`Precision::Int16`] (activations
    /// rounded to 16 bits per block of 32; faster, not exact). Applies to the fast kernels.
    pub fn with_precision(mut self, precision: Precision) -> Interpreter<'a> {
        self.precision = precision;
        self
    }

    /// Keep (`true`, the default) or drop the re-encoded copies of weights made by
    /// [`Interpreter::new`]; without them products read the stored layout (same results).
    pub fn with_repacking(mut self, on: bool) -> Interpreter<'a> {
        if !on {
            for w in self.weights.iter_mut().flatten() {
                w.repacked = None;
            }
        }
        self
    }

    /// Bytes of re-encoded weights held (read by products instead of the stored ones).
    pub fn repacked_bytes(&self) -> usize {
        self.weights.iter().flatten().filter_map(|w| w.repacked.as_ref()).map(|r| r.bytes().len()).sum()
    }

    /// Forget the KV cache (start a new sequence).
    pub fn reset(&mut self) {
        for buf in self.states.values_mut() {
            buf.fill(0.0);
        }
    }

    /// Decode `token` at position `pos`, updating the KV cache.
    ///
    /// The step runs on a worker of rayon's pool, so each parallel product in it forks from
    /// that worker (the other workers steal its halves) instead of being injected from outside
    /// with the calling thread asleep until it ends: one hand-off per step, not one per
    /// product (a decode step has a couple of hundred).
    pub fn step(&mut self, token: u32, pos: u32, capture: &Capture) -> Result<StepResult, CpuError> {
        rayon::scope(|_| self.step_here(token, pos, capture))
    }

    fn step_here(&mut self, token: u32, pos: u32, capture: &Capture) -> Result<StepResult, CpuError> {
        let max_ctx = self.graph.meta.max_ctx;
        if u64::from(pos) >= max_ctx {
            return Err(CpuError::Position { pos, max_ctx });
        }
        let ctx = u64::from(pos) + 1;
        let graph = self.graph;
        let mut vals: Vec<Option<Val<'a, '_>>> = Vec::with_capacity(graph.nodes.len());
        let mut result = StepResult::default();
        // Weights are borrowed for the whole step; take them out of `self` to keep the
        // borrow checker out of the state updates.
        let weights = std::mem::take(&mut self.weights);
        let dense = std::mem::take(&mut self.dense);
        // Products computed ahead of their turn with a sibling (see `siblings`).
        let mut early: HashMap<NodeId, Tensor> = HashMap::new();
        let outcome = (|| {
            for n in &graph.nodes {
                if self.kernels == Kernels::Fast {
                    if let Some(group) = self.siblings.get(&n.id) {
                        early.extend(self.sibling_products(group, &vals, &weights, ctx)?);
                    }
                }
                let v = match (&n.op, n.inputs.first()) {
                    _ if early.contains_key(&n.id) => {
                        Val::T(early.remove(&n.id).ok_or_else(|| CpuError::node(n, "product not computed"))?)
                    }
                    // A reshape that is the last reader of a computed value takes its buffer.
                    (Op::Reshape { .. }, Some(i)) if self.last_use[i.index()] == n.id.index() => {
                        match vals[i.index()].take() {
                            Some(Val::T(t)) => Val::T(Tensor { shape: concrete(n, ctx), data: t.data }),
                            other => {
                                vals[i.index()] = other;
                                self.eval(n, &vals, &weights, &dense, token, pos, ctx)?
                            }
                        }
                    }
                    _ => self.eval(n, &vals, &weights, &dense, token, pos, ctx)?,
                };
                if capture.wants(n.id) {
                    if let Some(t) = self.materialize(n, &v, ctx) {
                        result.captured.insert(n.id, t);
                    }
                }
                vals.push(Some(v));
                for i in &n.inputs {
                    if self.last_use[i.index()] == n.id.index() {
                        vals[i.index()] = None;
                    }
                }
            }
            for (k, o) in graph.outputs.iter().enumerate() {
                let n = &graph.nodes[o.node.index()];
                // The last output naming a computed value takes it (the logits: no copy).
                let last = !graph.outputs[k + 1..].iter().any(|p| p.node == o.node);
                let t = match vals[o.node.index()].take() {
                    Some(Val::T(t)) if last => Some(t),
                    v => {
                        let t = v.as_ref().and_then(|v| self.materialize(n, v, ctx));
                        vals[o.node.index()] = v;
                        t
                    }
                };
                result.outputs.push((o.name.clone(), t.ok_or_else(|| CpuError::node(n, "output has no value"))?));
            }
            Ok(())
        })();
        self.weights = weights;
        self.dense = dense;
        outcome.map(|()| result)
    }

    /// The products of one vector with the weight matrices of `group` (all `[N, K]` weights
    /// bound in their packed form; see `siblings`) in one parallel pass, by node; none where
    /// the left operand is not a single row (then each product runs on its own).
    fn sibling_products(
        &self,
        group: &[NodeId],
        vals: &[Option<Val<'a, '_>>],
        weights: &[Option<WeightRef<'a>>],
        ctx: u64,
    ) -> Result<Vec<(NodeId, Tensor)>, CpuError> {
        let nodes: Vec<&Node> = group.iter().map(|id| &self.graph.nodes[id.index()]).collect();
        let Some(first) = nodes.first() else { return Ok(Vec::new()) };
        let x = match first.inputs.first().and_then(|i| vals.get(i.index())).and_then(|v| v.as_ref()) {
            Some(v) => match v.tensor().and_then(|t| t.as_f32().map(|d| (d, &t.shape))) {
                Some((d, shape)) if shape.last() == Some(&d.len()) => d,
                _ => return Ok(Vec::new()),
            },
            None => return Ok(Vec::new()),
        };
        let mut outs: Vec<Vec<f32>> = Vec::with_capacity(nodes.len());
        let mut rows: Vec<kernels::Rows<'_>> = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let Some(w) = n.inputs.get(1).and_then(|i| weights.get(i.index())).and_then(|w| w.as_ref()) else {
                return Ok(Vec::new());
            };
            rows.push(match &w.repacked {
                Some(r) => kernels::Rows::Repacked(r),
                None => kernels::Rows::Stored { dtype: w.dtype, bytes: w.bytes },
            });
            outs.push(vec![0.0; concrete(n, ctx).iter().product()]);
        }
        let mut jobs: Vec<(kernels::Rows<'_>, &mut [f32])> =
            rows.into_iter().zip(outs.iter_mut()).map(|(r, o)| (r, o.as_mut_slice())).collect();
        kernels::matvec_batch_with(&mut jobs, x, self.precision).map_err(|e| CpuError::node(first, e.to_string()))?;
        Ok(nodes.iter().zip(outs).map(|(n, o)| (n.id, Tensor::f32(concrete(n, ctx), o))).collect())
    }

    /// A value as a tensor (weights dequantized, states as their rows in use).
    fn materialize(&self, n: &Node, v: &Val<'_, '_>, ctx: u64) -> Option<Tensor> {
        match v {
            Val::T(t) => Some(t.clone()),
            Val::D(t) => Some((*t).clone()),
            Val::W(w) => {
                let shape = concrete(n, ctx);
                let mut out = vec![0.0; shape.iter().product()];
                quant::dequantize(w.dtype, w.bytes, &mut out).ok()?;
                Some(Tensor::f32(shape, out))
            }
            Val::S(id) => {
                let shape = concrete(&self.graph.nodes[id.index()], ctx);
                let axis = cache_axis(self.graph, n).unwrap_or(1);
                let mut rows = shape.clone();
                rows[axis] = ctx as usize;
                let data = ops::slice(self.states.get(id)?, &shape, axis, 0, ctx as usize);
                Some(Tensor::f32(rows, data))
            }
        }
    }
}

/// The axis a cache-write node writes along (for materializing its rows in use).
fn cache_axis(g: &Graph, n: &Node) -> Option<usize> {
    match &n.op {
        Op::CacheWrite { axis } => Some(*axis as usize),
        Op::State => g.nodes.iter().find_map(|m| match &m.op {
            Op::CacheWrite { axis } if m.inputs.first() == Some(&n.id) => Some(*axis as usize),
            _ => None,
        }),
        _ => None,
    }
}

/// A node's shape with `ctx` bound.
fn concrete(n: &Node, ctx: u64) -> Vec<usize> {
    n.ty.shape.iter().map(|d| d.eval(ctx) as usize).collect()
}

fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32().unwrap_or(&[])
}
