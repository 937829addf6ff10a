// Fused attention of one decode step, straight from the KV caches, first of two passes
// (split-context "flash decoding"; attention_combine.wgsl is the second):
//   out[h, g, :] = softmax((q[h, g, :] · K[h, :ctx, :]ᵀ) · scale) · V[h, :ctx, :]
// the IR's scores product, scale multiply, softmax (max, sub, exp, sum, div) and weighted sum,
// with grouped-query heads: query head g of kv head h reads cache head h.
// prm = [G, D, S, heads, NS]: q is [Hkv, G, D], the caches (the state buffers) [Hkv, S, D] with
// S the compiled context, of which the first ctx rows are read; heads = Hkv·G; NS the splits of
// the grid; scale is the IR's constant (one f32). D ≤ MAXD.
//
// The grid is heads·NS workgroups of 256 threads (index wg.x + wg.y·nwg.x = split·heads + head).
// Each token the ctx positions are cut into chunks of `attention_chunk_len(ctx, NS)` positions
// (common.wgsl, shared with the second pass: at least 32, a multiple of the 32-position tile)
// and workgroup (split, head) takes chunk `split`;
// workgroups past the last chunk return at once. So the work spreads over the GPU at every
// context length, where one workgroup per head walked the whole context (28 workgroups for a 7B
// model, 250 µs a layer at 4096 positions on an H200).
//
// A workgroup goes over its chunk in tiles of 32 positions with an online softmax (a running max
// m and sum l; what was summed before is rescaled by exp(m_old − m_new)). In a tile, eight
// threads score each position: thread (p, s) sums dimensions s, s + 8, s + 16, … of q·k (eight
// neighbouring threads read 32 contiguous bytes); the eight partials are added through workgroup
// memory. Then the threads split the weighted sum: thread t takes output dimensions t % 64 + 64·j
// over every fourth of the tile's positions from t / 64. In both, a thread loads all its
// elements of the tile into registers before it multiplies any: a decode step's attention is
// bound by memory latency, not bandwidth, so the loads must be in flight together. The workgroup writes its partial result, still
// unnormalized, with its m and l: part[(split·heads + head)·(D + 2) + …] = [m, l, o_0 … o_D−1].
// The second pass rescales the chunks to their common max and divides by the total sum. The
// result differs from the CPU's max-first softmax only by f32 rounding.

@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<f32>;
@group(0) @binding(4) var<storage, read> vc: array<f32>;
@group(0) @binding(5) var<storage, read> scale: array<f32>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;

const WG: u32 = 256u;
const TILE: u32 = ATTENTION_TILE; // positions a tile scores
const SUBS: u32 = 8u; // WG / TILE: threads that score one position
const LANES: u32 = 64u; // dimensions a pass of the weighted sum covers
const PARTS: u32 = 4u; // WG / LANES: slices of a tile's positions
const MAXD: u32 = 256u;
const DPT: u32 = 4u; // MAXD / LANES dimensions a thread
const KPT: u32 = 32u; // MAXD / SUBS key elements a thread
const PPT: u32 = 8u; // TILE / PARTS positions a thread in the weighted sum
const VPT: u32 = 32u; // PPT · DPT value elements a thread

var<workgroup> qs: array<f32, MAXD>;
var<workgroup> dots: array<f32, WG>;
var<workgroup> scores: array<f32, TILE>;
var<workgroup> weights: array<f32, TILE>;
var<workgroup> parts: array<f32, 1024>; // PARTS · MAXD

