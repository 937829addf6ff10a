//! Type inference: the output type of an op from its operand types.
//!
//! This is the single statement of each op's typing rules; [`crate::verify`] and the graph
//! builder both use it. Leaves have declared types and are checked by [`check_leaf`].

use crate::shape::{numel_parts, MAX_RANK};
use crate::{DType, Dim, Op, Shape, TensorType};

/// The output type of `op` applied to operands of types `args`, or why it is ill-typed.
/// The caller has already checked the operand count against [`Op::arity`].
pub fn infer(op: &Op, args: &[&TensorType]) -> Result<TensorType, String> {
    match op {
        Op::Input { .. } | Op::Weight { .. } | Op::Const { .. } | Op::State => {
            Err("a leaf has a declared type, not an inferred one".into())
        }
        Op::Neg | Op::Exp | Op::Sigmoid | Op::Sqrt | Op::Rsqrt | Op::Cos | Op::Sin => {
            let a = arg(args, 0)?;
            want_f32(a, "operand")?;
            Ok(a.clone())
        }
        Op::Cast { to } => {
            let a = arg(args, 0)?;
            if *to != DType::F32 {
                return Err(format!("cast to {to} is not supported (only f32)"));
            }
            if !a.dtype.is_float_like() {
                return Err(format!("cannot cast {} to f32", a.dtype));
            }
            Ok(TensorType { dtype: DType::F32, shape: a.shape.clone() })
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let (a, b) = (arg(args, 0)?, arg(args, 1)?);
            want_f32(a, "left operand")?;
            want_f32(b, "right operand")?;
            Ok(TensorType { dtype: DType::F32, shape: broadcast(&a.shape, &b.shape)? })
        }
        Op::ReduceSum { axis } | Op::ReduceMean { axis } | Op::ReduceMax { axis } => {
            let a = arg(args, 0)?;
            want_f32(a, "operand")?;
            Ok(TensorType { dtype: DType::F32, shape: reduced(&a.shape, *axis)? })
        }
        Op::ArgMax { axis } => {
            let a = arg(args, 0)?;
            want_f32(a, "operand")?;
            Ok(TensorType { dtype: DType::I32, shape: reduced(&a.shape, *axis)? })
        }
        Op::MatMul { transpose_rhs } => matmul(arg(args, 0)?, arg(args, 1)?, *transpose_rhs),
        Op::Reshape { shape } => {
            let a = arg(args, 0)?;
            check_rank(shape)?;
            if numel_parts(&a.shape) != numel_parts(shape) || numel_parts(shape).is_none() {
                return Err(format!("cannot reshape {} to {}", a, TensorType { dtype: a.dtype, shape: shape.clone() }));
            }
            if a.dtype.is_quantized() {
                return Err("cannot reshape a quantized tensor".into());
            }
            Ok(TensorType { dtype: a.dtype, shape: shape.clone() })
        }
        Op::Slice { axis, start, len } => {
            let a = arg(args, 0)?;
            if a.dtype.is_quantized() {
                return Err("cannot slice a quantized tensor".into());
            }
            let ax = axis_index(&a.shape, *axis)?;
            let fits = match (a.shape[ax], *len) {
                (Dim::Const(n), Dim::Const(l)) => start.checked_add(l).is_some_and(|e| e <= n) && l > 0,
                // ctx ≥ 1, so a constant prefix of it may be empty; only whole-ctx slices of
                // ctx, and ctx-long slices of a constant axis that bounds max_ctx, are typed.
                (Dim::Sym(_), Dim::Sym(_)) => *start == 0,
                (Dim::Const(_), Dim::Sym(_)) => *start == 0,
                (Dim::Sym(_), Dim::Const(_)) => false,
            };
            if !fits {
                return Err(format!("slice {start}+{len} does not fit axis {axis} of {a}"));
            }
            let mut shape = a.shape.clone();
            shape[ax] = *len;
            Ok(TensorType { dtype: a.dtype, shape })
        }
        Op::Gather => {
            let (table, ids) = (arg(args, 0)?, arg(args, 1)?);
            if table.shape.len() != 2 {
                return Err(format!("gather table must be 2-D, got {table}"));
            }
            if !table.dtype.is_float_like() {
                return Err(format!("gather table must hold numbers, got {}", table.dtype));
            }
            if ids.dtype != DType::I32 || ids.shape.len() != 1 {
                return Err(format!("gather ids must be i32[n], got {ids}"));
            }
            Ok(TensorType { dtype: DType::F32, shape: vec![ids.shape[0], table.shape[1]] })
        }
        Op::RopeRotate { mode: _, n_rot } => {
            let a = arg(args, 0)?;
            want_f32(a, "operand")?;
            let last = a.last_dim().and_then(Dim::as_const).ok_or("rope_rotate needs a constant last axis")?;
            check_n_rot(*n_rot, last)?;
            Ok(a.clone())
        }
        Op::RopeAngles { mode: _, n_rot, head_dim, theta_base, freq_scale } => {
            let pos = arg(args, 0)?;
            want_position(pos)?;
            check_n_rot(*n_rot, u64::from(*head_dim))?;
            if !(theta_base.is_finite() && *theta_base > 0.0) {
                return Err(format!("theta_base must be positive and finite, got {theta_base}"));
            }
            if !(freq_scale.is_finite() && *freq_scale > 0.0) {
                return Err(format!("freq_scale must be positive and finite, got {freq_scale}"));
            }
            if let Some(ff) = args.get(1) {
                let want = TensorType::new(DType::F32, &[u64::from(n_rot / 2)]);
                if **ff != want {
                    return Err(format!("freq_factors must be {want}, got {ff}"));
                }
            }
            Ok(TensorType::new(DType::F32, &[u64::from(*head_dim)]))
        }
        Op::CacheWrite { axis } => {
            let (cache, value, pos) = (arg(args, 0)?, arg(args, 1)?, arg(args, 2)?);
            want_position(pos)?;
            if cache.dtype != DType::F32 || value.dtype != DType::F32 {
                return Err(format!("cache_write needs f32 cache and value, got {cache} and {value}"));
            }
            let ax = axis_index(&cache.shape, *axis)?;
            let mut expect = cache.shape.clone();
            expect[ax] = Dim::Const(1);
            if value.shape != expect || cache.shape.iter().any(|d| d.as_const().is_none()) {
                let want = TensorType { dtype: DType::F32, shape: expect };
                return Err(format!("cache_write value must be {want} for cache {cache}, got {value}"));
            }
            Ok(cache.clone())
        }
    }
}

