// Packed-weight access, prepended to kernels that read quantized weights. The kernel declares
//   @group(0) @binding(K) var<storage, read> w: array<u32>;
// holding the tensor's bytes exactly as ggml lays them out (little-endian, padded to a multiple
// of 4 bytes). `dq_<dtype>(i)` is element i of the tensor, row-major: element j of row r is
// r*cols + j, and a block never straddles two rows because a row is a whole number of blocks.
// (On a device with SHADER_F16, kernels over F16 weights take dequant_f16.wgsl instead.)
//
// Exactness: every dequantizer is bit-exact with the CPU reference (apr_ir_model::quant). The
// f16 scales are decoded with integer operations (exact, subnormals included, whatever the
// device does with f16 denormals; unpack2x16float would also need naga's
// SHADER_FLOAT16_IN_FLOAT32 capability), and every product below is exact in f32: an f16 has
// at most 11 significant bits, a sub-block scale or min at most 7 (|sc| ≤ 128, a power of two)
// and a code at most 7 (q8_0; |q| ≤ 32 elsewhere, so 5 where a scale multiplies too), so
// d·sc·q needs at most 23 and stays far from the f32 subnormals. The only rounding is the final add or
// subtract of the affine types, which rounds once whether or not the compiler fuses it with a
// multiply into an fma, so no fast-math contraction can change a result.

// ---- bytes ----

