//! `q8_0` rows: blocks of `d:f16 | q:[i8; 32]`, value `d·q`.
//!
//! Per block `d·Σ_l q_l·x_l`: the codes are exact in f32, so the only rounding is the sum's.

use super::Simd;

/// Elements per block.
const QK: usize = 32;
/// Bytes per block.
const BLOCK: usize = 34;

/// Dot every row of `w` with `x`.
pub(super) fn rows(simd: Simd, w: &[u8], x: &[f32], out: &mut [f32]) {
    let rb = x.len() / QK * BLOCK;
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if Simd::Avx2.is_available() => {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { avx2::rows(w, rb, x, out) }
        }
        Simd::Scalar | Simd::Avx2 => {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
                *o = row_scalar(row, x);
            }
        }
    }
}

/// The definition, one element at a time.
fn row_scalar(row: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (b, xs) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)) {
        let d = super::f16_le(b[0], b[1]);
        let s: f32 = b[2..].iter().zip(xs).map(|(&q, &x)| f32::from(q as i8) * x).sum();
        total += d * s;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{dot32_i8, f16_splat, hsum};
    use super::{BLOCK, QK};
    use std::arch::x86_64::*;

    /// Every row: per block, the 32 products `q·x` summed into eight lanes, then scaled by `d`
    /// into the row's accumulator (the only dependency carried from block to block).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            let mut acc = _mm256_setzero_ps();
            for (b, xs) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)) {
                acc = _mm256_fmadd_ps(dot32_i8(&b[2..], xs), f16_splat(b[0], b[1]), acc);
            }
            *o = hsum(acc);
        }
    }
}
