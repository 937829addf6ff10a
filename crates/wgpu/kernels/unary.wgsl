// Elementwise unary ops. prm: [op, dims x4]; op: 0 neg, 1 exp, 2 sigmoid, 3 sqrt, 4 rsqrt, 5 cos, 6 sin.
//
// cos and sin reduce their argument modulo 2π exactly first (`reduce_2pi`): WGSL promises
// their accuracy only inside [-π, π], and NVIDIA's reduce large arguments in f32 (errors of
// |x|·4e-8: 2e-3 for the RoPE angles of position 40k), while the CPU's are accurate everywhere.
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// The fraction bits of 1/(2π), 32 to a word, most significant first.
var<private> INV_2PI: array<u32, 8> = array<u32, 8>(
    0x28be60dbu, 0x9391054au, 0x7f09d5f4u, 0x7d4d3770u, 0x36d8a566u, 0x4f10e410u, 0x7f9458eau, 0xf7aef158u,
);

// Bits s+1 ..= s+32 of the fraction of 1/(2π) (bits before the first and past the table are 0).
fn inv_2pi_bits(s: i32) -> u32 {
    if (s <= -32) {
        return 0u;
    }
    if (s < 0) {
        return INV_2PI[0] >> u32(-s);
    }
    let j = u32(s) / 32u;
    let b = u32(s) % 32u;
    let hi = select(0u, INV_2PI[min(j, 7u)], j < 8u);
    let lo = select(0u, INV_2PI[min(j + 1u, 7u)], j + 1u < 8u);
    if (b == 0u) {
        return hi;
    }
    return (hi << b) | (lo >> (32u - b));
}

// The 64-bit product of a < 2^24 and b, as (high word, low word).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    return vec2<u32>(ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u), (ll & 0xffffu) | (mid << 16u));
}

// x − 2πk for the integer k that puts it in [-π, π], from the exact fraction of x/(2π) (x is
// m·2^s with a 24-bit integer m; 96 bits of 1/(2π) past bit s give that fraction to 2^-72),
// formed in integer arithmetic so no compiler rewriting of float operations can spoil it.
// Arguments already in [-π, π], infinities and NaN are returned as they are.
fn reduce_2pi(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let e = i32((bits >> 23u) & 0xffu);
    if (abs(x) <= 3.1415925 || e == 255) {
        return x;
    }
    let m = (bits & 0x7fffffu) | 0x800000u;
    let s = e - 150;
    let p2 = mul_wide(m, inv_2pi_bits(s + 64));
    let p1 = mul_wide(m, inv_2pi_bits(s + 32));
    // The low 96 bits of m · bits: the fraction of |x|/(2π), read as signed (in [-1/2, 1/2)).
    let f1 = p2.x + p1.y;
    let f2 = p1.x + m * inv_2pi_bits(s) + select(0u, 1u, f1 < p2.x);
    let f = f32(bitcast<i32>(f2)) * 0x1p-32f + f32(f1) * 0x1p-64f;
    let r = f * 6.2831855;
    return select(r, -r, (bits >> 31u) != 0u);
}

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
        case 5u: { y = cos(reduce_2pi(x)); }
        default: { y = sin(reduce_2pi(x)); }
    }
    out[i] = y;
}
