//! Naive implementations of the IR's ops: loops that read like the op's definition in
//! `apr_ir::Op`. Accumulations are in f64, so the reference is at least as accurate as any
//! backend held to it.

use crate::tensor::{split_at_axis, strides};
use apr_ir::RopeMode;
use rayon::prelude::*;

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
    match op {
        Unary::Neg => map(x, |v| -v),
        Unary::Exp => map(x, f32::exp),
        Unary::Sigmoid => map(x, sigmoid),
        Unary::Sqrt => map(x, f32::sqrt),
        Unary::Rsqrt => map(x, |v| (1.0 / f64::from(v).sqrt()) as f32),
        Unary::Cos => map(x, f32::cos),
        Unary::Sin => map(x, f32::sin),
    }
}

/// `1 / (1 + e^(-v))`, evaluated in f64 and rounded once (the definition the fast path in
/// `kernels::sigmoid` is held to).
pub fn sigmoid(v: f32) -> f32 {
    (1.0 / (1.0 + f64::from(-v).exp())) as f32
}

/// `f` of every element (one monomorphic loop per op); long vectors are split over the rayon
/// pool (a decode step's SwiGLU sigmoid is 4864 f64 exponentials per layer).
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    if x.len() >= PARALLEL_ELEMS {
        x.par_iter().with_min_len(PARALLEL_ELEMS / 2).map(|&v| f(v)).collect()
    } else {
        x.iter().map(|&v| f(v)).collect()
    }
}

/// Elementwise ops on at least this many elements are spread over the rayon pool.
const PARALLEL_ELEMS: usize = 4096;

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
    // One monomorphic (vectorizable) loop per op.
    match op {
        Binary::Add => broadcast(|x, y| x + y, a, a_shape, b, b_shape, out_shape),
        Binary::Sub => broadcast(|x, y| x - y, a, a_shape, b, b_shape, out_shape),
        Binary::Mul => broadcast(|x, y| x * y, a, a_shape, b, b_shape, out_shape),
        Binary::Div => broadcast(|x, y| x / y, a, a_shape, b, b_shape, out_shape),
    }
}

/// `f(a, b)` with numpy broadcasting into `out_shape`.
fn broadcast(
    f: impl Fn(f32, f32) -> f32,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out_shape: &[usize],
) -> Vec<f32> {
    if a_shape == out_shape && b_shape == out_shape {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let n: usize = out_shape.iter().product();
    let Some((&last, outer_shape)) = out_shape.split_last() else {
        // Rank 0: one element.
        return vec![f(a[0], b[0])];
    };
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let (la, lb) = (sa[sa.len() - 1], sb[sb.len() - 1]);
    let mut out = Vec::with_capacity(n);
    // The last axis in an inner loop with fixed strides; an odometer over the others.
    let mut idx = vec![0usize; outer_shape.len()];
    for _ in 0..n.checked_div(last).unwrap_or(0) {
        let ia: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum();
        let ib: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum();
        match (la, lb) {
            (1, 1) => out.extend(a[ia..ia + last].iter().zip(&b[ib..ib + last]).map(|(&x, &y)| f(x, y))),
            (1, 0) => out.extend(a[ia..ia + last].iter().map(|&x| f(x, b[ib]))),
            (0, 1) => out.extend(b[ib..ib + last].iter().map(|&y| f(a[ia], y))),
            _ => out.extend((0..last).map(|j| f(a[ia + j * la], b[ib + j * lb]))),
        }
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < outer_shape[d] {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `binary` by definition: every output index mapped back to each operand, one at a time.
    fn binary_by_index(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], out_shape: &[usize]) -> Vec<f32> {
        let (sa, sb) = (broadcast_strides(a_shape, out_shape), broadcast_strides(b_shape, out_shape));
        let n: usize = out_shape.iter().product();
        (0..n)
            .map(|flat| {
                let (mut rest, mut ia, mut ib) = (flat, 0, 0);
                for d in (0..out_shape.len()).rev() {
                    let i = rest % out_shape[d];
                    rest /= out_shape[d];
                    ia += i * sa[d];
                    ib += i * sb[d];
                }
                a[ia] - 2.0 * b[ib]
            })
            .collect()
    }

    #[test]
    fn broadcasting_matches_the_definition() {
        let shapes: &[(&[usize], &[usize], &[usize])] = &[
            (&[1, 896], &[896], &[1, 896]),
            (&[1, 896], &[1, 1], &[1, 896]),
            (&[2, 7, 5], &[2, 7, 1], &[2, 7, 5]),
            (&[2, 7, 64], &[64], &[2, 7, 64]),
            (&[1], &[3, 4], &[3, 4]),
            (&[3, 1], &[1, 4], &[3, 4]),
            (&[4, 1, 3], &[2, 1], &[4, 2, 3]),
            (&[], &[], &[]),
            (&[2, 0], &[1], &[2, 0]),
        ];
        for &(sa, sb, so) in shapes {
            let a: Vec<f32> = (0..sa.iter().product::<usize>()).map(|i| i as f32 * 0.5 + 1.0).collect();
            let b: Vec<f32> = (0..sb.iter().product::<usize>()).map(|i| i as f32 * 0.25 - 3.0).collect();
            let fast = binary(Binary::Sub, &a, sa, &b.iter().map(|v| 2.0 * v).collect::<Vec<_>>(), sb, so);
            assert_eq!(fast, binary_by_index(&a, sa, &b, sb, so), "{sa:?} {sb:?} -> {so:?}");
        }
    }
}
