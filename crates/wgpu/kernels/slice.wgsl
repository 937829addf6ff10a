// Elements start .. start+len of one axis. prm: [axis, start, len, input dims x4].
// One thread per output element.
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    let s = around_axis(3u, prm[0]);
    let outer = s.x;
    let full = s.y;
    let inner = s.z;
    let start = prm[1];
    let len = dim(2u);
    if (t >= outer * len * inner) {
        return;
    }
    let i = t % inner;
    let k = (t / inner) % len;
    let o = t / (inner * len);
    out[t] = a[(o * full + start + k) * inner + i];
}
