//! Fast matrix-vector products over packed weight rows: the hot loop of CPU decode.
//!
//! [`matvec`] computes `out[r] = Σ_i W[r, i]·x[i]` for a weight matrix stored as GGUF rows
//! (`n_rows` rows of `k` elements, each row a whole number of `dtype` blocks) and an f32 vector
//! `x`; [`matmul`] does the same for a few vectors at once, and [`matvec_batch`] for several
//! matrices and one vector (Qwen2's q/k/v, gate/up) in one parallel pass. Work is spread over
//! the rayon pool in contiguous runs of rows, so each task streams one stretch of memory.
//!
//! **Approach: weights are decoded exactly, `x` stays f32.** Each kernel turns a block's
//! integer codes into f32 lanes, multiplies them with `x` (FMA) and applies the block's scales
//! to the per-block partial sums. Nothing is written back to memory and `x` is never quantized.
//! On the 2-core AMD EPYC (Zen 3) dev machine the cost is in getting codes into f32 lanes:
//! `vpmovsxbd ymm, m64` (a byte-to-i32 widening load) runs at about twice the rate of its
//! register form (a cross-lane shuffle), so the kernels that assemble codes from nibbles and
//! bit planes (`q5_0`, `q6_k`) store them to a small L1 buffer as bytes and widen them from
//! there, and `x86::dot32_i8` spells the memory form out with `asm!` (LLVM otherwise folds or
//! forwards the load away). Cross-lane broadcasts from registers are avoided the same way.
//!
//! **Load-time re-encoding ([`repack`], [`Layout`]).** The interpreter re-encodes `q5_0` and
//! `q6_k` matrices once into blocks of 32 signed bytes with f32 scales: the same values, and
//! with AVX2 bit-for-bit the same products (same summation order), but the kernel only widens
//! bytes. It reads more bytes (36/22 for `q5_0`, 320/210 for `q6_k`; 524.2 MB instead of
//! 391.6 MB per token for Qwen2.5-0.5B Q4_K_M) and runs about 1.5–1.7× faster per weight. One
//! core, hot cache, GB of the *file's* weight bytes per second (`matvec_bench --per-call`):
//! `q5_0` 5.5 stored / 9–10 re-encoded, `q6_k` 6.5–7 / 9.5–10, `q8_0` 14–16, `q4_k` 6
//! (before this work: 5.2, 5.3, 13, 4.7).
//!
//! **Accuracy contract** (the default [`Precision::Exact`]). Every kernel computes the same
//! real number as [`crate::matmul::naive`], `Σ_i w_i·x_i` over the exactly decoded weights;
//! only the f32 rounding of the products and sums differs. Per output element the error is at
//! most `(k + 64)·2⁻²⁴·Σ_i |x_i|·|w_i|⁺ + 2⁻²⁴·|result|`, where `|w_i|⁺` is the weight's
//! magnitude *before* an affine block's offset is subtracted (`|d·sc·q| + |dmin·m|` for
//! `q4_k`, whose two terms are summed separately; `|w_i|` for the symmetric types): the usual
//! bound for a length-k float sum, with slack for the block scales. `tests/kernels_vs_naive.rs`
//! checks it element by element on random shapes, weights and vectors (with a 26× outlier
//! channel), for the stored and the re-encoded layouts. The relative L2 error of whole outputs
//! on the Qwen2.5 shapes is 1–3e-7 (tested ≤ 1e-6).
//!
//! **Opt-in [`Precision::Int16`].** llama.cpp instead quantizes `x` to 8 bits per block and
//! uses integer dot products; that puts the fixtures' logits 1.0–1.5e-2 (relative L2) from the
//! float64 references, a hundred times the interpreter's 1e-4 budget. The opt-in mode rounds
//! `x` to 16 bits per block of 32 (2⁻¹⁶ of the block's largest magnitude) and multiplies it with
//! the codes in exact integer sums (`vpmaddwd`): 5e-5–2e-4 from the references on the fixtures
//! (`tests/reference_logits.rs`), and about 1.3× faster per weight for `q5_0`/`q4_k`. It is
//! not the reference semantics and never the default (`kernels/int16.rs` has its definition).
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
mod i8f32;
mod int16;
mod q4k;
mod q5_0;
mod q6k;
mod q8_0;
mod repack;
mod sigmoid;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use repack::{repack, repacked_len, Layout, Repacked};

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

/// How products with weight matrices treat the vector `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `x` in f32, weights decoded exactly: the result is the exact product up to f32
    /// summation rounding (the contract above). The default.
    #[default]
    Exact,
    /// Opt-in: `x` rounded to 16-bit integers per block of 32 (scale = the block's largest
    /// magnitude / 32767) and multiplied with the weights' integer codes in exact integer sums,
    /// for the formats of the Q4_K_M mix (re-encoded `q5_0` and `q6_k`, `q8_0`, `q4_k`; other
    /// formats stay exact). Each element of `x` moves by at most 2⁻¹⁶ of its block's largest
    /// magnitude; about twice the arithmetic speed. Not the reference semantics: see
    /// `tests/reference_logits.rs` for its measured distance from the float64 references.
    Int16,
}

