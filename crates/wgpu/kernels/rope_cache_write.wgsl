// Fused RoPE and cache write: cache[o, pos, i] = rope(x)[o, 0, i], the IR's rope (as
// rope.wgsl) followed by cache_write along axis 1, in place in the cache (the state buffer).
// prm = [count, head_dim, n_rot, mode, full, inner]: x has count elements seen as
// [outer, 1, inner], the cache is [outer, full, inner]; rotation is over the last head_dim
// elements. One thread per element of x.

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> cos_t: array<f32>;
@group(0) @binding(4) var<storage, read> sin_t: array<f32>;
@group(0) @binding(5) var<storage, read> pos: array<i32>;
@group(0) @binding(6) var<storage, read_write> cache: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    if t >= prm[0] {
        return;
    }
    let d = t % prm[1];
    let r = rope_source(t, prm[1], prm[2], prm[3]);
    let rot = select(0.0, r.sign * x[r.index], r.sign != 0.0);
    let inner = prm[5];
    let o = t / inner;
    let i = t % inner;
    cache[(o * prm[4] + u32(pos[0])) * inner + i] = x[t] * cos_t[d] + rot * sin_t[d];
}
