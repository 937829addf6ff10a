// Rotation angle per head dimension: out[d] = pos * c[d] rounded as the CPU rounds it (to f64,
// then to f32). The host folded freq_scale * theta^(-2i/n_rot) / freq_factor[i] into c
// (in f64, laid out as the rotary mode pairs dimensions; 0 for unrotated ones) and gives it
// exactly, as five words per dimension: the 16-bit limbs m3..m0 of its 53-bit significand and
// its power of two e, c = (m3·2^48 + m2·2^32 + m1·2^16 + m0)·2^e, each an integer held exactly
// in an f32. The product pos·significand is formed exactly in integer limbs and rounded in
// integer arithmetic; float tricks (fma, two-sum) are not used because drivers may fuse or
// reassociate float operations. prm: [head_dim].
@group(0) @binding(2) var<storage, read> pos: array<i32>;
@group(0) @binding(3) var<storage, read> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// The 96-bit number w (w.x most significant) shifted left by n < 96 bits.
fn shl96(w: vec3<u32>, n: u32) -> vec3<u32> {
    var a = w.x;
    var b = w.y;
    var c = w.z;
    var k = n;
    if (k >= 64u) {
        a = c;
        b = 0u;
        c = 0u;
        k -= 64u;
    } else if (k >= 32u) {
        a = b;
        b = c;
        c = 0u;
        k -= 32u;
    }
    if (k > 0u) {
        a = (a << k) | (b >> (32u - k));
        b = (b << k) | (c >> (32u - k));
        c = c << k;
    }
    return vec3<u32>(a, b, c);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let d = linear_index(gid, nwg);
    if (d >= prm[0]) {
        return;
    }
    let base = 5u * d;
    let p = u32(max(pos[0], 0));
    let pl = array<u32, 2>(p & 0xffffu, p >> 16u);
    let ml = array<u32, 4>(u32(coef[base + 3u]), u32(coef[base + 2u]), u32(coef[base + 1u]), u32(coef[base]));
    // Column sums of the 16-bit limb products (each < 2^32, split into halves), then carries.
    var col = array<u32, 6>();
    for (var i = 0u; i < 2u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let t = pl[i] * ml[j];
            col[i + j] += t & 0xffffu;
            col[i + j + 1u] += t >> 16u;
        }
    }
    var r = array<u32, 6>();
    var carry = 0u;
    for (var k = 0u; k < 6u; k++) {
        let s = col[k] + carry;
        r[k] = s & 0xffffu;
        carry = s >> 16u;
    }
    let w = vec3<u32>((r[5] << 16u) | r[4], (r[3] << 16u) | r[2], (r[1] << 16u) | r[0]);
    if (w.x == 0u && w.y == 0u && w.z == 0u) {
        out[d] = 0.0;
        return;
    }
    // The leading bit, moved to bit 95.
    var lead = 0u;
    if (w.x != 0u) {
        lead = 64u + firstLeadingBit(w.x);
    } else if (w.y != 0u) {
        lead = 32u + firstLeadingBit(w.y);
    } else {
        lead = firstLeadingBit(w.z);
    }
    let n = shl96(w, 95u - lead);
    var a = n.x;
    var b = n.y;
    // Round to nearest even twice, as the CPU does: to the 53 bits of its f64 product (bits
    // 95..43 kept), then to the 24 bits of an f32.
    let guard53 = (b >> 10u) & 1u;
    let rest53 = (b & 0x3ffu) | n.z;
    b &= ~0x7ffu;
    if (guard53 == 1u && (rest53 != 0u || ((b >> 11u) & 1u) == 1u)) {
        b += 0x800u;
        if (b == 0u) {
            a += 1u;
            if (a == 0u) {
                a = 0x80000000u;
                lead += 1u;
            }
        }
    }
    var mant = a >> 8u;
    let guard = (a >> 7u) & 1u;
    let rest = (a & 0x7fu) | b;
    if (guard == 1u && (rest != 0u || (mant & 1u) == 1u)) {
        mant += 1u;
    }
    out[d] = ldexp(f32(mant), i32(lead) - 23 + i32(coef[base + 4u]));
}
