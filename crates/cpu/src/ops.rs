//! Naive implementations of the IR's ops: loops that read like the op's definition in
//! `apr_ir::Op`. Accumulations are in f64, so the reference is at least as accurate as any
//! backend held to it.

use crate::tensor::{split_at_axis, strides};
use apr_ir::RopeMode;

/// Elementwise unary ops.
#[derive(Debug, Clone, Copy)]
pub enum Unary {
    Neg,
    Exp,
    Sigmoid,
    Sqrt,
    Rsqrt,
    Cos,
    Sin,
}

pub fn unary(op: Unary, x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| match op {
            Unary::Neg => -v,
            Unary::Exp => v.exp(),
            Unary::Sigmoid => (1.0 / (1.0 + f64::from(-v).exp())) as f32,
            Unary::Sqrt => v.sqrt(),
            Unary::Rsqrt => (1.0 / f64::from(v).sqrt()) as f32,
            Unary::Cos => v.cos(),
            Unary::Sin => v.sin(),
        })
        .collect()
}

/// Elementwise binary ops.
#[derive(Debug, Clone, Copy)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a op b` with numpy broadcasting into `out_shape`.
pub fn binary(op: Binary, a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], out_shape: &[usize]) -> Vec<f32> {
    let f = |x: f32, y: f32| match op {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
    };
    if a_shape == out_shape && b_shape == out_shape {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..n {
        let ia: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum();
        let ib: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum();
        out.push(f(a[ia], b[ib]));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Strides of `shape` seen through broadcasting to `out` (0 where a dim is broadcast).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(shape);
    let pad = out.len() - shape.len();
    (0..out.len()).map(|d| if d < pad || shape[d - pad] == 1 { 0 } else { st[d - pad] }).collect()
}

/// Reductions over one axis.
#[derive(Debug, Clone, Copy)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
}

pub fn reduce(op: Reduce, x: &[f32], shape: &[usize], axis: usize) -> Vec<f32> {
    let (outer, len, inner) = split_at_axis(shape, axis);
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| x[(o * len + k) * inner + i];
            out.push(match op {
                Reduce::Sum => (0..len).map(|k| f64::from(at(k))).sum::<f64>() as f32,
                Reduce::Mean => ((0..len).map(|k| f64::from(at(k))).sum::<f64>() / len as f64) as f32,
                Reduce::Max => (0..len).map(at).fold(f32::NEG_INFINITY, f32::max),
            });
        }
    }
    out
}

/// Index of the first maximum along `axis`. NaN compares as smaller than everything.
pub fn argmax(x: &[f32], shape: &[usize], axis: usize) -> Vec<i32> {
    let (outer, len, inner) = split_at_axis(shape, axis);
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            for k in 1..len {
                let (v, b) = (x[(o * len + k) * inner + i], x[(o * len + best) * inner + i]);
                if v > b || (b.is_nan() && !v.is_nan()) {
                    best = k;
                }
            }
            out.push(best as i32);
        }
    }
    out
}

/// Elements `start .. start + len` of `axis`.
pub fn slice<T: Copy>(x: &[T], shape: &[usize], axis: usize, start: usize, len: usize) -> Vec<T> {
    let (outer, full, inner) = split_at_axis(shape, axis);
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * full + start) * inner;
        out.extend_from_slice(&x[base..base + len * inner]);
    }
    out
}

/// The rotate-half step of RoPE over the last axis (see `apr_ir::Op::RopeRotate`).
pub fn rope_rotate(x: &[f32], head_dim: usize, mode: RopeMode, n_rot: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    let half = n_rot / 2;
    for (src, dst) in x.chunks_exact(head_dim).zip(out.chunks_exact_mut(head_dim)) {
        for i in 0..half {
            match mode {
                RopeMode::Neox => {
                    dst[i] = -src[i + half];
                    dst[i + half] = src[i];
                }
                RopeMode::Interleaved => {
                    dst[2 * i] = -src[2 * i + 1];
                    dst[2 * i + 1] = src[2 * i];
                }
            }
        }
    }
    out
}

/// Rotation angle per head dimension (see `apr_ir::Op::RopeAngles`), computed in f64.
pub fn rope_angles(
    pos: i32,
    mode: RopeMode,
    n_rot: usize,
    head_dim: usize,
    theta: f64,
    freq_scale: f64,
    factors: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = vec![0.0f32; head_dim];
    let half = n_rot / 2;
    for i in 0..half {
        let inv_freq = theta.powf(-2.0 * i as f64 / n_rot as f64);
        let factor = factors.map_or(1.0, |f| f64::from(f[i]));
        let angle = (f64::from(pos) * freq_scale * inv_freq / factor) as f32;
        match mode {
            RopeMode::Neox => {
                out[i] = angle;
                out[i + half] = angle;
            }
            RopeMode::Interleaved => {
                out[2 * i] = angle;
                out[2 * i + 1] = angle;
            }
        }
    }
    out
}

/// Write `value` (the cache's shape with `axis` of size 1) into index `pos` of `axis`.
pub fn cache_write(cache: &mut [f32], shape: &[usize], axis: usize, value: &[f32], pos: usize) {
    let (outer, full, inner) = split_at_axis(shape, axis);
    for o in 0..outer {
        let dst = (o * full + pos) * inner;
        cache[dst..dst + inner].copy_from_slice(&value[o * inner..(o + 1) * inner]);
    }
}
