//! Load-time re-encodings of weight matrices ([`repack`]): the same values in a layout whose
//! kernel only widens bytes (see the module docs of `kernels`), and [`Repacked`], the matrix
//! so re-encoded with its products.

use super::{i8f32, row_bytes, run, Format, Simd};
use apr_ir::DType;
use apr_ir_model::quant::QuantError;
use rayon::prelude::*;

/// Load-time re-encodings of weight rows that hold exactly the same values in a layout whose
/// kernel is faster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Blocks of 32 signed codes with an f32 scale (`d: f32 | q: [i8; 32]`, 36 bytes, value
    /// `d·q`): `q5_0` rows (22-byte blocks) re-encoded, `q − 16` as a byte and the f16 scale
    /// widened. The kernel widens the codes straight from memory instead of assembling them
    /// from nibbles and a bit plane, so it runs about as fast as `q8_0` per block
    /// (`kernels/i8f32.rs`), at 36/22 of the file's bytes.
    I8F32,
    /// Blocks of 32 signed codes with two f32 scales, one per 16 (`s0: f32 | s1: f32 |
    /// q: [i8; 32]`, 40 bytes): `q6_k` rows (210 bytes per 256 elements) re-encoded, `q − 32`
    /// as a byte and `d·sc` per sub-block (exact). The kernel skips assembling 6-bit codes
    /// from nibbles and bit pairs, at 320/210 of the file's bytes.
    I8F32x16,
}

impl Layout {
    /// Bytes per 32-element block.
    pub(super) fn block_bytes(self) -> usize {
        match self {
            Layout::I8F32 => i8f32::BLOCK,
            Layout::I8F32x16 => i8f32::x16::BLOCK,
        }
    }
}

/// A weight matrix re-encoded by [`repack`]: `n_rows` rows of `k` elements in [`Layout`].
#[derive(Debug, Clone, PartialEq)]
pub struct Repacked {
    layout: Layout,
    dtype: DType,
    n_rows: usize,
    k: usize,
    bytes: Vec<u8>,
}

impl Repacked {
    /// The file type whose rows this holds.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// The re-encoded bytes (what a product reads).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes of one re-encoded row.
    pub fn row_bytes(&self) -> usize {
        self.bytes.len() / self.n_rows.max(1)
    }

    /// [`super::matmul`] over rows `first..first + n` of this matrix (`n = out.len() / m`).
    pub fn matmul_rows(&self, first: usize, xs: &[f32], out: &mut [f32]) -> Result<(), QuantError> {
        self.matmul_rows_with(Simd::detect(), first, xs, out)
    }

    /// [`Repacked::matmul_rows`] with a chosen implementation.
    pub fn matmul_rows_with(&self, simd: Simd, first: usize, xs: &[f32], out: &mut [f32]) -> Result<(), QuantError> {
        let m = xs.len().checked_div(self.k).unwrap_or(0).max(1);
        let n = out.len() / m;
        let rb = self.row_bytes();
        let w =
            first.checked_add(n).filter(|&end| end <= self.n_rows).map(|end| &self.bytes[first * rb..end * rb]).ok_or(
                QuantError::ByteLength {
                    dtype: self.dtype,
                    elems: n.saturating_mul(self.k),
                    expected: first.saturating_add(n).saturating_mul(rb),
                    actual: self.bytes.len(),
                },
            )?;
        run(simd, Format::Repacked(self.layout), w, n, self.k, xs, out)
    }

    /// Row `r`'s values (exactly those of the file's row).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<(), QuantError> {
        let rb = self.row_bytes();
        let row = self.bytes.get(r * rb..(r + 1) * rb).ok_or(QuantError::ByteLength {
            dtype: self.dtype,
            elems: self.k,
            expected: (r + 1) * rb,
            actual: self.bytes.len(),
        })?;
        match self.layout {
            Layout::I8F32 => i8f32::dequantize(row, out),
            Layout::I8F32x16 => i8f32::x16::dequantize(row, out),
        }
        Ok(())
    }
}

/// Re-encodes whole rows of a file type (`src`) into a [`Layout`] (`dst`).
type Convert = fn(&[u8], &mut [u8]);

/// The bytes [`repack`] would produce for `n_rows` rows of `k` elements of `dtype`, without
/// producing them; `None` where `dtype` has no re-encoding (or the size overflows).
pub fn repacked_len(dtype: DType, n_rows: usize, k: usize) -> Option<usize> {
    let layout = match dtype {
        DType::Q5_0 => Layout::I8F32,
        DType::Q6K => Layout::I8F32x16,
        _ => return None,
    };
    Format::Repacked(layout).row_bytes(k).ok()?.checked_mul(n_rows)
}

/// Re-encode `n_rows` rows of `k` elements of `dtype` into the layout the fast kernels prefer,
/// or `None` where the file's own layout is already the fast one: `q5_0` becomes
/// [`Layout::I8F32`], `q6_k` [`Layout::I8F32x16`]. The values are exactly the same, and the
/// AVX2 products bit-for-bit those of the file-layout kernels, which sum in the same order.
pub fn repack(dtype: DType, bytes: &[u8], n_rows: usize, k: usize) -> Result<Option<Repacked>, QuantError> {
    let (layout, convert): (Layout, Convert) = match dtype {
        DType::Q5_0 => (Layout::I8F32, i8f32::from_q5_0),
        DType::Q6K => (Layout::I8F32x16, i8f32::x16::from_q6_k),
        DType::F32
        | DType::F16
        | DType::BF16
        | DType::I32
        | DType::Q8_0
        | DType::Q4_0
        | DType::Q4_1
        | DType::Q5_1
        | DType::Q4K
        | DType::Q5K => return Ok(None),
    };
    let rb = row_bytes(dtype, k)?;
    if n_rows.checked_mul(rb) != Some(bytes.len()) {
        return Err(QuantError::ByteLength {
            dtype,
            elems: n_rows.saturating_mul(k),
            expected: n_rows.saturating_mul(rb),
            actual: bytes.len(),
        });
    }
    let out_rb = Format::Repacked(layout).row_bytes(k)?;
    let mut out = Vec::new();
    out.try_reserve_exact(n_rows.saturating_mul(out_rb)).map_err(|_| QuantError::ByteLength {
        dtype,
        elems: n_rows.saturating_mul(k),
        expected: n_rows.saturating_mul(out_rb),
        actual: 0,
    })?;
    out.resize(n_rows * out_rb, 0);
    out.par_chunks_mut(out_rb.max(1) * 64)
        .zip(bytes.par_chunks(rb.max(1) * 64))
        .for_each(|(dst, src)| convert(src, dst));
    Ok(Some(Repacked { layout, dtype, n_rows, k, bytes: out }))
}
