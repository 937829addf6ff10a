//! Plain float types as one-element blocks.
//!
//! Narrowing rounds to nearest, ties to even, as ggml's `GGML_FP32_TO_FP16` and
//! `ggml_compute_fp32_to_bf16` do: values beyond the f16 range become ±inf, and a NaN stays a
//! (quiet) NaN.

use half::{bf16, f16};

pub(super) fn decode_f32(b: &[u8; 4], out: &mut [f32; 1]) {
    out[0] = f32::from_le_bytes(*b);
}

pub(super) fn encode_f32(x: &[f32; 1], out: &mut [u8; 4]) {
    *out = x[0].to_le_bytes();
}

pub(super) fn decode_f16(b: &[u8; 2], out: &mut [f32; 1]) {
    out[0] = f16::from_le_bytes(*b).to_f32();
}

pub(super) fn encode_f16(x: &[f32; 1], out: &mut [u8; 2]) {
    *out = f16::from_f32(x[0]).to_le_bytes();
}

pub(super) fn decode_bf16(b: &[u8; 2], out: &mut [f32; 1]) {
    out[0] = bf16::from_le_bytes(*b).to_f32();
}

pub(super) fn encode_bf16(x: &[f32; 1], out: &mut [u8; 2]) {
    *out = bf16::from_f32(x[0]).to_le_bytes();
}

/// The value of the little-endian f16 `[lo, hi]` (the scale field of every block type).
pub(super) fn f16_le(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

/// The little-endian bytes of `x` rounded to the nearest f16 (ties to even).
pub(super) fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

/// `x` rounded to f16 away from zero, for a scale: the largest code measured against it still
/// fits its range, even where the scale is an f16 subnormal and rounding to nearest could shrink
/// it by a large fraction. Returns the bytes and the value a decoder will read back.
pub(super) fn round_f16_away(x: f32) -> ([u8; 2], f32) {
    let mut h = f16::from_f32(x);
    if h.to_f32().abs() < x.abs() {
        // The next f16 away from zero: f16 magnitudes are ordered like their bit patterns.
        h = f16::from_bits(h.to_bits() + 1);
    }
    (h.to_le_bytes(), h.to_f32())
}
