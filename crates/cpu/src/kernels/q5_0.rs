//! `q5_0` rows: blocks of `d:f16 | qh:u32 | qs:[u8; 16]`, value `d·(q − 16)`.
//!
//! Element `j < 16` is the low nibble of `qs[j]`, element `j + 16` its high nibble; the fifth
//! bit of element `j` is bit `j` of `qh` (little-endian). Per block `d·Σ_l (q_l − 16)·x_l`;
//! the codes are exact in f32, so the only rounding is the sum's.

use super::Simd;

/// Elements per block.
const QK: usize = 32;
/// Bytes per block.
pub(super) const BLOCK: usize = 22;

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

/// The 32 codes of block `b` minus 16 (in −16..=15) into `out[..32]` as signed bytes.
pub(super) fn codes_minus_16(simd: Simd, b: &[u8], out: &mut [u8]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if Simd::Avx2.is_available() => {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { avx2::store_codes(b, out) }
        }
        Simd::Scalar | Simd::Avx2 => {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..];
            for (j, q) in out[..QK].iter_mut().enumerate() {
                let nibble = if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 };
                let code = i32::from(nibble) | (((qh >> j) & 1) as i32) << 4;
                // In −16..=15: the byte is the i8's two's complement.
                *q = (code - 16) as i8 as u8;
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
    use super::super::x86::{dot32_i8, f16_splat, hsum, load_16_bytes, store_32_bytes};
    use super::{BLOCK, QK};
    use std::arch::x86_64::*;

    /// Blocks decoded per pass (the codes of one pass stay in L1).
    const PASS: usize = 32;

    /// The 32 codes of block `b` minus 16, as signed bytes in element order, decoded in the
    /// byte domain: the 16 `qs` bytes go to both halves of a vector, the upper half shifted
    /// right by four, so masking with `0x0F` leaves the low nibbles (elements 0–15) below the
    /// high ones (16–31). Byte `j` of `qh` copied to bytes `8j..8j+8` and tested against one bit
    /// each gives the fifth bits as a byte mask; `q − 16` is the nibble where the bit is set and
    /// `nibble − 16 = nibble | 0xF0` (as i8) where it is not.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes(b: &[u8]) -> __m256i {
        let raw = _mm256_broadcastsi128_si256(load_16_bytes(&b[6..]));
        let nib = _mm256_and_si256(_mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
        let qh = _mm256_set1_epi32(i32::from_le_bytes([b[2], b[3], b[4], b[5]]));
        #[rustfmt::skip]
        let spread = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(qh, spread), bit), bit);
        _mm256_or_si256(nib, _mm256_andnot_si256(set, _mm256_set1_epi8(0xF0u8 as i8)))
    }

    /// The codes of block `b` minus 16 into `out[..32]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn store_codes(b: &[u8], out: &mut [u8]) {
        store_32_bytes(out, codes(b));
    }

    /// Every row, in passes of up to [`PASS`] blocks: first the codes of the pass are decoded
    /// into a buffer (as `q − 16`, one signed byte per element), then each block's 32 codes are
    /// widened from that buffer and dotted with `x` and scaled by `d` into the row's
    /// accumulator. Widening signed bytes to i32 lanes is cheap only straight from memory
    /// (`vpmovsxbd ymm, m64`); from a register it is a slow cross-lane shuffle on Zen 3, so
    /// going through L1 beats widening the decoded vector in registers (~1.4× here).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
        let mut buf = [0u8; PASS * QK];
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            let mut acc = _mm256_setzero_ps();
            for (blocks, xs) in row.chunks(PASS * BLOCK).zip(x.chunks(PASS * QK)) {
                for (b, q) in blocks.chunks_exact(BLOCK).zip(buf.chunks_exact_mut(QK)) {
                    store_32_bytes(q, codes(b));
                }
                for ((b, q), xs) in blocks.chunks_exact(BLOCK).zip(buf.chunks_exact(QK)).zip(xs.chunks_exact(QK)) {
                    acc = _mm256_fmadd_ps(dot32_i8(q, xs), f16_splat(b[0], b[1]), acc);
                }
            }
            *o = hsum(acc);
        }
    }
}
