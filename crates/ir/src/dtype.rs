//! Element types, including ggml's quantized block types.
//!
//! A quantized dtype describes a *block* of `block_len()` logical elements stored in
//! `block_bytes()` bytes, exactly as ggml lays it out; the innermost dimension of a
//! quantized tensor must be a multiple of the block length.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "f16")]
    F16,
    #[serde(rename = "bf16")]
    BF16,
    #[serde(rename = "i32")]
    I32,
    #[serde(rename = "q4_0")]
    Q4_0,
    #[serde(rename = "q4_1")]
    Q4_1,
    #[serde(rename = "q5_0")]
    Q5_0,
    #[serde(rename = "q5_1")]
    Q5_1,
    #[serde(rename = "q8_0")]
    Q8_0,
    #[serde(rename = "q4_k")]
    Q4K,
    #[serde(rename = "q5_k")]
    Q5K,
    #[serde(rename = "q6_k")]
    Q6K,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 12] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
    ];

    /// Every dtype that holds reals (all but `I32`, which has no real-valued codec).
    pub const REALS: [DType; 11] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
    ];

    /// Logical elements per storage block (1 for plain types).
    pub const fn block_len(self) -> u64 {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::I32 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => 32,
            DType::Q4K | DType::Q5K | DType::Q6K => 256,
        }
    }

    /// Bytes per storage block (ggml's `type_size`).
    pub const fn block_bytes(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
        }
    }

    /// True for ggml block-quantized types.
    pub const fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// True for types that hold real numbers (everything but `I32`).
    pub const fn is_float_like(self) -> bool {
        !matches!(self, DType::I32)
    }

    /// Bytes needed for `elems` elements, or `None` if `elems` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, elems: u64) -> Option<u64> {
        if !elems.is_multiple_of(self.block_len()) {
            return None;
        }
        (elems / self.block_len()).checked_mul(self.block_bytes())
    }

    /// The short lowercase name used in the text form and in GGUF tooling (`q4_k`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q8_0 => "q8_0",
            DType::Q4K => "q4_k",
            DType::Q5K => "q5_k",
            DType::Q6K => "q6_k",
        }
    }

    /// Parse [`DType::name`] (case-insensitive).
    pub fn from_name(s: &str) -> Option<DType> {
        let lower = s.to_ascii_lowercase();
        DType::ALL.into_iter().find(|d| d.name() == lower)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
            let json = serde_json::to_string(&d).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", d.name()));
        }
    }

    #[test]
    fn reals_are_every_dtype_but_i32() {
        let want: Vec<DType> = DType::ALL.into_iter().filter(|&d| d != DType::I32).collect();
        assert_eq!(DType::REALS.to_vec(), want);
    }

    #[test]
    fn byte_sizes_follow_blocks() {
        assert_eq!(DType::Q4K.bytes_for(512), Some(288));
        assert_eq!(DType::Q8_0.bytes_for(33), None);
        assert_eq!(DType::F16.bytes_for(3), Some(6));
    }
}
