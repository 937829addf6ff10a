//! ggml's k-quants `q4_k`, `q5_k` and `q6_k`: 256-element super-blocks with quantized sub-block
//! scales.
//!
//! A super-block holds one f16 scale `d` for its sub-block scales (and, for the affine types, one
//! f16 `dmin` for its sub-block minimums). Byte layouts (ggml-common.h, `QK_K = 256`):
//!
//! ```text
//! q4_k  d:f16 | dmin:f16 | scales:[u8;12] | qs:[u8;128]               x = d·sc·q − dmin·m
//! q5_k  d:f16 | dmin:f16 | scales:[u8;12] | qh:[u8;32] | qs:[u8;128]  x = d·sc·q − dmin·m
//! q6_k  ql:[u8;128] | qh:[u8;64] | scales:[i8;16] | d:f16             x = d·sc·(q − 32)
//! ```
//!
//! `q4_k`/`q5_k` have eight 32-element sub-blocks, each with a 6-bit scale `sc` and 6-bit min `m`
//! packed into `scales` (see [`unpack_scales`]). Sub-block `s` takes the low (even `s`) or high (odd
//! `s`) nibbles of `qs[32·(s/2)..][..32]`, and `q5_k` adds bit `s` of `qh[l]` as the fifth bit of
//! element `l`. `q6_k` has sixteen 16-element sub-blocks with signed 8-bit scales; its codes are
//! laid out by 128-element halves, see [`q6_position`].
//!
//! The encoders are deliberately simple, not ggml's error-minimizing search: each sub-block gets
//! the scale (and min) that spans its values exactly; the super-block scale is rounded to f16 away
//! from zero, so that the largest sub-block scale still fits its code; the sub-block scales are
//! rounded to their 6- or 8-bit codes; and the values are rounded against the scales a decoder
//! will actually see. All-zero and constant blocks encode without NaN.

use super::float::{f16_le, round_f16_away};
use super::{block_bytes, block_len, signed_absmax};
use apr_ir::DType;

/// Elements per super-block (`QK_K`).
const QK_K: usize = block_len(DType::Q4K);
/// Elements per sub-block of `q4_k` and `q5_k`.
const SUB: usize = 32;
/// Elements per sub-block of `q6_k`.
const SUB6: usize = 16;
/// Largest 6-bit sub-block scale or min code.
const MAX_CODE6: f32 = 63.0;

type BlockQ4K = [u8; block_bytes(DType::Q4K)];
type BlockQ5K = [u8; block_bytes(DType::Q5K)];
type BlockQ6K = [u8; block_bytes(DType::Q6K)];
type Values = [f32; QK_K];

pub(super) fn decode_q4_k(b: &BlockQ4K, out: &mut Values) {
    decode_affine(&b[..16], &b[16..], None, out);
}

pub(super) fn decode_q5_k(b: &BlockQ5K, out: &mut Values) {
    decode_affine(&b[..16], &b[48..], Some(&b[16..48]), out);
}

pub(super) fn encode_q4_k(x: &Values, out: &mut BlockQ4K) {
    let (head, qs) = out.split_at_mut(16);
    encode_affine(x, 15, head, qs, None);
}

pub(super) fn encode_q5_k(x: &Values, out: &mut BlockQ5K) {
    let (head, rest) = out.split_at_mut(16);
    let (qh, qs) = rest.split_at_mut(32);
    encode_affine(x, 31, head, qs, Some(qh));
}

/// Decode a `q4_k` (no `qh`) or `q5_k` super-block from its 16-byte `head` (d, dmin, scales).
fn decode_affine(head: &[u8], qs: &[u8], qh: Option<&[u8]>, out: &mut Values) {
    let (d, dmin) = (f16_le(head[0], head[1]), f16_le(head[2], head[3]));
    let (scales, mins) = unpack_scales(&head[4..16]);
    for (s, ys) in out.chunks_exact_mut(SUB).enumerate() {
        // ggml's operation order: (d·sc)·q − (dmin·m).
        let step = d * f32::from(scales[s]);
        let offset = dmin * f32::from(mins[s]);
        for (l, y) in ys.iter_mut().enumerate() {
            let q = affine_code(qs, qh, s, l);
            *y = step * f32::from(q) - offset;
        }
    }
}

/// Code of element `l` of sub-block `s`: a nibble of `qs`, plus a fifth bit from `qh` if present.
fn affine_code(qs: &[u8], qh: Option<&[u8]>, s: usize, l: usize) -> u8 {
    let (at, shift) = nibble_at(s, l);
    let low = (qs[at] >> shift) & 0x0F;
    let high = qh.map_or(0, |qh| (qh[l] >> s) & 1);
    low | (high << 4)
}

