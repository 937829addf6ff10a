// Fused per-head RMSNorm and RoPE (Qwen3's q/k norms): for each row of x (one head, head_dim
// elements)
//   n = (x · rsqrt(mean(x²) + eps)) · weight;   out = n · cos + rotate(n) · sin
// the IR's square, mean, eps_add, rsqrt, normalize, weight multiply (as rms_norm.wgsl: the sum
// of squares in f32), then its rope_rotate, cos_mul, sin_mul and add (as rope.wgsl; rotate is
// common.wgsl's rope_source, dimensions past n_rot rotating to 0).
// prm = [rows, head_dim, n_rot, mode, S]: x is rows × head_dim, head_dim ≤ MAXD; eps is the
// IR's constant, weight, cos and sin hold head_dim elements. With S = 0 out is rows × head_dim;
// with S > 0 out is a [rows, S, head_dim] KV cache and row h goes to position step.pos of head h
// (the IR's cache_write along axis 1 of a [rows, 1, head_dim] row).
// One workgroup of 64 threads per row (wg.x + wg.y·nwg.x): thread t holds elements t + 64j, and
// the row in workgroup memory for the rotation's partner element.

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> eps: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> cos_t: array<f32>;
@group(0) @binding(6) var<storage, read> sin_t: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const MAXD: u32 = 256u;
const PER: u32 = 4u; // MAXD / WG elements a thread

var<workgroup> normed: array<f32, MAXD>;
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
    let hd = prm[1];
    let base = row * hd;
    var xs = array<f32, PER>();
    var acc = 0.0;
    for (var j = 0u; j < PER; j++) {
        let i = lid + j * WG;
        if i < hd {
            xs[j] = x[base + i];
        }
    }
    for (var j = 0u; j < PER; j++) {
        acc += xs[j] * xs[j];
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let r = inverseSqrt(partial[0] / f32(hd) + eps[0]);
    for (var j = 0u; j < PER; j++) {
        let i = lid + j * WG;
        if i < hd {
            normed[i] = (xs[j] * r) * weight[i];
        }
    }
    workgroupBarrier();
    let cache_rows = prm[4];
    for (var j = 0u; j < PER; j++) {
        let i = lid + j * WG;
        if i < hd {
            let src = rope_source(i, hd, prm[2], prm[3]);
            let rot = select(0.0, src.sign * normed[src.index], src.sign != 0.0);
            let y = normed[i] * cos_t[i] + rot * sin_t[i];
            if cache_rows == 0u {
                out[base + i] = y;
            } else {
                out[(row * cache_rows + step.pos) * hd + i] = y;
            }
        }
    }
}
