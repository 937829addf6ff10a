//! One node's value: the op semantics, dispatched to `ops` (elementwise, reductions, movement,
//! RoPE, cache writes) and `matmul` (products with packed weights or over the cache).

use super::{concrete, f32s, Interpreter, Kernels, Val, WeightRef};
use crate::kernels::{self, Precision};
use crate::matmul::{self, Dims, Rhs};
use crate::ops::{self, Binary, Reduce, Unary};
use crate::tensor::Tensor;
use crate::CpuError;
use apr_ir::{InputKind, Node, NodeId, Op};
use apr_ir_model::quant;
use std::collections::HashMap;

impl<'a> Interpreter<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn eval<'g>(
        &mut self,
        n: &Node,
        vals: &[Option<Val<'a, 'g>>],
        weights: &'g [Option<WeightRef<'a>>],
        dense: &'g HashMap<NodeId, Tensor>,
        token: u32,
        pos: u32,
        ctx: u64,
    ) -> Result<Val<'a, 'g>, CpuError> {
        let arg = |k: usize| -> Result<&Val<'a, 'g>, CpuError> {
            n.inputs
                .get(k)
                .and_then(|i| vals.get(i.index()))
                .and_then(|v| v.as_ref())
                .ok_or_else(|| CpuError::node(n, format!("operand {k} has no value")))
        };
        let f32_arg = |k: usize| -> Result<&Tensor, CpuError> {
            match arg(k)?.tensor() {
                Some(t) if t.as_f32().is_some() => Ok(t),
                _ => Err(CpuError::node(n, format!("operand {k} is not an f32 value"))),
            }
        };
        let out_shape = concrete(n, ctx);
        let f = |data: Vec<f32>| Ok(Val::T(Tensor::f32(out_shape.clone(), data)));
        let un = |op: Unary| -> Result<Val<'a, 'g>, CpuError> { f(ops::unary(op, f32s(f32_arg(0)?))) };
        let bin = |op: Binary| -> Result<Val<'a, 'g>, CpuError> {
            let (a, b) = (f32_arg(0)?, f32_arg(1)?);
            f(ops::binary(op, f32s(a), &a.shape, f32s(b), &b.shape, &out_shape))
        };
        let red = |op: Reduce, axis: u32| -> Result<Val<'a, 'g>, CpuError> {
            let a = f32_arg(0)?;
            f(ops::reduce(op, f32s(a), &a.shape, axis as usize))
        };
        match &n.op {
            Op::Input { kind } => {
                let v = match kind {
                    InputKind::Token => {
                        i32::try_from(token).map_err(|_| CpuError::node(n, format!("token id {token} too large")))?
                    }
                    InputKind::Position => pos as i32,
                };
                Ok(Val::T(Tensor::i32(vec![1], vec![v])))
            }
            Op::Weight { .. } if dense.contains_key(&n.id) => {
                dense.get(&n.id).map(Val::D).ok_or_else(|| CpuError::node(n, "weight not decoded"))
            }
            Op::Weight { .. } => {
                weights[n.id.index()].as_ref().map(Val::W).ok_or_else(|| CpuError::node(n, "weight not bound"))
            }
            Op::Const { value } => f(vec![*value as f32]),
            Op::State => Ok(Val::S(n.id)),
            Op::Neg => un(Unary::Neg),
            Op::Exp => un(Unary::Exp),
            // The fast path is within 4 ulp of the f64 definition (kernels::sigmoid).
            Op::Sigmoid if self.kernels == Kernels::Fast => f(kernels::sigmoid(f32s(f32_arg(0)?))),
            Op::Sigmoid => un(Unary::Sigmoid),
            Op::Sqrt => un(Unary::Sqrt),
            Op::Rsqrt => un(Unary::Rsqrt),
            Op::Cos => un(Unary::Cos),
            Op::Sin => un(Unary::Sin),
            Op::Cast { to: _ } => match arg(0)? {
                Val::T(t) => f(t.to_f32_vec()),
                Val::D(t) => f(t.to_f32_vec()),
                Val::W(w) => {
                    let mut out = vec![0.0; out_shape.iter().product()];
                    quant::dequantize(w.dtype, w.bytes, &mut out).map_err(|e| CpuError::node(n, e.to_string()))?;
                    f(out)
                }
                Val::S(_) => Err(CpuError::node(n, "cannot cast a state")),
            },
            Op::Add => bin(Binary::Add),
            Op::Sub => bin(Binary::Sub),
            Op::Mul => bin(Binary::Mul),
            Op::Div => bin(Binary::Div),
            Op::ReduceSum { axis } => red(Reduce::Sum, *axis),
            Op::ReduceMean { axis } => red(Reduce::Mean, *axis),
            Op::ReduceMax { axis } => red(Reduce::Max, *axis),
            Op::ArgMax { axis } => {
                let a = f32_arg(0)?;
                Ok(Val::T(Tensor::i32(out_shape.clone(), ops::argmax(f32s(a), &a.shape, *axis as usize))))
            }
            Op::MatMul { transpose_rhs } => {
                let a = f32_arg(0)?;
                let rank = a.shape.len();
                let (m, k) = (a.shape[rank - 2], a.shape[rank - 1]);
                let batch: usize = a.shape[..rank - 2].iter().product();
                let rhs_node = &self.graph.nodes[n.inputs[1].index()];
                let rhs_shape = concrete(rhs_node, ctx);
                let nn = if *transpose_rhs { rhs_shape[rhs_shape.len() - 2] } else { rhs_shape[rhs_shape.len() - 1] };
                let dims = Dims { batch, rhs_batched: rhs_shape.len() > 2, m, k, n: nn };
                if let (Val::W(w), true, Kernels::Fast, Precision::Int16) =
                    (arg(1)?, *transpose_rhs && batch * m == 1 && rhs_shape.len() == 2, self.kernels, self.precision)
                {
                    let rows = match &w.repacked {
                        Some(r) => kernels::Rows::Repacked(r),
                        None => kernels::Rows::Stored { dtype: w.dtype, bytes: w.bytes },
                    };
                    let mut out = vec![0.0; nn];
                    kernels::matvec_batch_with(&mut [(rows, out.as_mut_slice())], f32s(a), self.precision)
                        .map_err(|e| CpuError::node(n, e.to_string()))?;
                    return f(out);
                }
                let decoded: Vec<f32>;
                let rhs = match arg(1)? {
                    Val::W(w) if *transpose_rhs => match (&w.repacked, self.kernels) {
                        (Some(r), Kernels::Fast) => Rhs::Repacked(r),
                        _ => Rhs::Packed { dtype: w.dtype, bytes: w.bytes },
                    },
                    Val::W(w) => {
                        // A [K, N] weight (never quantized: verify requires transposed blocks).
                        let mut v = vec![0.0; rhs_shape.iter().product()];
                        quant::dequantize(w.dtype, w.bytes, &mut v).map_err(|e| CpuError::node(n, e.to_string()))?;
                        decoded = v;
                        Rhs::F32 { data: &decoded, transposed: false }
                    }
                    Val::T(t) => Rhs::F32 { data: f32s(t), transposed: *transpose_rhs },
                    Val::D(t) => Rhs::F32 { data: f32s(t), transposed: *transpose_rhs },
                    Val::S(_) => return Err(CpuError::node(n, "a state cannot be a matmul operand")),
                };
                let out = match self.kernels {
                    Kernels::Fast => matmul::fast(f32s(a), rhs, dims),
                    Kernels::Naive => matmul::naive(f32s(a), rhs, dims),
                }
                .map_err(|e| CpuError::node(n, e.to_string()))?;
                f(out)
            }
            Op::Reshape { shape: _ } => match arg(0)?.tensor() {
                Some(t) => Ok(Val::T(Tensor { shape: out_shape.clone(), data: t.data.clone() })),
                None => Err(CpuError::node(n, "can only reshape computed values")),
            },
            Op::Slice { axis, start, len: _ } => {
                let ax = *axis as usize;
                let start = *start as usize;
                let len = out_shape[ax];
                let v = arg(0)?;
                match v {
                    Val::T(_) | Val::D(_) => match v.tensor().map(|t| (&t.data, &t.shape)) {
                        Some((crate::tensor::Data::F32(d), shape)) => f(ops::slice(d, shape, ax, start, len)),
                        Some((crate::tensor::Data::I32(d), shape)) => {
                            Ok(Val::T(Tensor::i32(out_shape.clone(), ops::slice(d, shape, ax, start, len))))
                        }
                        None => Err(CpuError::node(n, "operand 0 has no value")),
                    },
                    Val::S(id) => {
                        let shape = concrete(&self.graph.nodes[id.index()], ctx);
                        let buf = self.states.get(id).ok_or_else(|| CpuError::node(n, "state not allocated"))?;
                        f(ops::slice(buf, &shape, ax, start, len))
                    }
                    Val::W(_) => Err(CpuError::node(n, "cannot slice a weight")),
                }
            }
            Op::Gather => {
                let Some(ids) = arg(1)?.tensor() else { return Err(CpuError::node(n, "ids must be a value")) };
                let ids = ids.as_i32().ok_or_else(|| CpuError::node(n, "ids must be i32"))?;
                let table_node = &self.graph.nodes[n.inputs[0].index()];
                let tshape = concrete(table_node, ctx);
                let (rows, cols) = (tshape[0], tshape[1]);
                let mut out = vec![0.0f32; ids.len() * cols];
                for (r, &id) in ids.iter().enumerate() {
                    let row = usize::try_from(id).ok().filter(|&i| i < rows).ok_or_else(|| {
                        CpuError::node(n, format!("token id {id} is outside the table's {rows} rows"))
                    })?;
                    let dst = &mut out[r * cols..(r + 1) * cols];
                    match arg(0)? {
                        Val::W(w) => {
                            let rb = (w.bytes.len()) / rows;
                            quant::dequantize(w.dtype, &w.bytes[row * rb..(row + 1) * rb], dst)
                                .map_err(|e| CpuError::node(n, e.to_string()))?;
                        }
                        Val::T(t) => dst.copy_from_slice(&t.to_f32_vec()[row * cols..(row + 1) * cols]),
                        Val::D(t) => dst.copy_from_slice(&t.to_f32_vec()[row * cols..(row + 1) * cols]),
                        Val::S(_) => return Err(CpuError::node(n, "cannot gather from a state")),
                    }
                }
                f(out)
            }
            Op::RopeRotate { mode, n_rot } => {
                let a = f32_arg(0)?;
                let hd = *a.shape.last().unwrap_or(&1);
                f(ops::rope_rotate(f32s(a), hd, *mode, *n_rot as usize))
            }
            Op::RopeAngles { mode, n_rot, head_dim, theta_base, freq_scale } => {
                let factors = match n.inputs.get(1) {
                    Some(_) => Some(f32s(f32_arg(1)?)),
                    None => None,
                };
                f(ops::rope_angles(
                    pos as i32,
                    *mode,
                    *n_rot as usize,
                    *head_dim as usize,
                    *theta_base,
                    *freq_scale,
                    factors,
                ))
            }
            Op::CacheWrite { axis } => {
                let Val::S(id) = arg(0)? else { return Err(CpuError::node(n, "cache must be a state")) };
                let id = *id;
                let value = f32_arg(1)?;
                let shape = concrete(&self.graph.nodes[id.index()], ctx);
                let data = f32s(value).to_vec();
                let buf = self.states.get_mut(&id).ok_or_else(|| CpuError::node(n, "state not allocated"))?;
                ops::cache_write(buf, &shape, *axis as usize, &data, pos as usize);
                Ok(Val::S(id))
            }
        }
    }
}
