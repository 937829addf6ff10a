//! Block codecs for ggml's element types.
//!
//! A GGUF tensor stores its innermost dimension as a run of *blocks*: `dtype.block_len()` logical
//! values packed into `dtype.block_bytes()` bytes, exactly as ggml lays them out (little-endian).
//! Plain float types are the degenerate case of a one-element block. This module turns such bytes
//! into `f32` values and back, and takes the dot product of a packed row with an `f32` vector, which
//! is the inner loop of a quantized matrix-vector product.
//!
//! Dequantization is the contract: it follows ggml's `dequantize_row_*` to the bit, and the golden
//! test `tests/quant_golden.rs` holds it to gguf-py's numpy reference. Quantization of the legacy
//! types (`q4_0` … `q8_0`) follows ggml's reference quantizers (`quantize_row_*_ref`), so it
//! reproduces gguf-py's bytes exactly; the k-quants use a plain, deterministic quantizer of our own
//! (see `kquants.rs`) — any valid block is a correct encoding, and ours trades ggml's error-minimizing
//! search for simplicity. Only `i32` has no codec: it holds integers, not quantized reals.
//!
//! Every entry point checks lengths before touching a byte; a wrong length is a [`QuantError`],
//! never a panic. Inputs of at least [`PARALLEL_MIN_ELEMS`] elements are processed on the rayon
//! pool, block by block; smaller ones stay on the calling thread.

mod float;
mod kquants;
mod legacy;

use apr_ir::DType;
use rayon::prelude::*;

/// Element count from which [`dequantize`] and [`quantize`] spread blocks over the rayon pool.
pub const PARALLEL_MIN_ELEMS: usize = 64 * 1024;

/// Why a codec call was refused. Nothing is written to the output when an error is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The dtype has no block codec (only `i32`, which does not hold reals).
    #[error("{dtype} has no quantization codec: it does not hold real numbers")]
    Unsupported { dtype: DType },
    /// The element count does not fill whole blocks.
    #[error("{dtype} packs {block_len} elements per block, but {elems} elements were given")]
    PartialBlock { dtype: DType, elems: usize, block_len: u64 },
    /// The byte buffer does not match the element count.
    #[error("{elems} {dtype} elements take {expected} bytes, but the buffer holds {actual}")]
    ByteLength { dtype: DType, elems: usize, expected: usize, actual: usize },
}

/// Dequantize `bytes` — exactly `dtype.bytes_for(out.len())` bytes in ggml's layout — into `out`.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(dtype, out.len(), bytes.len())?;
    let parallel = out.len() >= PARALLEL_MIN_ELEMS;
    match dtype {
        DType::F32 => zip_blocks(bytes, out, parallel, float::decode_f32),
        DType::F16 => zip_blocks(bytes, out, parallel, float::decode_f16),
        DType::BF16 => zip_blocks(bytes, out, parallel, float::decode_bf16),
        DType::I32 => return Err(QuantError::Unsupported { dtype }),
        DType::Q4_0 => zip_blocks(bytes, out, parallel, legacy::decode_q4_0),
        DType::Q4_1 => zip_blocks(bytes, out, parallel, legacy::decode_q4_1),
        DType::Q5_0 => zip_blocks(bytes, out, parallel, legacy::decode_q5_0),
        DType::Q5_1 => zip_blocks(bytes, out, parallel, legacy::decode_q5_1),
        DType::Q8_0 => zip_blocks(bytes, out, parallel, legacy::decode_q8_0),
        DType::Q4K => zip_blocks(bytes, out, parallel, kquants::decode_q4_k),
        DType::Q5K => zip_blocks(bytes, out, parallel, kquants::decode_q5_k),
        DType::Q6K => zip_blocks(bytes, out, parallel, kquants::decode_q6_k),
    }
    Ok(())
}

