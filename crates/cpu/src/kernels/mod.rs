//! Fast matrix-vector products over packed weight rows: the hot loop of CPU decode.
//!
//! [`matvec`] computes `out[r] = Σ_i W[r, i]·x[i]` for a weight matrix stored as GGUF rows
//! (`n_rows` rows of `k` elements, each row a whole number of `dtype` blocks) and an f32 vector
//! `x`; [`matmul`] does the same for a few vectors at once. Work is spread over the rayon pool
//! in contiguous runs of rows, so each task streams one stretch of memory.
//!
//! **Approach: weights are decoded in registers, `x` stays f32.** Each kernel reads a block's
//! integer codes, widens them to f32 lanes, multiplies them with `x` (FMA) and applies the
//! block's scales to the per-sub-block partial sums. Nothing is written back to memory and `x`
//! is never quantized. llama.cpp instead quantizes `x` to 8 bits once per call and uses integer
//! dot products (`maddubs`); measured on the 2-core AMD EPYC (Zen 3) dev machine, one core, hot
//! cache, GB of weights per CPU-second: `q5_0` 5.2 (f32 `x`) vs 7.5 (8-bit `x`) or 6.4 (16-bit
//! `x`), `q8_0` 13 vs 19. The f32 kernels are slower in arithmetic but, on two cores, still
//! stream the Q4_K_M mix at well over half the machine's read bandwidth (about 15 GB/s;
//! `examples/bandwidth.rs`, `examples/matvec_bench.rs`), while 8-bit `x` puts the fixtures'
//! logits 1.0–1.5e-2 (relative L2) away from the float64 references — a hundred times the
//! interpreter's 1e-4 budget (`tests/reference_logits.rs`, tried and measured). So the
//! reference interpreter keeps f32 activations.
//!
//! **Accuracy contract.** Every kernel computes the same real number as
//! [`crate::matmul::naive`], `Σ_i w_i·x_i` over the exactly decoded weights; only the f32
//! rounding of the products and sums differs. Per output element the error is at most
//! `(k + 64)·2⁻²⁴·Σ_i |x_i|·|w_i|⁺ + 2⁻²⁴·|result|`, where `|w_i|⁺` is the weight's magnitude
//! *before* an affine block's offset is subtracted (`|d·sc·q| + |dmin·m|` for `q4_k`, whose
//! two terms are summed separately; `|w_i|` for the symmetric types): the usual bound for a
//! length-k float sum, with slack for the block scales. `tests/kernels_vs_naive.rs` checks it
//! element by element on random shapes, weights and vectors (with a 26× outlier channel). The
//! relative L2 error of whole outputs on the Qwen2.5 shapes is 1–3e-7 (tested ≤ 1e-6).
//!
//! **Two implementations per format**, chosen by [`Simd`]: a portable scalar one, which is the
//! readable statement of the math, and an x86-64 AVX2+FMA+F16C one, selected at run time with
//! `is_x86_feature_detected!`. They evaluate the same formula with different summation orders
//! (8 lanes), so they agree within the bound above; the tests hold them to each other too.
//! `unsafe` appears only in the AVX2 functions and their callers' feature checks.
//!
//! `q4_k`, `q6_k`, `q8_0`, `q5_0` (the Q4_K_M mix), `f32`, `f16` and `bf16` have kernels;
//! every other type falls back to [`apr_ir_model::quant::dot_row`] per row, still in parallel.

mod float;
mod q4k;
mod q5_0;
mod q6k;
mod q8_0;
#[cfg(target_arch = "x86_64")]
mod x86;

use apr_ir::DType;
use apr_ir_model::quant::{self, QuantError};
use rayon::prelude::*;

/// Which implementation of the kernels runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// Portable Rust, one element at a time: the reference the SIMD code is tested against.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (8 f32 lanes); used only where the CPU has all three.
    Avx2,
}

impl Simd {
    /// The fastest implementation this CPU runs.
    pub fn detect() -> Simd {
        if Simd::Avx2.is_available() {
            Simd::Avx2
        } else {
            Simd::Scalar
        }
    }

    /// Whether this CPU can run `self` (checked at run time; cached by std).
    pub fn is_available(self) -> bool {
        match self {
            Simd::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Simd::Avx2 => false,
        }
    }
}

/// Whether `dtype` has its own kernel here (the others go through `quant::dot_row`).
pub fn has_kernel(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::Q8_0 | DType::Q5_0 | DType::Q4K | DType::Q6K)
}

