// Fused RMSNorm over the last axis: out = (x · rsqrt(mean(x²) + eps)) · weight, the IR's
// square, mean, eps_add, rsqrt, normalize and weight multiply in that order of rounding
// (the square and the sum of squares in f32; the CPU sums in f64).
// prm = [rows, len]; eps is the IR's constant (one f32), weight has len elements.
// One workgroup of 256 threads per row (wg.x + wg.y·nwg.x): a strided sum of squares, a tree
// reduction in workgroup memory, then every thread scales its elements. Rows of up to
// REG·256 elements (every hidden size up to 4096) are held in registers: each thread loads its
// elements and their weights at once, before the reduction, so a row costs one memory latency
// instead of one per element a thread takes (on the H200 a decode step's norms had been ~11 % of
// a 7B token); longer rows are read twice. Both paths sum in the same order.

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> eps: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
const REG: u32 = 16u; // elements a thread holds in registers

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wg.x + wg.y * nwg.x;
    if row >= prm[0] {
        return;
    }
    let len = prm[1];
    let base = row * len;
    let e = eps[0];
    let held = len <= REG * WG;
    var xs = array<f32, REG>();
    var ws = array<f32, REG>();
    var acc = 0.0;
    if held {
        for (var j = 0u; j < REG; j++) {
            let i = lid + j * WG;
            if i < len {
                xs[j] = x[base + i];
                ws[j] = weight[i];
            }
        }
        for (var j = 0u; j < REG; j++) {
            acc += xs[j] * xs[j];
        }
    } else {
        for (var i = lid; i < len; i += WG) {
            let v = x[base + i];
            acc += v * v;
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let r = inverseSqrt(partial[0] / f32(len) + e);
    if held {
        for (var j = 0u; j < REG; j++) {
            let i = lid + j * WG;
            if i < len {
                out[base + i] = (xs[j] * r) * ws[j];
            }
        }
    } else {
        for (var i = lid; i < len; i += WG) {
            out[base + i] = (x[base + i] * r) * weight[i];
        }
    }
}
