//! safetensors: the tensor file format of Hugging Face checkpoints.
//!
//! A safetensors file is an 8-byte little-endian header length, a JSON header, then one
//! data section. The header maps each tensor name to its dtype, its shape (row-major,
//! outermost dimension first) and its `[begin, end)` byte range within the data section; an
//! optional `__metadata__` entry maps strings to strings. A Hugging Face model directory
//! ([`HfDir`]) is a `config.json` plus one or more such files ("shards"), tied together by
//! `model.safetensors.index.json` when there are several.
//!
//! As with GGUF, the file is untrusted: [`SafeTensors::parse`] checks the header length
//! against the file and a cap, rejects duplicate names, checks every byte range against the
//! data section and against the dtype and shape (with checked arithmetic), and rejects
//! overlapping ranges. A dtype apr-ir cannot compute with (`I64`, `F8_E4M3`, …) does not
//! fail the parse, so `inspect` can list every tensor; it fails only when that tensor's data
//! is asked for.

mod header;
mod hf;

pub use header::{SafeDType, SafeTensorInfo, SafeTensors, TensorView};
pub use hf::{HfDir, CONFIG_FILE, INDEX_FILE};

use memmap2::Mmap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Largest JSON header accepted, in bytes. Real headers are a few megabytes at most.
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;

/// An error reading a safetensors file or a Hugging Face model directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SafeTensorsError {
    /// A file could not be opened, listed or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// An error inside one shard of a directory, with the shard's path.
    #[error("{path}: {source}")]
    InFile {
        /// The shard.
        path: PathBuf,
        /// What went wrong in it.
        source: Box<SafeTensorsError>,
    },
    /// Fewer than 8 bytes.
    #[error("file is {len} bytes; a safetensors file starts with an 8-byte header length")]
    TooShort {
        /// The file length.
        len: u64,
    },
    /// A header length over [`MAX_HEADER_LEN`].
    #[error("header length {len} exceeds the limit of {max} bytes")]
    HeaderTooLarge {
        /// The length read.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A header length that runs past the end of the file.
    #[error("header length {len} runs past the end of the file ({available} bytes follow the length field)")]
    HeaderPastEnd {
        /// The length read.
        len: u64,
        /// Bytes after the length field.
        available: u64,
    },
    /// The header is not the JSON object the format requires.
    #[error("bad JSON header: {0}")]
    BadHeader(#[source] serde_json::Error),
    /// The same tensor name twice in one header.
    #[error("duplicate tensor name {tensor}")]
    DuplicateTensor {
        /// The name.
        tensor: String,
    },
    /// A shape whose element count or byte size overflows.
    #[error("tensor {tensor}: element count of shape {shape:?} overflows")]
    ShapeOverflow {
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<u64>,
    },
    /// A byte range that is reversed or leaves the data section.
    #[error(
        "tensor {tensor}: data_offsets [{begin}, {end}] are out of range (the data section holds {data_len} bytes)"
    )]
    OffsetsOutOfRange {
        /// The tensor.
        tensor: String,
        /// Range start.
        begin: u64,
        /// Range end.
        end: u64,
        /// Bytes in the data section.
        data_len: u64,
    },
    /// A byte range whose length does not match the dtype and shape.
    #[error(
        "tensor {tensor}: data size mismatch: {dtype} {shape:?} needs {expected} bytes but data_offsets span {got}"
    )]
    SizeMismatch {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: String,
        /// Its shape.
        shape: Vec<u64>,
        /// Bytes the dtype and shape need.
        expected: u64,
        /// Bytes the range spans.
        got: u64,
    },
    /// A sub-byte dtype and shape that do not fill whole bytes.
    #[error("tensor {tensor}: {dtype} {shape:?} does not fill a whole number of bytes")]
    PartialByte {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: String,
        /// Its shape.
        shape: Vec<u64>,
    },
    /// Two tensors whose byte ranges overlap.
    #[error("tensors {first} and {second} overlap in the data section")]
    Overlap {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },
    /// A dtype apr-ir cannot compute with, reported when the tensor is requested.
    #[error("tensor {tensor} has dtype {dtype}, which apr-ir does not support")]
    UnsupportedDType {
        /// The tensor.
        tensor: String,
        /// Its dtype as written in the header.
        dtype: String,
    },
    /// A tensor name that is not there.
    #[error("no tensor named {tensor}")]
    MissingTensor {
        /// The name asked for.
        tensor: String,
    },
    /// A model directory without `config.json`.
    #[error("{dir} has no config.json")]
    MissingConfig {
        /// The directory.
        dir: PathBuf,
    },
    /// `config.json` or the index is not valid JSON (of the expected form).
    #[error("{path}: invalid JSON: {reason}")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A shard name in the index that is not a plain file name.
    #[error("index names shard {shard:?}, which is not a plain file name in the model directory")]
    BadShardName {
        /// The name.
        shard: String,
    },
    /// A shard the index names that does not exist.
    #[error("shard {path} named by the index does not exist")]
    MissingShard {
        /// The shard's path.
        path: PathBuf,
    },
    /// A directory with neither an index nor any `.safetensors` file.
    #[error("{dir} has no model.safetensors.index.json and no .safetensors files")]
    NoShards {
        /// The directory.
        dir: PathBuf,
    },
    /// The same tensor in two shards.
    #[error("tensor {tensor} is in two shards: {first} and {second}")]
    TensorInTwoShards {
        /// The tensor.
        tensor: String,
        /// One shard.
        first: String,
        /// The other.
        second: String,
    },
    /// The index places a tensor in a shard that does not hold it.
    #[error("index places tensor {tensor} in {shard}, which does not contain it")]
    NotInShard {
        /// The tensor.
        tensor: String,
        /// The shard the index names.
        shard: String,
    },
}

/// A memory-mapped safetensors file with its parsed header.
#[derive(Debug)]
pub struct SafeTensorsFile {
    path: PathBuf,
    map: Mmap,
    header: SafeTensors,
}

impl SafeTensorsFile {
    /// Maps the file and parses its header; parse errors carry the path.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensorsFile, SafeTensorsError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| SafeTensorsError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: a read-only private map; a concurrent writer truncating the file could
        // change the bytes under us, a risk every mmap-based model loader accepts.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = SafeTensors::parse(&map)
            .map_err(|e| SafeTensorsError::InFile { path: path.clone(), source: Box::new(e) })?;
        Ok(SafeTensorsFile { path, map, header })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header.
    pub fn header(&self) -> &SafeTensors {
        &self.header
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, SafeTensorsError> {
        self.header.view(&self.map, name)
    }
}
