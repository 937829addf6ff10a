//! GGUF: the single-file model format of ggml and llama.cpp.
//!
//! A GGUF file is a header followed by one data section. The header carries ordered,
//! typed metadata (architecture, hyper-parameters, tokenizer) and a table of tensors, each
//! with its dims, ggml type and offset into the data section. Only the header is parsed;
//! tensor bytes stay in the memory map and are borrowed on request, so opening a 7B model
//! reads a few megabytes, never the weights.
//!
//! Model files come from anywhere, so the reader assumes the worst: [`Gguf::parse`] either
//! returns a header whose every tensor lies aligned, in bounds and disjoint inside the data
//! section, or an error that names the field, the key or tensor, and the byte offset. It
//! never panics, never allocates more than the input justifies and never loops longer than
//! the input is long (see `read`).
//!
//! The writer ([`GgufWriter`]) streams: the header goes out first, then each tensor's bytes
//! in the planned order, so multi-gigabyte synthetic models never sit in memory whole. It
//! writes version 3 and reads back to exactly the metadata and tensors it was given.

mod error;
mod metadata;
mod read;
mod tensor;
mod types;
mod value;
mod write;

pub use error::GgufError;
pub use metadata::{FromValue, Metadata};
pub use read::{alignment_of, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH};
pub use tensor::{TensorInfo, MAX_DIMS};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use write::{write_gguf, write_gguf_file, GgufWriter, TensorSpec, GGUF_WRITE_VERSION};

use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A parsed and validated GGUF header.
#[derive(Debug, Clone)]
pub struct Gguf {
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    data_len: u64,
}

impl Gguf {
    /// Parses the header of a whole GGUF file held in `bytes` and checks every tensor's
    /// placement against the data section that `bytes` contains.
    pub fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
        read::parse(bytes)
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The tensor named `name`, or [`GgufError::MissingTensor`].
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor { tensor: name.to_owned() })
    }

    /// `general.architecture` (`llama`, `qwen2`), which prefixes the model's own keys.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.metadata.get_str("general.architecture")
    }

    /// The alignment of the data section and of every tensor offset.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file (the aligned end of the header).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Bytes in the data section (to the end of the file).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Byte range of a tensor's data within the whole file.
    pub fn file_range(&self, info: &TensorInfo) -> Range<u64> {
        let start = self.data_offset.saturating_add(info.offset());
        start..start.saturating_add(info.n_bytes())
    }

    /// A tensor's bytes within `file`, the bytes this header was parsed from; `None` if the
    /// range is not inside `file` (only possible for an `info` or `file` from elsewhere).
    pub fn tensor_data<'a>(&self, file: &'a [u8], info: &TensorInfo) -> Option<&'a [u8]> {
        let r = self.file_range(info);
        file.get(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?)
    }
}

/// A memory-mapped GGUF file (or one built into the binary) with its parsed header.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Backing,
    gguf: Gguf,
}

/// Where a file's bytes live.
#[derive(Debug)]
enum Backing {
    Map(Mmap),
    Static(&'static [u8]),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Static(s) => s,
        }
    }
}

impl GgufFile {
    /// Maps the file and parses its header.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process. Another process that
        // truncates or rewrites the file while it is mapped can change or unmap the bytes
        // under us; like every mmap-based model loader, we accept that risk for model files.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let gguf = Gguf::parse(&map)?;
        tracing::debug!(
            path = %path.display(),
            version = gguf.version(),
            tensors = gguf.tensors().len(),
            metadata = gguf.metadata().len(),
            "opened GGUF"
        );
        Ok(GgufFile { path, map: Backing::Map(map), gguf })
    }

    /// A GGUF file held in memory for the life of the program (a model built into the
    /// binary); `name` stands in for its path in messages.
    pub fn from_static(name: &str, bytes: &'static [u8]) -> Result<GgufFile, GgufError> {
        let gguf = Gguf::parse(bytes)?;
        Ok(GgufFile { path: PathBuf::from(name), map: Backing::Static(bytes), gguf })
    }

    /// The parsed header.
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// A tensor's bytes. `info` must come from this file's header (then the range was
    /// checked at open and is always in bounds); for any other `info` whose range is out of
    /// bounds the result is empty.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        self.gguf.tensor_data(&self.map, info).unwrap_or_default()
    }

    /// The tensor named `name` and its bytes.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self.gguf.require_tensor(name)?;
        Ok((info, self.tensor_data(info)))
    }
}
