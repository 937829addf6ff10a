//! The logistic function over a vector: SwiGLU's `σ(x)`, 4864 values per layer of
//! Qwen2.5-0.5B and the costliest op outside the products (~1 ms per token through f64 `exp`).
//!
//! The AVX2 path evaluates `e^(-x)` in f32 eight lanes at a time: `n = round(-x·log₂e)`,
//! `r = -x − n·ln 2` (ln 2 split in two so the reduction is exact to ~2⁻³²), `e^r` by its
//! Taylor polynomial to `r⁷` (|r| ≤ ½·ln 2: truncation < 6e-9 of the result), times `2ⁿ` built
//! in the exponent bits; then `1 / (1 + e^(-x))` with a correctly rounded divide. Error: at
//! most 4 units in the last place of the f32 result against [`crate::ops::sigmoid`] (f64,
//! rounded once; `tests/fast_vs_naive.rs` checks the bound over a sweep and random values).
//! Lanes where `|x| > 80` (where `2ⁿ` would leave the normal range: σ is within 2⁻¹¹⁵ of 0 or
//! 1 there) or NaN are computed by the definition instead, so results there are identical.

use super::Simd;

/// `σ(x)` of every element of `x` into `out` (same length).
pub(super) fn sigmoid_into(simd: Simd, x: &[f32], out: &mut [f32]) {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if Simd::Avx2.is_available() => {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { avx2::sigmoid_into(x, out) }
        }
        Simd::Scalar | Simd::Avx2 => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = crate::ops::sigmoid(v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Largest `|x|` computed in f32 (beyond it, the definition).
    const RANGE: f32 = 80.0;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sigmoid_into(x: &[f32], out: &mut [f32]) {
        let mut xs = x.chunks_exact(8);
        let mut os = out.chunks_exact_mut(8);
        for (xc, oc) in (&mut xs).zip(&mut os) {
            // SAFETY: `xc` holds 8 f32, exactly what the load reads.
            let v = unsafe { _mm256_loadu_ps(xc.as_ptr()) };
            let inside = _mm256_cmp_ps::<_CMP_LE_OQ>(abs(v), _mm256_set1_ps(RANGE));
            if _mm256_movemask_ps(inside) != 0xFF {
                for (o, &v) in oc.iter_mut().zip(xc) {
                    *o = crate::ops::sigmoid(v);
                }
                continue;
            }
            let s = _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_add_ps(_mm256_set1_ps(1.0), exp(neg(v))));
            // SAFETY: `oc` holds 8 f32, exactly what the store writes.
            unsafe { _mm256_storeu_ps(oc.as_mut_ptr(), s) };
        }
        for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
            *o = crate::ops::sigmoid(v);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn abs(v: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn neg(v: __m256) -> __m256 {
        _mm256_xor_ps(_mm256_set1_ps(-0.0), v)
    }

    /// `e^t` for `|t| ≤ 80` (so `2ⁿ` below is a normal float).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp(t: __m256) -> __m256 {
        // ln 2 = LN2_HI + LN2_LO, LN2_HI with 12 trailing zero bits so `n·LN2_HI` is exact.
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            t,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), t);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        // Σ_{k≤7} r^k/k!, by Horner.
        let mut p = _mm256_set1_ps(1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_mul_ps(p, two_n)
    }
}
