// Chunked dot products of one packed weight row with `x`: the core of the fused matvec kernels
// (matvec_add.wgsl, matvec_swiglu.wgsl). This file is a template, instantiated by the codegen
// (kernels::qdot) once per weight binding of a kernel: every `WBUF` becomes the binding's name
// (`w`, `wu`), so a kernel with two weights of different dtypes gets two independent sets of
// functions. An instance is the part above the first `// @dtype` line (helpers) plus the one
// section for the weight's dtype, which defines
//   const WBUF_CH: u32                        elements per chunk
//   fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32
//                                             Σ W[r, e] · x[e] over chunk c of row r (K = k)
// for the `array<u32>` binding WBUF holding the bytes of whole rows as ggml lays them out, and
// the vector `x` (K f32 elements) the kernel declares as `array<vec4<f32>>` (every buffer is a
// multiple of 16 bytes, so the last partial vec4 is addressable; chunks start at multiples of 8
// elements, so their vec4 reads are aligned). The kernel needs dequant.wgsl before it
// (f16_bits_to_f32). A thread decodes a whole chunk (a block, or a pair of k-quant sub-blocks
// sharing their code bytes) from u32 words, once per block header, and dots it four elements at
// a time; sums are f32. Per-element values are the CPU dequantizer's (the same exact products);
// block-type chunks factor the scale out of the sum (d·Σq·x, and −m·Σx for the affine types),
// so results differ from an element-by-element dot only by f32 rounding.

