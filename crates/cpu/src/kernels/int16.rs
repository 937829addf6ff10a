//! The opt-in reduced-precision products ([`super::Precision::Int16`]): `x` rounded to 16-bit
//! integers per 32-element block, weights' integer codes multiplied with them exactly in
//! 32-bit integer sums.
//!
//! Block `b` of `x` (elements `32b..32b + 32`) is stored as `s_b·x̂_i` with
//! `s_b = max_i |x_i| / 32767` and `x̂_i = round(x_i / s_b)` in −32767..=32767, so each
//! element moves by at most `s_b / 2` (relative to the block's largest element, 2⁻¹⁶). A weight
//! block with codes `q_i` and scale `d` then contributes `d·s_b·Σ_i q_i·x̂_i`, where the sum is
//! exact (`vpmaddwd`: i16 × i16 products added in pairs into i32; |q| ≤ 128 keeps 32 products
//! under 2²⁷) and only its conversion to f32 and the scaling round. That is about twice as
//! fast per weight as widening every code to f32 and multiplying it with an f32 `x`, and far
//! more accurate than llama.cpp's 8-bit activations (2⁻⁸ of the block maximum).
//!
//! Kernels exist for the formats of the Q4_K_M mix (re-encoded `q5_0` and `q6_k`, `q8_0`,
//! `q4_k`); every other format keeps the exact f32 kernel. `q4_k`'s minimums term
//! `dmin·m_s·Σ x_i` still uses the exact f32 sums of `x`.

use super::Simd;

/// Elements per block of `x`.
pub(super) const QK: usize = 32;

/// `x` rounded to 16 bits per 32-element block.
pub(crate) struct Quant16 {
    /// `x̂`, the rounded values.
    pub q: Vec<i16>,
    /// `s_b` per block (0 for an all-zero block).
    pub scale: Vec<f32>,
}

impl Quant16 {
    /// `None` unless `x` is a whole number of blocks of finite values.
    pub(super) fn new(x: &[f32]) -> Option<Quant16> {
        if !x.len().is_multiple_of(QK) || x.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut q = vec![0i16; x.len()];
        let mut scale = Vec::with_capacity(x.len() / QK);
        for (xs, qs) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)) {
            let max = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = max / 32767.0;
            scale.push(s);
            if s > 0.0 {
                let inv = 1.0 / s;
                for (q, &v) in qs.iter_mut().zip(xs) {
                    // Round half away from zero (as `f32::round`, without the libm call);
                    // |v·inv| ≤ 32767 up to the rounding of `inv`: clamp.
                    let r = v * inv;
                    let r = r + if r >= 0.0 { 0.5 } else { -0.5 };
                    *q = (r as i32).clamp(-32767, 32767) as i16;
                }
            }
        }
        Some(Quant16 { q, scale })
    }
}

/// Dot every row of `w` (`q5_0` re-encoded as 36-byte `d: f32 | q: [i8; 32]` blocks).
pub(super) fn rows_i8f32(simd: Simd, w: &[u8], x: &Quant16, out: &mut [f32]) {
    rows(simd, w, x, out, Format::I8F32);
}

/// Dot every row of `w` (`q6_k` re-encoded as 40-byte `s0: f32 | s1: f32 | q: [i8; 32]`).
pub(super) fn rows_i8f32x16(simd: Simd, w: &[u8], x: &Quant16, out: &mut [f32]) {
    rows(simd, w, x, out, Format::I8F32x16);
}

/// Dot every row of `w` (`q8_0`: 34-byte `d: f16 | q: [i8; 32]` blocks).
pub(super) fn rows_q8_0(simd: Simd, w: &[u8], x: &Quant16, out: &mut [f32]) {
    rows(simd, w, x, out, Format::Q8_0);
}

/// Dot every row of `w` (`q4_k` super-blocks; `sums32` the exact f32 sums of `x` per 32).
pub(super) fn rows_q4k(simd: Simd, w: &[u8], x: &Quant16, sums32: &[f32], out: &mut [f32]) {
    let rb = x.q.len() / 256 * 144;
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if Simd::Avx2.is_available() => {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { avx2::rows_q4k(w, rb, x, sums32, out) }
        }
        Simd::Scalar | Simd::Avx2 => {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(rb.max(1))) {
                *o = q4k_scalar(row, x, sums32);
            }
        }
    }
}

/// The block formats with 32 signed-byte codes (a `u8` for const generics).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Format {
    I8F32,
    I8F32x16,
    Q8_0,
}

/// Block layout of a [`Format`] given as its `u8`: bytes per block, offset of the codes.
const fn layout(format: u8) -> (usize, usize) {
    if format == Format::I8F32 as u8 {
        (36, 4)
    } else if format == Format::I8F32x16 as u8 {
        (40, 8)
    } else {
        (34, 2)
    }
}

/// The scale of elements `16h..16h + 16` of block `b` of format `F`.
#[inline]
fn scale<const F: u8>(b: &[u8], h: usize) -> f32 {
    let f = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if F == Format::I8F32 as u8 {
        f(0)
    } else if F == Format::I8F32x16 as u8 {
        f(4 * h)
    } else {
        super::f16_le(b[0], b[1])
    }
}