/// The byte of `qs` holding the low nibble of element `l` of sub-block `s`, and its shift: the
/// sub-blocks pair up on 32-byte chunks, even ones in the low nibbles, odd ones in the high.
fn nibble_at(s: usize, l: usize) -> (usize, usize) {
    (SUB * (s / 2) + l, 4 * (s % 2))
}

/// Encode a `q4_k` (`levels` = 15, no `qh`) or `q5_k` (`levels` = 31) super-block.
fn encode_affine(x: &Values, levels: u8, head: &mut [u8], qs: &mut [u8], mut qh: Option<&mut [u8]>) {
    // Each sub-block spans [−min, −min + levels·scale]; the min is kept ≤ 0 so that it is stored
    // as a non-negative code, as ggml does.
    let mut scales = [0.0_f32; QK_K / SUB];
    let mut mins = [0.0_f32; QK_K / SUB];
    for ((scale, min), xs) in scales.iter_mut().zip(&mut mins).zip(x.chunks_exact(SUB)) {
        let lo = xs.iter().fold(0.0_f32, |m, &v| m.min(v));
        let hi = xs.iter().fold(lo, |m, &v| m.max(v));
        *scale = (hi - lo) / f32::from(levels);
        *min = -lo;
    }
    let (d_bytes, d) = round_f16_away(largest(&scales) / MAX_CODE6);
    let (dmin_bytes, dmin) = round_f16_away(largest(&mins) / MAX_CODE6);
    let scale_codes = scales.map(|v| code6(v, d));
    let min_codes = mins.map(|v| code6(v, dmin));
    head[0..2].copy_from_slice(&d_bytes);
    head[2..4].copy_from_slice(&dmin_bytes);
    head[4..16].copy_from_slice(&pack_scales(&scale_codes, &min_codes));

    qs.fill(0);
    if let Some(qh) = qh.as_deref_mut() {
        qh.fill(0);
    }
    for (s, xs) in x.chunks_exact(SUB).enumerate() {
        let step = d * f32::from(scale_codes[s]);
        let offset = dmin * f32::from(min_codes[s]);
        let inv_step = if step > 0.0 { 1.0 / step } else { 0.0 };
        for (l, &v) in xs.iter().enumerate() {
            let q = ((v + offset) * inv_step).round().clamp(0.0, f32::from(levels)) as u8;
            let (at, shift) = nibble_at(s, l);
            qs[at] |= (q & 0x0F) << shift;
            if let Some(qh) = qh.as_deref_mut() {
                qh[l] |= (q >> 4) << s;
            }
        }
    }
}

/// The 6-bit scale and min codes of the eight sub-blocks, unpacked from the 12-byte `scales`
/// field (ggml's `get_scale_min_k4`): bytes 0–3 hold scales 0–3 and bytes 4–7 mins 0–3 in their
/// low six bits; bytes 8–11 hold the low nibbles of scales 4–7 (low half) and mins 4–7 (high
/// half), whose top two bits are the top bits of bytes 0–3 and 4–7.
fn unpack_scales(p: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut scales = [0; 8];
    let mut mins = [0; 8];
    for j in 0..4 {
        scales[j] = p[j] & 0x3F;
        mins[j] = p[j + 4] & 0x3F;
        scales[j + 4] = (p[j + 8] & 0x0F) | ((p[j] >> 6) << 4);
        mins[j + 4] = (p[j + 8] >> 4) | ((p[j + 4] >> 6) << 4);
    }
    (scales, mins)
}

/// Inverse of [`unpack_scales`] for codes below 64.
fn pack_scales(scales: &[u8; 8], mins: &[u8; 8]) -> [u8; 12] {
    let mut p = [0; 12];
    for j in 0..4 {
        p[j] = scales[j] | ((scales[j + 4] >> 4) << 6);
        p[j + 4] = mins[j] | ((mins[j + 4] >> 4) << 6);
        p[j + 8] = (scales[j + 4] & 0x0F) | ((mins[j + 4] & 0x0F) << 4);
    }
    p
}

/// `v / unit` rounded to a 6-bit code (0 when the unit is 0).
fn code6(v: f32, unit: f32) -> u8 {
    if unit > 0.0 {
        (v / unit).round().clamp(0.0, MAX_CODE6) as u8
    } else {
        0
    }
}

/// The largest of `v` and 0.
fn largest(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, &x| m.max(x))
}

pub(super) fn decode_q6_k(b: &BlockQ6K, out: &mut Values) {
    let (ql, rest) = b.split_at(128);
    let (qh, rest) = rest.split_at(64);
    let (scales, d) = rest.split_at(16);
    let d = f16_le(d[0], d[1]);
    for (s, ys) in out.chunks_exact_mut(SUB6).enumerate() {
        // ggml's operation order: (d·sc)·(q − 32).
        let step = d * f32::from(scales[s] as i8);
        for (i, y) in ys.iter_mut().enumerate() {
            let at = q6_position(SUB6 * s + i);
            let low = (ql[at.ql] >> at.ql_shift) & 0x0F;
            let high = (qh[at.qh] >> at.qh_shift) & 0x03;
            *y = step * f32::from(i16::from(low | (high << 4)) - 32);
        }
    }
}

