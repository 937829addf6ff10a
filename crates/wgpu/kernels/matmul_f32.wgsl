// Batched f32 products: a [B, M, K] · b, with b [B or 1, N, K] (transposed) or [B or 1, K, N].
// prm: [B, M, K, N, transposed, rhs_batched]. One thread per output element.
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    let nb = dim(0u);
    let m = dim(1u);
    let k = dim(2u);
    let n = dim(3u);
    if (t >= nb * m * n) {
        return;
    }
    let col = t % n;
    let row = (t / n) % m;
    let batch = t / (n * m);
    let a_base = (batch * m + row) * k;
    let b_base = select(0u, batch * n * k, prm[5] != 0u);
    var s = 0.0;
    if (prm[4] != 0u) {
        for (var j = 0u; j < k; j++) {
            s += a[a_base + j] * b[b_base + col * k + j];
        }
    } else {
        for (var j = 0u; j < k; j++) {
            s += a[a_base + j] * b[b_base + j * n + col];
        }
    }
    out[t] = s;
}