// The byte at `off`.
fn WBUF_byte(off: u32) -> u32 {
    return (WBUF[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

// The byte at `off` as a signed 8-bit integer, in f32.
fn WBUF_i8(off: u32) -> f32 {
    return f32(bitcast<i32>(WBUF_byte(off) << 24u) >> 24u);
}

// The little-endian u32 at byte `off`, which is even (every field a chunk reads is). Without a
// branch: the blocks of 18, 22, 34 and 210 bytes alternate between word-aligned and not, and
// neighbouring threads of a warp read neighbouring blocks, so a branch would run both sides.
// The next word is read either way (at a buffer's last word it is out of range, which the bounds
// checks make a harmless read, and its value is then unused).
fn WBUF_u32(off: u32) -> u32 {
    let i = off >> 2u;
    let lo = WBUF[i];
    let hi = WBUF[i + 1u];
    return select(lo, (lo >> 16u) | (hi << 16u), (off & 2u) != 0u);
}

// The two f16 halves of word `i` (the low one first), as f32, exactly. On a device whose f16
// conversions proved exact (Gpu::f16) the kernel also binds the weight's buffer as
// `WBUF_h: array<vec2<f16>>` and the hardware converts (kernels::qdot keeps the `@f16` line);
// elsewhere the bits are decoded with integer operations (the `@u32` lines). On the H200 the
// integer decoding of the block scales was ~12 % of a 7B decode step.
fn WBUF_f16x2(i: u32) -> vec2<f32> {
    let h = WBUF[i]; // @u32
    return vec2<f32>(f16_bits_to_f32(h & 0xffffu), f16_bits_to_f32(h >> 16u)); // @u32
    return vec2<f32>(WBUF_h[i]); // @f16
}

// The f16 at byte `off` (even), as f32 (exact).
fn WBUF_f16(off: u32) -> f32 {
    let v = WBUF_f16x2(off >> 2u);
    return select(v.x, v.y, (off & 2u) != 0u);
}

// x[i .. i + 4] (i a multiple of 4).
fn WBUF_x4(i: u32) -> vec4<f32> {
    return x[i >> 2u];
}

// x[i].
fn WBUF_x1(i: u32) -> f32 {
    return x[i >> 2u][i & 3u];
}

// The four bytes of `q`, each shifted right by `shift` and masked with `mask`.
fn WBUF_bytes4(q: u32, shift: u32, mask: u32) -> vec4<u32> {
    return (vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u) >> vec4<u32>(shift)) & vec4<u32>(mask);
}

fn WBUF_hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// Scale and min of k-quant sub-blocks 2j and 2j + 1 (j < 4) from the three words of the 12 scale
// bytes at `p` (a multiple of 4): (sc₀, m₀, sc₁, m₁), ggml's get_scale_min_k4 (dequant.wgsl's
// scale_min_k4) for both, with three loads and no branches.
fn WBUF_scale_min2(p: u32, j: u32) -> vec4<f32> {
    let a = WBUF[p >> 2u];
    let b = WBUF[(p >> 2u) + 1u];
    let c = WBUF[(p >> 2u) + 2u];
    let sh = vec2<u32>(16u * (j & 1u), 16u * (j & 1u) + 8u);
    let lo_sc = (vec2<u32>(a) >> sh) & vec2<u32>(0xffu);
    let lo_m = (vec2<u32>(b) >> sh) & vec2<u32>(0xffu);
    let hi = (vec2<u32>(c) >> sh) & vec2<u32>(0xffu);
    // s < 4: sc = scales[s] & 63, m = scales[s + 4] & 63
    let sc_a = lo_sc & vec2<u32>(63u);
    let m_a = lo_m & vec2<u32>(63u);
    // s ≥ 4: sc = (scales[s + 4] & 15) | (scales[s − 4] >> 6) << 4, m = (scales[s + 4] >> 4) | (scales[s] >> 6) << 4
    let sc_b = (hi & vec2<u32>(15u)) | ((lo_sc >> vec2<u32>(6u)) << vec2<u32>(4u));
    let m_b = (hi >> vec2<u32>(4u)) | ((lo_m >> vec2<u32>(6u)) << vec2<u32>(4u));
    let low = j < 2u;
    let sc = select(sc_b, sc_a, vec2<bool>(low));
    let m = select(m_b, m_a, vec2<bool>(low));
    return vec4<f32>(f32(sc.x), f32(m.x), f32(sc.y), f32(m.y));
}

// @dtype f32
// Eight elements a chunk; the last chunk of a row may be partial (any K).
const WBUF_CH: u32 = 8u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let c0 = c * 8u;
    let i = r * k + c0;
    if c0 + 8u <= k {
        let a = bitcast<vec4<f32>>(vec4<u32>(WBUF[i], WBUF[i + 1u], WBUF[i + 2u], WBUF[i + 3u]));
        let b = bitcast<vec4<f32>>(vec4<u32>(WBUF[i + 4u], WBUF[i + 5u], WBUF[i + 6u], WBUF[i + 7u]));
        return dot(a, WBUF_x4(c0)) + dot(b, WBUF_x4(c0 + 4u));
    }
    var acc = 0.0;
    for (var j = 0u; c0 + j < k; j++) {
        acc += bitcast<f32>(WBUF[i + j]) * WBUF_x1(c0 + j);
    }
    return acc;
}

// @dtype f16
// Element i is half i & 1 of word i >> 1 (rows of odd K start mid-word).
const WBUF_CH: u32 = 8u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let c0 = c * 8u;
    let i = r * k + c0;
    var acc = 0.0;
    for (var j = 0u; j < 8u; j++) {
        if c0 + j < k {
            let v = WBUF_f16x2((i + j) >> 1u);
            acc += select(v.x, v.y, ((i + j) & 1u) != 0u) * WBUF_x1(c0 + j);
        }
    }
    return acc;
}

// @dtype bf16
const WBUF_CH: u32 = 8u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let c0 = c * 8u;
    let i = r * k + c0;
    var acc = 0.0;
    for (var j = 0u; j < 8u; j++) {
        if c0 + j < k {
            let h = (WBUF[(i + j) >> 1u] >> (((i + j) & 1u) * 16u)) & 0xffffu;
            acc += bitcast<f32>(h << 16u) * WBUF_x1(c0 + j);
        }
    }
    return acc;
}

// @dtype i32
// Integers, not packed reals; here so every dtype has an instance (as dequant.wgsl's dq_i32).
const WBUF_CH: u32 = 8u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let c0 = c * 8u;
    let i = r * k + c0;
    var acc = 0.0;
    for (var j = 0u; c0 + j < k && j < 8u; j++) {
        acc += f32(bitcast<i32>(WBUF[i + j])) * WBUF_x1(c0 + j);
    }
    return acc;
}

