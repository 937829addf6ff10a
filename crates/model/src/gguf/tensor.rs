//! GGUF tensor-info records.
//!
//! A record names a tensor, gives its dims in ggml order (`ne0`, the innermost and fastest
//! varying dimension, first: a `[rows, cols]` matrix is stored as `ne = [cols, rows]`), its
//! ggml type and the offset of its bytes relative to the start of the data section. A
//! [`TensorInfo`] can only be built through [`TensorInfo::new`], which checks the shape, so
//! every value of the type has a valid element count and byte size.

use super::error::GgufError;
use super::types::GgmlType;
use apr_ir::DType;

/// The most dimensions a GGUF tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// One tensor of a GGUF file: name, dims (ne0 first), type and data offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    offset: u64,
    n_elements: u64,
    n_bytes: u64,
}

impl TensorInfo {
    /// Checks and builds a record: at most [`MAX_DIMS`] dims, each nonzero, an element count
    /// that fits in `i64` (as ggml requires), `ne0` a multiple of the type's block length.
    /// No dims at all is a scalar of one element. The offset is not checked here: alignment
    /// and bounds depend on the file.
    pub fn new(
        name: impl Into<String>,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        offset: u64,
    ) -> Result<TensorInfo, GgufError> {
        let name = name.into();
        if dims.len() > MAX_DIMS {
            return Err(GgufError::TooManyDims { tensor: name, n_dims: dims.len() as u64 });
        }
        if let Some(axis) = dims.iter().position(|&d| d == 0) {
            return Err(GgufError::ZeroDim { tensor: name, axis });
        }
        let n_elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&n| i64::try_from(n).is_ok());
        let Some(n_elements) = n_elements else {
            return Err(GgufError::SizeOverflow { tensor: name, dims });
        };
        let ne0 = dims.first().copied().unwrap_or(1);
        if !ne0.is_multiple_of(ggml_type.block_len()) {
            return Err(GgufError::NotBlockMultiple {
                tensor: name,
                ne0,
                ggml_type: ggml_type.name(),
                block_len: ggml_type.block_len(),
            });
        }
        let Some(n_bytes) = ggml_type.bytes_for(n_elements) else {
            return Err(GgufError::SizeOverflow { tensor: name, dims });
        };
        Ok(TensorInfo { name, dims, ggml_type, offset, n_elements, n_bytes })
    }

    /// The tensor's name (`blk.0.attn_q.weight`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dims in ggml order, `ne0` (innermost) first, exactly as in the file.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// Dims in row-major order, outermost first (`[rows, cols]`), as safetensors and the IR
    /// write shapes.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// The ggml type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Offset of the tensor's bytes from the start of the data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of logical elements.
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Number of bytes of tensor data.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }

    /// The apr-ir dtype, or an error naming the tensor and its type if apr-ir cannot compute
    /// with that type.
    pub fn dtype(&self) -> Result<DType, GgufError> {
        self.ggml_type
            .to_dtype()
            .ok_or_else(|| GgufError::UnsupportedType { tensor: self.name.clone(), ggml_type: self.ggml_type.name() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_errors() {
        let t = TensorInfo::new("w", vec![256, 3], GgmlType::Q4_K, 0).unwrap();
        assert_eq!((t.n_elements(), t.n_bytes()), (768, 432));
        assert_eq!(t.shape(), vec![3, 256]);
        assert_eq!(t.dtype().unwrap(), DType::Q4K);
        let e = TensorInfo::new("w", vec![32], GgmlType::IQ2_XXS, 0).unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
        let t = TensorInfo::new("blk.0.attn_q.weight", vec![256], GgmlType::IQ2_XXS, 0).unwrap();
        assert_eq!(
            t.dtype().unwrap_err().to_string(),
            "tensor blk.0.attn_q.weight has type IQ2_XXS, which apr-ir does not support"
        );
        assert!(TensorInfo::new("w", vec![1 << 32, 1 << 32], GgmlType::F32, 0).is_err());
        assert!(TensorInfo::new("w", vec![1 << 62], GgmlType::F32, 0).is_err());
        assert!(TensorInfo::new("w", vec![1, 0], GgmlType::F32, 0).is_err());
        assert_eq!(TensorInfo::new("s", vec![], GgmlType::F32, 0).unwrap().n_bytes(), 4);
    }
}