// The most negative finite f32: the running max before the first tile (exp(it − max) is 0).
const LOWEST: f32 = -3.40282347e38;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let heads = prm[3];
    let ns = max(prm[4], 1u);
    let idx = wg.x + wg.y * nwg.x;
    let head = idx % heads;
    let split = idx / heads;
    let ctx = step.ctx;
    let chunk = attention_chunk_len(ctx, ns);
    let p_begin = split * chunk;
    if split >= ns || p_begin >= ctx {
        return;
    }
    let p_end = min(ctx, p_begin + chunk);
    let d_len = prm[1];
    let base = (head / prm[0]) * prm[2] * d_len;
    let c = scale[0];
    for (var d = lid; d < d_len; d += WG) {
        qs[d] = q[head * d_len + d];
    }
    workgroupBarrier();
    // Scoring: position tp of the tile, dimensions sub + 8k.
    let tp = lid / SUBS;
    let sub = lid % SUBS;
    // Weighted sum: dimensions lane + 64j over positions slice, slice + 4, …
    let lane = lid % LANES;
    let slice = lid / LANES;
    var m_run = LOWEST;
    var l_run = 0.0;
    var o = array<f32, DPT>(0.0, 0.0, 0.0, 0.0);
    for (var p0 = p_begin; p0 < p_end; p0 += TILE) {
        let n = min(TILE, p_end - p0);
        // This thread's dimensions of position tp's key, all loads issued before any use (rows
        // and dimensions past the end clamped in bounds, their values unused).
        let kb = base + (p0 + min(tp, n - 1u)) * d_len;
        var kv: array<f32, KPT>;
        for (var k = 0u; k < KPT; k++) {
            kv[k] = kc[kb + min(sub + SUBS * k, d_len - 1u)];
        }
        // The values this thread weighs later (positions slice + 4m of the tile, dimensions
        // lane + 64j), loaded now so that they are in flight with the keys.
        var vv: array<f32, VPT>;
        for (var m = 0u; m < PPT; m++) {
            let vb = base + (p0 + min(slice + PARTS * m, n - 1u)) * d_len;
            for (var j = 0u; j < DPT; j++) {
                vv[m * DPT + j] = vc[vb + min(lane + LANES * j, d_len - 1u)];
            }
        }
        var a0 = 0.0;
        var a1 = 0.0;
        for (var k = 0u; k < KPT; k += 2u) {
            let d = sub + SUBS * k;
            if d < d_len {
                a0 += qs[d] * kv[k];
            }
            if d + SUBS < d_len {
                a1 += qs[d + SUBS] * kv[k + 1u];
            }
        }
        let dot = select(0.0, a0 + a1, tp < n);
        dots[lid] = dot;
        workgroupBarrier();
        if lid < n {
            let b = SUBS * lid;
            let lo = (dots[b] + dots[b + 1u]) + (dots[b + 2u] + dots[b + 3u]);
            let hi = (dots[b + 4u] + dots[b + 5u]) + (dots[b + 6u] + dots[b + 7u]);
            scores[lid] = (lo + hi) * c;
        }
        workgroupBarrier();
        var m_tile = LOWEST;
        for (var i = 0u; i < n; i++) {
            m_tile = max(m_tile, scores[i]);
        }
        let m_new = max(m_run, m_tile);
        let alpha = exp(m_run - m_new);
        if lid < n {
            weights[lid] = exp(scores[lid] - m_new);
        }
        workgroupBarrier();
        // The running sum is thread 0's alone (it writes it).
        if lid == 0u {
            var l_tile = 0.0;
            for (var i = 0u; i < n; i++) {
                l_tile += weights[i];
            }
            l_run = l_run * alpha + l_tile;
        }
        for (var j = 0u; j < DPT; j++) {
            o[j] *= alpha;
        }
        // The products of the values in range, in position order.
        for (var m = 0u; m < PPT; m++) {
            let i = slice + PARTS * m;
            if i < n {
                let wt = weights[i];
                for (var j = 0u; j < DPT; j++) {
                    if lane + LANES * j < d_len {
                        o[j] += wt * vv[m * DPT + j];
                    }
                }
            }
        }
        m_run = m_new;
        workgroupBarrier();
    }
    for (var j = 0u; j < DPT; j++) {
        let d = lane + j * LANES;
        if d < d_len {
            parts[slice * MAXD + d] = o[j];
        }
    }
    workgroupBarrier();
    let out = idx * (d_len + 2u);
    for (var d = lid; d < d_len; d += WG) {
        part[out + 2u + d] = (parts[d] + parts[MAXD + d]) + (parts[2u * MAXD + d] + parts[3u * MAXD + d]);
    }
    if lid == 0u {
        part[out] = m_run;
        part[out + 1u] = l_run;
    }
}
