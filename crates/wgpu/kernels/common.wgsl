// Prepended to every kernel. Binding 0 is the per-step uniform; binding 1 holds the
// dispatch's static parameters (shapes, strides, op codes) as u32 words.

struct Step {
    pos: u32,
    ctx: u32,
    token: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> prm: array<u32>;

// A dimension parameter: the sentinel 0xffffffff stands for the symbolic cache length.
fn dim(i: u32) -> u32 {
    let d = prm[i];
    return select(d, step.ctx, d == 0xffffffffu);
}

// The invocation's linear index in a dispatch laid out as (x, y) workgroups of 64 threads
// (y is used when x alone cannot reach the element count).
fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// The product of the four (padded) dims starting at parameter word `base`.
fn count4(base: u32) -> u32 {
    return dim(base) * dim(base + 1u) * dim(base + 2u) * dim(base + 3u);
}

// The four dims at `base` seen as [outer, len, inner] around `axis`.
fn around_axis(base: u32, axis: u32) -> vec3<u32> {
    var outer = 1u;
    var inner = 1u;
    for (var d = 0u; d < 4u; d++) {
        if (d < axis) {
            outer *= dim(base + d);
        } else if (d > axis) {
            inner *= dim(base + d);
        }
    }
    return vec3<u32>(outer, dim(base + axis), inner);
}

// RoPE's rotate-half over the last axis (head_dim hd) as a gather: element t of rotate(x) is
// sign · x[index]. Mode 0, NeoX halves: y[i] = −x[i + h], y[i + h] = x[i]; mode 1, interleaved
// pairs: y[2i] = −x[2i + 1], y[2i + 1] = x[2i] (h = n_rot / 2). Past n_rot the sign is 0 (the
// element rotates to 0; index is t, always in range). Shared by rope_rotate.wgsl (-O0),
// rope.wgsl and rope_cache_write.wgsl (fused).
struct RopeSource {
    index: u32,
    sign: f32,
}

fn rope_source(t: u32, hd: u32, n_rot: u32, mode: u32) -> RopeSource {
    let d = t % hd;
    if d >= n_rot {
        return RopeSource(t, 0.0);
    }
    let half = n_rot / 2u;
    if mode == 0u {
        if d < half {
            return RopeSource(t + half, -1.0);
        }
        return RopeSource(t - half, 1.0);
    }
    if d % 2u == 0u {
        return RopeSource(t + 1u, -1.0);
    }
    return RopeSource(t - 1u, 1.0);
}

// The fused attention's two passes (attention.wgsl, attention_combine.wgsl) cut the ctx
// positions into chunks of this many: ctx / ns rounded up to whole tiles of ATTENTION_TILE
// positions, at least one tile.
const ATTENTION_TILE: u32 = 32u;

fn attention_chunk_len(ctx: u32, ns: u32) -> u32 {
    let per = (ctx + ns - 1u) / ns;
    return max(ATTENTION_TILE, (per + ATTENTION_TILE - 1u) / ATTENTION_TILE * ATTENTION_TILE);
}
