//! `q5_0` rows: blocks of `d:f16 | qh:u32 | qs:[u8; 16]`, value `d·(q − 16)`.
//!
//! Element `j < 16` is the low nibble of `qs[j]`, element `j + 16` its high nibble; the fifth
//! bit of element `j` is bit `j` of `qh` (little-endian). Per block `d·Σ_l (q_l − 16)·x_l`;
//! the codes are exact in f32, so the only rounding is the sum's.

use super::Simd;

/// Elements per block.
const QK: usize = 32;
/// Bytes per block.
const BLOCK: usize = 22;

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
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..];
        let code = |j: usize| {
            let nibble = if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 };
            i32::from(nibble) | (((qh >> j) & 1) as i32) << 4
        };
        let s: f32 = xs.iter().enumerate().map(|(j, &x)| (code(j) - 16) as f32 * x).sum();
        total += d * s;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{f16_splat, hsum, load_f32, widen_u8};
    use super::{BLOCK, QK};
    use std::arch::x86_64::*;

    /// Every row. Per 8 lanes: the nibble (`& 15` or `>> 4` of the widened byte) plus the fifth
    /// bit's contribution, computed with the offset folded in: `q − 16 = nibble − 16·(1 − bit)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
        let nibble = _mm256_set1_epi32(0x0F);
        let minus16 = _mm256_set1_epi32(-16);
        // Lane l of group t (elements 8t..8t+8) tests bit 8t + l of qh.
        let b0 = _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        let bits = [b0, _mm256_slli_epi32(b0, 8), _mm256_slli_epi32(b0, 16), _mm256_slli_epi32(b0, 24)];
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            let mut acc = _mm256_setzero_ps();
            for (b, xs) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)) {
                let d = f16_splat(b[0], b[1]);
                let qh = _mm256_set1_epi32(i32::from_le_bytes([b[2], b[3], b[4], b[5]]));
                let qs = &b[6..];
                // Codes minus 16 of elements 8t..8t+8, as f32.
                let code = |t: usize, raw: __m256i| {
                    let low = if t < 2 { _mm256_and_si256(raw, nibble) } else { _mm256_srli_epi32(raw, 4) };
                    let set = _mm256_cmpeq_epi32(_mm256_and_si256(qh, bits[t]), bits[t]);
                    _mm256_cvtepi32_ps(_mm256_add_epi32(low, _mm256_andnot_si256(set, minus16)))
                };
                let (r0, r1) = (widen_u8(qs), widen_u8(&qs[8..]));
                let p = _mm256_mul_ps(code(0, r0), load_f32(xs));
                let p = _mm256_fmadd_ps(code(1, r1), load_f32(&xs[8..]), p);
                let p = _mm256_fmadd_ps(code(2, r0), load_f32(&xs[16..]), p);
                let p = _mm256_fmadd_ps(code(3, r1), load_f32(&xs[24..]), p);
                acc = _mm256_fmadd_ps(p, d, acc);
            }
            *o = hsum(acc);
        }
    }
}
