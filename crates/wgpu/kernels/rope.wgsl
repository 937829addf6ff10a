// Fused RoPE: out = x · cos + rotate(x) · sin over the last axis (head_dim), the IR's
// rope_rotate, cos_mul, sin_mul and add. rotate as rope_rotate.wgsl: mode 0 NeoX halves
// (y[i] = −x[i + h], y[i + h] = x[i]), mode 1 interleaved pairs (y[2i] = −x[2i + 1],
// y[2i + 1] = x[2i]); dimensions past n_rot rotate to 0, so they pass through as x · cos.
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
    let hd = prm[1];
    let n_rot = prm[2];
    let d = t % hd;
    let base = t - d;
    var rot = 0.0;
    if d < n_rot {
        let half = n_rot / 2u;
        if prm[3] == 0u {
            rot = select(x[base + d - half], -x[base + d + half], d < half);
        } else {
            rot = select(x[base + d - 1u], -x[base + d + 1u], d % 2u == 0u);
        }
    }
    out[t] = x[t] * cos_t[d] + rot * sin_t[d];
}
