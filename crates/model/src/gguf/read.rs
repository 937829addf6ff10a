//! Parsing a GGUF header from untrusted bytes.
//!
//! The file is treated as hostile: every length, count and offset is checked against the
//! bytes that remain *before* anything is allocated or looped over, so a 40-byte file that
//! claims 2^60 metadata entries fails at once instead of allocating. Each count is bounded
//! by `remaining / min_size`, where `min_size` is the smallest possible encoding of one
//! entry; pre-allocation is further capped, so memory grows only with bytes actually
//! parsed. Nesting of arrays is bounded ([`MAX_ARRAY_DEPTH`]), so recursion is too. Work is
//! linear in the header size (plus a sort of the tensor table), so no input hangs.
//!
//! Layout (v2 and v3; v1 used 32-bit counts and is refused): magic `GGUF`, u32 version,
//! u64 tensor count, u64 metadata count, the metadata entries (string key, u32 value type,
//! value), the tensor-info records (string name, u32 n_dims, u64 dims, u32 ggml type, u64
//! offset), padding to the alignment, then the data section. All little-endian.

use super::error::GgufError;
use super::metadata::Metadata;
use super::tensor::TensorInfo;
use super::types::GgmlType;
use super::value::{Array, Value, ValueType};
use super::Gguf;
use std::collections::HashMap;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// How deep arrays of arrays may nest (an array of scalars has depth 1).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Smallest metadata entry: empty key (u64 length), value type, one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Smallest tensor-info record: empty name, n_dims = 0, type, offset.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 4 + 8;
/// Largest up-front reservation for a string array or the tables, in elements.
const PREALLOC_CAP: usize = 4096;

/// A read position in the file, with bounds-checked reads.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos.min(self.bytes.len())) as u64
    }

    /// The next `n` bytes, or [`GgufError::Truncated`] naming `what`.
    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(GgufError::Truncated { offset: self.offset(), what: what(), needed: n, remaining });
        }
        // n <= remaining <= usize::MAX, so the cast and the addition are exact.
        let end = self.pos + n as usize;
        let slice = self.bytes.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 length, then that many UTF-8 bytes.
    fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len_offset = self.offset();
        let len = self.u64(|| format!("length of {}", what()))?;
        let remaining = self.remaining();
        if len > remaining {
            return Err(GgufError::StringTooLong { offset: len_offset, what: what(), len, remaining });
        }
        let start = self.offset();
        let raw = self.take(len, &what)?;
        std::str::from_utf8(raw).map(str::to_owned).map_err(|_| GgufError::InvalidUtf8 { offset: start, what: what() })
    }

    /// A count of entries each at least `min_size` bytes, checked against what remains.
    fn count(&mut self, min_size: u64, what: impl Fn() -> String) -> Result<usize, GgufError> {
        let offset = self.offset();
        let count = self.u64(&what)?;
        let remaining = self.remaining();
        match count.checked_mul(min_size) {
            Some(need) if need <= remaining => Ok(usize::try_from(count).unwrap_or(usize::MAX)),
            _ => Err(GgufError::CountTooLarge { offset, what: what(), count, min_size, remaining }),
        }
    }
}

/// Reads fixed-size little-endian elements of an array whose count was already checked.
fn fixed<const N: usize, T>(
    c: &mut Cursor<'_>,
    n: usize,
    key: &str,
    conv: fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    let raw = c.take((n as u64).saturating_mul(N as u64), || format!("elements of array {key}"))?;
    Ok(raw
        .chunks_exact(N)
        .map(|ch| {
            let mut b = [0u8; N];
            b.copy_from_slice(ch);
            conv(b)
        })
        .collect())
}

fn read_bool(c: &mut Cursor<'_>, key: &str) -> Result<bool, GgufError> {
    let offset = c.offset();
    match c.array::<1>(|| format!("value of key {key}"))? {
        [0] => Ok(false),
        [1] => Ok(true),
        [value] => Err(GgufError::InvalidBool { offset, key: key.to_owned(), value }),
    }
}

fn read_value_type(c: &mut Cursor<'_>, key: &str) -> Result<ValueType, GgufError> {
    let offset = c.offset();
    let type_id = c.u32(|| format!("value type of key {key}"))?;
    ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType { offset, key: key.to_owned(), type_id })
}

fn read_value(c: &mut Cursor<'_>, ty: ValueType, key: &str) -> Result<Value, GgufError> {
    let what = || format!("value of key {key}");
    Ok(match ty {
        ValueType::U8 => Value::U8(u8::from_le_bytes(c.array(what)?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(c.array(what)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(what)?)),
        ValueType::Bool => Value::Bool(read_bool(c, key)?),
        ValueType::String => Value::String(c.string(what)?),
        ValueType::Array => Value::Array(read_array(c, key, 1)?),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(what)?)),
    })
}

