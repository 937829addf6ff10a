//! The safetensors header: dtypes, tensor entries and their validation.
//!
//! The header is JSON written by whoever made the file, so nothing in it is trusted: names
//! must be unique (the JSON is read entry by entry, so a repeated key is seen rather than
//! silently overwritten), every `[begin, end)` range must lie inside the data section and
//! span exactly `numel * bits / 8` bytes for its dtype and shape (checked arithmetic), and
//! no two non-empty ranges may overlap. Dtypes are kept as written; whether apr-ir can
//! compute with one is asked only when that tensor's data is requested.

use super::{SafeTensorsError, MAX_HEADER_LEN};
use apr_ir::DType;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// A safetensors dtype, as named in the header. Unknown names are kept, not rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SafeDType {
    Bool,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
    F4,
    F6E2M3,
    F6E3M2,
    /// A name this reader does not know; its size cannot be checked.
    Unknown(String),
}

/// (variant, header name, bits per element) for every known dtype.
const SAFE_DTYPES: [(SafeDType, &str, u64); 20] = [
    (SafeDType::Bool, "BOOL", 8),
    (SafeDType::U8, "U8", 8),
    (SafeDType::I8, "I8", 8),
    (SafeDType::F8E5M2, "F8_E5M2", 8),
    (SafeDType::F8E4M3, "F8_E4M3", 8),
    (SafeDType::F8E8M0, "F8_E8M0", 8),
    (SafeDType::I16, "I16", 16),
    (SafeDType::U16, "U16", 16),
    (SafeDType::F16, "F16", 16),
    (SafeDType::BF16, "BF16", 16),
    (SafeDType::I32, "I32", 32),
    (SafeDType::U32, "U32", 32),
    (SafeDType::F32, "F32", 32),
    (SafeDType::C64, "C64", 64),
    (SafeDType::F64, "F64", 64),
    (SafeDType::I64, "I64", 64),
    (SafeDType::U64, "U64", 64),
    (SafeDType::F4, "F4", 4),
    (SafeDType::F6E2M3, "F6_E2M3", 6),
    (SafeDType::F6E3M2, "F6_E3M2", 6),
];

impl SafeDType {
    /// The dtype for a header name.
    pub fn from_name(name: &str) -> SafeDType {
        SAFE_DTYPES
            .iter()
            .find(|(_, n, _)| *n == name)
            .map_or_else(|| SafeDType::Unknown(name.to_owned()), |(d, _, _)| d.clone())
    }

    /// The header name (`BF16`).
    pub fn name(&self) -> &str {
        match self {
            SafeDType::Unknown(n) => n,
            known => SAFE_DTYPES.iter().find(|(d, _, _)| d == known).map_or("?", |(_, n, _)| n),
        }
    }

    /// Bits per element, or `None` for an unknown dtype.
    pub fn bits(&self) -> Option<u64> {
        SAFE_DTYPES.iter().find(|(d, _, _)| d == self).map(|&(_, _, b)| b)
    }

    /// The apr-ir dtype, if apr-ir computes with this one.
    pub fn to_dtype(&self) -> Option<DType> {
        match self {
            SafeDType::F32 => Some(DType::F32),
            SafeDType::F16 => Some(DType::F16),
            SafeDType::BF16 => Some(DType::BF16),
            SafeDType::I32 => Some(DType::I32),
            _ => None,
        }
    }
}

impl fmt::Display for SafeDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeTensorInfo {
    name: String,
    dtype: SafeDType,
    shape: Vec<u64>,
    n_elements: u64,
    range: Range<u64>,
}

impl SafeTensorInfo {
    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dtype as written in the header.
    pub fn safe_dtype(&self) -> &SafeDType {
        &self.dtype
    }

    /// The apr-ir dtype, or an error naming the tensor and its dtype.
    pub fn dtype(&self) -> Result<DType, SafeTensorsError> {
        self.dtype.to_dtype().ok_or_else(|| SafeTensorsError::UnsupportedDType {
            tensor: self.name.clone(),
            dtype: self.dtype.name().to_owned(),
        })
    }

    /// The shape, row-major: outermost dimension first (`[rows, cols]`).
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Number of elements (1 for a scalar, 0 if any dimension is 0).
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// The byte range within the data section.
    pub fn data_range(&self) -> Range<u64> {
        self.range.clone()
    }
}

/// A tensor's dtype, shape and bytes, borrowed from a mapped file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorView<'a> {
    /// The element type.
    pub dtype: DType,
    /// Row-major shape, outermost dimension first.
    pub shape: Vec<u64>,
    /// The raw little-endian bytes.
    pub bytes: &'a [u8],
}

/// A parsed and validated safetensors header.
#[derive(Debug, Clone)]
pub struct SafeTensors {
    data_offset: u64,
    data_len: u64,
    tensors: Vec<SafeTensorInfo>,
    by_name: HashMap<String, usize>,
    metadata: Vec<(String, String)>,
}