/// Quantize `src` into `out`, which must hold exactly `dtype.bytes_for(src.len())` bytes.
///
/// Every dtype for which [`can_quantize`] is true is supported. Non-finite inputs do not panic,
/// but the blocks they land in are unspecified (as in ggml).
pub fn quantize(dtype: DType, src: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    check_lengths(dtype, src.len(), out.len())?;
    let parallel = src.len() >= PARALLEL_MIN_ELEMS;
    match dtype {
        DType::F32 => zip_blocks(src, out, parallel, float::encode_f32),
        DType::F16 => zip_blocks(src, out, parallel, float::encode_f16),
        DType::BF16 => zip_blocks(src, out, parallel, float::encode_bf16),
        DType::I32 => return Err(QuantError::Unsupported { dtype }),
        DType::Q4_0 => zip_blocks(src, out, parallel, legacy::encode_q4_0),
        DType::Q4_1 => zip_blocks(src, out, parallel, legacy::encode_q4_1),
        DType::Q5_0 => zip_blocks(src, out, parallel, legacy::encode_q5_0),
        DType::Q5_1 => zip_blocks(src, out, parallel, legacy::encode_q5_1),
        DType::Q8_0 => zip_blocks(src, out, parallel, legacy::encode_q8_0),
        DType::Q4K => zip_blocks(src, out, parallel, kquants::encode_q4_k),
        DType::Q5K => zip_blocks(src, out, parallel, kquants::encode_q5_k),
        DType::Q6K => zip_blocks(src, out, parallel, kquants::encode_q6_k),
    }
    Ok(())
}

/// Whether [`quantize`] accepts `dtype`: every type that holds reals, i.e. all but `i32`.
pub fn can_quantize(dtype: DType) -> bool {
    dtype.is_float_like()
}

/// `Σ row[i]·x[i]` for one packed row of `x.len()` elements, without materializing the row: each
/// block is decoded into a stack buffer and consumed at once. `row_bytes` must hold exactly
/// `dtype.bytes_for(x.len())` bytes.
pub fn dot_row(dtype: DType, row_bytes: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    check_lengths(dtype, x.len(), row_bytes.len())?;
    Ok(match dtype {
        DType::F32 => dot_blocks(row_bytes, x, float::decode_f32),
        DType::F16 => dot_blocks(row_bytes, x, float::decode_f16),
        DType::BF16 => dot_blocks(row_bytes, x, float::decode_bf16),
        DType::I32 => return Err(QuantError::Unsupported { dtype }),
        DType::Q4_0 => dot_blocks(row_bytes, x, legacy::decode_q4_0),
        DType::Q4_1 => dot_blocks(row_bytes, x, legacy::decode_q4_1),
        DType::Q5_0 => dot_blocks(row_bytes, x, legacy::decode_q5_0),
        DType::Q5_1 => dot_blocks(row_bytes, x, legacy::decode_q5_1),
        DType::Q8_0 => dot_blocks(row_bytes, x, legacy::decode_q8_0),
        DType::Q4K => dot_blocks(row_bytes, x, kquants::decode_q4_k),
        DType::Q5K => dot_blocks(row_bytes, x, kquants::decode_q5_k),
        DType::Q6K => dot_blocks(row_bytes, x, kquants::decode_q6_k),
    })
}

/// `dtype.block_bytes()` as an array length.
const fn block_bytes(dtype: DType) -> usize {
    dtype.block_bytes() as usize
}

/// `dtype.block_len()` as an array length.
const fn block_len(dtype: DType) -> usize {
    dtype.block_len() as usize
}

/// The element of largest magnitude, sign kept; the first one wins a tie, as in ggml's quantizers.
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0_f32;
    let mut max = 0.0_f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// Reject a call unless `dtype` holds reals, `elems` fills whole blocks and `bytes` is its size.
