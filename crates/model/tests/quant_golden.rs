//! Golden tests: our block codecs against gguf-py's numpy reference (`gguf.quants`).
//!
//! Fixtures live in `tests/fixtures/quant/` at the workspace root and are written by
//! `python3 tools/fixtures/make_quant_golden.py` (see its header). For each type `NAME` (ggml's
//! lowercase name, as `DType::name`), all headerless raw arrays:
//!
//! - `NAME.blocks`: packed blocks in ggml's byte layout;
//! - `NAME.f32`: gguf-py's dequantization of `NAME.blocks`, little-endian f32;
//! - `NAME.src.f32`: the little-endian f32 values gguf-py quantized into `NAME.blocks` (only for
//!   the types gguf-py can quantize; the k-quant blocks are random bytes with sane scales).
//!
//! A missing fixture fails the test. Dequantization must match to f32 rounding (it currently
//! matches bit for bit); quantization must match byte for byte, since our quantizers perform
//! ggml's reference operations in the same order, in f32.

// Helpers outside `#[test]` functions fail loudly too: this whole crate is test code.
#![allow(clippy::unwrap_used, clippy::panic)]

use apr_ir::DType;
use apr_ir_model::quant::{dequantize, dot_row, quantize};
use std::path::PathBuf;

fn fixture(dtype: DType, suffix: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/quant")
        .join(format!("{}.{suffix}", dtype.name()));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} is unreadable ({e}); regenerate it with \
             `python3 tools/fixtures/make_quant_golden.py`",
            path.display()
        )
    })
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0, "f32 fixture of {} bytes", bytes.len());
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Equal bits, both NaN, or within f32 rounding of the reference `want`.
fn same(got: f32, want: f32) -> bool {
    got.to_bits() == want.to_bits()
        || (got.is_nan() && want.is_nan())
        || (got - want).abs() <= 1e-6 * want.abs().max(1.0)
}

/// Our dequantization of `NAME.blocks` equals gguf-py's `NAME.f32`.
fn check_dequantize(dtype: DType) {
    let blocks = fixture(dtype, "blocks");
    let want = f32s(&fixture(dtype, "f32"));
    let mut got = vec![0.0; want.len()];
    dequantize(dtype, &blocks, &mut got).unwrap();
    let block_len = dtype.block_len() as usize;
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        assert!(
            same(g, w),
            "{dtype}: element {i} (block {}, offset {}) is {g:e}, gguf-py says {w:e}",
            i / block_len,
            i % block_len
        );
    }
}

/// Our quantization of `NAME.src.f32` equals gguf-py's `NAME.blocks`, byte for byte.
fn check_quantize(dtype: DType) {
    let src = f32s(&fixture(dtype, "src.f32"));
    let want = fixture(dtype, "blocks");
    let mut got = vec![0; want.len()];
    quantize(dtype, &src, &mut got).unwrap();
    let block_bytes = dtype.block_bytes() as usize;
    let block_len = dtype.block_len() as usize;
    for (b, (g, w)) in got.chunks_exact(block_bytes).zip(want.chunks_exact(block_bytes)).enumerate() {
        assert_eq!(
            g,
            w,
            "{dtype}: block {b} differs from gguf-py; source values {:?}",
            &src[b * block_len..(b + 1) * block_len]
        );
    }
}

/// `dot_row` over the whole fixture (one long row) agrees with the dot product of gguf-py's values.
fn check_dot(dtype: DType) {
    let blocks = fixture(dtype, "blocks");
    let values = f32s(&fixture(dtype, "f32"));
    let x: Vec<f32> = (0..values.len()).map(|i| ((i * 7919) % 257) as f32 / 128.0 - 1.0).collect();
    let want: f64 = values.iter().zip(&x).map(|(&v, &x)| f64::from(v * x)).sum();
    let magnitude: f64 = values.iter().zip(&x).map(|(&v, &x)| f64::from((v * x).abs())).sum();
    let got = dot_row(dtype, &blocks, &x).unwrap();
    assert!(
        (f64::from(got) - want).abs() <= 1e-5 * magnitude.max(1.0),
        "{dtype}: dot_row = {got}, gguf-py values give {want}"
    );
}

#[test]
fn q4_0_dequantize() {
    check_dequantize(DType::Q4_0);
}
#[test]
fn q4_1_dequantize() {
    check_dequantize(DType::Q4_1);
}
#[test]
fn q5_0_dequantize() {
    check_dequantize(DType::Q5_0);
}
#[test]
fn q5_1_dequantize() {
    check_dequantize(DType::Q5_1);
}
#[test]
fn q8_0_dequantize() {
    check_dequantize(DType::Q8_0);
}
#[test]
fn q4_k_dequantize() {
    check_dequantize(DType::Q4K);
}
#[test]
fn q5_k_dequantize() {
    check_dequantize(DType::Q5K);
}
#[test]
fn q6_k_dequantize() {
    check_dequantize(DType::Q6K);
}
#[test]
fn f16_dequantize() {
    check_dequantize(DType::F16);
}
#[test]
fn bf16_dequantize() {
    check_dequantize(DType::BF16);
}

#[test]
fn q4_0_quantize() {
    check_quantize(DType::Q4_0);
}
#[test]
fn q4_1_quantize() {
    check_quantize(DType::Q4_1);
}
#[test]
fn q5_0_quantize() {
    check_quantize(DType::Q5_0);
}
#[test]
fn q5_1_quantize() {
    check_quantize(DType::Q5_1);
}
#[test]
fn q8_0_quantize() {
    check_quantize(DType::Q8_0);
}
#[test]
fn f16_quantize() {
    check_quantize(DType::F16);
}
#[test]
fn bf16_quantize() {
    check_quantize(DType::BF16);
}

#[test]
fn q4_0_dot() {
    check_dot(DType::Q4_0);
}
#[test]
fn q4_1_dot() {
    check_dot(DType::Q4_1);
}
#[test]
fn q5_0_dot() {
    check_dot(DType::Q5_0);
}
#[test]
fn q5_1_dot() {
    check_dot(DType::Q5_1);
}
#[test]
fn q8_0_dot() {
    check_dot(DType::Q8_0);
}
#[test]
fn q4_k_dot() {
    check_dot(DType::Q4K);
}
#[test]
fn q5_k_dot() {
    check_dot(DType::Q5K);
}
#[test]
fn q6_k_dot() {
    check_dot(DType::Q6K);
}
