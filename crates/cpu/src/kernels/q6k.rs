//! `q6_k` rows: 256-element super-blocks `ql:[u8; 128] | qh:[u8; 64] | scales:[i8; 16] | d:f16`.
//!
//! Sixteen sub-blocks of 16 elements, each with a signed 8-bit scale `sc_s`; value
//! `d·sc_s·(q − 32)` with a 6-bit code `q`. Element `e = 128·h + 32·k + l` (half `h`, quarter
//! `k`, lane `l`) keeps its low four bits in `ql[64·h + 32·(k % 2) + l]` (low nibble for
//! `k < 2`, high for `k ≥ 2`) and its top two bits in bits `2k..2k+2` of `qh[32·h + l]`.
//! A super-block contributes `d·Σ_s sc_s·Σ_{e∈s} (q_e − 32)·x_e`; the codes are exact in f32.

use super::Simd;

/// Elements per super-block.
pub(super) const QK: usize = 256;
/// Bytes per super-block.
pub(super) const BLOCK: usize = 210;

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

/// The 6-bit code of element `e` of a super-block.
fn code(ql: &[u8], qh: &[u8], e: usize) -> u8 {
    let (h, k, l) = (e / 128, (e / 32) % 4, e % 32);
    let low = (ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
    let high = (qh[32 * h + l] >> (2 * k)) & 0x03;
    low | (high << 4)
}

/// Super-block `b`'s codes minus 32 (in −32..=31) as signed bytes in element order into
/// `codes`, and its sixteen scales `d·sc_s` (exact in f32: an f16 times an i8 needs 19 bits).
pub(super) fn decode(simd: Simd, b: &[u8], codes: &mut [u8; QK], scales: &mut [f32; 16]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if Simd::Avx2.is_available() => {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { avx2::decode(b, codes, scales) }
        }
        Simd::Scalar | Simd::Avx2 => {
            let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
            let d = super::f16_le(b[208], b[209]);
            for (e, q) in codes.iter_mut().enumerate() {
                *q = (i16::from(code(ql, qh, e)) - 32) as i8 as u8;
            }
            for (s, &c) in scales.iter_mut().zip(sc) {
                *s = d * f32::from(c as i8);
            }
        }
    }
}

/// The definition, one element at a time.
fn row_scalar(row: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (b, xs) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)) {
        let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
        let d = super::f16_le(b[208], b[209]);
        let mut scaled = 0.0f32;
        for (s, &sc) in scales.iter().enumerate() {
            let qx: f32 = (16 * s..16 * s + 16).map(|e| f32::from(i16::from(code(ql, qh, e)) - 32) * xs[e]).sum();
            scaled += f32::from(sc as i8) * qx;
        }
        total += d * scaled;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{dot16_i8, f16_splat, hsum, load_32_bytes, store_32_bytes, store_f32, widen_i8};
    use super::{BLOCK, QK};
    use std::arch::x86_64::*;

    /// Super-block `b` decoded into `codes` (minus 32, element order) and `scales` (`d·sc_s`).
    /// Codes are assembled 32 at a time in byte lanes: for half `h`, the 32 bytes `ql[64h..]`
    /// hold quarters 0 (low nibbles) and 2 (high nibbles), `ql[64h + 32..]` quarters 1 and 3,
    /// and `qh[32h..]` the top two bits of all four (bits `2k..2k+2`); lane `l` of quarter `k`
    /// is element `128h + 32k + l`. (16-bit shifts move bits across byte boundaries, and the
    /// masks that follow cut them off.)
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn decode(b: &[u8], codes: &mut [u8; QK], scales: &mut [f32; 16]) {
        let (low4, bits45, zero_point) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30), _mm256_set1_epi8(32));
        let d = f16_splat(b[208], b[209]);
        let (lo, hi) = scales.split_at_mut(8);
        store_f32(lo, _mm256_mul_ps(_mm256_cvtepi32_ps(widen_i8(&b[192..])), d));
        store_f32(hi, _mm256_mul_ps(_mm256_cvtepi32_ps(widen_i8(&b[200..])), d));
        for h in 0..2 {
            let a = load_32_bytes(&b[64 * h..]);
            let c = load_32_bytes(&b[64 * h + 32..]);
            let hb = load_32_bytes(&b[128 + 32 * h..]);
            let nib = |v: __m256i| _mm256_and_si256(v, low4);
            let top = |v: __m256i| _mm256_and_si256(v, bits45);
            let quarters = [
                _mm256_or_si256(nib(a), top(_mm256_slli_epi16(hb, 4))),
                _mm256_or_si256(nib(c), top(_mm256_slli_epi16(hb, 2))),
                _mm256_or_si256(nib(_mm256_srli_epi16(a, 4)), top(hb)),
                _mm256_or_si256(nib(_mm256_srli_epi16(c, 4)), top(_mm256_srli_epi16(hb, 2))),
            ];
            for (k, q) in quarters.into_iter().enumerate() {
                store_32_bytes(&mut codes[128 * h + 32 * k..], _mm256_sub_epi8(q, zero_point));
            }
        }
    }

    /// Every row, one super-block at a time in two passes: [`decode`] into buffers, then each
    /// 16-element sub-block `s` widened from the buffer (cheap only from memory on Zen 3, see
    /// `x86::dot32_i8`), dotted with `x` and scaled by `d·sc_s` into accumulator `s mod 4`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
        let mut codes = [0u8; QK];
        let mut scales = [0.0f32; 16];
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            let [mut a0, mut a1, mut a2, mut a3] = [_mm256_setzero_ps(); 4];
            for (b, xs) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)) {
                decode(b, &mut codes, &mut scales);
                // Four named accumulators (an array indexed in a loop ends up in memory).
                for s in (0..16).step_by(4) {
                    let sub = |s: usize| _mm256_set1_ps(scales[s]);
                    a0 = _mm256_fmadd_ps(dot16_i8(&codes[16 * s..], &xs[16 * s..]), sub(s), a0);
                    a1 = _mm256_fmadd_ps(dot16_i8(&codes[16 * s + 16..], &xs[16 * s + 16..]), sub(s + 1), a1);
                    a2 = _mm256_fmadd_ps(dot16_i8(&codes[16 * s + 32..], &xs[16 * s + 32..]), sub(s + 2), a2);
                    a3 = _mm256_fmadd_ps(dot16_i8(&codes[16 * s + 48..], &xs[16 * s + 48..]), sub(s + 3), a3);
                }
            }
            *o = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        }
    }
}