/// `out[r] = Σ_i W[r, i]·x[i]` for the `n_rows` rows of `weights`, each `k = x.len()` elements
/// of `dtype`, with the fastest [`Simd`] this CPU has.
pub fn matvec(dtype: DType, weights: &[u8], n_rows: usize, x: &[f32], out: &mut [f32]) -> Result<(), QuantError> {
    matmul_with(Simd::detect(), dtype, weights, n_rows, x.len(), x, out)
}

/// `out[j, r] = Σ_i W[r, i]·xs[j, i]` for `m = xs.len() / k` vectors `xs` (row-major `m × k`)
/// into `out` (`m × n_rows`): each run of weight rows is read from memory once and dotted with
/// every vector while it is in cache.
pub fn matmul(
    dtype: DType,
    weights: &[u8],
    n_rows: usize,
    k: usize,
    xs: &[f32],
    out: &mut [f32],
) -> Result<(), QuantError> {
    matmul_with(Simd::detect(), dtype, weights, n_rows, k, xs, out)
}

/// [`matmul`] with a chosen implementation; one this CPU lacks is replaced by [`Simd::Scalar`].
///
/// Lengths are checked before any work: `weights` must hold `n_rows` rows of `k` elements,
/// `xs` a whole number `m` of vectors and `out` `m × n_rows` values. A wrong `xs` or `out`
/// length is reported as a [`QuantError::ByteLength`] of an `f32` buffer.
pub fn matmul_with(
    simd: Simd,
    dtype: DType,
    weights: &[u8],
    n_rows: usize,
    k: usize,
    xs: &[f32],
    out: &mut [f32],
) -> Result<(), QuantError> {
    let simd = if simd.is_available() { simd } else { Simd::Scalar };
    let rb = row_bytes(dtype, k)?;
    let f32_len = |expected: usize, actual: usize| {
        if expected == actual {
            Ok(())
        } else {
            Err(QuantError::ByteLength {
                dtype: DType::F32,
                elems: expected,
                expected: 4 * expected,
                actual: 4 * actual,
            })
        }
    };
    let m = xs.len().checked_div(k).unwrap_or(0);
    f32_len(m * k, xs.len())?;
    if n_rows.checked_mul(rb) != Some(weights.len()) {
        return Err(QuantError::ByteLength {
            dtype,
            elems: n_rows.saturating_mul(k),
            expected: n_rows.saturating_mul(rb),
            actual: weights.len(),
        });
    }
    if k == 0 {
        // Empty dot products (`m` is undefined: any `out` is all zeros).
        out.fill(0.0);
        return Ok(());
    }
    f32_len(m.saturating_mul(n_rows), out.len())?;
    if m == 0 || n_rows == 0 {
        return Ok(());
    }
    if !has_kernel(dtype) {
        // Refuses a type without a codec (i32) before any work is spread.
        quant::dot_row(dtype, &weights[..rb], &xs[..k])?;
    }
    let prepared: Vec<Prepared<'_>> = xs.chunks_exact(k).map(|x| Prepared::new(dtype, x)).collect();
    let rows = rows_per_task(n_rows, rb, m);
    if let [x] = prepared.as_slice() {
        weights.par_chunks(rows * rb).zip(out.par_chunks_mut(rows)).for_each(|(w, o)| rows_dot(simd, dtype, w, x, o));
        return Ok(());
    }
    // Each task fills an `m × rows` block of its own, copied into `out` after.
    let blocks: Vec<Vec<f32>> = weights
        .par_chunks(rows * rb)
        .map(|w| {
            let n = w.len() / rb;
            let mut o = vec![0.0f32; m * n];
            for (x, oj) in prepared.iter().zip(o.chunks_exact_mut(n)) {
                rows_dot(simd, dtype, w, x, oj);
            }
            o
        })
        .collect();
    for (c, block) in blocks.iter().enumerate() {
        let n = block.len() / m;
        for (j, src) in block.chunks_exact(n).enumerate() {
            out[j * n_rows + c * rows..][..n].copy_from_slice(src);
        }
    }
    Ok(())
}

/// Bytes of one packed row of `k` elements.
fn row_bytes(dtype: DType, k: usize) -> Result<usize, QuantError> {
    u64::try_from(k)
        .ok()
        .and_then(|k| dtype.bytes_for(k))
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(QuantError::PartialBlock { dtype, elems: k, block_len: dtype.block_len() })
}

