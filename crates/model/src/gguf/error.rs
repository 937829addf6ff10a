//! Everything that can go wrong reading or writing GGUF.
//!
//! Each variant renders as one line that names the problem, the metadata key or tensor it
//! concerns and, when the error comes from parsing, the byte offset in the file where the
//! bad field starts, so that a hex dump of the file confirms the diagnosis.

use std::io;
use std::path::PathBuf;

/// An error reading, validating or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The output of the writer failed.
    #[error("writing GGUF failed: {0}")]
    Write(#[source] io::Error),
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic is {found}, expected \"GGUF\"")]
    BadMagic {
        /// The bytes found, escaped.
        found: String,
    },
    /// A version other than 2 or 3.
    #[error("GGUF version {version} is not supported (only versions 2 and 3 are)")]
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// The version field reads as a small number only when byte-swapped.
    #[error(
        "GGUF file is big-endian (version field {raw:#010x} is version {version} byte-swapped); \
         only little-endian GGUF is supported"
    )]
    BigEndian {
        /// The version field as read little-endian.
        raw: u32,
        /// The version it encodes big-endian.
        version: u32,
    },
    /// A field runs past the end of the file.
    #[error("file truncated at byte {offset}: {what} needs {needed} bytes but only {remaining} remain")]
    Truncated {
        /// Where the field starts.
        offset: u64,
        /// What was being read.
        what: String,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file.
        remaining: u64,
    },
    /// A count or length that the rest of the file cannot possibly hold.
    #[error(
        "{what} at byte {offset} is {count}, which cannot fit in the {remaining} remaining bytes \
         (each entry needs at least {min_size})"
    )]
    CountTooLarge {
        /// Where the count field starts.
        offset: u64,
        /// What is counted.
        what: String,
        /// The count read.
        count: u64,
        /// The smallest encoding of one entry.
        min_size: u64,
        /// Bytes left in the file after the count.
        remaining: u64,
    },
    /// A string length that the rest of the file cannot hold.
    #[error("{what}: string length {len} at byte {offset} exceeds the {remaining} remaining bytes")]
    StringTooLong {
        /// Where the length field starts.
        offset: u64,
        /// Which string.
        what: String,
        /// The length read.
        len: u64,
        /// Bytes left in the file after the length field.
        remaining: u64,
    },
    /// A string that is not UTF-8.
    #[error("invalid UTF-8 in {what} at byte {offset}")]
    InvalidUtf8 {
        /// Where the string's bytes start.
        offset: u64,
        /// Which string (a key, a key's value, a tensor name).
        what: String,
    },
    /// A metadata value type id outside the GGUF spec.
    #[error("metadata key {key}: unknown value type {type_id} at byte {offset}")]
    UnknownValueType {
        /// Where the type field starts.
        offset: u64,
        /// The key whose value it is.
        key: String,
        /// The type id read.
        type_id: u32,
    },
    /// Arrays of arrays nested too deep.
    #[error("metadata key {key}: arrays nested deeper than {max} levels at byte {offset}")]
    ArrayTooDeep {
        /// Where the too-deep array starts.
        offset: u64,
        /// The key.
        key: String,
        /// The nesting limit.
        max: usize,
    },
    /// A bool byte other than 0 or 1.
    #[error("metadata key {key}: invalid bool byte {value} at byte {offset} (must be 0 or 1)")]
    InvalidBool {
        /// Where the byte is.
        offset: u64,
        /// The key.
        key: String,
        /// The byte read.
        value: u8,
    },
    /// The same metadata key twice.
    #[error("duplicate metadata key {key}")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// `general.alignment` that is zero or not a power of two.
    #[error("general.alignment is {value}; it must be a nonzero power of two")]
    BadAlignment {
        /// The alignment given.
        value: u64,
    },
    /// More than four dimensions.
    #[error("tensor {tensor}: {n_dims} dimensions; GGUF allows at most 4")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// The dimension count read.
        n_dims: u64,
    },
    /// A dimension of size zero.
    #[error("tensor {tensor}: dimension {axis} (ne{axis}) is 0")]
    ZeroDim {
        /// The tensor.
        tensor: String,
        /// The axis, ggml order (0 is innermost).
        axis: usize,
    },
    /// The element count or byte size does not fit in 63 bits.
    #[error("tensor {tensor}: element count or byte size of dims {dims:?} overflows")]
    SizeOverflow {
        /// The tensor.
        tensor: String,
        /// Its dims, ne0 first.
        dims: Vec<u64>,
    },
    /// A ggml type id that ggml does not define.
    #[error("tensor {tensor}: unknown ggml type id {type_id} at byte {offset}")]
    UnknownGgmlType {
        /// Where the type field is.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The type id read.
        type_id: u32,
    },
    /// The innermost dimension is not a whole number of blocks.
    #[error("tensor {tensor}: ne0 = {ne0} is not a multiple of the {ggml_type} block length {block_len}")]
    NotBlockMultiple {
        /// The tensor.
        tensor: String,
        /// Its innermost dimension.
        ne0: u64,
        /// Its type's name.
        ggml_type: &'static str,
        /// Its type's block length.
        block_len: u64,
    },
    /// A data offset that is not a multiple of the alignment.
    #[error("tensor {tensor}: data offset {offset} is misaligned (alignment is {alignment})")]
    MisalignedOffset {
        /// The tensor.
        tensor: String,
        /// Its offset within the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// Tensor data that does not lie inside the data section.
    #[error(
        "tensor {tensor}: data at offset {offset} with size {size} is out of range \
         (the data section holds {data_len} bytes)"
    )]
    TensorOutOfRange {
        /// The tensor.
        tensor: String,
        /// Its offset within the data section.
        offset: u64,
        /// Its byte size.
        size: u64,
        /// Bytes in the data section.
        data_len: u64,
    },
    /// Two tensors whose data overlap.
    #[error("tensors {first} and {second} overlap in the data section")]
    TensorOverlap {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },
    /// The same tensor name twice.
    #[error("duplicate tensor name {tensor}")]
    DuplicateTensor {
        /// The name.
        tensor: String,
    },
    /// A tensor whose ggml type apr-ir cannot compute with.
    #[error("tensor {tensor} has type {ggml_type}, which apr-ir does not support")]
    UnsupportedType {
        /// The tensor.
        tensor: String,
        /// Its type's name.
        ggml_type: &'static str,
    },
    /// A tensor name that the file does not have.
    #[error("no tensor named {tensor}")]
    MissingTensor {
        /// The name asked for.
        tensor: String,
    },
    /// A metadata key that the file does not have.
    #[error("metadata key {key} is missing")]
    MissingKey {
        /// The key asked for.
        key: String,
    },
    /// A metadata value of another type than the one asked for.
    #[error("metadata key {key} has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the caller asked for.
        expected: &'static str,
        /// What the file holds.
        found: String,
    },
    /// A metadata value outside the range of the type asked for.
    #[error("metadata key {key}: value {value} does not fit in {target}")]
    OutOfRange {
        /// The key (with `[i]` for an array element).
        key: String,
        /// The value, printed.
        value: String,
        /// The type asked for.
        target: &'static str,
    },
    /// The writer was given a tensor other than the next one planned.
    #[error("tensor {tensor} written out of order: expected {expected}")]
    TensorOrder {
        /// The name given.
        tensor: String,
        /// The name (or state) expected.
        expected: String,
    },
    /// The writer was given the wrong number of bytes for a tensor.
    #[error("tensor {tensor}: got {got} bytes, expected {expected}")]
    TensorSize {
        /// The tensor.
        tensor: String,
        /// Bytes given so far.
        got: u64,
        /// Bytes its dims and type need.
        expected: u64,
    },
    /// `finish` before every planned tensor was written.
    #[error("{missing} planned tensor(s) were not written, starting with {next}")]
    MissingTensors {
        /// How many are missing.
        missing: usize,
        /// The first missing one.
        next: String,
    },
}