fn check_lengths(dtype: DType, elems: usize, bytes: usize) -> Result<(), QuantError> {
    if !dtype.is_float_like() {
        return Err(QuantError::Unsupported { dtype });
    }
    // `bytes_for` is `None` only for a partial block: no in-memory slice can overflow it.
    let expected = u64::try_from(elems)
        .ok()
        .and_then(|n| dtype.bytes_for(n))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(QuantError::PartialBlock { dtype, elems, block_len: dtype.block_len() })?;
    if expected != bytes {
        return Err(QuantError::ByteLength { dtype, elems, expected, actual: bytes });
    }
    Ok(())
}

/// Apply a block codec to matching blocks of `src` and `dst`, whose lengths the caller has checked
/// to be the same whole number of blocks.
fn zip_blocks<T: Sync, U: Send, const A: usize, const B: usize>(
    src: &[T],
    dst: &mut [U],
    parallel: bool,
    codec: fn(&[T; A], &mut [U; B]),
) {
    // `chunks_exact` yields exactly `A` (`B`) items, so the array conversions always succeed.
    let apply = |(s, d): (&[T], &mut [U])| {
        if let (Ok(s), Ok(d)) = (s.try_into(), d.try_into()) {
            codec(s, d);
        }
    };
    if parallel {
        src.par_chunks_exact(A).zip(dst.par_chunks_exact_mut(B)).for_each(apply);
    } else {
        src.chunks_exact(A).zip(dst.chunks_exact_mut(B)).for_each(apply);
    }
}

/// Decode `row` one block at a time into a stack buffer and accumulate its dot product with `x`.
fn dot_blocks<const A: usize, const B: usize>(row: &[u8], x: &[f32], decode: fn(&[u8; A], &mut [f32; B])) -> f32 {
    let mut values = [0.0_f32; B];
    row.chunks_exact(A)
        // `chunks_exact(A)` yields exactly `A` bytes, so the conversion always succeeds.
        .filter_map(|block| <&[u8; A]>::try_from(block).ok())
        .zip(x.chunks_exact(B))
        .map(|(block, xs)| {
            decode(block, &mut values);
            values.iter().zip(xs).map(|(v, x)| v * x).sum::<f32>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_before_work() {
        let mut out = [0.0_f32; 32];
        assert_eq!(
            dequantize(DType::Q4_0, &[0; 17], &mut out),
            Err(QuantError::ByteLength { dtype: DType::Q4_0, elems: 32, expected: 18, actual: 17 })
        );
        assert_eq!(
            dequantize(DType::Q4_0, &[0; 18], &mut out[..31]),
            Err(QuantError::PartialBlock { dtype: DType::Q4_0, elems: 31, block_len: 32 })
        );
        assert_eq!(quantize(DType::I32, &[0.0; 4], &mut [0; 16]), Err(QuantError::Unsupported { dtype: DType::I32 }));
        assert_eq!(
            dot_row(DType::Q6K, &[0; 210], &[0.0; 255]),
            Err(QuantError::PartialBlock { dtype: DType::Q6K, elems: 255, block_len: 256 })
        );
    }

    #[test]
    fn errors_read_as_one_line() {
        let e = QuantError::ByteLength { dtype: DType::Q8_0, elems: 64, expected: 68, actual: 70 };
        assert_eq!(e.to_string(), "64 q8_0 elements take 68 bytes, but the buffer holds 70");
    }

    #[test]
    fn only_i32_lacks_a_codec() {
        for dtype in DType::ALL {
            assert_eq!(can_quantize(dtype), dtype != DType::I32, "{dtype}");
        }
    }

    #[test]
    fn empty_input_is_fine() {
        for dtype in DType::ALL.into_iter().filter(|&d| can_quantize(d)) {
            assert_eq!(dequantize(dtype, &[], &mut []), Ok(()));
            assert_eq!(quantize(dtype, &[], &mut []), Ok(()));
            assert_eq!(dot_row(dtype, &[], &[]), Ok(0.0));
        }
    }
}