/// Rows per rayon task: at least 16 KiB of weights (a task costs about a microsecond to spread,
/// 16 KiB takes several to decode), and about eight tasks per thread so that the last task of a
/// call leaves no core idle for long (the 128-row k/v projections of Qwen2.5-0.5B still make
/// five tasks). With several vectors, at most 256 KiB, so a task's rows stay in L2 while every
/// vector passes over them.
fn rows_per_task(n_rows: usize, row_bytes: usize, m: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let rb = row_bytes.max(1);
    let mut rows = n_rows.div_ceil(8 * threads).max((16 << 10) / rb);
    if m > 1 {
        rows = rows.min((256 << 10) / rb);
    }
    rows.clamp(1, n_rows.max(1))
}

/// What a kernel needs of one vector `x`: the values, and for `q4_k` the sum of every 32
/// consecutive values (the minimums term, `Σ_s dmin·m_s·Σ_{i∈s} x_i`, needs only those).
pub(crate) struct Prepared<'a> {
    pub x: &'a [f32],
    pub sums32: Vec<f32>,
}

impl<'a> Prepared<'a> {
    fn new(dtype: DType, x: &'a [f32]) -> Prepared<'a> {
        let sums32 =
            if dtype == DType::Q4K { x.chunks_exact(32).map(|c| c.iter().sum()).collect() } else { Vec::new() };
        Prepared { x, sums32 }
    }
}

/// Dot every row of `w` (whole rows, `out.len()` of them) with the prepared vector.
fn rows_dot(simd: Simd, dtype: DType, w: &[u8], x: &Prepared<'_>, out: &mut [f32]) {
    let rb = w.len() / out.len().max(1);
    match dtype {
        DType::F32 => float::rows_f32(simd, w, x.x, out),
        DType::F16 => float::rows_f16(simd, w, x.x, out),
        DType::BF16 => float::rows_bf16(simd, w, x.x, out),
        DType::Q8_0 => q8_0::rows(simd, w, x.x, out),
        DType::Q5_0 => q5_0::rows(simd, w, x.x, out),
        DType::Q4K => q4k::rows(simd, w, x, out),
        DType::Q6K => q6k::rows(simd, w, x.x, out),
        DType::I32 | DType::Q4_0 | DType::Q4_1 | DType::Q5_1 | DType::Q5K => {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(rb.max(1))) {
                // The lengths were checked by the caller, so this cannot fail.
                *o = quant::dot_row(dtype, row, x.x).unwrap_or(f32::NAN);
            }
        }
    }
}

/// The value of the little-endian IEEE half `[lo, hi]` (the scale field of every block type):
/// exact, subnormals, infinities and NaN included.
pub(crate) fn f16_le(lo: u8, hi: u8) -> f32 {
    let h = u16::from_le_bytes([lo, hi]);
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = u32::from((h >> 10) & 0x1F);
    let man = u32::from(h & 0x3FF);
    match exp {
        // Subnormal: man·2⁻²⁴, exact in f32.
        0 => sign * man as f32 * f32::from_bits(0x3380_0000),
        // Infinity or NaN (payload kept in the top mantissa bits).
        31 => f32::from_bits((u32::from(h & 0x8000) << 16) | 0x7F80_0000 | (man << 13)),
        // Normal: rebias the exponent from 15 to 127.
        _ => f32::from_bits((u32::from(h & 0x8000) << 16) | ((exp + 112) << 23) | (man << 13)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_sizes_cover_small_and_large_matrices() {
        assert_eq!(rows_per_task(1, 952, 1), 1);
        assert_eq!(rows_per_task(0, 952, 1), 1);
        // 128 rows of 616 bytes: at least 16 KiB per task.
        assert_eq!(rows_per_task(128, 616, 1), 26);
        assert!(rows_per_task(151_936, 952, 1) >= 151_936 / (8 * rayon::current_num_threads()));
        assert!(rows_per_task(151_936, 952, 4) * 952 <= 256 << 10);
    }

    #[test]
    fn f16_scales_decode_exactly() {
        assert_eq!(f16_le(0x00, 0x3C), 1.0);
        assert_eq!(f16_le(0x00, 0xC0), -2.0);
        assert_eq!(f16_le(0x01, 0x00), 2.0f32.powi(-24));
        assert_eq!(f16_le(0xFF, 0x7B), 65504.0);
        assert_eq!(f16_le(0x00, 0x7C), f32::INFINITY);
        assert!(f16_le(0x01, 0x7E).is_nan());
        assert_eq!(f16_le(0x00, 0x80).to_bits(), (-0.0f32).to_bits());
    }
}
