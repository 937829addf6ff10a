//! The ggml tensor type table.
//!
//! A GGUF tensor names its element encoding by a ggml type id. Every id is a *block* format:
//! `block_len` logical elements are stored in `type_size` bytes (plain types have a block of
//! one element). The table below holds every type that gguf-py's `GGML_QUANT_SIZES` knows,
//! so that any file llama.cpp can write at least parses and can be inspected, even where
//! apr-ir cannot compute with the type. Which types apr-ir computes with is the separate
//! question answered by [`GgmlType::to_dtype`]. Ids that ggml retired (4, 5, 31–33, 36–38)
//! and ids from the future are unknown, and a file using one does not parse.

use apr_ir::DType;
use std::fmt;

/// Defines [`GgmlType`] and its table from one list, so that id, name and sizes cannot drift.
macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $block:literal, $size:literal; )*) => {
        /// A ggml tensor type, as stored in a GGUF tensor-info record.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(non_camel_case_types)]
        pub enum GgmlType {
            $( $(#[$doc])* $variant, )*
        }

        impl GgmlType {
            /// Every known type, in id order.
            pub const ALL: &'static [GgmlType] = &[ $( GgmlType::$variant, )* ];

            /// The numeric id stored in the file.
            pub const fn id(self) -> u32 {
                match self { $( GgmlType::$variant => $id, )* }
            }

            /// The type for a numeric id, or `None` if ggml does not define it (any more).
            pub const fn from_id(id: u32) -> Option<GgmlType> {
                match id { $( $id => Some(GgmlType::$variant), )* _ => None }
            }

            /// The upper-case name used by ggml and gguf-py (`Q4_K`, `IQ2_XXS`).
            pub const fn name(self) -> &'static str {
                match self { $( GgmlType::$variant => $name, )* }
            }

            /// Logical elements per block (ggml's `blck_size`).
            pub const fn block_len(self) -> u64 {
                match self { $( GgmlType::$variant => $block, )* }
            }

            /// Bytes per block (ggml's `type_size`).
            pub const fn type_size(self) -> u64 {
                match self { $( GgmlType::$variant => $size, )* }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q8_1 = 9, "Q8_1", 32, 40;
    Q2_K = 10, "Q2_K", 256, 84;
    Q3_K = 11, "Q3_K", 256, 110;
    Q4_K = 12, "Q4_K", 256, 144;
    Q5_K = 13, "Q5_K", 256, 176;
    Q6_K = 14, "Q6_K", 256, 210;
    Q8_K = 15, "Q8_K", 256, 292;
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    IQ1_S = 19, "IQ1_S", 256, 50;
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    IQ3_S = 21, "IQ3_S", 256, 110;
    IQ2_S = 22, "IQ2_S", 256, 82;
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", 256, 56;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", 256, 54;
    TQ2_0 = 35, "TQ2_0", 256, 66;
    MXFP4 = 39, "MXFP4", 32, 17;
    NVFP4 = 40, "NVFP4", 64, 36;
    Q1_0 = 41, "Q1_0", 128, 18;
}

impl GgmlType {
    /// Bytes that `elems` elements occupy, or `None` if `elems` is not a whole number of
    /// blocks or the size overflows `u64`.
    pub fn bytes_for(self, elems: u64) -> Option<u64> {
        if !elems.is_multiple_of(self.block_len()) {
            return None;
        }
        (elems / self.block_len()).checked_mul(self.type_size())
    }

    /// The apr-ir dtype with the same storage layout, if apr-ir computes with this type.
    pub const fn to_dtype(self) -> Option<DType> {
        match self {
            GgmlType::F32 => Some(DType::F32),
            GgmlType::F16 => Some(DType::F16),
            GgmlType::BF16 => Some(DType::BF16),
            GgmlType::I32 => Some(DType::I32),
            GgmlType::Q4_0 => Some(DType::Q4_0),
            GgmlType::Q4_1 => Some(DType::Q4_1),
            GgmlType::Q5_0 => Some(DType::Q5_0),
            GgmlType::Q5_1 => Some(DType::Q5_1),
            GgmlType::Q8_0 => Some(DType::Q8_0),
            GgmlType::Q4_K => Some(DType::Q4K),
            GgmlType::Q5_K => Some(DType::Q5K),
            GgmlType::Q6_K => Some(DType::Q6K),
            GgmlType::Q8_1
            | GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q8_K
            | GgmlType::IQ2_XXS
            | GgmlType::IQ2_XS
            | GgmlType::IQ3_XXS
            | GgmlType::IQ1_S
            | GgmlType::IQ4_NL
            | GgmlType::IQ3_S
            | GgmlType::IQ2_S
            | GgmlType::IQ4_XS
            | GgmlType::I8
            | GgmlType::I16
            | GgmlType::I64
            | GgmlType::F64
            | GgmlType::IQ1_M
            | GgmlType::TQ1_0
            | GgmlType::TQ2_0
            | GgmlType::MXFP4
            | GgmlType::NVFP4
            | GgmlType::Q1_0 => None,
        }
    }

    /// The ggml type that stores an apr-ir dtype. Every [`DType`] has one.
    pub const fn from_dtype(dtype: DType) -> GgmlType {
        match dtype {
            DType::F32 => GgmlType::F32,
            DType::F16 => GgmlType::F16,
            DType::BF16 => GgmlType::BF16,
            DType::I32 => GgmlType::I32,
            DType::Q4_0 => GgmlType::Q4_0,
            DType::Q4_1 => GgmlType::Q4_1,
            DType::Q5_0 => GgmlType::Q5_0,
            DType::Q5_1 => GgmlType::Q5_1,
            DType::Q8_0 => GgmlType::Q8_0,
            DType::Q4K => GgmlType::Q4_K,
            DType::Q5K => GgmlType::Q5_K,
            DType::Q6K => GgmlType::Q6_K,
        }
    }
}

impl From<DType> for GgmlType {
    fn from(dtype: DType) -> Self {
        GgmlType::from_dtype(dtype)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        for retired in [4, 5, 31, 32, 33, 36, 37, 38, 42, u32::MAX] {
            assert_eq!(GgmlType::from_id(retired), None);
        }
    }

    #[test]
    fn dtype_layouts_agree() {
        for d in DType::ALL {
            let g = GgmlType::from_dtype(d);
            assert_eq!(g.to_dtype(), Some(d));
            assert_eq!(g.block_len(), d.block_len(), "{d}");
            assert_eq!(g.type_size(), d.block_bytes(), "{d}");
        }
    }
}