pub(super) fn encode_q6_k(x: &Values, out: &mut BlockQ6K) {
    // Sub-block scales map each sub-block's largest-magnitude element to code −32 (as the legacy
    // symmetric types do); the super-block scale maps the largest-magnitude scale to −128.
    let mut scales = [0.0_f32; QK_K / SUB6];
    for (scale, xs) in scales.iter_mut().zip(x.chunks_exact(SUB6)) {
        *scale = signed_absmax(xs) / -32.0;
    }
    let (d_bytes, d) = round_f16_away(signed_absmax(&scales) / -128.0);
    let scale_codes = scales.map(|v| if d == 0.0 { 0 } else { (v / d).round().clamp(-128.0, 127.0) as i8 });

    let (ql, rest) = out.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    ql.fill(0);
    qh.fill(0);
    for (s, xs) in x.chunks_exact(SUB6).enumerate() {
        let step = d * f32::from(scale_codes[s]);
        let inv_step = if step == 0.0 { 0.0 } else { 1.0 / step };
        for (i, &v) in xs.iter().enumerate() {
            let q = ((v * inv_step).round().clamp(-32.0, 31.0) as i8 + 32) as u8;
            let at = q6_position(SUB6 * s + i);
            ql[at.ql] |= (q & 0x0F) << at.ql_shift;
            qh[at.qh] |= (q >> 4) << at.qh_shift;
        }
    }
    let (scales, d) = rest.split_at_mut(16);
    for (dst, &code) in scales.iter_mut().zip(&scale_codes) {
        *dst = code as u8;
    }
    d.copy_from_slice(&d_bytes);
}

/// Where the 6-bit code of one `q6_k` element lives.
struct Q6Position {
    /// Byte of `ql` holding the low four bits, and their shift (0 or 4).
    ql: usize,
    ql_shift: usize,
    /// Byte of `qh` holding the high two bits, and their shift (0, 2, 4 or 6).
    qh: usize,
    qh_shift: usize,
}

/// Element `e = 128·h + 32·k + l` (half `h`, quarter `k`, lane `l`) keeps its low nibble in
/// `ql[64·h + 32·(k % 2) + l]` (low nibble for `k < 2`, high for `k ≥ 2`) and its top two bits in
/// bits `2k..2k+2` of `qh[32·h + l]` — ggml's `dequantize_row_q6_K`.
fn q6_position(e: usize) -> Q6Position {
    let (h, k, l) = (e / 128, (e / 32) % 4, e % 32);
    Q6Position { ql: 64 * h + 32 * (k % 2) + l, ql_shift: 4 * (k / 2), qh: 32 * h + l, qh_shift: 2 * k }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_packing_round_trips() {
        for code in 0..64_u8 {
            let scales = std::array::from_fn(|j| code.wrapping_add(7 * j as u8) & 0x3F);
            let mins = std::array::from_fn(|j| code.wrapping_add(13 * j as u8 + 1) & 0x3F);
            assert_eq!(unpack_scales(&pack_scales(&scales, &mins)), (scales, mins));
        }
    }

    #[test]
    fn q6_positions_cover_every_bit_once() {
        let mut ql = [0_u8; 128];
        let mut qh = [0_u8; 64];
        for e in 0..QK_K {
            let at = q6_position(e);
            assert_eq!(ql[at.ql] & (0x0F << at.ql_shift), 0, "ql clash at {e}");
            assert_eq!(qh[at.qh] & (0x03 << at.qh_shift), 0, "qh clash at {e}");
            ql[at.ql] |= 0x0F << at.ql_shift;
            qh[at.qh] |= 0x03 << at.qh_shift;
        }
        assert!(ql.iter().chain(&qh).all(|&b| b == 0xFF));
    }

    #[test]
    fn constant_blocks_survive() {
        for c in [0.0_f32, 1.5, -2.25] {
            let x = [c; QK_K];
            let mut y = [f32::NAN; QK_K];
            let mut b4 = [0; block_bytes(DType::Q4K)];
            encode_q4_k(&x, &mut b4);
            decode_q4_k(&b4, &mut y);
            assert!(y.iter().all(|&v| (v - c).abs() <= 1e-2 * c.abs()), "q4_k {c}: {y:?}");
            let mut b6 = [0; block_bytes(DType::Q6K)];
            encode_q6_k(&x, &mut b6);
            decode_q6_k(&b6, &mut y);
            assert!(y.iter().all(|&v| (v - c).abs() <= 1e-2 * c.abs()), "q6_k {c}: {y:?}");
        }
    }
}
