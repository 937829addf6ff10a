//! Matrix products: `a[B.., M, K] · b` with `b` either `[B.., N, K]` (transposed, the weight
//! layout; may be packed in any dtype) or `[B.., K, N]` (f32), `b`'s batch dims optional.
//!
//! [`naive`] is the definition (f64 accumulation, one dequantized row at a time); [`fast`]
//! is what the interpreter runs: rows of a packed matrix (as stored, or re-encoded at load
//! time, [`Rhs::Repacked`]) are decoded exactly and dotted with f32 activations by
//! [`crate::kernels`] (SIMD where the CPU has it), spread over the rayon pool.
//! `tests/kernels_vs_naive.rs` holds them together.

use crate::kernels;
use apr_ir::DType;
use apr_ir_model::quant::{self, QuantError};
use rayon::prelude::*;

/// The right-hand operand.
#[derive(Debug, Clone, Copy)]
pub enum Rhs<'a> {
    /// Stored bytes of a `[B.., N, K]` tensor of `dtype` (rows of K elements).
    Packed { dtype: DType, bytes: &'a [u8] },
    /// A `[B.., N, K]` tensor re-encoded at load time ([`kernels::repack`]): the same values.
    Repacked(&'a kernels::Repacked),
    /// f32 values; `transposed` says `[B.., N, K]` rather than `[B.., K, N]`.
    F32 { data: &'a [f32], transposed: bool },
}

/// Dimensions of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Batch count of `a` (product of its batch dims).
    pub batch: usize,
    /// Whether `b` has batch dims (else it is shared by every batch).
    pub rhs_batched: bool,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl Dims {
    fn rhs_offset(&self, b: usize) -> usize {
        if self.rhs_batched {
            b * self.n * self.k
        } else {
            0
        }
    }
}

/// Bytes of one packed row of `k` elements.
fn row_bytes(dtype: DType, k: usize) -> Result<usize, QuantError> {
    dtype.bytes_for(k as u64).map(|b| b as usize).ok_or(QuantError::PartialBlock {
        dtype,
        elems: k,
        block_len: dtype.block_len(),
    })
}

/// A re-encoded matrix must have rows of `k` elements.
fn check_repacked(r: &kernels::Repacked, k: usize) -> Result<(), QuantError> {
    if r.k() == k {
        Ok(())
    } else {
        Err(QuantError::ByteLength {
            dtype: r.dtype(),
            elems: k,
            expected: row_bytes(r.dtype(), k).unwrap_or(0),
            actual: row_bytes(r.dtype(), r.k()).unwrap_or(0),
        })
    }
}

/// The definition: `out[b, m, n] = Σ_k a[b, m, k] · B[b](n, k)`, accumulated in f64.
pub fn naive(a: &[f32], rhs: Rhs<'_>, d: Dims) -> Result<Vec<f32>, QuantError> {
    let mut out = vec![0.0f32; d.batch * d.m * d.n];
    let mut row = vec![0.0f32; d.k];
    for b in 0..d.batch {
        for n in 0..d.n {
            let base = d.rhs_offset(b);
            match rhs {
                Rhs::Packed { dtype, bytes } => {
                    let rb = row_bytes(dtype, d.k)?;
                    let start = (base / d.k.max(1) + n) * rb;
                    quant::dequantize(dtype, &bytes[start..start + rb], &mut row)?;
                }
                Rhs::Repacked(r) => {
                    check_repacked(r, d.k)?;
                    r.dequantize_row(base / d.k.max(1) + n, &mut row)?;
                }
                Rhs::F32 { data, transposed: true } => row.copy_from_slice(&data[base + n * d.k..base + (n + 1) * d.k]),
                Rhs::F32 { data, transposed: false } => {
                    for (k, r) in row.iter_mut().enumerate() {
                        *r = data[base + k * d.n + n];
                    }
                }
            }
            for m in 0..d.m {
                let x = &a[(b * d.m + m) * d.k..(b * d.m + m + 1) * d.k];
                let acc: f64 = x.iter().zip(&row).map(|(&x, &w)| f64::from(x) * f64::from(w)).sum();
                out[(b * d.m + m) * d.n + n] = acc as f32;
            }
        }
    }
    Ok(out)
}

/// The interpreter's product: same result as [`naive`] within f32 rounding (the bound is
/// documented in [`crate::kernels`]).
pub fn fast(a: &[f32], rhs: Rhs<'_>, d: Dims) -> Result<Vec<f32>, QuantError> {
    let mut out = vec![0.0f32; d.batch * d.m * d.n];
    match rhs {
        Rhs::Packed { dtype, bytes } => {
            let rb = row_bytes(dtype, d.k)?;
            for (b, o) in out.chunks_exact_mut(d.m * d.n).enumerate() {
                let base_row = d.rhs_offset(b) / d.k.max(1);
                let mat = &bytes[base_row * rb..(base_row + d.n) * rb];
                // Each run of weight rows is streamed once and decoded in registers against
                // every row of `a` (see `kernels`); spread over the rayon pool.
                kernels::matmul(dtype, mat, d.n, d.k, &a[b * d.m * d.k..(b + 1) * d.m * d.k], o)?;
            }
        }
        Rhs::Repacked(r) => {
            check_repacked(r, d.k)?;
            for (b, o) in out.chunks_exact_mut(d.m * d.n).enumerate() {
                let base_row = d.rhs_offset(b) / d.k.max(1);
                r.matmul_rows(base_row, &a[b * d.m * d.k..(b + 1) * d.m * d.k], o)?;
            }
        }
        Rhs::F32 { data, transposed } => {
            out.par_chunks_exact_mut(d.m * d.n).enumerate().for_each(|(b, o)| {
                let base = d.rhs_offset(b);
                for m in 0..d.m {
                    let x = &a[(b * d.m + m) * d.k..(b * d.m + m + 1) * d.k];
                    for n in 0..d.n {
                        o[m * d.n + n] = if transposed {
                            x.iter().zip(&data[base + n * d.k..base + (n + 1) * d.k]).map(|(x, w)| x * w).sum()
                        } else {
                            x.iter().enumerate().map(|(k, x)| x * data[base + k * d.n + n]).sum()
                        };
                    }
                }
            });
        }
    }
    Ok(out)
}
