// Fused gate and up projections of one input with their SwiGLU:
//   out[n] = silu(g) · u,  g = Σ_k x[k] · G[n, k],  u = Σ_k x[k] · U[n, k],
//   silu(g) = g · σ(g) = g · (1 / (1 + exp(−g)))  (the IR's sigmoid, multiply, multiply).
// prm = [K, col0, rows, g_row, u_row]: this dispatch computes outputs [col0, col0 + rows); its
// rows start at row g_row of the gate binding `w` and row u_row of the up binding `wu` (each
// weight may be split across bindings at its own row boundaries: the host plans one dispatch per
// range where neither changes piece). The two weights may have different dtypes: each has its
// own qdot.wgsl instance (`w_chunk`, `wu_chunk`). Layout as matvec_add.wgsl: 2 rows a workgroup,
// 32 threads a row, both sums reduced together.

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> wu: array<u32>;
// Bindings 5 and 6 are `w`'s and `wu`'s buffers again, declared as `w_h` and `wu_h`
// (`array<vec2<f16>>`) where the device's f16 conversions are exact
// (kernels::fused_source_for) and unused otherwise.
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const TPR: u32 = 32u;
const ROWS: u32 = 2u;

var<workgroup> partial: array<vec2<f32>, 64>;

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
    var acc = vec2<f32>(0.0);
    if r < rows {
        let gr = prm[3] + r;
        let ur = prm[4] + r;
        for (var c = t; c < (k + w_CH - 1u) / w_CH; c += TPR) {
            acc.x += w_chunk(gr, c, k);
        }
        for (var c = t; c < (k + wu_CH - 1u) / wu_CH; c += TPR) {
            acc.y += wu_chunk(ur, c, k);
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
        let g = partial[lid].x;
        let u = partial[lid].y;
        out[prm[1] + r] = (g * (1.0 / (1.0 + exp(-g)))) * u;
    }
}
