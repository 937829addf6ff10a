// Fused attention of one decode step, straight from the KV caches:
//   out[h, g, :] = softmax((q[h, g, :] · K[h, :ctx, :]ᵀ) · scale) · V[h, :ctx, :]
// the IR's scores product, scale multiply, softmax (max, sub, exp, sum, div) and weighted sum,
// with grouped-query heads: query head g of kv head h reads cache head h.
// prm = [G, D, S, heads]: q is [Hkv, G, D], the caches (the state buffers) [Hkv, S, D] with S
// the compiled context, of which the first ctx rows are read; heads = Hkv·G; scale is the IR's
// constant (one f32). D ≤ MAXD.
//
// One workgroup of 256 threads per query head (wg.x + wg.y·nwg.x), over the positions in tiles
// of 256 with an online softmax (a running max and sum; what was summed before is rescaled by
// exp(m_old − m_new) when the max grows), so workgroup memory is fixed (7 KiB) whatever ctx and
// D. In a tile, thread j scores position p0 + j (a D-long dot product in f32); the tile's max and
// sum of exponentials are tree-reduced; then the threads split the weighted sum: thread t takes
// output dimensions t % 64, t % 64 + 64, … (at most MAXD / 64) over every fourth of the tile's
// positions from t / 64. The four partial sums of each dimension are added at the end, and
// divided by the running sum. The result differs from the CPU's max-first softmax only by f32
// rounding.

@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<f32>;
@group(0) @binding(4) var<storage, read> vc: array<f32>;
@group(0) @binding(5) var<storage, read> scale: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
const LANES: u32 = 64u; // dimensions a pass of the weighted sum covers
const PARTS: u32 = 4u; // WG / LANES: slices of a tile's positions
const MAXD: u32 = 256u;
const DPT: u32 = 4u; // MAXD / LANES dimensions a thread

var<workgroup> qs: array<f32, MAXD>;
var<workgroup> weights: array<f32, WG>;
var<workgroup> red: array<f32, WG>;
var<workgroup> parts: array<f32, 1024>; // PARTS · MAXD

// The most negative finite f32: the score of a position past ctx (never the max of a tile that
// has a real position, and exp(it − max) is never taken: its weight is set to 0).
const LOWEST: f32 = -3.40282347e38;

// Tree max (op 0) or sum (op 1) of `red` over the workgroup; every thread gets the result.
fn reduce(lid: u32, op: u32) -> f32 {
    workgroupBarrier();
    for (var r = WG / 2u; r > 0u; r >>= 1u) {
        if lid < r {
            red[lid] = select(red[lid] + red[lid + r], max(red[lid], red[lid + r]), op == 0u);
        }
        workgroupBarrier();
    }
    let v = red[0];
    workgroupBarrier();
    return v;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let head = wg.x + wg.y * nwg.x;
    if head >= prm[3] {
        return;
    }
    let d_len = prm[1];
    let base = (head / prm[0]) * prm[2] * d_len;
    let ctx = step.ctx;
    let c = scale[0];
    for (var d = lid; d < d_len; d += WG) {
        qs[d] = q[head * d_len + d];
    }
    workgroupBarrier();
    let lane = lid % LANES;
    let part = lid / LANES;
    var m_run = 0.0;
    var l_run = 0.0;
    var o = array<f32, DPT>(0.0, 0.0, 0.0, 0.0);
    for (var p0 = 0u; p0 < ctx; p0 += WG) {
        let p = p0 + lid;
        var s = LOWEST;
        if p < ctx {
            let kb = base + p * d_len;
            var dot = 0.0;
            for (var d = 0u; d < d_len; d++) {
                dot += qs[d] * kc[kb + d];
            }
            s = dot * c;
        }
        red[lid] = s;
        let m_tile = reduce(lid, 0u);
        // The first tile sets the running max; later ones rescale what came before.
        let m_new = select(max(m_run, m_tile), m_tile, p0 == 0u);
        let alpha = select(exp(m_run - m_new), 0.0, p0 == 0u);
        let e = select(0.0, exp(s - m_new), p < ctx);
        weights[lid] = e;
        red[lid] = e;
        l_run = l_run * alpha + reduce(lid, 1u);
        // This thread's share of the tile's positions within ctx: every PARTS-th from `part`,
        // so the four slices stay busy however short the context (a slice of consecutive
        // positions left three of them idle below 64 positions, and the one loop that ran was a
        // chain of dependent cache reads: most of a short step's attention time on the H200).
        // Each position's DPT dimensions are read together.
        let n = min(WG, ctx - min(ctx, p0));
        for (var j = 0u; j < DPT; j++) {
            o[j] *= alpha;
        }
        for (var i = part; i < n; i += PARTS) {
            let wt = weights[i];
            let vb = base + (p0 + i) * d_len + lane;
            for (var j = 0u; j < DPT; j++) {
                if lane + j * LANES < d_len {
                    o[j] += wt * vc[vb + j * LANES];
                }
            }
        }
        m_run = m_new;
        workgroupBarrier();
    }
    for (var j = 0u; j < DPT; j++) {
        let d = lane + j * LANES;
        if d < d_len {
            parts[part * MAXD + d] = o[j];
        }
    }
    workgroupBarrier();
    for (var d = lid; d < d_len; d += WG) {
        let sum = (parts[d] + parts[MAXD + d]) + (parts[2u * MAXD + d] + parts[3u * MAXD + d]);
        out[head * d_len + d] = sum / l_run;
    }
}
