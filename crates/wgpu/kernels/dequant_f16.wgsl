// F16 weights on a device with SHADER_F16: `dequant.wgsl`'s replacement in kernels over F16
// weights when the source starts with `enable f16;` (kernels::source_for). The kernel declares
//   @group(0) @binding(K) var<storage, read> w: array<vec2<f16>>;
// holding the tensor's bytes as ggml lays them out: element i is component i & 1 of w[i >> 1]
// (little-endian, the buffer padded to a multiple of 4 bytes; a weight split across bindings is
// one buffer per piece, so every piece starts at element 0 of its own array). Only F16 weights
// take this path in the unfused kernels: the f16 scales of the block types sit at byte offsets
// inside blocks (18, 34, 210 bytes apart) that no f16 array indexes in step with their codes, so
// they keep the u32 words of dequant.wgsl. The fused matvecs read them through a second binding
// of the weight's buffer as f16 instead (qdot.wgsl's WBUF_f16x2), under the same probe.
//
// Exactness: the same contract as dequant.wgsl, bit-exact with the CPU dequantizer, except that
// a NaN only stays a NaN (its payload is the device's). f32(h) is exact for every normal f16,
// but Vulkan lets a float conversion flush a subnormal operand to zero unless the entry point
// declares DenormPreserve (VK_KHR_shader_float_controls), which naga never emits; and the exact
// fallback, decoding the bits as dequant.wgsl does, would need bitcast<u32>(vec2<f16>), which
// naga 30 types as vec2<u32> and rejects. So the device proves it instead: Gpu::open runs this
// dequantizer (the F16 cast kernel) over all 65536 f16 bit patterns and keeps the f16 path only
// where every one comes out exact; a device that flushes keeps F16 weights as u32 words.
// (Mesa's lavapipe, which reports shaderDenormPreserveFloat16 = false, converts every pattern
// exactly, NaN payloads included.)

fn dq_f16(i: u32) -> f32 {
    return f32(w[i >> 1u][i & 1u]);
}
