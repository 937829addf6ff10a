// Elementwise unary ops. prm: [op, dims x4]; op: 0 neg, 1 exp, 2 sigmoid, 3 sqrt, 4 rsqrt, 5 cos, 6 sin.
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= count4(1u)) {
        return;
    }
    let x = a[i];
    var y: f32;
    switch prm[0] {
        case 0u: { y = -x; }
        case 1u: { y = exp(x); }
        case 2u: { y = 1.0 / (1.0 + exp(-x)); }
        case 3u: { y = sqrt(x); }
        case 4u: { y = inverseSqrt(x); }
        case 5u: { y = cos(x); }
        default: { y = sin(x); }
    }
    out[i] = y;
}
