//! WGSL sources: one file per op family under `kernels/`, assembled here.
//!
//! Assembly is the -O0 codegen: `common.wgsl` (the step uniform, the parameter words) is
//! prepended to every kernel, and kernels that read packed weights get `dequant.wgsl` with the
//! token `DQ` replaced by the dequantizer of the weight's dtype.

use apr_ir::DType;

const COMMON: &str = include_str!("../kernels/common.wgsl");
const DEQUANT: &str = include_str!("../kernels/dequant.wgsl");

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
}

impl Family {
    pub const ALL: [Family; 11] = [
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

/// The full WGSL source of a kernel; `dtype` selects the dequantizer of packed families.
pub fn source(family: Family, dtype: Option<DType>) -> String {
    let mut s = String::with_capacity(8192);
    s.push_str(COMMON);
    if family.packed() {
        s.push_str(DEQUANT);
    }
    s.push_str(family.file());
    match dtype {
        Some(d) if family.packed() => replace_token(&s, "DQ", dequantizer(d)),
        _ => s,
    }
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
    fn token_replacement_is_whole_word() {
        assert_eq!(replace_token("x = DQ(i) + DQX(i) + A_DQ;", "DQ", "dq_q8_0"), "x = dq_q8_0(i) + DQX(i) + A_DQ;");
    }
}
