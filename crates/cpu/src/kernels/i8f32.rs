//! Re-encoded rows ([`super::Layout::I8F32`]): blocks of `d: f32 | q: [i8; 32]`, value `d·q`.
//!
//! This is `q5_0` re-encoded at load time: the code `q − 16` (in −16..=15) as one signed byte
//! per element and the f16 scale widened to f32 (both exact). Per block `d·Σ_l q_l·x_l`, summed
//! in the same order as the `q5_0` kernels, so the products are bit-for-bit theirs; the codes
//! are exact in f32, so the only rounding is the sum's.

use super::Simd;

/// Elements per block.
pub(super) const QK: usize = 32;
/// Bytes per block.
pub(super) const BLOCK: usize = 36;
/// Re-encode whole `q5_0` rows `src` into `dst` (`src.len() / 22` blocks of 36 bytes), with
/// the fastest [`Simd`] this CPU has (the codes are the same either way).
pub(super) fn from_q5_0(src: &[u8], dst: &mut [u8]) {
    let simd = Simd::detect();
    for (b, o) in src.chunks_exact(super::q5_0::BLOCK).zip(dst.chunks_exact_mut(BLOCK)) {
        let (d, q) = o.split_at_mut(4);
        d.copy_from_slice(&super::f16_le(b[0], b[1]).to_le_bytes());
        super::q5_0::codes_minus_16(simd, b, q);
    }
}

/// The values of one row.
pub(super) fn dequantize(row: &[u8], out: &mut [f32]) {
    for (b, o) in row.chunks_exact(BLOCK).zip(out.chunks_exact_mut(QK)) {
        let d = scale(b);
        for (o, &q) in o.iter_mut().zip(&b[4..]) {
            *o = d * f32::from(q as i8);
        }
    }
}

/// The block's f32 scale.
fn scale(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

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
            for (o, row) in out.iter_mut().zip(w.chunks_exact(rb.max(1))) {
                *o = row_scalar(row, x);
            }
        }
    }
}

/// The definition, one element at a time.
fn row_scalar(row: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (b, xs) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)) {
        let s: f32 = b[4..].iter().zip(xs).map(|(&q, &x)| f32::from(q as i8) * x).sum();
        total += scale(b) * s;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{dot32_i8, hsum};
    use super::{scale, BLOCK, QK};
    use std::arch::x86_64::*;

    /// Every row: per block, the 32 products `q·x` summed into eight lanes (the codes widened
    /// straight from memory), then scaled by `d` into the row's accumulator. The same
    /// instructions in the same order as the `q5_0` kernel's second pass, minus its decoding.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb.max(1))) {
            let mut acc = _mm256_setzero_ps();
            for (b, xs) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)) {
                acc = _mm256_fmadd_ps(dot32_i8(&b[4..], xs), _mm256_set1_ps(scale(b)), acc);
            }
            *o = hsum(acc);
        }
    }
}

/// The 16-element variant ([`super::Layout::I8F32x16`]): blocks of
/// `s0: f32 | s1: f32 | q: [i8; 32]` (40 bytes), value `s0·q` for elements 0–15 and `s1·q`
/// for 16–31. This is `q6_k` re-encoded: codes `q − 32`, scales `d·sc` (exact).
pub(super) mod x16 {
    use super::super::{q6k, Simd};
    use super::QK;

    /// Bytes per block.
    pub(in super::super) const BLOCK: usize = 40;

    /// Re-encode whole `q6_k` rows `src` into `dst` (eight blocks per super-block).
    pub(in super::super) fn from_q6_k(src: &[u8], dst: &mut [u8]) {
        let simd = Simd::detect();
        let (mut codes, mut scales) = ([0u8; q6k::QK], [0.0f32; 16]);
        for (b, o) in src.chunks_exact(q6k::BLOCK).zip(dst.chunks_exact_mut(q6k::QK / QK * BLOCK)) {
            q6k::decode(simd, b, &mut codes, &mut scales);
            for ((o, q), s) in o.chunks_exact_mut(BLOCK).zip(codes.chunks_exact(QK)).zip(scales.chunks_exact(2)) {
                o[..4].copy_from_slice(&s[0].to_le_bytes());
                o[4..8].copy_from_slice(&s[1].to_le_bytes());
                o[8..].copy_from_slice(q);
            }
        }
    }

