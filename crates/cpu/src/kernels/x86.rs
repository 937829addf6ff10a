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

/// 8 bytes `b[..8]` sign-extended (as i8) to eight i32 lanes, always straight from memory.
///
/// Written as `asm!` because the form matters: Zen 3 runs `vpmovsxbd ymm, m64` about twice
/// as fast as `vpmovsxbd ymm, xmm` (a cross-lane shuffle), and LLVM, given the intrinsics,
/// sometimes loads into a register first or, when the bytes were just stored by the caller,
/// forwards them from the register that held them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen_i8(b: &[u8]) -> __m256i {
    let b = &b[..8];
    let r: __m256i;
    // SAFETY: `b` holds 8 bytes, exactly what `vpmovsxbd ymm, m64` reads (no alignment
    // needed); the instruction only writes its output register, and AVX2 is enabled.
    unsafe {
        std::arch::asm!(
            "vpmovsxbd {r}, qword ptr [{p}]",
            r = out(ymm_reg) r,
            p = in(reg) b.as_ptr(),
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    r
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

/// `v` into `b[..32]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn store_32_bytes(b: &mut [u8], v: __m256i) {
    let b = &mut b[..32];
    // SAFETY: `b` holds 32 bytes, exactly what `_mm256_storeu_si256` writes (no alignment needed).
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// `v` into `f[..8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn store_f32(f: &mut [f32], v: __m256) {
    let f = &mut f[..8];
    // SAFETY: `f` holds 8 f32, exactly what `_mm256_storeu_ps` writes (no alignment needed).
    unsafe { _mm256_storeu_ps(f.as_mut_ptr(), v) }
}

/// `Σ_l q_l·x_l` over 16 signed bytes `q[..16]` and `x[..16]`, as eight lane sums (see
/// [`dot32_i8`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot16_i8(q: &[u8], x: &[f32]) -> __m256 {
    let (q, x) = (&q[..16], &x[..16]);
    let s = _mm256_mul_ps(_mm256_cvtepi32_ps(widen_i8(q)), load_f32(x));
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(widen_i8(&q[8..])), load_f32(&x[8..]), s)
}

/// `Σ_l q_l·x_l` over 32 signed bytes `q[..32]` and `x[..32]`, as eight lane sums: each group
/// of eight codes is widened straight from memory (`vpmovsxbd ymm, m64`, which Zen 3 runs at
/// about twice the rate of the register form), converted and multiplied into one chain
/// (a tree of two chains measured slower: more instructions, and the chains of consecutive
/// blocks overlap anyway).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot32_i8(q: &[u8], x: &[f32]) -> __m256 {
    let (q, x) = (&q[..32], &x[..32]);
    let p = |t: usize| _mm256_cvtepi32_ps(widen_i8(&q[8 * t..]));
    let s = _mm256_mul_ps(p(0), load_f32(x));
    let s = _mm256_fmadd_ps(p(1), load_f32(&x[8..]), s);
    let s = _mm256_fmadd_ps(p(2), load_f32(&x[16..]), s);
    _mm256_fmadd_ps(p(3), load_f32(&x[24..]), s)
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