fn rows(simd: Simd, w: &[u8], x: &Quant16, out: &mut [f32], format: Format) {
    match format {
        Format::I8F32 => rows_of::<{ Format::I8F32 as u8 }>(simd, w, x, out),
        Format::I8F32x16 => rows_of::<{ Format::I8F32x16 as u8 }>(simd, w, x, out),
        Format::Q8_0 => rows_of::<{ Format::Q8_0 as u8 }>(simd, w, x, out),
    }
}

fn rows_of<const F: u8>(simd: Simd, w: &[u8], x: &Quant16, out: &mut [f32]) {
    let rb = x.q.len() / QK * layout(F).0;
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if Simd::Avx2.is_available() => {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { avx2::rows::<F>(w, rb, x, out) }
        }
        Simd::Scalar | Simd::Avx2 => {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(rb.max(1))) {
                *o = row_scalar::<F>(row, x);
            }
        }
    }
}

/// The definition: per block and half, the exact integer sum, then scaled.
fn row_scalar<const F: u8>(row: &[u8], x: &Quant16) -> f32 {
    let (block, at) = layout(F);
    let mut total = 0.0f32;
    for ((b, xq), &s) in row.chunks_exact(block).zip(x.q.chunks_exact(QK)).zip(&x.scale) {
        let codes = &b[at..][..QK];
        for h in 0..2 {
            let sum: i32 = codes[16 * h..][..16]
                .iter()
                .zip(&xq[16 * h..][..16])
                .map(|(&q, &v)| i32::from(q as i8) * i32::from(v))
                .sum();
            total += scale::<F>(b, h) * s * sum as f32;
        }
    }
    total
}

