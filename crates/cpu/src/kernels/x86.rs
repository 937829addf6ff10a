//! AVX2 building blocks shared by the per-format kernels.
//!
//! Every function here is `unsafe` only because it is compiled for AVX2+FMA+F16C
//! (`#[target_feature]`): calling it on a CPU without them is undefined behaviour, so callers
//! check [`super::Simd::is_available`] first. Memory is read only through slices whose length
//! is checked (by indexing) before the raw load, so no read leaves its slice.

use std::arch::x86_64::*;

/// 8 bytes `b[..8]` zero-extended to eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen_u8(b: &[u8]) -> __m256i {
    let b = &b[..8];
    // SAFETY: `b` holds 8 bytes, exactly what `_mm_loadl_epi64` reads (no alignment needed).
    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.as_ptr().cast())) }
}

/// 8 bytes `b[..8]` sign-extended (as i8) to eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen_i8(b: &[u8]) -> __m256i {
    let b = &b[..8];
    // SAFETY: `b` holds 8 bytes, exactly what `_mm_loadl_epi64` reads (no alignment needed).
    unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().cast())) }
}

/// 16 bytes `b[..16]` as one 128-bit vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load_16_bytes(b: &[u8]) -> __m128i {
    let b = &b[..16];
    // SAFETY: `b` holds 16 bytes, exactly what `_mm_loadu_si128` reads (no alignment needed).
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// 32 bytes `b[..32]` as one 256-bit vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load_32_bytes(b: &[u8]) -> __m256i {
    let b = &b[..32];
    // SAFETY: `b` holds 32 bytes, exactly what `_mm256_loadu_si256` reads (no alignment needed).
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// 32 signed bytes as four vectors of eight f32 lanes (bytes 0–7, 8–15, 16–23, 24–31).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn i8x32_to_f32(v: __m256i) -> [__m256; 4] {
    let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let f = |b: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    [f(lo), f(_mm_unpackhi_epi64(lo, lo)), f(hi), f(_mm_unpackhi_epi64(hi, hi))]
}

/// 32 bytes `b[..32]` reinterpreted as eight little-endian f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load_f32_bytes(b: &[u8]) -> __m256 {
    let b = &b[..32];
    // SAFETY: `b` holds 32 bytes, exactly what `_mm256_loadu_ps` reads (no alignment needed).
    unsafe { _mm256_loadu_ps(b.as_ptr().cast()) }
}

/// `x[..8]` as eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load_f32(x: &[f32]) -> __m256 {
    let x = &x[..8];
    // SAFETY: `x` holds 8 f32, exactly what `_mm256_loadu_ps` reads (no alignment needed).
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

/// The sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The little-endian f16 `[lo, hi]` as f32 in all eight lanes (exact; F16C's conversion).
///
/// Broadcasting the half *before* converting matters: converting a single lane lets LLVM insert
/// the half into whatever register it likes (`vpinsrw`), and it has picked the loop's
/// accumulator, chaining every block's scale behind the previous block's sum (~2× slower).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_splat(lo: u8, hi: u8) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes([lo, hi])))
}
