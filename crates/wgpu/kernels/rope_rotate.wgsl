// The rotate-half step of RoPE over the last axis. prm: [dims x4, head_dim, n_rot, mode];
// mode 0: NeoX halves (y[i] = -x[i+h], y[i+h] = x[i]); mode 1: interleaved pairs
// (y[2i] = -x[2i+1], y[2i+1] = x[2i]). Dimensions past n_rot become 0.
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    if (t >= count4(0u)) {
        return;
    }
    let hd = prm[4];
    let n_rot = prm[5];
    let d = t % hd;
    let base = t - d;
    if (d >= n_rot) {
        out[t] = 0.0;
        return;
    }
    let half = n_rot / 2u;
    if (prm[6] == 0u) {
        out[t] = select(a[base + d - half], -a[base + d + half], d < half);
    } else {
        out[t] = select(a[base + d - 1u], -a[base + d + 1u], d % 2u == 0u);
    }
}
