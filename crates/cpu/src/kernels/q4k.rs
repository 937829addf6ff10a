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
        let (sc, m) = (sc.to_le_bytes(), m.to_le_bytes());
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

/// The 6-bit scale and min codes of the eight sub-blocks (ggml's `get_scale_min_k4`), one
/// byte each in a little-endian u64: bytes 0–3 hold scales 0–3 and bytes 4–7 mins 0–3 in
/// their low six bits; bytes 8–11 hold the low nibbles of scales 4–7 (low half) and mins 4–7
/// (high half), whose top two bits are the top bits of bytes 0–3 and 4–7. Four lanes at a time
/// in 32-bit words.
#[inline]
pub(super) fn unpack_scales(p: &[u8]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let scales_lo = a & 0x3F3F_3F3F;
    let mins_lo = b & 0x3F3F_3F3F;
    let scales_hi = (c & 0x0F0F_0F0F) | ((a >> 2) & 0x3030_3030);
    let mins_hi = ((c >> 4) & 0x0F0F_0F0F) | ((b >> 2) & 0x3030_3030);
    (u64::from(scales_lo) | u64::from(scales_hi) << 32, u64::from(mins_lo) | u64::from(mins_hi) << 32)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{f16_splat, hsum, load_f32, store_f32, widen_u8};
    use super::{unpack_scales, BLOCK, QK};
    use std::arch::x86_64::*;

    /// Every row. Per super-block, the eight scales `d·sc_s` go to a small buffer first (exact:
    /// an f16 times a 6-bit code needs 17 bits), to be broadcast from memory. Each 32-byte
    /// stretch `j` of `qs` holds sub-blocks `2j` (low nibbles) and `2j + 1` (high nibbles):
    /// per 8 bytes, one widening load gives 8 codes of each, multiplied with their `x` lanes
    /// into one chain per sub-block, which is then scaled into one of two accumulators (low or
    /// high nibbles), so the chains carried from one stretch to the next are a single FMA. The
    /// minimums term is an 8-lane product of the min codes with `X_s`, scaled by `dmin`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &[u8], rb: usize, x: &[f32], sums32: &[f32], out: &mut [f32]) {
        let nibble = _mm256_set1_epi32(0x0F);
        let mut scales = [0.0f32; 8];
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            let (mut acc_lo, mut acc_hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut mins_acc = _mm256_setzero_ps();
            for ((b, xs), sums) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)).zip(sums32.chunks_exact(8)) {
                let (sc, m) = unpack_scales(&b[4..16]);
                let widen = |v: u64| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v as i64)));
                store_f32(&mut scales, _mm256_mul_ps(widen(sc), f16_splat(b[0], b[1])));
                let mins = _mm256_mul_ps(widen(m), load_f32(sums));
                mins_acc = _mm256_fmadd_ps(mins, f16_splat(b[2], b[3]), mins_acc);
                let qs = &b[16..];
                for j in 0..4 {
                    let raw = |t: usize| widen_u8(&qs[32 * j + 8 * t..]);
                    let xj = &xs[64 * j..];
                    let (r0, r1, r2, r3) = (raw(0), raw(1), raw(2), raw(3));
                    let lo = |r: __m256i| _mm256_cvtepi32_ps(_mm256_and_si256(r, nibble));
                    let hi = |r: __m256i| _mm256_cvtepi32_ps(_mm256_srli_epi32(r, 4));
                    let pl = _mm256_mul_ps(lo(r0), load_f32(xj));
                    let pl = _mm256_fmadd_ps(lo(r1), load_f32(&xj[8..]), pl);
                    let pl = _mm256_fmadd_ps(lo(r2), load_f32(&xj[16..]), pl);
                    let pl = _mm256_fmadd_ps(lo(r3), load_f32(&xj[24..]), pl);
                    let ph = _mm256_mul_ps(hi(r0), load_f32(&xj[32..]));
                    let ph = _mm256_fmadd_ps(hi(r1), load_f32(&xj[40..]), ph);
                    let ph = _mm256_fmadd_ps(hi(r2), load_f32(&xj[48..]), ph);
                    let ph = _mm256_fmadd_ps(hi(r3), load_f32(&xj[56..]), ph);
                    acc_lo = _mm256_fmadd_ps(pl, _mm256_set1_ps(scales[2 * j]), acc_lo);
                    acc_hi = _mm256_fmadd_ps(ph, _mm256_set1_ps(scales[2 * j + 1]), acc_hi);
                }
            }
            *o = hsum(_mm256_add_ps(acc_lo, acc_hi)) - hsum(mins_acc);
        }
    }
}
