// An injected fault (`crate::fault`), in place on one value, for the checker's self-tests.
// prm: [kind, outer, rows, inner, full, nan bits, int]: the value is [outer, rows, inner] in a
// buffer whose row axis holds `full` rows (a cache; otherwise full = rows). kind: 0 scale
// (×1.05), 1 offset (+1), 2 sign, 3 nan (element 0), 4 skip (never dispatched), 5 swap (the
// two halves of the flat value exchanged; the middle element of an odd length stays).
// int = 1: the elements are i32 stored as bits (the arithmetic is on their values).
@group(0) @binding(2) var<storage, read_write> v: array<f32>;

fn at(i: u32) -> u32 {
    let rows = dim(2u);
    let inner = prm[3];
    let o = i / (rows * inner);
    let r = (i / inner) % rows;
    return (o * dim(4u) + r) * inner + i % inner;
}

fn load(i: u32) -> f32 {
    let x = v[at(i)];
    return select(x, f32(bitcast<i32>(x)), prm[6] == 1u);
}

fn store(i: u32, y: f32) {
    v[at(i)] = select(y, bitcast<f32>(i32(y)), prm[6] == 1u);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    let n = prm[1] * dim(2u) * prm[3];
    if (i >= n) {
        return;
    }
    switch prm[0] {
        case 0u: { store(i, load(i) * 1.05); }
        case 1u: { store(i, load(i) + 1.0); }
        case 2u: { store(i, -load(i)); }
        case 3u: {
            if (i == 0u) {
                v[at(0u)] = bitcast<f32>(prm[5]);
            }
        }
        case 5u: {
            let h = n / 2u;
            if (i < h) {
                let a = at(i);
                let b = at(n - h + i);
                let t = v[a];
                v[a] = v[b];
                v[b] = t;
            }
        }
        default: {}
    }
}
