//! ggml's original 32-element block types: `q4_0`, `q4_1`, `q5_0`, `q5_1` and `q8_0`.
//!
//! Each block is one f16 scale `d` (and, for the `_1` types, an f16 offset `m`) followed by packed
//! integer codes `q`; a value is `d·(q − zero)` for the symmetric `_0` types and `d·q + m` for the
//! affine `_1` types. Byte layouts (ggml-common.h):
//!
//! ```text
//! q4_0  d:f16 | qs:[u8;16]                    x = d·(q − 8)
//! q4_1  d:f16 | m:f16 | qs:[u8;16]            x = d·q + m
//! q5_0  d:f16 | qh:[u8;4] | qs:[u8;16]        x = d·(q − 16)
//! q5_1  d:f16 | m:f16 | qh:[u8;4] | qs:[u8;16] x = d·q + m
//! q8_0  d:f16 | qs:[i8;32]                    x = d·q
//! ```
//!
//! In the 4- and 5-bit types element `j < 16` is the low nibble of `qs[j]` and element `j + 16`
//! its high nibble; the fifth bit of element `j` is bit `j` of `qh` read as a little-endian u32.
//!
//! The encoders are ggml's reference quantizers (`quantize_row_*_ref`), operation for operation in
//! f32, so their bytes equal ggml's and gguf-py's: the symmetric types scale by the element of
//! largest magnitude *with its sign*, so that it maps to the most negative code, which has no
//! positive twin; codes are truncated after adding the zero point plus ½ (q8_0 rounds half away
//! from zero instead).

use super::float::{f16_bytes, f16_le};
use super::{block_bytes, block_len, signed_absmax};
use apr_ir::DType;

/// Elements per block (the same for all five types).
const QK: usize = block_len(DType::Q8_0);
/// Elements held in the low nibbles; the rest are in the high nibbles.
const HALF: usize = QK / 2;

type BlockQ4_0 = [u8; block_bytes(DType::Q4_0)];
type BlockQ4_1 = [u8; block_bytes(DType::Q4_1)];
type BlockQ5_0 = [u8; block_bytes(DType::Q5_0)];
type BlockQ5_1 = [u8; block_bytes(DType::Q5_1)];
type BlockQ8_0 = [u8; block_bytes(DType::Q8_0)];
type Values = [f32; QK];

pub(super) fn decode_q4_0(b: &BlockQ4_0, out: &mut Values) {
    let d = f16_le(b[0], b[1]);
    decode_nibbles(&b[2..], 0, out, |q| (f32::from(q) - 8.0) * d);
}

pub(super) fn decode_q4_1(b: &BlockQ4_1, out: &mut Values) {
    let (d, m) = (f16_le(b[0], b[1]), f16_le(b[2], b[3]));
    decode_nibbles(&b[4..], 0, out, |q| f32::from(q) * d + m);
}

pub(super) fn decode_q5_0(b: &BlockQ5_0, out: &mut Values) {
    let d = f16_le(b[0], b[1]);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    decode_nibbles(&b[6..], qh, out, |q| (f32::from(q) - 16.0) * d);
}

pub(super) fn decode_q5_1(b: &BlockQ5_1, out: &mut Values) {
    let (d, m) = (f16_le(b[0], b[1]), f16_le(b[2], b[3]));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    decode_nibbles(&b[8..], qh, out, |q| f32::from(q) * d + m);
}

pub(super) fn decode_q8_0(b: &BlockQ8_0, out: &mut Values) {
    let d = f16_le(b[0], b[1]);
    for (y, &q) in out.iter_mut().zip(&b[2..]) {
        *y = f32::from(q as i8) * d;
    }
}

/// Unpack 4-bit codes from `qs` (and fifth bits from `qh`, zero for 4-bit types) and map each
/// code through `value`.
fn decode_nibbles(qs: &[u8], qh: u32, out: &mut Values, value: impl Fn(u8) -> f32) {
    let (lo, hi) = out.split_at_mut(HALF);
    for (j, ((&q, lo), hi)) in qs.iter().zip(lo).zip(hi).enumerate() {
        let fifth = |bit: usize| (((qh >> bit) & 1) as u8) << 4;
        *lo = value((q & 0x0F) | fifth(j));
        *hi = value((q >> 4) | fifth(j + HALF));
    }
}

