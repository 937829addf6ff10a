// Fused SwiGLU: out = (g · σ(g)) · u with σ(g) = 1 / (1 + exp(−g)), the IR's sigmoid and
// two multiplies. prm = [count]. One thread per element.

@group(0) @binding(2) var<storage, read> gate: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    if t >= prm[0] {
        return;
    }
    let g = gate[t];
    out[t] = (g * (1.0 / (1.0 + exp(-g)))) * up[t];
}
