//! `kernels::matmul` against `matmul::naive` (the definition, f64 accumulation) and the AVX2
//! kernels against the scalar ones, on random shapes, weights and vectors.
//!
//! The contract (see `kernels/mod.rs`): per output element
//! `|fast − naive| ≤ (k + 64)·2⁻²⁴·Σ_i |x_i|·|w_i|⁺ + 2⁻²⁴·|naive|`, where `|w_i|⁺` is the
//! weight's magnitude before an affine block's offset (for `q4_k`, `|d·sc·q| + |dmin·m|`, read by
//! decoding the block with `d := |d|` and `dmin := −|dmin|`). Vectors include one channel at 26×
//! the RMS, the outlier pattern that breaks 8-bit activation schemes. On realistic shapes the
//! relative L2 error of whole outputs is also checked (≤ 1e-6 SIMD, ≤ 1e-5 scalar).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::DType;
use apr_ir_cpu::kernels::{self, Simd};
use apr_ir_cpu::matmul::{self, Dims, Rhs};
use apr_ir_model::quant;
use proptest::prelude::*;

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// A small deterministic generator (SplitMix64), so proptest only draws shapes and a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Roughly normal (sum of four uniforms).
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * 0.866
    }
}

/// A vector of `k` values with one outlier channel at 26× the RMS (and sometimes a few zeros).
fn vector(rng: &mut Rng, k: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / k as f32).sqrt();
    let at = rng.next() as usize % k;
    x[at] = 26.0 * rms * if rng.next() & 1 == 0 { 1.0 } else { -1.0 };
    x
}

/// `n` rows of `k` weights of `dtype`: quantized from random values (a per-row scale spread
/// over three decades, some rows with a positive mean) or, with `raw`, random bytes with
/// random finite block scales (valid blocks an encoder would never write).
fn weights(rng: &mut Rng, dtype: DType, n: usize, k: usize, raw: bool) -> Vec<u8> {
    let rb = dtype.bytes_for(k as u64).unwrap() as usize;
    let mut out = vec![0u8; n * rb];
    if raw && dtype.block_len() > 1 {
        for b in out.iter_mut() {
            *b = rng.next() as u8;
        }
        let bb = dtype.block_bytes() as usize;
        let scale_fields: &[usize] = match dtype {
            DType::Q4K | DType::Q5K | DType::Q4_1 | DType::Q5_1 => &[0, 2],
            DType::Q6K => &[208],
            _ => &[0],
        };
        for block in out.chunks_exact_mut(bb) {
            for &at in scale_fields {
                let v = half::f16::from_f32(rng.uniform() * 0.01).to_le_bytes();
                block[at..at + 2].copy_from_slice(&v);
            }
        }
        return out;
    }
    for row in out.chunks_exact_mut(rb) {
        let scale = 10f32.powf(rng.uniform() * 1.5);
        let mean = if rng.next() & 3 == 0 { scale } else { 0.0 };
        let vals: Vec<f32> = (0..k).map(|_| mean + scale * rng.normal()).collect();
        quant::quantize(dtype, &vals, row).unwrap();
    }
    out
}

/// `|w_i|⁺` for every weight: the magnitudes the kernels actually add up.
fn magnitudes(dtype: DType, w: &[u8], n: usize, k: usize) -> Vec<f32> {
    let mut w = w.to_vec();
    if dtype == DType::Q4K {
        for block in w.chunks_exact_mut(dtype.block_bytes() as usize) {
            block[1] &= 0x7F; // d := |d|
            block[3] |= 0x80; // dmin := −|dmin|
        }
    }
    let mut out = vec![0.0f32; n * k];
    quant::dequantize(dtype, &w, &mut out).unwrap();
    out.iter_mut().for_each(|v| *v = v.abs());
    out
}

