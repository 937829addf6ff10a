// Matrix-vector product with packed weights: out[m, n] = Σ_k x[m, k] · W[n, k].
// prm = [M, K, N_total, row0, rows]: x is M rows of K (f32), the buffer `w` holds weight rows
// [row0, row0 + rows) of the N_total × K matrix (a matrix split across several buffers is one
// dispatch per piece), out is M rows of N_total. One workgroup per weight row of the buffer,
// numbered wg.x + wg.y·nwg.x (2-D grids past 65535 rows); its 64 threads stride over K,
// accumulating in f32, and the partial sums are added in workgroup memory. The rows of x are
// taken four at a time, so each weight is dequantized once per four rows (once when decoding).

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let m_rows = dim(0u);
    let k = dim(1u);
    let n_total = dim(2u);
    let row = wg.x + wg.y * nwg.x;
    if row >= prm[4] {
        return;
    }
    let wrow = row * k;
    let col = prm[3] + row;
    for (var m0 = 0u; m0 < m_rows; m0 += 4u) {
        // Rows of x past M read row M−1 again; their sums are never written.
        let last = m_rows - 1u;
        let x0 = m0 * k;
        let x1 = min(m0 + 1u, last) * k;
        let x2 = min(m0 + 2u, last) * k;
        let x3 = min(m0 + 3u, last) * k;
        var acc = vec4<f32>(0.0);
        for (var c = lid; c < k; c += 64u) {
            let v = DQ(wrow + c);
            acc += v * vec4<f32>(x[x0 + c], x[x1 + c], x[x2 + c], x[x3 + c]);
        }
        partial[lid] = acc;
        workgroupBarrier();
        for (var s = 32u; s > 0u; s >>= 1u) {
            if lid < s {
                partial[lid] += partial[lid + s];
            }
            workgroupBarrier();
        }
        if lid == 0u {
            let sum = partial[0];
            for (var j = 0u; j < min(4u, m_rows - m0); j++) {
                out[(m0 + j) * n_total + col] = sum[j];
            }
        }
        workgroupBarrier();
    }
}
