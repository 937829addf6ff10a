// Elementwise binary ops with numpy broadcasting over up to 4 dims (right-aligned, padded
// with 1s on the left by the host). prm: [op, out dims x4, a dims x4, b dims x4];
// op: 0 add, 1 sub, 2 mul, 3 div.
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Index into an operand whose dims start at prm word `base`, for the output index `idx`
// (dims of size 1 broadcast).
fn operand_index(idx: array<u32, 4>, base: u32) -> u32 {
    var off = 0u;
    var stride = 1u;
    for (var d = 3i; d >= 0; d--) {
        let n = dim(base + u32(d));
        if (n != 1u) {
            off += idx[d] * stride;
        }
        stride *= n;
    }
    return off;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    let count = dim(1u) * dim(2u) * dim(3u) * dim(4u);
    if (i >= count) {
        return;
    }
    var idx: array<u32, 4>;
    var rest = i;
    for (var d = 3i; d >= 0; d--) {
        let n = dim(1u + u32(d));
        idx[d] = rest % n;
        rest = rest / n;
    }
    let x = a[operand_index(idx, 5u)];
    let y = b[operand_index(idx, 9u)];
    var r: f32;
    switch prm[0] {
        case 0u: { r = x + y; }
        case 1u: { r = x - y; }
        case 2u: { r = x * y; }
        default: { r = x / y; }
    }
    out[i] = r;
}
