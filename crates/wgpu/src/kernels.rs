//! WGSL sources: one file per op family under `kernels/`, assembled here.
//!
//! Assembly is the -O0 codegen: `common.wgsl` (the step uniform, the parameter words) is
//! prepended to every kernel, and kernels that read packed weights get `dequant.wgsl` with the
//! token `DQ` replaced by the dequantizer of the weight's dtype.
//!
//! F16 weights have two paths. Everywhere, packed weights are `array<u32>` words decoded with
//! integer operations. On a device with `SHADER_F16` whose conversions proved exact
//! ([`crate::Gpu::f16`]), packed kernels over F16 weights are generated with `enable f16;`, bind
//! the weight as `array<vec2<f16>>` and take `dequant_f16.wgsl` instead of `dequant.wgsl`
//! ([`source_for`]). The fused matvec kernels, whatever their weights' dtype, read the f16
//! fields (block scales, F16 elements) on such a device through a second binding of the same
//! buffer as `array<vec2<f16>>` ([`fused_source_for`]).

use apr_ir::DType;

const COMMON: &str = include_str!("../kernels/common.wgsl");
const DEQUANT: &str = include_str!("../kernels/dequant.wgsl");
const DEQUANT_F16: &str = include_str!("../kernels/dequant_f16.wgsl");

/// How every packed kernel declares its weight, and what the native f16 variant makes of it.
const WEIGHT_WORDS: &str = "w: array<u32>;";
const WEIGHT_HALVES: &str = "w: array<vec2<f16>>;";

/// A kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Unary,
    Binary,
    Reduce,
    MatmulF32,
    Slice,
    RopeRotate,
    RopeAngles,
    CacheWrite,
    /// Packed-weight kernels, specialized per dtype.
    Matvec,
    Gather,
    Cast,
    /// Fused kernels (the groups of `apr_ir::fuse` at -O1 / -O2). The two matvec families are
    /// specialized per weight dtype through `qdot.wgsl` ([`fused_source`]), the others take
    /// f32 operands only.
    RmsNorm,
    Softmax,
    Rope,
    SwiGlu,
    MatvecAdd,
    MatvecSwiGlu,
    /// Attention's first pass (one partial result per chunk of the context).
    Attention,
    /// Attention's second pass (the chunks' partial results combined).
    AttentionCombine,
    RopeCacheWrite,
    /// A per-head RMSNorm and RoPE, optionally stored into a cache.
    NormRope,
    /// An injected fault, in place on one value (`crate::fault`; the checker's self-tests).
    Fault,
}

impl Family {
    pub const ALL: [Family; 22] = [
        Family::Unary,
        Family::Binary,
        Family::Reduce,
        Family::MatmulF32,
        Family::Slice,
        Family::RopeRotate,
        Family::RopeAngles,
        Family::CacheWrite,
        Family::Matvec,
        Family::Gather,
        Family::Cast,
        Family::RmsNorm,
        Family::Softmax,
        Family::Rope,
        Family::SwiGlu,
        Family::MatvecAdd,
        Family::MatvecSwiGlu,
        Family::Attention,
        Family::AttentionCombine,
        Family::RopeCacheWrite,
        Family::NormRope,
        Family::Fault,
    ];

    fn file(self) -> &'static str {
        match self {
            Family::Unary => include_str!("../kernels/unary.wgsl"),
            Family::Binary => include_str!("../kernels/binary.wgsl"),
            Family::Reduce => include_str!("../kernels/reduce.wgsl"),
            Family::MatmulF32 => include_str!("../kernels/matmul_f32.wgsl"),
            Family::Slice => include_str!("../kernels/slice.wgsl"),
            Family::RopeRotate => include_str!("../kernels/rope_rotate.wgsl"),
            Family::RopeAngles => include_str!("../kernels/rope_angles.wgsl"),
            Family::CacheWrite => include_str!("../kernels/cache_write.wgsl"),
            Family::Matvec => include_str!("../kernels/matvec.wgsl"),
            Family::Gather => include_str!("../kernels/gather.wgsl"),
            Family::Cast => include_str!("../kernels/cast.wgsl"),
            Family::RmsNorm => include_str!("../kernels/rms_norm.wgsl"),
            Family::Softmax => include_str!("../kernels/softmax.wgsl"),
            Family::Rope => include_str!("../kernels/rope.wgsl"),
            Family::SwiGlu => include_str!("../kernels/swiglu.wgsl"),
            Family::MatvecAdd => include_str!("../kernels/matvec_add.wgsl"),
            Family::MatvecSwiGlu => include_str!("../kernels/matvec_swiglu.wgsl"),
            Family::Attention => include_str!("../kernels/attention.wgsl"),
            Family::AttentionCombine => include_str!("../kernels/attention_combine.wgsl"),
            Family::RopeCacheWrite => include_str!("../kernels/rope_cache_write.wgsl"),
            Family::NormRope => include_str!("../kernels/norm_rope.wgsl"),
            Family::Fault => include_str!("../kernels/fault.wgsl"),
        }
    }

    /// Whether the family is a fused kernel (its sources come from [`fused_source`]).
    pub fn fused(self) -> bool {
        matches!(
            self,
            Family::RmsNorm
                | Family::Softmax
                | Family::Rope
                | Family::SwiGlu
                | Family::MatvecAdd
                | Family::MatvecSwiGlu
                | Family::Attention
                | Family::AttentionCombine
                | Family::RopeCacheWrite
                | Family::NormRope
        )
    }

    /// How many weight bindings of the family are specialized per dtype (qdot instances).
    pub fn weights(self) -> usize {
        match self {
            Family::MatvecAdd => 1,
            Family::MatvecSwiGlu => 2,
            _ => 0,
        }
    }

    /// Whether the family reads packed weights and is specialized per dtype.
    pub fn packed(self) -> bool {
        matches!(self, Family::Matvec | Family::Gather | Family::Cast)
    }
}

