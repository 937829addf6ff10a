// Fused matrix-vector product with an addend epilogue (a bias or a residual):
//   out[n] = Σ_k x[k] · W[n, k] + addend[n]
// and, with prm[3] = 0, the plain product (the addend binding is then unused).
// prm = [K, col0, rows, has_addend, D, S]: x holds the K elements of one row (read as vec4s); `w` holds
// weight rows [col0, col0 + rows) (a weight split across bindings is one dispatch per piece;
// rows are independent, so each piece writes its own outputs); out and addend have N_total
// elements. The dot products come from the `w` instance of qdot.wgsl (per-dtype chunks).
// With D > 0, `out` is instead a [N / D, S, D] KV cache and output n goes to row step.pos of
// head n / D: the projection stored straight into the cache (the IR's reshape + cache_write).
//
// Workgroups of 64 threads take ROWS = 2 rows, TPR = 32 threads each: thread t of a row sums
// chunks t, t + 32, …, then the row's 32 partial sums are added as a tree in workgroup memory.
// The k-quant and q8_0 chunks are small (16 elements) and laid out so that consecutive chunks
// are consecutive words: a row's threads read its bytes together, coalesced (BENCHMARKS.md,
// "GPU matvec").
// Workgroup i (wg.x + wg.y·nwg.x, 2-D past 65535) takes rows 2i .. 2i + 2.

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> addend: array<f32>;
// Binding 5 is `w`'s buffer again, declared as `w_h: array<vec2<f16>>` where the device's f16
// conversions are exact (kernels::fused_source_for) and unused otherwise.
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const TPR: u32 = 32u;
const ROWS: u32 = 2u;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let k = prm[0];
    let rows = prm[2];
    let t = lid % TPR;
    let r = (wg.x + wg.y * nwg.x) * ROWS + lid / TPR;
    let chunks = (k + w_CH - 1u) / w_CH;
    var acc = 0.0;
    if r < rows {
        for (var c = t; c < chunks; c += TPR) {
            acc += w_chunk(r, c, k);
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if t < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if t == 0u && r < rows {
        let col = prm[1] + r;
        var y = partial[lid];
        if prm[3] != 0u {
            y += addend[col];
        }
        let d = prm[4];
        if d == 0u {
            out[col] = y;
        } else {
            out[(col / d * prm[5] + step.pos) * d + col % d] = y;
        }
    }
}
