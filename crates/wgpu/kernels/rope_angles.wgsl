// Rotation angle per head dimension: out[d] = pos * coef[d], where the host folded
// freq_scale * theta^(-2i/n_rot) / freq_factor[i] into coef (computed in f64, rounded once,
// laid out as the rotary mode pairs dimensions; 0 for unrotated ones). prm: [head_dim].
@group(0) @binding(2) var<storage, read> pos: array<i32>;
@group(0) @binding(3) var<storage, read> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let d = linear_index(gid, nwg);
    if (d >= prm[0]) {
        return;
    }
    out[d] = f32(pos[0]) * coef[d];
}