/// Check one case: every implementation against naive, and the implementations against each other.
/// Returns the relative L2 error of each implementation's whole output (scalar first).
fn check(dtype: DType, n: usize, k: usize, m: usize, seed: u64, raw: bool) -> Result<Vec<f64>, TestCaseError> {
    let mut rng = Rng(seed);
    let w = weights(&mut rng, dtype, n, k, raw);
    let xs: Vec<f32> = (0..m).flat_map(|_| vector(&mut rng, k)).collect();
    let rhs = Rhs::Packed { dtype, bytes: &w };
    let want = matmul::naive(&xs, rhs, Dims { batch: 1, rhs_batched: false, m, k, n }).unwrap();
    let mag = magnitudes(dtype, &w, n, k);
    let (mut outs, mut rels) = (Vec::new(), Vec::new());
    for simd in [Simd::Scalar, Simd::Avx2].into_iter().filter(|s| s.is_available()) {
        let mut got = vec![f32::NAN; m * n];
        kernels::matmul_with(simd, dtype, &w, n, k, &xs, &mut got).unwrap();
        let (mut err2, mut norm2) = (0.0f64, 0.0f64);
        for j in 0..m {
            let x = &xs[j * k..][..k];
            for r in 0..n {
                let (g, e) = (f64::from(got[j * n + r]), f64::from(want[j * n + r]));
                let scale: f64 =
                    x.iter().zip(&mag[r * k..][..k]).map(|(&x, &w)| f64::from(x.abs()) * f64::from(w)).sum();
                let bound = (k as f64 + 64.0) * U * scale + U * e.abs();
                prop_assert!(
                    (g - e).abs() <= bound,
                    "{dtype} {simd:?} n={n} k={k} vector {j} row {r}: got {g}, naive {e}, bound {bound:.3e}"
                );
                err2 += (g - e).powi(2);
                norm2 += e * e;
            }
        }
        rels.push(if norm2 > 0.0 { (err2 / norm2).sqrt() } else { 0.0 });
        outs.push(got);
    }
    // Scalar vs SIMD: both are within the bound of naive, so within twice it of each other;
    // in practice they differ only in summation order.
    if let [a, b] = outs.as_slice() {
        for (i, (&a, &b)) in a.iter().zip(b).enumerate() {
            let (j, r) = (i / n, i % n);
            let x = &xs[j * k..][..k];
            let scale: f64 = x.iter().zip(&mag[r * k..][..k]).map(|(&x, &w)| f64::from(x.abs()) * f64::from(w)).sum();
            prop_assert!(
                f64::from((a - b).abs()) <= 2.0 * (k as f64 + 64.0) * U * scale + 1e-30,
                "{dtype}: scalar {a} vs simd {b}"
            );
        }
    }
    Ok(rels)
}

/// Types with their own kernels, and the block lengths their rows come in.
const KERNEL_TYPES: [DType; 7] =
    [DType::Q4K, DType::Q6K, DType::Q8_0, DType::Q5_0, DType::F32, DType::F16, DType::BF16];
/// Types that fall back to `quant::dot_row`.
const FALLBACK_TYPES: [DType; 4] = [DType::Q4_0, DType::Q4_1, DType::Q5_1, DType::Q5K];

fn shape(dtype: DType) -> impl Strategy<Value = (usize, usize)> {
    let block = dtype.block_len() as usize;
    // Floats: any k (the SIMD tails); blocks: 1–6 blocks (k-quants) or 1–40 (32-blocks).
    let max_blocks = if block == 1 {
        300
    } else if block == 256 {
        6
    } else {
        40
    };
    (1usize..=max_blocks, prop_oneof![Just(1usize), (0usize..20).prop_map(|i| 2 * i + 1), 20usize..70])
        .prop_map(move |(blocks, n)| (blocks * block, n))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48), ..ProptestConfig::default() })]

    #[test]
    fn kernels_match_naive((dtype, (k, n), m, seed, raw) in proptest::sample::select(KERNEL_TYPES.to_vec())
        .prop_flat_map(|d| (Just(d), shape(d), prop_oneof![4 => Just(1usize), 1 => 2usize..4], any::<u64>(), any::<bool>())))
    {
        check(dtype, n, k, m, seed, raw)?;
    }

    /// `q5_0` and `q6_k` re-encoded at load time hold the same values and give the same
    /// products as the file-layout kernels: bit-for-bit with AVX2 (same summation order), and
    /// within the bound with the scalar code (`q6_k`'s scalar kernel groups its sums per
    /// super-block), over any run of rows.
    #[test]
    fn repacked_rows_match_stored_rows((dtype, (k, n), m, seed, raw) in proptest::sample::select(vec![DType::Q5_0, DType::Q6K])
        .prop_flat_map(|d| (Just(d), shape(d), 1usize..4, any::<u64>(), any::<bool>())))
    {
        let mut rng = Rng(seed);
        let w = weights(&mut rng, dtype, n, k, raw);
        let xs: Vec<f32> = (0..m).flat_map(|_| vector(&mut rng, k)).collect();
        let r = kernels::repack(dtype, &w, n, k).unwrap().unwrap();
        let per_32 = if dtype == DType::Q5_0 { 36 } else { 40 };
        prop_assert_eq!(r.bytes().len(), n * k / 32 * per_32);
        let mut want = vec![0.0f32; n * k];
        quant::dequantize(dtype, &w, &mut want).unwrap();
        let mut row = vec![0.0f32; k];
        for i in 0..n {
            r.dequantize_row(i, &mut row).unwrap();
            prop_assert_eq!(&row[..], &want[i * k..][..k]);
        }
        let mag = magnitudes(dtype, &w, n, k);
        let rb = dtype.bytes_for(k as u64).unwrap() as usize;
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for simd in [Simd::Scalar, Simd::Avx2].into_iter().filter(|s| s.is_available()) {
            // All rows, then a run of rows from the middle.
            for (first, len, m) in [(0, n, m), (n / 3, n - n / 3, 1)] {
                let mut a = vec![f32::NAN; m * len];
                let mut b = vec![f32::NAN; m * len];
                kernels::matmul_with(simd, dtype, &w[first * rb..], len, k, &xs[..m * k], &mut a).unwrap();
                r.matmul_rows_with(simd, first, &xs[..m * k], &mut b).unwrap();
                if simd == Simd::Avx2 || dtype == DType::Q5_0 {
                    prop_assert_eq!(bits(&a), bits(&b), "{} {:?}", dtype, simd);
                } else {
                    for (i, (&a, &b)) in a.iter().zip(&b).enumerate() {
                        let (j, row) = (i / len, first + i % len);
                        let scale: f64 = xs[j * k..][..k].iter().zip(&mag[row * k..][..k]).map(|(&x, &w)| f64::from(x.abs()) * f64::from(w)).sum();
                        prop_assert!(f64::from((a - b).abs()) <= 2.0 * (k as f64 + 64.0) * U * scale + 1e-30, "{}: {} vs {}", dtype, a, b);
                    }
                }
            }
        }
        // Past the last row, or a wrong vector length: errors.
        prop_assert!(r.matmul_rows(1, &xs[..k], &mut vec![0.0; n]).is_err());
        prop_assert!(r.matmul_rows(0, &xs[..k - 1], &mut vec![0.0; n]).is_err());
    }

    #[test]
    fn fallbacks_match_naive((dtype, (k, n), seed) in proptest::sample::select(FALLBACK_TYPES.to_vec())
        .prop_flat_map(|d| (Just(d), shape(d), any::<u64>())))
    {
        check(dtype, n, k, 1, seed, false)?;
    }
}

