//! `q4_k` rows: 256-element super-blocks `d:f16 | dmin:f16 | scales:[u8; 12] | qs:[u8; 128]`.
//!
//! Sub-block `s` (32 elements) has 6-bit scale `sc_s` and min `m_s`; element `l` of it has
//! code `q` = the low (even `s`) or high (odd `s`) nibble of `qs[32·(s/2) + l]` and value
//! `d·sc_s·q − dmin·m_s`. So a super-block contributes
//!
//! ```text
//! d·Σ_s sc_s·(Σ_l q_l·x_l)  −  dmin·Σ_s m_s·X_s        X_s = Σ_{l∈s} x_l
//! ```
//!
//! and the sums `X_s` depend only on `x`: they are computed once per call
//! ([`super::Prepared::sums32`]), leaving one multiply-add per weight.

use super::{Prepared, Simd};

/// Elements per super-block.
const QK: usize = 256;
/// Bytes per super-block.
const BLOCK: usize = 144;

/// Dot every row of `w` with `x`.
pub(super) fn rows(simd: Simd, w: &[u8], x: &Prepared<'_>, out: &mut [f32]) {
    let rb = x.x.len() / QK * BLOCK;
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if Simd::Avx2.is_available() => {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { avx2::rows(w, rb, x.x, &x.sums32, out) }
        }
        Simd::Scalar | Simd::Avx2 => {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
                *o = row_scalar(row, x.x, &x.sums32);
            }
        }
    }
}

/// The definition, one element at a time.
fn row_scalar(row: &[u8], x: &[f32], sums32: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for ((b, xs), sums) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)).zip(sums32.chunks_exact(8)) {
        let (d, dmin) = (super::f16_le(b[0], b[1]), super::f16_le(b[2], b[3]));
        let (sc, m) = unpack_scales(&b[4..16]);
        let qs = &b[16..];
        let (mut scaled, mut mins) = (0.0f32, 0.0f32);
        for s in 0..8 {
            let codes = &qs[32 * (s / 2)..][..32];
            let shift = 4 * (s % 2);
            let qx: f32 =
                codes.iter().zip(&xs[32 * s..][..32]).map(|(&q, &x)| f32::from((q >> shift) & 0x0F) * x).sum();
            scaled += f32::from(sc[s]) * qx;
            mins += f32::from(m[s]) * sums[s];
        }
        total += d * scaled - dmin * mins;
    }
    total
}

/// The 6-bit scale and min codes of the eight sub-blocks (ggml's `get_scale_min_k4`): bytes
/// 0–3 hold scales 0–3 and bytes 4–7 mins 0–3 in their low six bits; bytes 8–11 hold the low
/// nibbles of scales 4–7 (low half) and mins 4–7 (high half), whose top two bits are the top
/// bits of bytes 0–3 and 4–7.
fn unpack_scales(p: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut scales = [0; 8];
    let mut mins = [0; 8];
    for j in 0..4 {
        scales[j] = p[j] & 0x3F;
        mins[j] = p[j + 4] & 0x3F;
        scales[j + 4] = (p[j + 8] & 0x0F) | ((p[j] >> 6) << 4);
        mins[j + 4] = (p[j + 8] >> 4) | ((p[j + 4] >> 6) << 4);
    }
    (scales, mins)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{f16_splat, hsum, load_f32, widen_u8};
    use super::{unpack_scales, BLOCK, QK};
    use std::arch::x86_64::*;

    /// Every row. Each 32-byte stretch `j` of `qs` holds sub-blocks `2j` (low nibbles) and
    /// `2j + 1` (high nibbles): per 8 bytes, one widening load gives 8 codes of each, multiplied
    /// with their `x` lanes into two 8-lane partial sums, which are then scaled by their `sc`.
    /// The four stretches are independent and summed as a tree, so the only dependency carried
    /// from block to block is the row's accumulator (a serial chain of scale FMAs ran ~1.5×
    /// slower). The minimums term is an 8-lane product of the min codes with `X_s`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &[u8], rb: usize, x: &[f32], sums32: &[f32], out: &mut [f32]) {
        let nibble = _mm256_set1_epi32(0x0F);
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            let mut acc = _mm256_setzero_ps();
            let mut mins_acc = _mm256_setzero_ps();
            for ((b, xs), sums) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)).zip(sums32.chunks_exact(8)) {
                let (sc, m) = unpack_scales(&b[4..16]);
                let scales = _mm256_cvtepi32_ps(widen_u8(&sc));
                let sc_lane = |s: i32| _mm256_permutevar8x32_ps(scales, _mm256_set1_epi32(s));
                let qs = &b[16..];
                let mut part = [_mm256_setzero_ps(); 4];
                for (j, pj) in part.iter_mut().enumerate() {
                    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                    for t in 0..4 {
                        let raw = widen_u8(&qs[32 * j + 8 * t..]);
                        let q_lo = _mm256_cvtepi32_ps(_mm256_and_si256(raw, nibble));
                        let q_hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(raw, 4));
                        lo = _mm256_fmadd_ps(q_lo, load_f32(&xs[64 * j + 8 * t..]), lo);
                        hi = _mm256_fmadd_ps(q_hi, load_f32(&xs[64 * j + 32 + 8 * t..]), hi);
                    }
                    let s = 2 * j as i32;
                    *pj = _mm256_fmadd_ps(hi, sc_lane(s + 1), _mm256_mul_ps(lo, sc_lane(s)));
                }
                let block = _mm256_add_ps(_mm256_add_ps(part[0], part[1]), _mm256_add_ps(part[2], part[3]));
                acc = _mm256_fmadd_ps(block, f16_splat(b[0], b[1]), acc);
                let mins = _mm256_mul_ps(_mm256_cvtepi32_ps(widen_u8(&m)), load_f32(sums));
                mins_acc = _mm256_fmadd_ps(mins, f16_splat(b[2], b[3]), mins_acc);
            }
            *o = hsum(acc) - hsum(mins_acc);
        }
    }
}