// @dtype q4_0
// d:f16 | qs:[u8;16] (18 bytes), x = (q − 8)·d; byte j holds element j (low nibble) and
// j + 16 (high). A chunk is a block.
const WBUF_CH: u32 = 32u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let off = (r * (k / 32u) + c) * 18u;
    let x0 = c * 32u;
    var acc = 0.0;
    for (var j = 0u; j < 4u; j++) {
        let q = WBUF_u32(off + 2u + 4u * j);
        let lo = vec4<f32>(WBUF_bytes4(q, 0u, 15u)) - 8.0;
        let hi = vec4<f32>(WBUF_bytes4(q, 4u, 15u)) - 8.0;
        acc += dot(lo, WBUF_x4(x0 + 4u * j)) + dot(hi, WBUF_x4(x0 + 16u + 4u * j));
    }
    return WBUF_f16(off) * acc;
}

// @dtype q4_1
// d:f16 | m:f16 | qs:[u8;16] (20 bytes, word-aligned), x = q·d + m.
const WBUF_CH: u32 = 32u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let off = (r * (k / 32u) + c) * 20u;
    let x0 = c * 32u;
    var aq = 0.0;
    var ax = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let q = WBUF[(off + 4u + 4u * j) >> 2u];
        let xl = WBUF_x4(x0 + 4u * j);
        let xh = WBUF_x4(x0 + 16u + 4u * j);
        aq += dot(vec4<f32>(WBUF_bytes4(q, 0u, 15u)), xl) + dot(vec4<f32>(WBUF_bytes4(q, 4u, 15u)), xh);
        ax += xl + xh;
    }
    let dm = WBUF_f16x2(off >> 2u);
    return dm.x * aq + dm.y * WBUF_hsum(ax);
}

// @dtype q5_0
// d:f16 | qh:[u8;4] | qs:[u8;16] (22 bytes), x = (q − 16)·d; the fifth bit of element j is
// bit j of qh.
const WBUF_CH: u32 = 32u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let off = (r * (k / 32u) + c) * 22u;
    let x0 = c * 32u;
    let qh = vec4<u32>(WBUF_u32(off + 2u));
    var acc = 0.0;
    for (var j = 0u; j < 4u; j++) {
        let q = WBUF_u32(off + 6u + 4u * j);
        let hl = (qh >> (vec4<u32>(0u, 1u, 2u, 3u) + 4u * j)) & vec4<u32>(1u);
        let hh = (qh >> (vec4<u32>(16u, 17u, 18u, 19u) + 4u * j)) & vec4<u32>(1u);
        let lo = vec4<f32>(WBUF_bytes4(q, 0u, 15u) | (hl << vec4<u32>(4u))) - 16.0;
        let hi = vec4<f32>(WBUF_bytes4(q, 4u, 15u) | (hh << vec4<u32>(4u))) - 16.0;
        acc += dot(lo, WBUF_x4(x0 + 4u * j)) + dot(hi, WBUF_x4(x0 + 16u + 4u * j));
    }
    return WBUF_f16(off) * acc;
}

// @dtype q5_1
// d:f16 | m:f16 | qh:[u8;4] | qs:[u8;16] (24 bytes, word-aligned), x = q·d + m.
const WBUF_CH: u32 = 32u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let off = (r * (k / 32u) + c) * 24u;
    let x0 = c * 32u;
    let qh = vec4<u32>(WBUF[(off + 4u) >> 2u]);
    var aq = 0.0;
    var ax = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let q = WBUF[(off + 8u + 4u * j) >> 2u];
        let hl = (qh >> (vec4<u32>(0u, 1u, 2u, 3u) + 4u * j)) & vec4<u32>(1u);
        let hh = (qh >> (vec4<u32>(16u, 17u, 18u, 19u) + 4u * j)) & vec4<u32>(1u);
        let xl = WBUF_x4(x0 + 4u * j);
        let xh = WBUF_x4(x0 + 16u + 4u * j);
        aq += dot(vec4<f32>(WBUF_bytes4(q, 0u, 15u) | (hl << vec4<u32>(4u))), xl);
        aq += dot(vec4<f32>(WBUF_bytes4(q, 4u, 15u) | (hh << vec4<u32>(4u))), xh);
        ax += xl + xh;
    }
    let dm = WBUF_f16x2(off >> 2u);
    return dm.x * aq + dm.y * WBUF_hsum(ax);
}