/// The Q4_K_M decode shapes of Qwen2.5-0.5B (and a 7B one), each spread over many tasks: the
/// relative L2 error of a whole output is ~1e-7 for the SIMD kernels (8 lanes, summed per
/// block) and a few 1e-7 for the scalar ones (one long f32 sum); held to 1e-6 and 1e-5.
#[test]
fn realistic_shapes_match_naive() {
    for (dtype, n, k, m) in [
        (DType::Q5_0, 896, 896, 1),
        (DType::Q5_0, 4864, 896, 1),
        (DType::Q4K, 896, 4864, 1),
        (DType::Q6K, 896, 4864, 1),
        (DType::Q8_0, 2000, 896, 1),
        (DType::Q4K, 64, 3584, 1),
        (DType::F16, 300, 896, 1),
        (DType::Q8_0, 2000, 256, 3),
    ] {
        let rels = check(dtype, n, k, m, 7, false).unwrap();
        println!(
            "{dtype} {n}x{k} (m={m}): relative L2 error, scalar then simd: {:?}",
            rels.iter().map(|r| format!("{r:.2e}")).collect::<Vec<_>>()
        );
        assert!(rels[0] <= 1e-5, "{dtype}: scalar relative L2 error {:.3e}", rels[0]);
        if let Some(&simd) = rels.get(1) {
            assert!(simd <= 1e-6, "{dtype}: simd relative L2 error {simd:.3e}");
        }
    }
}

#[test]
fn lengths_are_checked() {
    let w = vec![0u8; 3 * 34];
    let mut out = vec![0.0f32; 3];
    assert!(kernels::matvec(DType::Q8_0, &w, 3, &[0.0; 32], &mut out).is_ok());
    assert!(kernels::matvec(DType::Q8_0, &w, 3, &[0.0; 31], &mut out).is_err());
    assert!(kernels::matvec(DType::Q8_0, &w[1..], 3, &[0.0; 32], &mut out).is_err());
    assert!(kernels::matvec(DType::Q8_0, &w, 3, &[0.0; 32], &mut out[1..]).is_err());
    assert!(kernels::matmul(DType::Q8_0, &w, 3, 32, &[0.0; 48], &mut out).is_err());
    assert!(kernels::matvec(DType::I32, &[0u8; 12], 3, &[0.0], &mut out).is_err());
    // Re-encoding: only q5_0 and q6_k are re-encoded, and their lengths are checked.
    assert!(kernels::repack(DType::Q8_0, &w, 3, 32).unwrap().is_none());
    assert!(kernels::repack(DType::Q5_0, &[0u8; 2 * 22], 3, 32).is_err());
    assert!(kernels::repack(DType::Q5_0, &[0u8; 22], 1, 31).is_err());
    // k = 0: empty dot products.
    out.fill(1.0);
    assert!(kernels::matvec(DType::Q8_0, &[], 3, &[], &mut out).is_ok());
    assert_eq!(out, [0.0; 3]);
}

/// The scalar f16 decoder used for block scales agrees with `half` on every bit pattern.
#[test]
fn f16_scales_decode_like_half() {
    for bits in 0..=u16::MAX {
        let want = half::f16::from_bits(bits).to_f32();
        let mut got = [0.0f32];
        kernels::matmul_with(Simd::Scalar, DType::F16, &bits.to_le_bytes(), 1, 1, &[1.0], &mut got).unwrap();
        assert!(got[0] == want || (got[0].is_nan() && want.is_nan()), "{bits:#06x}: {} vs {want}", got[0]);
    }
}