/// One header entry as written in the JSON.
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header object, entries in file order, duplicates kept for the caller to reject.
struct RawHeader {
    entries: Vec<(String, RawEntry)>,
    metadata: Vec<(String, String)>,
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut h = RawHeader { entries: Vec::new(), metadata: Vec::new() };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        let m: serde_json::Map<String, serde_json::Value> = map.next_value()?;
                        for (k, v) in m {
                            match v {
                                serde_json::Value::String(s) => h.metadata.push((k, s)),
                                other => {
                                    return Err(de::Error::custom(format!(
                                        "__metadata__ value of {k} is {other}, not a string"
                                    )))
                                }
                            }
                        }
                    } else {
                        let entry = map
                            .next_value::<RawEntry>()
                            .map_err(|e| de::Error::custom(format!("tensor {key}: {e}")))?;
                        h.entries.push((key, entry));
                    }
                }
                Ok(h)
            }
        }
        d.deserialize_map(V)
    }
}

impl SafeTensors {
    /// Parses and validates the header of a whole safetensors file held in `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<SafeTensors, SafeTensorsError> {
        let file_len = bytes.len() as u64;
        let (len_bytes, rest) = bytes.split_first_chunk::<8>().ok_or(SafeTensorsError::TooShort { len: file_len })?;
        let len = u64::from_le_bytes(*len_bytes);
        if len > MAX_HEADER_LEN {
            return Err(SafeTensorsError::HeaderTooLarge { len, max: MAX_HEADER_LEN });
        }
        let available = rest.len() as u64;
        let (json, data) = rest
            .split_at_checked(usize::try_from(len).unwrap_or(usize::MAX))
            .ok_or(SafeTensorsError::HeaderPastEnd { len, available })?;
        let raw: RawHeader = serde_json::from_slice(json).map_err(SafeTensorsError::BadHeader)?;
        let data_len = data.len() as u64;

        let mut tensors = Vec::with_capacity(raw.entries.len());
        let mut by_name = HashMap::with_capacity(raw.entries.len());
        for (name, e) in raw.entries {
            if by_name.contains_key(&name) {
                return Err(SafeTensorsError::DuplicateTensor { tensor: name });
            }
            let info = check_entry(name, e, data_len)?;
            by_name.insert(info.name.clone(), tensors.len());
            tensors.push(info);
        }
        check_overlap(&tensors)?;
        Ok(SafeTensors { data_offset: 8 + len, data_len, tensors, by_name, metadata: raw.metadata })
    }

    /// The tensors in header order.
    pub fn tensors(&self) -> &[SafeTensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&SafeTensorInfo> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The `__metadata__` string pairs, in header order.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// Byte offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Bytes in the data section.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The tensor named `name` viewed in `file`, the bytes this header was parsed from.
    /// Errors if the tensor is absent or its dtype is not one apr-ir computes with.
    pub fn view<'a>(&self, file: &'a [u8], name: &str) -> Result<TensorView<'a>, SafeTensorsError> {
        let info = self.tensor(name).ok_or_else(|| SafeTensorsError::MissingTensor { tensor: name.to_owned() })?;
        let dtype = info.dtype()?;
        let out_of_range = || SafeTensorsError::OffsetsOutOfRange {
            tensor: name.to_owned(),
            begin: info.range.start,
            end: info.range.end,
            data_len: (file.len() as u64).saturating_sub(self.data_offset),
        };
        let start = usize::try_from(self.data_offset + info.range.start).map_err(|_| out_of_range())?;
        let end = usize::try_from(self.data_offset + info.range.end).map_err(|_| out_of_range())?;
        let bytes = file.get(start..end).ok_or_else(out_of_range)?;
        Ok(TensorView { dtype, shape: info.shape.clone(), bytes })
    }
}

/// Checks one entry's shape, range and size.
fn check_entry(name: String, e: RawEntry, data_len: u64) -> Result<SafeTensorInfo, SafeTensorsError> {
    let [begin, end] = e.data_offsets;
    let dtype = SafeDType::from_name(&e.dtype);
    let Some(n_elements) = e.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)) else {
        return Err(SafeTensorsError::ShapeOverflow { tensor: name, shape: e.shape });
    };
    if begin > end || end > data_len {
        return Err(SafeTensorsError::OffsetsOutOfRange { tensor: name, begin, end, data_len });
    }
    if let Some(bits) = dtype.bits() {
        let Some(total_bits) = n_elements.checked_mul(bits) else {
            return Err(SafeTensorsError::ShapeOverflow { tensor: name, shape: e.shape });
        };
        if !total_bits.is_multiple_of(8) {
            return Err(SafeTensorsError::PartialByte { tensor: name, dtype: e.dtype, shape: e.shape });
        }
        let (expected, got) = (total_bits / 8, end - begin);
        if expected != got {
            return Err(SafeTensorsError::SizeMismatch { tensor: name, dtype: e.dtype, shape: e.shape, expected, got });
        }
    }
    Ok(SafeTensorInfo { name, dtype, shape: e.shape, n_elements, range: begin..end })
}

/// No two non-empty byte ranges share a byte.
fn check_overlap(tensors: &[SafeTensorInfo]) -> Result<(), SafeTensorsError> {
    let mut order: Vec<&SafeTensorInfo> = tensors.iter().filter(|t| !t.range.is_empty()).collect();
    order.sort_by_key(|t| (t.range.start, t.range.end));
    let mut reach: Option<&SafeTensorInfo> = None;
    for t in order {
        if let Some(prev) = reach {
            if t.range.start < prev.range.end {
                return Err(SafeTensorsError::Overlap { first: prev.name.clone(), second: t.name.clone() });
            }
        }
        if reach.is_none_or(|p| t.range.end > p.range.end) {
            reach = Some(t);
        }
    }
    Ok(())
}