/// The dequantizer function `dequant.wgsl` defines for a dtype.
pub fn dequantizer(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "dq_f32",
        DType::F16 => "dq_f16",
        DType::BF16 => "dq_bf16",
        DType::I32 => "dq_i32",
        DType::Q4_0 => "dq_q4_0",
        DType::Q4_1 => "dq_q4_1",
        DType::Q5_0 => "dq_q5_0",
        DType::Q5_1 => "dq_q5_1",
        DType::Q8_0 => "dq_q8_0",
        DType::Q4K => "dq_q4_k",
        DType::Q5K => "dq_q5_k",
        DType::Q6K => "dq_q6_k",
    }
}

/// The full WGSL source of a kernel for a device without `SHADER_F16` (every kernel reads its
/// weight as u32 words); `dtype` selects the dequantizer of packed families.
pub fn source(family: Family, dtype: Option<DType>) -> String {
    source_for(family, dtype, false)
}

/// Whether a kernel reads an F16 weight as `f16` storage on a device whose `SHADER_F16` is
/// `shader_f16`: the packed families and the fused matvecs over F16 weights.
pub fn native_f16(family: Family, dtype: Option<DType>, shader_f16: bool) -> bool {
    shader_f16 && (family.packed() || family.weights() > 0) && dtype == Some(DType::F16)
}

/// The full WGSL source of a kernel for a device whose `SHADER_F16` is `shader_f16`: where
/// [`native_f16`] holds, the `enable f16;` variant (the weight bound as `array<vec2<f16>>`,
/// `dequant_f16.wgsl` as its dequantizer); a fused family's source is [`fused_source_for`]'s;
/// otherwise what [`source`] gives.
pub fn source_for(family: Family, dtype: Option<DType>, shader_f16: bool) -> String {
    if family.fused() {
        return fused_source_for(family, &dtype.into_iter().collect::<Vec<_>>(), shader_f16);
    }
    let native = native_f16(family, dtype, shader_f16);
    let mut s = String::with_capacity(8192);
    if native {
        s.push_str("enable f16;\n\n");
    }
    s.push_str(COMMON);
    if family.packed() {
        s.push_str(if native { DEQUANT_F16 } else { DEQUANT });
    }
    if native {
        s.push_str(&family.file().replacen(WEIGHT_WORDS, WEIGHT_HALVES, 1));
    } else {
        s.push_str(family.file());
    }
    match dtype {
        Some(d) if family.packed() => replace_token(&s, "DQ", dequantizer(d)),
        _ => s,
    }
}

const QDOT: &str = include_str!("../kernels/qdot.wgsl");

/// The binding names of a fused family's weights, in binding order.
const WEIGHT_NAMES: [&str; 2] = ["w", "wu"];

/// The full WGSL source of a fused kernel: `common.wgsl`, then for the matvec families
/// `dequant.wgsl` (its f16 decoding) and one [`qdot`] instance per weight binding, specialized
/// for that weight's dtype (`dtypes[i]`; a missing one repeats the last, so a single dtype
/// serves both weights of `MatvecSwiGlu`), then the family's file; the weights are read as u32
/// words (a device without exact f16 conversions: [`fused_source_for`]).
pub fn fused_source(family: Family, dtypes: &[DType]) -> String {
    fused_source_for(family, dtypes, false)
}

/// Binding of the first weight's `array<vec2<f16>>` view in the fused matvec kernels; the
/// second weight's (`MatvecSwiGlu`'s up projection) is the next. `plan` binds each weight's
/// buffer a second time there, before the output.
pub const HALF_VIEW_BINDING: u32 = 5;

