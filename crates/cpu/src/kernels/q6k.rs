//! `q6_k` rows: 256-element super-blocks `ql:[u8; 128] | qh:[u8; 64] | scales:[i8; 16] | d:f16`.
//!
//! Sixteen sub-blocks of 16 elements, each with a signed 8-bit scale `sc_s`; value
//! `d·sc_s·(q − 32)` with a 6-bit code `q`. Element `e = 128·h + 32·k + l` (half `h`, quarter
//! `k`, lane `l`) keeps its low four bits in `ql[64·h + 32·(k % 2) + l]` (low nibble for
//! `k < 2`, high for `k ≥ 2`) and its top two bits in bits `2k..2k+2` of `qh[32·h + l]`.
//! A super-block contributes `d·Σ_s sc_s·Σ_{e∈s} (q_e − 32)·x_e`; the codes are exact in f32.

use super::Simd;

/// Elements per super-block.
const QK: usize = 256;
/// Bytes per super-block.
const BLOCK: usize = 210;

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
    use super::super::x86::{f16_splat, hsum, i8x32_to_f32, load_32_bytes, load_f32};
    use super::{BLOCK, QK};
    use std::arch::x86_64::*;

    /// Every row. Codes are assembled 32 at a time in byte lanes: for half `h`, the 32 bytes
    /// `ql[64h..]` hold quarters 0 (low nibbles) and 2 (high nibbles), `ql[64h + 32..]`
    /// quarters 1 and 3, and `qh[32h..]` the top two bits of all four (bits `2k..2k+2`); lane
    /// `l` of quarter `k` is element `128h + 32k + l`. (16-bit shifts move bits across byte
    /// boundaries, and the masks that follow cut them off.) Each quarter's codes minus 32 are
    /// widened to f32 and dotted with `x`, 16 lanes per sub-block, scaled by its `sc`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
        let (low4, bits45, zero_point) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30), _mm256_set1_epi8(32));
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            let mut acc = _mm256_setzero_ps();
            for (b, xs) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)) {
                let scales = &b[192..208];
                let mut block = _mm256_setzero_ps();
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
                        let v = i8x32_to_f32(_mm256_sub_epi8(q, zero_point));
                        let xk = &xs[128 * h + 32 * k..];
                        let p0 = _mm256_fmadd_ps(v[1], load_f32(&xk[8..]), _mm256_mul_ps(v[0], load_f32(xk)));
                        let p1 = _mm256_fmadd_ps(v[3], load_f32(&xk[24..]), _mm256_mul_ps(v[2], load_f32(&xk[16..])));
                        let s = 8 * h + 2 * k;
                        block = _mm256_fmadd_ps(p0, _mm256_set1_ps(f32::from(scales[s] as i8)), block);
                        block = _mm256_fmadd_ps(p1, _mm256_set1_ps(f32::from(scales[s + 1] as i8)), block);
                    }
                }
                acc = _mm256_fmadd_ps(block, f16_splat(b[208], b[209]), acc);
            }
            *o = hsum(acc);
        }
    }
}
