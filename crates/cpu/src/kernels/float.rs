//! Plain float rows: `f32`, `f16` and `bf16` (one-element "blocks", little-endian).
//!
//! `Σ_i w_i·x_i` with each weight widened to f32 exactly (f16 and bf16 are subsets of f32).

use super::Simd;

/// Dot every `f32` row of `w` with `x`.
pub(super) fn rows_f32(simd: Simd, w: &[u8], x: &[f32], out: &mut [f32]) {
    rows(simd, w, x, out, 4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]), Format::F32);
}

/// Dot every `f16` row of `w` with `x`.
pub(super) fn rows_f16(simd: Simd, w: &[u8], x: &[f32], out: &mut [f32]) {
    rows(simd, w, x, out, 2, |b| super::f16_le(b[0], b[1]), Format::F16);
}

/// Dot every `bf16` row of `w` with `x`: a bf16 is the top half of an f32.
pub(super) fn rows_bf16(simd: Simd, w: &[u8], x: &[f32], out: &mut [f32]) {
    rows(simd, w, x, out, 2, |b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16), Format::BF16);
}

#[derive(Clone, Copy)]
enum Format {
    F32,
    F16,
    BF16,
}

fn rows(simd: Simd, w: &[u8], x: &[f32], out: &mut [f32], size: usize, value: fn(&[u8]) -> f32, format: Format) {
    let rb = size * x.len();
    for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
        *o = match simd {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 if Simd::Avx2.is_available() => {
                // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
                unsafe { avx2::row(row, x, format) }
            }
            Simd::Scalar | Simd::Avx2 => row.chunks_exact(size).zip(x).map(|(b, &x)| value(b) * x).sum(),
        };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::x86::{hsum, load_16_bytes, load_f32, load_f32_bytes};
    use super::Format;
    use std::arch::x86_64::*;

    /// Eight weights of `format` starting at `b[0]`, as f32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights8(b: &[u8], format: Format) -> __m256 {
        match format {
            Format::F32 => load_f32_bytes(b),
            Format::F16 => _mm256_cvtph_ps(load_16_bytes(b)),
            Format::BF16 => _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_16_bytes(b)), 16)),
        }
    }

    /// One row: four accumulators of eight lanes, then the tail one element at a time.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn row(row: &[u8], x: &[f32], format: Format) -> f32 {
        let size = match format {
            Format::F32 => 4,
            Format::F16 | Format::BF16 => 2,
        };
        let mut acc = [_mm256_setzero_ps(); 4];
        let whole = x.len() / 32 * 32;
        for (xs, ws) in x[..whole].chunks_exact(32).zip(row.chunks_exact(32 * size)) {
            for (t, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(weights8(&ws[8 * t * size..], format), load_f32(&xs[8 * t..]), *a);
            }
        }
        let mut sum = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        for (i, &xi) in x.iter().enumerate().skip(whole) {
            let b = &row[i * size..];
            let w = match format {
                Format::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                Format::F16 => super::super::f16_le(b[0], b[1]),
                Format::BF16 => f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16),
            };
            sum += w * xi;
        }
        sum
    }
}
