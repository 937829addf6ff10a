// The rotate-half step of RoPE over the last axis. prm: [dims x4, head_dim, n_rot, mode];
// modes as common.wgsl's rope_source (0: NeoX halves, 1: interleaved pairs). Dimensions past
// n_rot become 0.
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    if (t >= count4(0u)) {
        return;
    }
    let r = rope_source(t, prm[4], prm[5], prm[6]);
    out[t] = select(0.0, r.sign * a[r.index], r.sign != 0.0);
}