/// `σ(x) = 1 / (1 + e^(-x))` of every element: within 4 units in the last place of
/// [`crate::ops::sigmoid`] (the f64 definition), eight lanes at a time where the CPU has AVX2.
pub fn sigmoid(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    sigmoid::sigmoid_into(Simd::detect(), x, &mut out);
    out
}

/// [`sigmoid`] with a chosen implementation (for testing the SIMD one against the scalar).
pub fn sigmoid_with(simd: Simd, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    sigmoid::sigmoid_into(simd, x, &mut out);
    out
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
    run(simd, Format::File(dtype), weights, n_rows, k, xs, out)
}

/// How the rows handed to [`run`] are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// As stored in a GGUF file.
    File(DType),
    /// Re-encoded at load time (see [`Repacked`]).
    Repacked(Layout),
}

impl Format {
    /// The file type whose values these rows hold (for errors and [`Prepared`]).
    fn dtype(self) -> DType {
        match self {
            Format::File(dtype) => dtype,
            Format::Repacked(Layout::I8F32) => DType::Q5_0,
            Format::Repacked(Layout::I8F32x16) => DType::Q6K,
        }
    }

    fn row_bytes(self, k: usize) -> Result<usize, QuantError> {
        match self {
            Format::File(dtype) => row_bytes(dtype, k),
            Format::Repacked(layout) => {
                let dtype = self.dtype();
                // Whole blocks of the file type (a q6_k row is 8 re-encoded blocks per super-block).
                if k.is_multiple_of(dtype.block_len() as usize) {
                    Ok(k / i8f32::QK * layout.block_bytes())
                } else {
                    Err(QuantError::PartialBlock { dtype, elems: k, block_len: dtype.block_len() })
                }
            }
        }
    }
}

