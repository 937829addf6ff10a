// Fused softmax over the last axis, of the input times an optional scale:
//   s = x · scale;  out = exp(s − max s) / Σ exp(s − max s)
// (the IR's scale multiply, max, sub, exp, sum, div, in that order of rounding; the sum in f32
// where the CPU sums in f64). prm = [rows, len, has_scale]: len is a dim word (the sentinel
// 0xffffffff is ctx, the cache rows in use); scale is the IR's constant (one f32), bound to
// the input again and ignored when has_scale is 0.
// One workgroup of 64 threads per row (wg.x + wg.y·nwg.x): strided max, tree max, strided sum
// of exponentials, tree sum, then every thread writes its elements (exp recomputed: the same
// value).

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wg.x + wg.y * nwg.x;
    if row >= prm[0] {
        return;
    }
    let len = dim(1u);
    let base = row * len;
    let c = select(1.0, scale[0], prm[2] != 0u);
    // −inf, so an all −inf row gives max −inf as on the CPU.
    var m = bitcast<f32>(0xff800000u);
    for (var i = lid; i < len; i += WG) {
        m = max(m, x[base + i] * c);
    }
    partial[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    let mx = partial[0];
    workgroupBarrier();
    var acc = 0.0;
    for (var i = lid; i < len; i += WG) {
        acc += exp(x[base + i] * c - mx);
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let sum = partial[0];
    for (var i = lid; i < len; i += WG) {
        out[base + i] = exp(x[base + i] * c - mx) / sum;
    }
}