/// Check a leaf's declared type: rank, nonzero constant dims, whole quantization blocks,
/// and the type each kind of leaf must have.
pub fn check_leaf(op: &Op, ty: &TensorType) -> Result<(), String> {
    check_rank(&ty.shape)?;
    for d in &ty.shape {
        if *d == Dim::Const(0) {
            return Err(format!("zero-sized dimension in {ty}"));
        }
    }
    if numel_parts(&ty.shape).is_none() {
        return Err(format!("element count of {ty} overflows"));
    }
    match op {
        Op::Input { .. } => {
            if *ty != TensorType::new(DType::I32, &[1]) {
                return Err(format!("an input is i32[1], got {ty}"));
            }
        }
        Op::Const { value } => {
            if !value.is_finite() {
                return Err(format!("constant {value} is not finite"));
            }
            if *ty != TensorType::new(DType::F32, &[]) {
                return Err(format!("a constant is f32[], got {ty}"));
            }
        }
        Op::Weight { tensor } => {
            if tensor.is_empty() {
                return Err("weight names no tensor".into());
            }
            if ty.shape.iter().any(|d| d.as_const().is_none()) || ty.shape.is_empty() {
                return Err(format!("a weight has constant, non-scalar shape, got {ty}"));
            }
            let row = ty.shape.last().and_then(|d| d.as_const()).unwrap_or(0);
            if !row.is_multiple_of(ty.dtype.block_len()) {
                return Err(format!("rows of {ty} are not whole {} blocks of {}", ty.dtype, ty.dtype.block_len()));
            }
            if ty.bytes(0).is_none() {
                return Err(format!("byte size of {ty} overflows"));
            }
        }
        Op::State => {
            if ty.dtype != DType::F32 || ty.shape.iter().any(|d| d.as_const().is_none()) {
                return Err(format!("state is f32 with constant shape, got {ty}"));
            }
        }
        Op::Neg
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
        | Op::Slice { .. }
        | Op::Gather
        | Op::RopeRotate { .. }
        | Op::RopeAngles { .. }
        | Op::CacheWrite { .. } => return Err(format!("{op} is not a leaf")),
    }
    Ok(())
}