/// `q4_k` by definition: per sub-block, the exact integer sum of codes times `x̂`, scaled by
/// `d·sc_s·s_b`, minus `dmin·m_s·Σ x` (exact f32 sums).
fn q4k_scalar(row: &[u8], x: &Quant16, sums32: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (((b, xq), scales), sums) in
        row.chunks_exact(144).zip(x.q.chunks_exact(256)).zip(x.scale.chunks_exact(8)).zip(sums32.chunks_exact(8))
    {
        let (d, dmin) = (super::f16_le(b[0], b[1]), super::f16_le(b[2], b[3]));
        let (sc, m) = super::q4k::unpack_scales(&b[4..16]);
        let (sc, m) = (sc.to_le_bytes(), m.to_le_bytes());
        for s in 0..8 {
            let codes = &b[16 + 32 * (s / 2)..][..32];
            let shift = 4 * (s % 2);
            let sum: i32 = codes
                .iter()
                .zip(&xq[32 * s..][..32])
                .map(|(&q, &v)| i32::from((q >> shift) & 0x0F) * i32::from(v))
                .sum();
            total += d * f32::from(sc[s]) * scales[s] * sum as f32 - dmin * f32::from(m[s]) * sums[s];
        }
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{f16_splat, hsum, load_f32};
    use super::{layout, scale, Format, Quant16, QK};
    use std::arch::x86_64::*;

    /// 16 bytes `b[..16]` sign-extended (as i8) to sixteen i16 lanes, straight from memory
    /// (see `x86::widen_i8` for why the memory form is written out).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen_i8_16(b: &[u8]) -> __m256i {
        let b = &b[..16];
        let r: __m256i;
        // SAFETY: `b` holds 16 bytes, exactly what `vpmovsxbw ymm, m128` reads (no alignment
        // needed); the instruction only writes its output register, and AVX2 is enabled.
        unsafe {
            std::arch::asm!(
                "vpmovsxbw {r}, xmmword ptr [{p}]",
                r = out(ymm_reg) r,
                p = in(reg) b.as_ptr(),
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        r
    }

    /// 16 bytes `b[..16]` zero-extended to sixteen i16 lanes, straight from memory.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen_u8_16(b: &[u8]) -> __m256i {
        let b = &b[..16];
        let r: __m256i;
        // SAFETY: `b` holds 16 bytes, exactly what `vpmovzxbw ymm, m128` reads (no alignment
        // needed); the instruction only writes its output register, and AVX2 is enabled.
        unsafe {
            std::arch::asm!(
                "vpmovzxbw {r}, xmmword ptr [{p}]",
                r = out(ymm_reg) r,
                p = in(reg) b.as_ptr(),
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        r
    }

    /// `x̂[..16]` as sixteen i16 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_i16(x: &[i16]) -> __m256i {
        let x = &x[..16];
        // SAFETY: `x` holds 16 i16, exactly what `_mm256_loadu_si256` reads (no alignment needed).
        unsafe { _mm256_loadu_si256(x.as_ptr().cast()) }
    }

    /// Every row: per block, the two halves' exact sums (`vpmaddwd`), converted and scaled by
    /// `d·s_b` (one scale per block) or `s_h·s_b` (one per half) into accumulators that
    /// alternate from block to block (one chain of FMAs would bound the loop at its latency).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows<const F: u8>(w: &[u8], rb: usize, x: &Quant16, out: &mut [f32]) {
        let (block, at) = layout(F);
        // Block `b` (with `x̂` and `s_b`) into the accumulator pair `acc`.
        let one = |b: &[u8], xq: &[i16], s: &f32, acc: &mut (__m256, __m256)| {
            let q = &b[at..];
            let lo = _mm256_madd_epi16(widen_i8_16(q), load_i16(xq));
            let hi = _mm256_madd_epi16(widen_i8_16(&q[16..]), load_i16(&xq[16..]));
            // Both scales broadcast straight from memory, multiplied in turn: LLVM turns a
            // product of two broadcasts into a scalar product broadcast from a register, a
            // cross-lane shuffle that took most of the loop's time.
            let s = _mm256_broadcast_ss(s);
            if F == Format::I8F32x16 as u8 {
                let (lo, hi) = (_mm256_mul_ps(_mm256_cvtepi32_ps(lo), s), _mm256_mul_ps(_mm256_cvtepi32_ps(hi), s));
                acc.0 = _mm256_fmadd_ps(lo, _mm256_set1_ps(scale::<F>(b, 0)), acc.0);
                acc.1 = _mm256_fmadd_ps(hi, _mm256_set1_ps(scale::<F>(b, 1)), acc.1);
            } else {
                let d = if F == Format::Q8_0 as u8 { f16_splat(b[0], b[1]) } else { _mm256_set1_ps(scale::<F>(b, 0)) };
                acc.0 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi)), s), d, acc.0);
            }
        };
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb.max(1))) {
            let mut acc = [(_mm256_setzero_ps(), _mm256_setzero_ps()); 2];
            let (mut even, mut odd) = (acc[0], acc[1]);
            let mut pairs = row.chunks_exact(2 * block);
            let mut xqs = x.q.chunks_exact(2 * QK);
            let mut ss = x.scale.chunks_exact(2);
            for ((b, xq), s) in (&mut pairs).zip(&mut xqs).zip(&mut ss) {
                one(b, xq, &s[0], &mut even);
                one(&b[block..], &xq[QK..], &s[1], &mut odd);
            }
            if let (Some(b), Some(xq), Some(s)) =
                (Some(pairs.remainder()).filter(|b| b.len() >= block), Some(xqs.remainder()), ss.remainder().first())
            {
                one(b, xq, s, &mut even);
            }
            acc = [even, odd];
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0].0, acc[0].1), _mm256_add_ps(acc[1].0, acc[1].1));
            *o = hsum(sum);
        }
    }

    /// `q4_k` rows: per 16 bytes of a 32-byte stretch `j`, one widening load gives 16 codes of
    /// sub-block `2j` (low nibbles) and of `2j + 1` (high), each multiplied exactly with `x̂`;
    /// each sub-block's sum is scaled by `d·sc_s·s_b`. The minimums term as in the f32 kernel.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows_q4k(w: &[u8], rb: usize, x: &Quant16, sums32: &[f32], out: &mut [f32]) {
        let nibble = _mm256_set1_epi16(0x0F);
        let mut scales = [0.0f32; 8];
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb.max(1))) {
            let (mut acc_lo, mut acc_hi, mut mins_acc) =
                (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
            for (((b, xq), xs), sums) in row
                .chunks_exact(144)
                .zip(x.q.chunks_exact(256))
                .zip(x.scale.chunks_exact(8))
                .zip(sums32.chunks_exact(8))
            {
                let (sc, m) = super::super::q4k::unpack_scales(&b[4..16]);
                let widen = |v: u64| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v as i64)));
                let d_sc = _mm256_mul_ps(widen(sc), f16_splat(b[0], b[1]));
                _mm256_storeu_ps(scales.as_mut_ptr(), _mm256_mul_ps(d_sc, load_f32(xs)));
                let mins = _mm256_mul_ps(widen(m), load_f32(sums));
                mins_acc = _mm256_fmadd_ps(mins, f16_splat(b[2], b[3]), mins_acc);
                let qs = &b[16..];
                for j in 0..4 {
                    let xl = &xq[64 * j..];
                    let r0 = widen_u8_16(&qs[32 * j..]);
                    let r1 = widen_u8_16(&qs[32 * j + 16..]);
                    let lo = _mm256_add_epi32(
                        _mm256_madd_epi16(_mm256_and_si256(r0, nibble), load_i16(xl)),
                        _mm256_madd_epi16(_mm256_and_si256(r1, nibble), load_i16(&xl[16..])),
                    );
                    let hi = _mm256_add_epi32(
                        _mm256_madd_epi16(_mm256_srli_epi16(r0, 4), load_i16(&xl[32..])),
                        _mm256_madd_epi16(_mm256_srli_epi16(r1, 4), load_i16(&xl[48..])),
                    );
                    acc_lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_set1_ps(scales[2 * j]), acc_lo);
                    acc_hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_set1_ps(scales[2 * j + 1]), acc_hi);
                }
            }
            *o = hsum(_mm256_add_ps(acc_lo, acc_hi)) - hsum(mins_acc);
        }
    }
}
