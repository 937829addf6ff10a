// Batched f32 products: a [B, M, K] · b, with b [B or 1, N, K] (transposed) or [B or 1, K, N].
// prm: [B, M, K, N, transposed, rhs_batched].
//
// A workgroup of 256 threads computes 64 consecutive output elements (the grid is the
// one-thread-per-element grid of 64-wide workgroups), four threads per element, each summing
// every fourth term of its K-long dot product in two independent chains (so loads are in flight
// together: attention's products, with K the head dimension or the context, are bound by memory
// latency), and the four partial sums are added through workgroup memory. Transposed, the four
// threads of an element are neighbours (they read 16 contiguous bytes of its b row a step);
// otherwise the 64 threads of one slice of K take the 64 elements (consecutive columns of a row
// read consecutive b words).

@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const SLICES: u32 = 4u; // threads per output element
const PER: u32 = 64u; // output elements per workgroup

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let nb = dim(0u);
    let m = dim(1u);
    let k = dim(2u);
    let n = dim(3u);
    let transposed = prm[4] != 0u;
    // Element c of the workgroup's 64, K slice s.
    let c = select(lid % PER, lid / SLICES, transposed);
    let s = select(lid / PER, lid % SLICES, transposed);
    let t = (wg.x + wg.y * nwg.x) * PER + c;
    let total = nb * m * n;
    var sum = 0.0;
    if t < total {
        let col = t % n;
        let row = (t / n) % m;
        let batch = t / (n * m);
        let a_base = (batch * m + row) * k;
        let b_base = select(0u, batch * n * k, prm[5] != 0u);
        // Element j of b's dot product with this row of a.
        let b_at = select(b_base + col, b_base + col * k, transposed);
        let b_step = select(n, 1u, transposed);
        var s0 = 0.0;
        var s1 = 0.0;
        let pairs = k / (2u * SLICES);
        for (var i = 0u; i < pairs; i++) {
            let j = 2u * SLICES * i + s;
            s0 += a[a_base + j] * b[b_at + j * b_step];
            s1 += a[a_base + j + SLICES] * b[b_at + (j + SLICES) * b_step];
        }
        for (var j = 2u * SLICES * pairs + s; j < k; j += SLICES) {
            s0 += a[a_base + j] * b[b_at + j * b_step];
        }
        sum = s0 + s1;
    }
    partial[lid] = sum;
    workgroupBarrier();
    if lid < PER {
        let e = (wg.x + wg.y * nwg.x) * PER + lid;
        if e < total {
            // The four slices of element lid, wherever the layout put them.
            let i0 = select(lid, SLICES * lid, transposed);
            let step = select(PER, 1u, transposed);
            out[e] = (partial[i0] + partial[i0 + step]) + (partial[i0 + 2u * step] + partial[i0 + 3u * step]);
        }
    }
}