/// The matrix product over rows in any [`Format`]: lengths checked, then rows spread over the
/// rayon pool (see [`matmul_with`]).
fn run(
    simd: Simd,
    format: Format,
    weights: &[u8],
    n_rows: usize,
    k: usize,
    xs: &[f32],
    out: &mut [f32],
) -> Result<(), QuantError> {
    let simd = if simd.is_available() { simd } else { Simd::Scalar };
    let dtype = format.dtype();
    let rb = format.row_bytes(k)?;
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
    if format == Format::File(dtype) && !has_kernel(dtype) {
        // Refuses a type without a codec (i32) before any work is spread.
        quant::dot_row(dtype, &weights[..rb], &xs[..k])?;
    }
    let prepared: Vec<Prepared<'_>> = xs.chunks_exact(k).map(|x| Prepared::new(dtype, x)).collect();
    let rows = rows_per_task(n_rows, rb, m);
    if let [x] = prepared.as_slice() {
        if rows >= n_rows {
            rows_dot(simd, format, weights, x, out);
        } else {
            weights
                .par_chunks(rows * rb)
                .zip(out.par_chunks_mut(rows))
                .for_each(|(w, o)| rows_dot(simd, format, w, x, o));
        }
        return Ok(());
    }
    // Each task fills an `m × rows` block of its own, copied into `out` after.
    let blocks: Vec<Vec<f32>> = weights
        .par_chunks(rows * rb)
        .map(|w| {
            let n = w.len() / rb;
            let mut o = vec![0.0f32; m * n];
            for (x, oj) in prepared.iter().zip(o.chunks_exact_mut(n)) {
                rows_dot(simd, format, w, x, oj);
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

/// The rows of one matrix for [`matvec_batch`]: as stored in the file, or re-encoded.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    Stored { dtype: DType, bytes: &'a [u8] },
    Repacked(&'a Repacked),
}

/// Several matrix-vector products with the same `x` in one parallel pass: `out = W·x` for every
/// `(W, out)` in `jobs` (each `W` with rows of `x.len()` elements and `out.len()` rows). The
/// rows of all matrices are cut into tasks of similar size spread over the rayon pool
/// together, so small matrices (Qwen2's 128-row k and v projections) share one fork-join with
/// their siblings instead of paying for their own. Same results as [`matvec`] per matrix.
pub fn matvec_batch(jobs: &mut [(Rows<'_>, &mut [f32])], x: &[f32]) -> Result<(), QuantError> {
    matvec_batch_with(jobs, x, Precision::Exact)
}

/// [`matvec_batch`] with a chosen [`Precision`].
pub fn matvec_batch_with(
    jobs: &mut [(Rows<'_>, &mut [f32])],
    x: &[f32],
    precision: Precision,
) -> Result<(), QuantError> {
    let simd = Simd::detect();
    let k = x.len();
    let mut parts: Vec<(Format, &[u8], usize)> = Vec::with_capacity(jobs.len());
    for (rows, out) in jobs.iter() {
        let n = out.len();
        let (format, bytes) = match *rows {
            Rows::Stored { dtype, bytes } => (Format::File(dtype), bytes),
            Rows::Repacked(r) if r.k() == k && r.n_rows() == n => (Format::Repacked(r.layout()), r.bytes()),
            Rows::Repacked(r) => {
                return Err(QuantError::ByteLength {
                    dtype: r.dtype(),
                    elems: n.saturating_mul(k),
                    expected: r.row_bytes().saturating_mul(n),
                    actual: r.bytes().len(),
                })
            }
        };
        let dtype = format.dtype();
        let rb = format.row_bytes(k)?;
        if n.checked_mul(rb) != Some(bytes.len()) {
            return Err(QuantError::ByteLength {
                dtype,
                elems: n.saturating_mul(k),
                expected: n.saturating_mul(rb),
                actual: bytes.len(),
            });
        }
        if format == Format::File(dtype) && !has_kernel(dtype) && n > 0 && k > 0 {
            // Refuses a type without a codec (i32) before any work is spread.
            quant::dot_row(dtype, &bytes[..rb], x)?;
        }
        parts.push((format, bytes, rb));
    }
    if k == 0 {
        jobs.iter_mut().for_each(|(_, out)| out.fill(0.0));
        return Ok(());
    }
    let needs_sums = parts.iter().any(|(f, _, _)| f.dtype() == DType::Q4K);
    let mut prepared = Prepared::new(if needs_sums { DType::Q4K } else { DType::F32 }, x);
    if precision == Precision::Int16 {
        prepared.q16 = int16::Quant16::new(x);
    }
    // About eight tasks per thread over all the bytes, at least 16 KiB each.
    let total: usize = parts.iter().map(|(_, b, _)| b.len()).sum();
    let threads = rayon::current_num_threads().max(1);
    let task_bytes = (total / (8 * threads)).max(16 << 10);
    let mut tasks: Vec<(Format, &[u8], &mut [f32])> = Vec::new();
    for ((format, bytes, rb), (_, out)) in parts.into_iter().zip(jobs.iter_mut()) {
        let rows = (task_bytes / rb.max(1)).max(1);
        for (w, o) in bytes.chunks(rows * rb).zip(out.chunks_mut(rows)) {
            tasks.push((format, w, o));
        }
    }
    tasks.into_par_iter().for_each(|(format, w, o)| rows_dot(simd, format, w, &prepared, o));
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
    /// `x` rounded to 16 bits per block ([`Precision::Int16`] only).
    pub q16: Option<int16::Quant16>,
}

impl<'a> Prepared<'a> {
    fn new(dtype: DType, x: &'a [f32]) -> Prepared<'a> {
        let sums32 =
            if dtype == DType::Q4K { x.chunks_exact(32).map(|c| c.iter().sum()).collect() } else { Vec::new() };
        Prepared { x, sums32, q16: None }
    }
}

/// Dot every row of `w` (whole rows, `out.len()` of them) with the prepared vector.
fn rows_dot(simd: Simd, format: Format, w: &[u8], x: &Prepared<'_>, out: &mut [f32]) {
    let rb = w.len() / out.len().max(1);
    if let Some(q) = &x.q16 {
        match format {
            Format::Repacked(Layout::I8F32) => return int16::rows_i8f32(simd, w, q, out),
            Format::Repacked(Layout::I8F32x16) => return int16::rows_i8f32x16(simd, w, q, out),
            Format::File(DType::Q8_0) => return int16::rows_q8_0(simd, w, q, out),
            Format::File(DType::Q4K) if x.sums32.len() == x.x.len() / 32 => {
                return int16::rows_q4k(simd, w, q, &x.sums32, out)
            }
            Format::File(_) => {}
        }
    }
    let dtype = match format {
        Format::File(dtype) => dtype,
        Format::Repacked(Layout::I8F32) => return i8f32::rows(simd, w, x.x, out),
        Format::Repacked(Layout::I8F32x16) => return i8f32::x16::rows(simd, w, x.x, out),
    };
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
    fn q5_0_codes_decode_alike_in_both_implementations() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..500 {
            let b: Vec<u8> = (0..22)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect();
            let (mut a, mut v) = ([0u8; 32], [0u8; 32]);
            q5_0::codes_minus_16(Simd::Scalar, &b, &mut a);
            q5_0::codes_minus_16(Simd::detect(), &b, &mut v);
            assert_eq!(a, v);
            assert!(a.iter().all(|&q| (-16..16).contains(&(q as i8))));
        }
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
