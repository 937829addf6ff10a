// Fused attention, second pass (attention.wgsl is the first): each query head's chunks, as the
// first pass left them in `part` ([m, l, o_0 … o_D−1] per (split, head), o unnormalized), are
// rescaled to their common max M and summed:
//   out[head, d] = Σ_s o_s[d]·exp(m_s − M) / Σ_s l_s·exp(m_s − M)
// prm = [D, heads, NS], NS ≤ 64; the chunks are common.wgsl's `attention_chunk_len`, as in the
// first pass. One workgroup of 64 threads per head (wg.x + wg.y·nwg.x):
// thread s reads chunk s's m and l, every thread finds M, thread s computes chunk s's factor
// exp(m_s − M); then thread t sums dimensions t, t + 64, … over the chunks, four a step.

@group(0) @binding(2) var<storage, read> part: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

var<workgroup> ms: array<f32, WG>;
var<workgroup> factor: array<f32, WG>;

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let d_len = prm[0];
    let heads = prm[1];
    let head = wg.x + wg.y * nwg.x;
    if head >= heads {
        return;
    }
    let ns = min(max(prm[2], 1u), WG);
    let ctx = step.ctx;
    let chunk = attention_chunk_len(ctx, ns);
    let chunks = min(ns, (ctx + chunk - 1u) / chunk);
    let stride = heads * (d_len + 2u);
    let first = head * (d_len + 2u);
    var l_mine = 0.0;
    if lid < chunks {
        ms[lid] = part[lid * stride + first];
        l_mine = part[lid * stride + first + 1u];
    }
    workgroupBarrier();
    var m = ms[0];
    for (var s = 1u; s < chunks; s++) {
        m = max(m, ms[s]);
    }
    if lid < chunks {
        factor[lid] = exp(ms[lid] - m);
        ms[lid] = l_mine * factor[lid];
    }
    workgroupBarrier();
    var l = 0.0;
    for (var s = 0u; s < chunks; s++) {
        l += ms[s];
    }
    let quads = chunks / 4u;
    for (var d = lid; d < d_len; d += WG) {
        let b = first + 2u + d;
        var a0 = 0.0;
        var a1 = 0.0;
        var a2 = 0.0;
        var a3 = 0.0;
        for (var k = 0u; k < quads; k++) {
            let s = 4u * k;
            a0 += part[s * stride + b] * factor[s];
            a1 += part[(s + 1u) * stride + b] * factor[s + 1u];
            a2 += part[(s + 2u) * stride + b] * factor[s + 2u];
            a3 += part[(s + 3u) * stride + b] * factor[s + 3u];
        }
        for (var s = 4u * quads; s < chunks; s++) {
            a0 += part[s * stride + b] * factor[s];
        }
        out[head * d_len + d] = ((a0 + a1) + (a2 + a3)) / l;
    }
}
