// Cast: expand a packed tensor to f32, element by element.
// prm = [count]; one thread per element.

@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= dim(0u) {
        return;
    }
    out[i] = DQ(i);
}