pub(super) fn encode_q4_0(x: &Values, out: &mut BlockQ4_0) {
    let (d, id) = symmetric_scale(x, -8.0);
    [out[0], out[1]] = f16_bytes(d);
    encode_nibbles(x, &mut out[2..], |v| truncate_code(v * id + 8.5, 15));
}

pub(super) fn encode_q4_1(x: &Values, out: &mut BlockQ4_1) {
    let (d, id, min) = affine_scale(x, 15.0);
    [out[0], out[1]] = f16_bytes(d);
    [out[2], out[3]] = f16_bytes(min);
    encode_nibbles(x, &mut out[4..], |v| truncate_code((v - min) * id + 0.5, 15));
}

pub(super) fn encode_q5_0(x: &Values, out: &mut BlockQ5_0) {
    let (d, id) = symmetric_scale(x, -16.0);
    [out[0], out[1]] = f16_bytes(d);
    let qh = encode_nibbles(x, &mut out[6..], |v| truncate_code(v * id + 16.5, 31));
    out[2..6].copy_from_slice(&qh.to_le_bytes());
}

pub(super) fn encode_q5_1(x: &Values, out: &mut BlockQ5_1) {
    let (d, id, min) = affine_scale(x, 31.0);
    [out[0], out[1]] = f16_bytes(d);
    [out[2], out[3]] = f16_bytes(min);
    let qh = encode_nibbles(x, &mut out[8..], |v| truncate_code((v - min) * id + 0.5, 31));
    out[4..8].copy_from_slice(&qh.to_le_bytes());
}

pub(super) fn encode_q8_0(x: &Values, out: &mut BlockQ8_0) {
    let amax = x.iter().fold(0.0_f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    [out[0], out[1]] = f16_bytes(d);
    for (q, &v) in out[2..].iter_mut().zip(x) {
        // `round` is C's roundf (ties away from zero); |v·id| ≤ 127 fits the i8 code, stored as
        // its two's-complement byte.
        *q = (v * id).round() as i8 as u8;
    }
}

/// Pack the codes `code(x[j])` as nibbles into `qs` and return the fifth bits as `qh`.
fn encode_nibbles(x: &Values, qs: &mut [u8], code: impl Fn(f32) -> u8) -> u32 {
    let (lo, hi) = x.split_at(HALF);
    let mut qh = 0_u32;
    for (j, ((q, &lo), &hi)) in qs.iter_mut().zip(lo).zip(hi).enumerate() {
        let (c0, c1) = (code(lo), code(hi));
        *q = (c0 & 0x0F) | (c1 << 4);
        qh |= u32::from(c0 >> 4) << j;
        qh |= u32::from(c1 >> 4) << (j + HALF);
    }
    qh
}

/// Scale `d` (and its inverse, 0 for an all-zero block) that maps the element of largest
/// magnitude to `lowest_level`, the lowest code minus the zero point (−8 for `q4_0`).
fn symmetric_scale(x: &Values, lowest_level: f32) -> (f32, f32) {
    let d = signed_absmax(x) / lowest_level;
    (d, if d == 0.0 { 0.0 } else { 1.0 / d })
}

/// Scale `d`, its inverse and the offset `min` that map the block's range onto codes `0..=levels`.
fn affine_scale(x: &Values, levels: f32) -> (f32, f32, f32) {
    let (min, max) = x.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / levels;
    (d, if d == 0.0 { 0.0 } else { 1.0 / d }, min)
}

/// C's `MIN(max, (int8_t)v)` for the non-negative `v` the encoders produce: truncate, clamp.
fn truncate_code(v: f32, max: u8) -> u8 {
    (v as u8).min(max)
}