// @dtype q8_0
// d:f16 | qs:[i8;32] (34 bytes), x = q·d. A chunk is half a block (16 elements), so the threads
// of a row (consecutive chunks) read consecutive words.
const WBUF_CH: u32 = 16u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let off = (r * (k / 32u) + c / 2u) * 34u;
    let q0 = off + 2u + 16u * (c % 2u);
    let x0 = c * 16u;
    var acc = 0.0;
    for (var j = 0u; j < 4u; j++) {
        let q = WBUF_u32(q0 + 4u * j);
        let s = vec4<i32>(bitcast<i32>(q << 24u), bitcast<i32>(q << 16u), bitcast<i32>(q << 8u), bitcast<i32>(q));
        acc += dot(vec4<f32>(s >> vec4<u32>(24u)), WBUF_x4(x0 + 4u * j));
    }
    return WBUF_f16(off) * acc;
}

// @dtype q4_k
// d:f16 | dmin:f16 | scales:[u8;12] | qs:[u8;128] (144 bytes); x = (d·sc)·q − dmin·m per
// 32-element sub-block. Sub-blocks 2j and 2j+1 share the 32 bytes qs[32j ..] (low and high
// nibbles). A chunk is 16 elements: the 8 bytes qs[32j + 8p ..] (p < 4), whose low nibbles are
// elements 8p .. 8p + 8 of sub-block 2j and high nibbles the same of 2j + 1; sixteen chunks a
// super-block, so the threads of a row (consecutive chunks) read consecutive words.
const WBUF_CH: u32 = 16u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let sb = c / 16u;
    let off = (r * (k / 256u) + sb) * 144u;
    let j = (c % 16u) / 4u;
    let p = c % 4u;
    let dm = WBUF_f16x2(off >> 2u);
    let d = dm.x;
    let dmin = dm.y;
    let sm = WBUF_scale_min2(off + 4u, j);
    let q = (off + 16u + 32u * j + 8u * p) >> 2u;
    let qa = WBUF[q];
    let qb = WBUF[q + 1u];
    let x0 = sb * 256u + 64u * j + 8u * p;
    let xl0 = WBUF_x4(x0);
    let xl1 = WBUF_x4(x0 + 4u);
    let xh0 = WBUF_x4(x0 + 32u);
    let xh1 = WBUF_x4(x0 + 36u);
    let q0 = dot(vec4<f32>(WBUF_bytes4(qa, 0u, 15u)), xl0) + dot(vec4<f32>(WBUF_bytes4(qb, 0u, 15u)), xl1);
    let q1 = dot(vec4<f32>(WBUF_bytes4(qa, 4u, 15u)), xh0) + dot(vec4<f32>(WBUF_bytes4(qb, 4u, 15u)), xh1);
    let s0 = WBUF_hsum(xl0 + xl1);
    let s1 = WBUF_hsum(xh0 + xh1);
    return ((d * sm.x) * q0 - (dmin * sm.y) * s0) + ((d * sm.z) * q1 - (dmin * sm.w) * s1);
}