/// An array at nesting level `depth` (1 for a top-level array).
fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array, GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep { offset: c.offset(), key: key.to_owned(), max: MAX_ARRAY_DEPTH });
    }
    let elem = read_value_type(c, key)?;
    let n = c.count(elem.min_size(), || format!("element count of array {key}"))?;
    Ok(match elem {
        ValueType::U8 => Array::U8(fixed(c, n, key, u8::from_le_bytes)?),
        ValueType::I8 => Array::I8(fixed(c, n, key, i8::from_le_bytes)?),
        ValueType::U16 => Array::U16(fixed(c, n, key, u16::from_le_bytes)?),
        ValueType::I16 => Array::I16(fixed(c, n, key, i16::from_le_bytes)?),
        ValueType::U32 => Array::U32(fixed(c, n, key, u32::from_le_bytes)?),
        ValueType::I32 => Array::I32(fixed(c, n, key, i32::from_le_bytes)?),
        ValueType::F32 => Array::F32(fixed(c, n, key, f32::from_le_bytes)?),
        ValueType::U64 => Array::U64(fixed(c, n, key, u64::from_le_bytes)?),
        ValueType::I64 => Array::I64(fixed(c, n, key, i64::from_le_bytes)?),
        ValueType::F64 => Array::F64(fixed(c, n, key, f64::from_le_bytes)?),
        ValueType::Bool => {
            let mut v = Vec::with_capacity(n.min(PREALLOC_CAP));
            for _ in 0..n {
                v.push(read_bool(c, key)?);
            }
            Array::Bool(v)
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(n.min(PREALLOC_CAP));
            for i in 0..n {
                v.push(c.string(|| format!("element {i} of array {key}"))?);
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n.min(PREALLOC_CAP));
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

/// Printable form of the first bytes of a file that is not GGUF.
fn escape(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

/// The alignment a metadata table asks for: `general.alignment` (a u32 power of two) or 32.
pub fn alignment_of(metadata: &Metadata) -> Result<u64, GgufError> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(&Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(a)),
        Some(&Value::U32(a)) => Err(GgufError::BadAlignment { value: u64::from(a) }),
        Some(other) => Err(GgufError::WrongType {
            key: ALIGNMENT_KEY.to_owned(),
            expected: "u32",
            found: other.type_description(),
        }),
    }
}

/// Parses and validates a whole GGUF header; see the module docs.
pub(super) fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.take(4, || "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: escape(magic) });
    }
    let version = c.u32(|| "version".into())?;
    match version {
        2 | 3 => {}
        raw if (1..=3).contains(&raw.swap_bytes()) => {
            return Err(GgufError::BigEndian { raw, version: raw.swap_bytes() })
        }
        v => return Err(GgufError::UnsupportedVersion { version: v }),
    }
    let n_tensors = c.count(MIN_TENSOR_INFO_SIZE, || "tensor count".into())?;
    let n_kv = c.count(MIN_KV_SIZE, || "metadata entry count".into())?;

    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let key = c.string(|| format!("key of metadata entry {i}"))?;
        let ty = read_value_type(&mut c, &key)?;
        let value = read_value(&mut c, ty, &key)?;
        metadata.push(key, value)?;
    }
    let alignment = alignment_of(&metadata)?;

    let mut tensors = Vec::with_capacity(n_tensors.min(PREALLOC_CAP));
    let mut by_name = HashMap::with_capacity(n_tensors.min(PREALLOC_CAP));
    for i in 0..n_tensors {
        let name = c.string(|| format!("name of tensor {i}"))?;
        let n_dims = c.u32(|| format!("dimension count of tensor {name}"))?;
        if n_dims as usize > super::tensor::MAX_DIMS {
            return Err(GgufError::TooManyDims { tensor: name, n_dims: u64::from(n_dims) });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(|| format!("dimension {d} of tensor {name}"))?);
        }
        let type_offset = c.offset();
        let type_id = c.u32(|| format!("type of tensor {name}"))?;
        let Some(ggml_type) = GgmlType::from_id(type_id) else {
            return Err(GgufError::UnknownGgmlType { offset: type_offset, tensor: name, type_id });
        };
        let offset = c.u64(|| format!("data offset of tensor {name}"))?;
        if by_name.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { tensor: name });
        }
        let info = TensorInfo::new(name, dims, ggml_type, offset)?;
        by_name.insert(info.name().to_owned(), tensors.len());
        tensors.push(info);
    }

    let header_len = c.offset();
    let data_offset = header_len.next_multiple_of(alignment);
    let data_len = (bytes.len() as u64).saturating_sub(data_offset);
    check_layout(&tensors, alignment, data_len)?;
    Ok(Gguf { version, metadata, tensors, by_name, alignment, data_offset, data_len })
}

/// Every tensor aligned, inside the data section, and disjoint from every other.
pub(super) fn check_layout(tensors: &[TensorInfo], alignment: u64, data_len: u64) -> Result<(), GgufError> {
    for t in tensors {
        if !t.offset().is_multiple_of(alignment) {
            return Err(GgufError::MisalignedOffset { tensor: t.name().to_owned(), offset: t.offset(), alignment });
        }
        if t.offset().checked_add(t.n_bytes()).is_none_or(|end| end > data_len) {
            return Err(GgufError::TensorOutOfRange {
                tensor: t.name().to_owned(),
                offset: t.offset(),
                size: t.n_bytes(),
                data_len,
            });
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| (t.offset(), t.n_bytes()));
    // The running furthest end, and who reaches it: a tensor starting before it overlaps.
    let mut reach: Option<(u64, &TensorInfo)> = None;
    for t in order {
        if let Some((end, owner)) = reach {
            if t.offset() < end {
                return Err(GgufError::TensorOverlap { first: owner.name().to_owned(), second: t.name().to_owned() });
            }
        }
        let end = t.offset() + t.n_bytes();
        if reach.is_none_or(|(e, _)| end > e) {
            reach = Some((end, t));
        }
    }
    Ok(())
}