/// [`fused_source`] for a device whose f16 conversions are exact where `f16` ([`crate::Gpu::f16`]):
/// then a matvec kernel starts with `enable f16;`, declares each weight's buffer a second time as
/// `<name>_h: array<vec2<f16>>` (from [`HALF_VIEW_BINDING`]) and converts its f16 fields from
/// there ([`qdot_for`]), exactly, in hardware.
pub fn fused_source_for(family: Family, dtypes: &[DType], f16: bool) -> String {
    let f16 = f16 && family.weights() > 0;
    let mut s = String::with_capacity(16384);
    if f16 {
        s.push_str("enable f16;\n\n");
    }
    s.push_str(COMMON);
    if family.weights() > 0 {
        s.push_str(DEQUANT);
        let mut last = dtypes.first().copied().unwrap_or(DType::F32);
        for (k, name) in WEIGHT_NAMES.iter().take(family.weights()).enumerate() {
            last = dtypes.get(k).copied().unwrap_or(last);
            if f16 {
                let binding = HALF_VIEW_BINDING + k as u32;
                s.push_str(&format!(
                    "\n@group(0) @binding({binding}) var<storage, read> {name}_h: array<vec2<f16>>;\n"
                ));
            }
            s.push_str(&qdot_for(name, last, f16));
        }
    }
    s.push_str(family.file());
    s
}

/// The `qdot.wgsl` instance for a weight binding `name` of `dtype`, reading f16 fields as u32
/// words: [`qdot_for`] without `f16`.
pub fn qdot(name: &str, dtype: DType) -> String {
    qdot_for(name, dtype, false)
}

/// The `qdot.wgsl` instance for a weight binding `name` of `dtype`: the helpers above the first
/// `// @dtype` line and the dtype's section, with `WBUF` replaced by `name`, and of the lines
/// tagged `// @f16` / `// @u32` those of the path `f16` selects (the `<name>_h` view or integer
/// decoding), untagged.
pub fn qdot_for(name: &str, dtype: DType, f16: bool) -> String {
    let suffix = dequantizer(dtype).trim_start_matches("dq_");
    let mut sections = QDOT.split("\n// @dtype ");
    let head = sections.next().unwrap_or_default();
    let body = sections
        .find(|sec| sec.lines().next().map(str::trim) == Some(suffix))
        .map(|sec| sec.split_once('\n').map_or("", |(_, rest)| rest))
        .unwrap_or_default();
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(head);
    out.push_str(&format!("\n// ---- {name}: {suffix} ----\n"));
    out.push_str(body);
    let (keep, drop) = if f16 { (" // @f16", " // @u32") } else { (" // @u32", " // @f16") };
    let lines = out.lines().filter(|l| !l.ends_with(drop)).map(|l| l.strip_suffix(keep).unwrap_or(l));
    let mut out: String = lines.flat_map(|l| [l, "\n"]).collect();
    out = out.replace("WBUF", name);
    out
}