/// Numpy broadcasting of two shapes (right-aligned; equal dims, or one of them 1).
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Result<Shape, String> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (Dim::Const(1), y) => y,
            (x, Dim::Const(1)) => x,
            _ => return Err(format!("shapes {} and {} do not broadcast", fmt_shape(a), fmt_shape(b))),
        });
    }
    Ok(out)
}

fn dim_from_right(s: &[Dim], k: usize) -> Dim {
    // k counts from the last axis: 0 is the innermost.
    if k < s.len() {
        s[s.len() - 1 - k]
    } else {
        Dim::Const(1)
    }
}

fn matmul(a: &TensorType, b: &TensorType, transpose_rhs: bool) -> Result<TensorType, String> {
    want_f32(a, "left operand")?;
    if !b.dtype.is_float_like() {
        return Err(format!("right operand must hold numbers, got {b}"));
    }
    if b.dtype.is_quantized() && !transpose_rhs {
        return Err("a quantized right operand must be transposed (rows along K)".into());
    }
    if a.shape.len() < 2 || b.shape.len() < 2 {
        return Err(format!("matmul needs rank >= 2 operands, got {a} and {b}"));
    }
    let (a_batch, a_mk) = a.shape.split_at(a.shape.len() - 2);
    let (b_batch, b_mat) = b.shape.split_at(b.shape.len() - 2);
    if !b_batch.is_empty() && b_batch != a_batch {
        return Err(format!("batch dims of {a} and {b} differ"));
    }
    let (m, k) = (a_mk[0], a_mk[1]);
    let (n, kb) = if transpose_rhs { (b_mat[0], b_mat[1]) } else { (b_mat[1], b_mat[0]) };
    if k != kb {
        return Err(format!("inner dims differ: {a} · {b}{}", if transpose_rhs { "ᵀ" } else { "" }));
    }
    let mut shape = a_batch.to_vec();
    shape.push(m);
    shape.push(n);
    Ok(TensorType { dtype: DType::F32, shape })
}

fn reduced(shape: &[Dim], axis: u32) -> Result<Shape, String> {
    let ax = axis_index(shape, axis)?;
    let mut out = shape.to_vec();
    out[ax] = Dim::Const(1);
    Ok(out)
}

fn axis_index(shape: &[Dim], axis: u32) -> Result<usize, String> {
    let ax = axis as usize;
    if ax >= shape.len() {
        return Err(format!("axis {axis} out of range for rank {}", shape.len()));
    }
    Ok(ax)
}

fn check_rank(shape: &[Dim]) -> Result<(), String> {
    if shape.len() > MAX_RANK {
        return Err(format!("rank {} exceeds {MAX_RANK}", shape.len()));
    }
    Ok(())
}

fn check_n_rot(n_rot: u32, head_dim: u64) -> Result<(), String> {
    if n_rot == 0 || !n_rot.is_multiple_of(2) || u64::from(n_rot) > head_dim {
        return Err(format!("n_rot {n_rot} must be even, nonzero and at most the head dim {head_dim}"));
    }
    Ok(())
}

fn want_f32(t: &TensorType, what: &str) -> Result<(), String> {
    if t.dtype != DType::F32 {
        return Err(format!("{what} must be f32, got {t}"));
    }
    Ok(())
}

fn want_position(t: &TensorType) -> Result<(), String> {
    if *t != TensorType::new(DType::I32, &[1]) {
        return Err(format!("position operand must be i32[1], got {t}"));
    }
    Ok(())
}

fn arg<'a>(args: &[&'a TensorType], i: usize) -> Result<&'a TensorType, String> {
    args.get(i).copied().ok_or_else(|| format!("missing operand {i}"))
}

fn fmt_shape(s: &[Dim]) -> String {
    let parts: Vec<String> = s.iter().map(Dim::to_string).collect();
    format!("[{}]", parts.join(","))
}