// @dtype q5_k
// d:f16 | dmin:f16 | scales:[u8;12] | qh:[u8;32] | qs:[u8;128] (176 bytes); the fifth bit of
// element l of sub-block s is bit s of qh[l]. Chunks as q4_k.
const WBUF_CH: u32 = 64u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let off = (r * (k / 256u) + c / 4u) * 176u;
    let j = c % 4u;
    let dm = WBUF_f16x2(off >> 2u);
    let d = dm.x;
    let dmin = dm.y;
    let sm = WBUF_scale_min2(off + 4u, j);
    let x0 = c * 64u;
    var q0 = 0.0;
    var q1 = 0.0;
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    for (var t = 0u; t < 8u; t++) {
        let q = WBUF[(off + 48u + 32u * j + 4u * t) >> 2u];
        let h = WBUF[(off + 16u + 4u * t) >> 2u];
        let xl = WBUF_x4(x0 + 4u * t);
        let xh = WBUF_x4(x0 + 32u + 4u * t);
        q0 += dot(vec4<f32>(WBUF_bytes4(q, 0u, 15u) | (WBUF_bytes4(h, 2u * j, 1u) << vec4<u32>(4u))), xl);
        q1 += dot(vec4<f32>(WBUF_bytes4(q, 4u, 15u) | (WBUF_bytes4(h, 2u * j + 1u, 1u) << vec4<u32>(4u))), xh);
        s0 += xl;
        s1 += xh;
    }
    return ((d * sm.x) * q0 - (dmin * sm.y) * WBUF_hsum(s0)) + ((d * sm.z) * q1 - (dmin * sm.w) * WBUF_hsum(s1));
}

// @dtype q6_k
// ql:[u8;128] | qh:[u8;64] | scales:[i8;16] | d:f16 (210 bytes), x = (d·sc)·(q − 32), one scale
// per 16 elements. Element e = 128·h + 32·k + l keeps its low nibble in ql[64·h + 32·(k % 2) + l]
// (low nibble for k < 2, high for k ≥ 2) and its top two bits in bits 2k..2k+2 of qh[32·h + l].
// A chunk is the 16 elements of one h and four l (l0 .. l0 + 4, l0 = 4·(c % 8)) over the four k:
// the words ql[64h + l0], ql[64h + 32 + l0] and qh[32h + l0]; sixteen chunks a super-block, so
// the threads of a row (consecutive chunks) read consecutive words.
const WBUF_CH: u32 = 16u;

fn WBUF_chunk(r: u32, c: u32, k: u32) -> f32 {
    let sb = c / 16u;
    let off = (r * (k / 256u) + sb) * 210u;
    let h = (c % 16u) / 8u;
    let l0 = (c % 8u) * 4u;
    let qa = WBUF_u32(off + 64u * h + l0);
    let qb = WBUF_u32(off + 64u * h + 32u + l0);
    let qh = WBUF_u32(off + 128u + 32u * h + l0);
    // The scales of the four k: bytes b, b + 2, b + 4, b + 6 (b = l0 / 16) of the eight at
    // 192 + 8h, as i8.
    let s0 = WBUF_u32(off + 192u + 8u * h);
    let s1 = WBUF_u32(off + 196u + 8u * h);
    let bs = vec4<u32>(8u * (l0 / 16u)) + vec4<u32>(0u, 16u, 0u, 16u);
    let sw = vec4<u32>(s0, s0, s1, s1);
    let scale = vec4<f32>(bitcast<vec4<i32>>((sw >> bs) << vec4<u32>(24u)) >> vec4<u32>(24u));
    let x0 = sb * 256u + 128u * h + l0;
    let four = vec4<u32>(4u);
    let v0 = vec4<f32>(WBUF_bytes4(qa, 0u, 15u) | (WBUF_bytes4(qh, 0u, 3u) << four)) - 32.0;
    let v1 = vec4<f32>(WBUF_bytes4(qb, 0u, 15u) | (WBUF_bytes4(qh, 2u, 3u) << four)) - 32.0;
    let v2 = vec4<f32>(WBUF_bytes4(qa, 4u, 15u) | (WBUF_bytes4(qh, 4u, 3u) << four)) - 32.0;
    let v3 = vec4<f32>(WBUF_bytes4(qb, 4u, 15u) | (WBUF_bytes4(qh, 6u, 3u) << four)) - 32.0;
    let d = WBUF_f16(off + 208u);
    return ((d * scale.x) * dot(v0, WBUF_x4(x0)) + (d * scale.y) * dot(v1, WBUF_x4(x0 + 32u)))
        + ((d * scale.z) * dot(v2, WBUF_x4(x0 + 64u)) + (d * scale.w) * dot(v3, WBUF_x4(x0 + 96u)));
}