    /// Scale `i` (0 or 1) of block `b`.
    fn scale(b: &[u8], i: usize) -> f32 {
        f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    }

    /// The values of one row.
    pub(in super::super) fn dequantize(row: &[u8], out: &mut [f32]) {
        for (b, o) in row.chunks_exact(BLOCK).zip(out.chunks_exact_mut(QK)) {
            for (e, (o, &q)) in o.iter_mut().zip(&b[8..]).enumerate() {
                *o = scale(b, e / 16) * f32::from(q as i8);
            }
        }
    }

    /// Dot every row of `w` with `x`.
    pub(in super::super) fn rows(simd: Simd, w: &[u8], x: &[f32], out: &mut [f32]) {
        let rb = x.len() / QK * BLOCK;
        match simd {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 if Simd::Avx2.is_available() => {
                // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
                unsafe { avx2::rows(w, rb, x, out) }
            }
            Simd::Scalar | Simd::Avx2 => {
                for (o, row) in out.iter_mut().zip(w.chunks_exact(rb.max(1))) {
                    *o = row_scalar(row, x);
                }
            }
        }
    }

    /// The definition, one element at a time (sixteen at a time scaled).
    fn row_scalar(row: &[u8], x: &[f32]) -> f32 {
        let mut total = 0.0f32;
        for (b, xs) in row.chunks_exact(BLOCK).zip(x.chunks_exact(QK)) {
            for (h, (q, xs)) in b[8..].chunks_exact(16).zip(xs.chunks_exact(16)).enumerate() {
                let s: f32 = q.iter().zip(xs).map(|(&q, &x)| f32::from(q as i8) * x).sum();
                total += scale(b, h) * s;
            }
        }
        total
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::super::super::x86::{dot16_i8, hsum};
        use super::{scale, BLOCK};
        use std::arch::x86_64::*;

        /// Every row: each 16-element half-block dotted with `x` and scaled into accumulator
        /// `s mod 4` for sub-block `s` of the row, as the `q6_k` kernel does, so the products
        /// are bit-for-bit its own (rows of `q6_k` have a multiple of 16 sub-blocks).
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn rows(w: &[u8], rb: usize, x: &[f32], out: &mut [f32]) {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(rb.max(1))) {
                let [mut a0, mut a1, mut a2, mut a3] = [_mm256_setzero_ps(); 4];
                let mut pairs = row.chunks_exact(2 * BLOCK);
                let mut xs = x.chunks_exact(64);
                for (b, xs) in (&mut pairs).zip(&mut xs) {
                    let c = &b[BLOCK..];
                    a0 = _mm256_fmadd_ps(dot16_i8(&b[8..], xs), _mm256_set1_ps(scale(b, 0)), a0);
                    a1 = _mm256_fmadd_ps(dot16_i8(&b[24..], &xs[16..]), _mm256_set1_ps(scale(b, 1)), a1);
                    a2 = _mm256_fmadd_ps(dot16_i8(&c[8..], &xs[32..]), _mm256_set1_ps(scale(c, 0)), a2);
                    a3 = _mm256_fmadd_ps(dot16_i8(&c[24..], &xs[48..]), _mm256_set1_ps(scale(c, 1)), a3);
                }
                let (b, xs) = (pairs.remainder(), xs.remainder());
                if b.len() >= BLOCK && xs.len() >= 32 {
                    a0 = _mm256_fmadd_ps(dot16_i8(&b[8..], xs), _mm256_set1_ps(scale(b, 0)), a0);
                    a1 = _mm256_fmadd_ps(dot16_i8(&b[24..], &xs[16..]), _mm256_set1_ps(scale(b, 1)), a1);
                }
                *o = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
            }
        }
    }
}
