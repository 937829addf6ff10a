// Matrix-vector product with packed weights: out[m, n] = Σ_k x[m, k] · W[n, k].
// prm = [M, K, N_total, row0, rows]: x is M rows of K (f32), the buffer `w` holds weight rows
// [row0, row0 + rows) of the N_total × K matrix (a matrix split across several buffers is one
// dispatch per piece), out is M rows of N_total. One workgroup per weight row of the buffer,
// numbered wg.x + wg.y·nwg.x (2-D grids past 65535 rows); its 64 threads take runs of RUN
// consecutive elements of the row in turn (so the dequantizer decodes a block's scales once
// per run: blocks of 32 and 256 are whole runs), accumulate in f32, and the partial sums are
// added in workgroup memory. Rows of x are taken one at a time when M = 1 (decoding) and four
// at a time otherwise, so each weight is dequantized once per four rows of x.

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const RUN: u32 = 8u;
const STRIDE: u32 = 64u * RUN;

var<workgroup> partial: array<vec4<f32>, 64>;

// This thread's share of Σ_c W[row, c] · x[xrow, c] (`wrow`, `xrow`: the rows' first elements).
fn dot1(wrow: u32, xrow: u32, k: u32, lid: u32) -> f32 {
    var acc = 0.0;
    for (var c0 = lid * RUN; c0 < k; c0 += STRIDE) {
        for (var e = 0u; e < RUN; e++) {
            let c = c0 + e;
            if c < k {
                acc += DQ(wrow + c) * x[xrow + c];
            }
        }
    }
    return acc;
}

// The same for four rows of x at once (`xr`: their first elements).
fn dot4(wrow: u32, xr: vec4<u32>, k: u32, lid: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    for (var c0 = lid * RUN; c0 < k; c0 += STRIDE) {
        for (var e = 0u; e < RUN; e++) {
            let c = c0 + e;
            if c < k {
                acc += DQ(wrow + c) * vec4<f32>(x[xr.x + c], x[xr.y + c], x[xr.z + c], x[xr.w + c]);
            }
        }
    }
    return acc;
}

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
        let nm = min(4u, m_rows - m0);
        if nm == 1u {
            partial[lid] = vec4<f32>(dot1(wrow, m0 * k, k, lid), 0.0, 0.0, 0.0);
        } else {
            // Rows of x past M read row M−1 again; their sums are never written.
            let last = m_rows - 1u;
            let xr = vec4<u32>(m0, min(m0 + 1u, last), min(m0 + 2u, last), min(m0 + 3u, last)) * k;
            partial[lid] = dot4(wrow, xr, k, lid);
        }
        workgroupBarrier();
        for (var s = 32u; s > 0u; s >>= 1u) {
            if lid < s {
                partial[lid] += partial[lid + s];
            }
            workgroupBarrier();
        }
        if lid == 0u {
            let sum = partial[0];
            for (var j = 0u; j < nm; j++) {
                out[(m0 + j) * n_total + col] = sum[j];
            }
        }
        workgroupBarrier();
    }
}
