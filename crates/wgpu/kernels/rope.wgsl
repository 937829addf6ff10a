// Fused RoPE: out = x · cos + rotate(x) · sin over the last axis (head_dim), the IR's
// rope_rotate, cos_mul, sin_mul and add; rotate is common.wgsl's rope_source (mode 0 NeoX
// halves, mode 1 interleaved pairs); dimensions past n_rot rotate to 0, so they pass through
// as x · cos.
// prm = [count, head_dim, n_rot, mode]; cos and sin hold head_dim elements.
// One thread per element.

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> cos_t: array<f32>;
@group(0) @binding(4) var<storage, read> sin_t: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    if t >= prm[0] {
        return;
    }
    let d = t % prm[1];
    let r = rope_source(t, prm[1], prm[2], prm[3]);
    let rot = select(0.0, r.sign * x[r.index], r.sign != 0.0);
    out[t] = x[t] * cos_t[d] + rot * sin_t[d];
}
