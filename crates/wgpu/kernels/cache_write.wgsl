// Write this step's row into the cache at index pos of one axis (in place).
// prm: [outer, full, inner] (the cache seen as [outer, full, inner]; the value is [outer, 1, inner]).
@group(0) @binding(2) var<storage, read> value: array<f32>;
@group(0) @binding(3) var<storage, read> pos: array<i32>;
@group(0) @binding(4) var<storage, read_write> cache: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    let inner = prm[2];
    if (t >= prm[0] * inner) {
        return;
    }
    let o = t / inner;
    let i = t % inner;
    cache[(o * prm[1] + u32(pos[0])) * inner + i] = value[t];
}
