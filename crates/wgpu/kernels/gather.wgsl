// Gather rows of a packed table (an embedding lookup): out[r, c] = table[ids[r], c].
// prm = [n_ids, cols, row0, rows]: this dispatch's buffer `w` holds table rows
// [row0, row0 + rows); a table split across several buffers is gathered by one dispatch per
// piece, each writing only the output rows whose id falls in its piece (the host has checked
// that every id is in the table). One thread per output element t = r*cols + c.

@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let cols = dim(1u);
    let t = linear_index(gid, nwg);
    if t >= dim(0u) * cols {
        return;
    }
    let r = t / cols;
    let c = t % cols;
    let id = ids[r];
    let row0 = prm[2];
    let local = u32(id) - row0;
    if id < 0 || u32(id) < row0 || local >= prm[3] {
        return;
    }
    out[t] = DQ(local * cols + c);
}