/// Replace whole-word occurrences of `token`.
fn replace_token(src: &str, token: &str, with: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(i) = rest.find(token) {
        let before = rest[..i].chars().last();
        let after = rest[i + token.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..i]);
        out.push_str(if word(before) || word(after) { token } else { with });
        rest = &rest[i + token.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packed_family_declares_its_weight_once_as_words() {
        // The native f16 variant rewrites this declaration; a packed family without it (or
        // with two) would keep u32 words under `dequant_f16.wgsl`.
        for family in Family::ALL.into_iter().filter(|f| f.packed()) {
            assert_eq!(family.file().matches(WEIGHT_WORDS).count(), 1, "{family:?}");
            let src = source_for(family, Some(DType::F16), true);
            assert!(src.starts_with("enable f16;") && src.contains(WEIGHT_HALVES) && !src.contains(WEIGHT_WORDS));
        }
        for family in Family::ALL {
            for dtype in DType::ALL {
                let native = native_f16(family, Some(dtype), true);
                assert_eq!(native, (family.packed() || family.weights() > 0) && dtype == DType::F16);
                if !native && family.weights() == 0 {
                    assert_eq!(source_for(family, Some(dtype), true), source(family, Some(dtype)));
                }
            }
        }
    }

    /// The form `schedule::objects` relies on when it drops naga's loop bounding: no `loop` or
    /// `while`, and every `for` steps its own variable towards its bound (`i < n` with `i++` or
    /// `i += step`, `s > 0u` with `s >>= 1u`, `d >= 0` with `d--`).
    #[test]
    fn every_loop_terminates() {
        let files = Family::ALL.iter().map(|f| f.file()).chain([COMMON, DEQUANT, DEQUANT_F16, QDOT]);
        let mut loops = 0;
        for src in files {
            // The code of each line, comments dropped.
            for line in src.lines().filter_map(|l| l.split("//").next()).map(str::trim) {
                let words: Vec<&str> = line.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
                assert!(!words.contains(&"loop") && !words.contains(&"while"), "{line}");
                if !words.contains(&"for") {
                    continue;
                }
                // A `for` in any other layout (a header split over lines) fails here.
                let head = line.strip_prefix("for (var ").and_then(|h| h.strip_suffix(") {"));
                let head = head.unwrap_or_else(|| panic!("a loop header this test cannot read: {line}"));
                let parts: Vec<&str> = head.split("; ").collect();
                assert_eq!(parts.len(), 3, "{line}");
                let var = parts[0].split(" = ").next().unwrap_or_default();
                let (cond, step) = (parts[1], parts[2]);
                let up = step == format!("{var}++") || step.starts_with(&format!("{var} += "));
                let halves = step == format!("{var} >>= 1u") && cond == format!("{var} > 0u");
                let down = step == format!("{var}--") && cond == format!("{var} >= 0");
                let bounded_above = cond
                    .split(" && ")
                    .any(|c| c.starts_with(&format!("{var} < ")) || c.starts_with(&format!("c0 + {var} < ")));
                assert!((up && bounded_above) || halves || down, "{line}");
                loops += 1;
            }
        }
        assert!(loops > 40, "{loops} loops seen");
    }

    /// The two attention passes must cut the context alike (the combine reads the chunks the
    /// first pass wrote): both take `common.wgsl`'s one definition, neither its own.
    #[test]
    fn attention_passes_agree_on_chunks() {
        assert_eq!(COMMON.matches("fn attention_chunk_len(").count(), 1);
        for family in [Family::Attention, Family::AttentionCombine] {
            let src = family.file();
            assert!(src.contains("attention_chunk_len(ctx, ns)"), "{family:?}");
            assert!(!src.contains("fn attention_chunk_len(") && !src.contains("fn chunk_len("), "{family:?}");
        }
    }

    #[test]
    fn token_replacement_is_whole_word() {
        assert_eq!(replace_token("x = DQ(i) + DQX(i) + A_DQ;", "DQ", "dq_q8_0"), "x = dq_q8_0(i) + DQX(i) + A_DQ;");
    }
}

#[cfg(test)]
mod fused_tests {
    use super::*;

    #[test]
    fn qdot_has_one_section_per_dtype() {
        for dtype in DType::ALL {
            let inst = qdot("w", dtype);
            assert_eq!(inst.matches("const w_CH: u32 =").count(), 1, "{dtype}");
            assert_eq!(inst.matches("\nfn w_chunk(").count(), 1, "{dtype}");
            assert!(!inst.contains("WBUF") && !inst.contains("\n// @dtype "), "{dtype}");
        }
        for dtype in DType::ALL {
            let inst = qdot_for("w", dtype, true);
            assert!(inst.contains("return vec2<f32>(w_h[i]);") && !inst.contains("f16_bits_to_f32(h"), "{dtype}");
            let words = qdot("w", dtype);
            assert!(!words.contains("w_h[") && words.contains("f16_bits_to_f32(h & 0xffffu)"), "{dtype}");
            let tagged = |l: &str| l.ends_with(" // @f16") || l.ends_with(" // @u32");
            assert!(!inst.lines().chain(words.lines()).any(tagged), "{dtype}: a path tag left in");
        }
        let two = fused_source(Family::MatvecSwiGlu, &[DType::Q4K, DType::Q6K]);
        assert!(two.contains("// ---- w: q4_k ----") && two.contains("// ---- wu: q6_k ----"));
        assert_eq!(fused_source(Family::Rope, &[]), source(Family::Rope, None));
        assert_eq!(fused_source_for(Family::Rope, &[], true), fused_source(Family::Rope, &[]));
        // The f16 views sit where plan binds each weight's buffer the second time.
        let views = fused_source_for(Family::MatvecSwiGlu, &[DType::Q8_0], true);
        assert!(views.starts_with("enable f16;"));
        assert!(views.contains("@binding(5) var<storage, read> w_h: array<vec2<f16>>;"));
        assert!(views.contains("@binding(6) var<storage, read> wu_h: array<vec2<f16>>;"));
        assert!(views.contains("@binding(7) var<storage, read_write> out"));
        let add = fused_source_for(Family::MatvecAdd, &[DType::Q4K], true);
        assert!(
            add.contains("@binding(5) var<storage, read> w_h")
                && add.contains("@binding(6) var<storage, read_write> out")
        );
    }
}