fn byte_at(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

// The little-endian u16 at byte `off` (any alignment).
fn u16_at(off: u32) -> u32 {
    if (off & 1u) == 0u {
        return (w[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu;
    }
    return byte_at(off) | (byte_at(off + 1u) << 8u);
}

// The byte at `off` read as a signed 8-bit integer.
fn i8_at(off: u32) -> i32 {
    return bitcast<i32>(byte_at(off) << 24u) >> 24u;
}

// 2^-24, the value of the least f16 subnormal.
const F16_MIN_SUBNORMAL: f32 = 5.9604644775390625e-8;

// The f32 value of the f16 bit pattern `h` (exact; NaN stays NaN, quieted like the CPU's). The
// three cases (zero or subnormal: m·2^-24, a normal or zero f32; inf/NaN; normal) are computed
// and selected, without branches: the fused matvecs decode a block scale per chunk.
fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    let normal = bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
    let sub = bitcast<f32>(bitcast<u32>(f32(m) * F16_MIN_SUBNORMAL) | sign);
    let special = bitcast<f32>(sign | 0x7f800000u | (m << 13u) | select(0u, 0x00400000u, m != 0u));
    return select(select(normal, special, e == 31u), sub, e == 0u);
}

// The little-endian f16 at byte `off`, as f32.
fn f16_at(off: u32) -> f32 {
    return f16_bits_to_f32(u16_at(off));
}

// ---- plain types ----

fn dq_f32(i: u32) -> f32 {
    return bitcast<f32>(w[i]);
}

fn dq_f16(i: u32) -> f32 {
    return f16_at(2u * i);
}

fn dq_bf16(i: u32) -> f32 {
    return bitcast<f32>(u16_at(2u * i) << 16u);
}

// i32 holds integers, not packed reals; the conversion exists so every dtype has a name.
fn dq_i32(i: u32) -> f32 {
    return f32(bitcast<i32>(w[i]));
}

// ---- memo ----
// A dequantizer remembers, per invocation, the scale(s) it last decoded and the (sub-)block
// they belong to, so a thread that walks consecutive elements decodes each block's header once
// (the matvec takes runs of 8): `key` is the block index (element index >> log2(block)), which
// no element maps to 0xffffffff. Only the block header is memoized, never a code; `w` does not
// change during a dispatch, and each kernel has a single dtype, so each memo serves one `w`.

struct Memo {
    key: u32,
    a: f32,    // the scale: d, d·sc
    b: f32,    // the offset: m, dmin·m (affine types)
    bits: u32, // the fifth bits qh (q5_0, q5_1)
}

// ---- legacy 32-element blocks ----
// Element j < 16 of a block is the low nibble of qs[j], element j + 16 its high nibble; the
// fifth bit of element j (q5_*) is bit j of the little-endian u32 qh.

// The 4-bit code of element j (0..32) of the nibbles starting at byte `qs`.
fn nibble(qs: u32, j: u32) -> u32 {
    return (byte_at(qs + (j & 15u)) >> ((j >> 4u) * 4u)) & 0xfu;
}

// The little-endian u32 at byte `off` (2-byte aligned: every qh field is).
fn u32_at2(off: u32) -> u32 {
    return u16_at(off) | (u16_at(off + 2u) << 16u);
}

var<private> memo_q4_0: Memo = Memo(0xffffffffu, 0.0, 0.0, 0u);
var<private> memo_q4_1: Memo = Memo(0xffffffffu, 0.0, 0.0, 0u);
var<private> memo_q5_0: Memo = Memo(0xffffffffu, 0.0, 0.0, 0u);
var<private> memo_q5_1: Memo = Memo(0xffffffffu, 0.0, 0.0, 0u);
var<private> memo_q8_0: Memo = Memo(0xffffffffu, 0.0, 0.0, 0u);

// q4_0: d:f16 | qs:[u8;16] (18 bytes), x = (q − 8)·d
fn dq_q4_0(i: u32) -> f32 {
    let b = (i >> 5u) * 18u;
    if memo_q4_0.key != i >> 5u {
        memo_q4_0 = Memo(i >> 5u, f16_at(b), 0.0, 0u);
    }
    let q = nibble(b + 2u, i & 31u);
    return (f32(q) - 8.0) * memo_q4_0.a;
}

// q4_1: d:f16 | m:f16 | qs:[u8;16] (20 bytes), x = q·d + m
fn dq_q4_1(i: u32) -> f32 {
    let b = (i >> 5u) * 20u;
    if memo_q4_1.key != i >> 5u {
        memo_q4_1 = Memo(i >> 5u, f16_at(b), f16_at(b + 2u), 0u);
    }
    let q = nibble(b + 4u, i & 31u);
    return f32(q) * memo_q4_1.a + memo_q4_1.b;
}

// q5_0: d:f16 | qh:[u8;4] | qs:[u8;16] (22 bytes), x = (q − 16)·d
fn dq_q5_0(i: u32) -> f32 {
    let b = (i >> 5u) * 22u;
    if memo_q5_0.key != i >> 5u {
        memo_q5_0 = Memo(i >> 5u, f16_at(b), 0.0, u32_at2(b + 2u));
    }
    let j = i & 31u;
    let q = nibble(b + 6u, j) | (((memo_q5_0.bits >> j) & 1u) << 4u);
    return (f32(q) - 16.0) * memo_q5_0.a;
}

// q5_1: d:f16 | m:f16 | qh:[u8;4] | qs:[u8;16] (24 bytes), x = q·d + m
fn dq_q5_1(i: u32) -> f32 {
    let b = (i >> 5u) * 24u;
    if memo_q5_1.key != i >> 5u {
        memo_q5_1 = Memo(i >> 5u, f16_at(b), f16_at(b + 2u), u32_at2(b + 4u));
    }
    let j = i & 31u;
    let q = nibble(b + 8u, j) | (((memo_q5_1.bits >> j) & 1u) << 4u);
    return f32(q) * memo_q5_1.a + memo_q5_1.b;
}

// q8_0: d:f16 | qs:[i8;32] (34 bytes), x = q·d
fn dq_q8_0(i: u32) -> f32 {
    let b = (i >> 5u) * 34u;
    if memo_q8_0.key != i >> 5u {
        memo_q8_0 = Memo(i >> 5u, f16_at(b), 0.0, 0u);
    }
    return f32(i8_at(b + 2u + (i & 31u))) * memo_q8_0.a;
}

// ---- k-quants: 256-element super-blocks ----

// The 6-bit scale (x) and min (y) of sub-block s (0..8) from the 12-byte field at byte `p`
// (ggml's get_scale_min_k4): bytes 0–3 hold scales 0–3 and bytes 4–7 mins 0–3 in their low six
// bits; bytes 8–11 hold the low nibbles of scales 4–7 (low half) and mins 4–7 (high half), whose
// top two bits are the top bits of bytes 0–3 and 4–7.
fn scale_min_k4(p: u32, s: u32) -> vec2<u32> {
    if s < 4u {
        return vec2<u32>(byte_at(p + s) & 63u, byte_at(p + s + 4u) & 63u);
    }
    let lo = byte_at(p + s + 4u);
    let sc = (lo & 0xfu) | ((byte_at(p + s - 4u) >> 6u) << 4u);
    let mn = (lo >> 4u) | ((byte_at(p + s) >> 6u) << 4u);
    return vec2<u32>(sc, mn);
}

// The memo of sub-block s (0..8) of the q4_k/q5_k super-block at byte b: a = d·sc, b = dmin·m,
// so that x = (d·sc)·q − dmin·m.
fn memo_k(key: u32, b: u32, s: u32) -> Memo {
    let sm = scale_min_k4(b + 4u, s);
    return Memo(key, f16_at(b) * f32(sm.x), f16_at(b + 2u) * f32(sm.y), 0u);
}

// The low four bits of element l (0..32) of sub-block s: the sub-blocks pair up on 32-byte
// chunks of qs, even ones in the low nibbles, odd ones in the high.
fn nibble_k(qs: u32, s: u32, l: u32) -> u32 {
    return (byte_at(qs + 32u * (s >> 1u) + l) >> (4u * (s & 1u))) & 0xfu;
}

var<private> memo_q4_k: Memo = Memo(0xffffffffu, 0.0, 0.0, 0u);
var<private> memo_q5_k: Memo = Memo(0xffffffffu, 0.0, 0.0, 0u);
var<private> memo_q6_k: Memo = Memo(0xffffffffu, 0.0, 0.0, 0u);

// q4_k: d:f16 | dmin:f16 | scales:[u8;12] | qs:[u8;128] (144 bytes); memo per 32-element
// sub-block.
fn dq_q4_k(i: u32) -> f32 {
    let b = (i >> 8u) * 144u;
    let s = (i >> 5u) & 7u;
    if memo_q4_k.key != i >> 5u {
        memo_q4_k = memo_k(i >> 5u, b, s);
    }
    let q = nibble_k(b + 16u, s, i & 31u);
    return memo_q4_k.a * f32(q) - memo_q4_k.b;
}

// q5_k: d:f16 | dmin:f16 | scales:[u8;12] | qh:[u8;32] | qs:[u8;128] (176 bytes); the fifth
// bit of element l of sub-block s is bit s of qh[l].
fn dq_q5_k(i: u32) -> f32 {
    let b = (i >> 8u) * 176u;
    let s = (i >> 5u) & 7u;
    let l = i & 31u;
    if memo_q5_k.key != i >> 5u {
        memo_q5_k = memo_k(i >> 5u, b, s);
    }
    let q = nibble_k(b + 48u, s, l) | (((byte_at(b + 16u + l) >> s) & 1u) << 4u);
    return memo_q5_k.a * f32(q) - memo_q5_k.b;
}

// q6_k: ql:[u8;128] | qh:[u8;64] | scales:[i8;16] | d:f16 (210 bytes), x = (d·sc)·(q − 32) with
// one scale per 16 elements (the memo's block). Element e = 128·h + 32·k + l keeps its low
// nibble in ql[64·h + 32·(k % 2) + l] (low nibble for k < 2, high for k ≥ 2) and its top two
// bits in bits 2k..2k+2 of qh[32·h + l].
fn dq_q6_k(i: u32) -> f32 {
    let b = (i >> 8u) * 210u;
    let e = i & 255u;
    if memo_q6_k.key != i >> 4u {
        memo_q6_k = Memo(i >> 4u, f16_at(b + 208u) * f32(i8_at(b + 192u + (e >> 4u))), 0.0, 0u);
    }
    let h = e >> 7u;
    let k = (e >> 5u) & 3u;
    let l = e & 31u;
    let low = (byte_at(b + 64u * h + 32u * (k & 1u) + l) >> (4u * (k >> 1u))) & 0xfu;
    let high = (byte_at(b + 128u + 32u * h + l) >> (2u * k)) & 3u;
    let q = i32(low | (high << 4u)) - 32;
    return memo_q6_k.a * f32(q);
}
