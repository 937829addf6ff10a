// Reductions over one axis, kept with size 1. prm: [op, axis, input dims x4];
// op: 0 sum, 1 mean, 2 max, 3 argmax (the output then holds i32 bit patterns).
// One thread per output element; sums accumulate in f32 in index order.
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    let s = around_axis(2u, prm[1]);
    let outer = s.x;
    let len = s.y;
    let inner = s.z;
    if (t >= outer * inner) {
        return;
    }
    let o = t / inner;
    let i = t % inner;
    let base = o * len * inner + i;
    let op = prm[0];
    if (op == 3u) {
        var best = 0u;
        var bv = a[base];
        for (var k = 1u; k < len; k++) {
            let v = a[base + k * inner];
            // NaN never wins, as on the CPU.
            if (v > bv || (bv != bv && v == v)) {
                best = k;
                bv = v;
            }
        }
        out[t] = bitcast<f32>(i32(best));
        return;
    }
    if (op == 2u) {
        var m = a[base];
        for (var k = 1u; k < len; k++) {
            m = max(m, a[base + k * inner]);
        }
        out[t] = m;
        return;
    }
    var acc = 0.0;
    for (var k = 0u; k < len; k++) {
        acc += a[base + k * inner];
    }
    out[t] = select(acc, acc / f32(len), op == 1u);
}
