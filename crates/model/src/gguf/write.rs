//! Streaming GGUF writer.
//!
//! The writer plans the whole file up front: from the metadata and the list of tensor
//! specs it computes every tensor's aligned offset, so the header (which holds the offsets)
//! can be written before any tensor data exists. Tensor bytes then arrive one tensor at a
//! time, in plan order, whole or in chunks; each tensor is followed by padding to the
//! alignment, as gguf-py and llama.cpp write it. The writer holds at most one header in
//! memory, so a synthetic 7B model streams to disk without being materialized.
//!
//! Everything the reader would reject is rejected here first (bad alignment, too-deep
//! arrays, bad shapes, duplicate names), so a file the writer finishes always parses back
//! to the same metadata and tensors.

use super::error::GgufError;
use super::metadata::Metadata;
use super::read::{alignment_of, GGUF_MAGIC, MAX_ARRAY_DEPTH};
use super::tensor::TensorInfo;
use super::types::GgmlType;
use super::value::{Array, Value};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The GGUF version the writer produces.
pub const GGUF_WRITE_VERSION: u32 = 3;

/// A tensor to be written: name, dims (ne0 first, as in the file) and ggml type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name.
    pub name: String,
    /// Dims in ggml order, `ne0` (innermost) first.
    pub dims: Vec<u64>,
    /// The storage type.
    pub ggml_type: GgmlType,
}

impl TensorSpec {
    /// A spec; `ggml_type` may be a [`GgmlType`] or an apr-ir `DType`.
    pub fn new(name: impl Into<String>, dims: Vec<u64>, ggml_type: impl Into<GgmlType>) -> Self {
        TensorSpec { name: name.into(), dims, ggml_type: ggml_type.into() }
    }
}

/// Writes one GGUF file to `W`: header at construction, then tensors in plan order.
#[derive(Debug)]
pub struct GgufWriter<W: Write> {
    out: W,
    plan: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
    /// Index in `plan` of the tensor being written or to be written next.
    next: usize,
    /// Bytes of `plan[next]` written so far.
    written: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Plans the file and writes its header (and the padding before the data section).
    pub fn new(mut out: W, metadata: &Metadata, tensors: Vec<TensorSpec>) -> Result<Self, GgufError> {
        let alignment = alignment_of(metadata)?;
        let mut plan = Vec::with_capacity(tensors.len());
        let mut names = HashSet::with_capacity(tensors.len());
        let mut offset = 0u64;
        for spec in tensors {
            if !names.insert(spec.name.clone()) {
                return Err(GgufError::DuplicateTensor { tensor: spec.name });
            }
            let info = TensorInfo::new(spec.name, spec.dims, spec.ggml_type, offset)?;
            offset =
                offset.checked_add(info.n_bytes()).and_then(|end| end.checked_next_multiple_of(alignment)).ok_or_else(
                    || GgufError::SizeOverflow { tensor: info.name().to_owned(), dims: info.dims().to_vec() },
                )?;
            plan.push(info);
        }

        let mut header = Vec::new();
        header.extend_from_slice(&GGUF_MAGIC);
        header.extend_from_slice(&GGUF_WRITE_VERSION.to_le_bytes());
        header.extend_from_slice(&(plan.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata.iter() {
            put_str(&mut header, key);
            if let Value::Array(a) = value {
                if a.depth() > MAX_ARRAY_DEPTH {
                    return Err(GgufError::ArrayTooDeep {
                        offset: header.len() as u64,
                        key: key.to_owned(),
                        max: MAX_ARRAY_DEPTH,
                    });
                }
            }
            header.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut header, value);
        }
        for t in &plan {
            put_str(&mut header, t.name());
            header.extend_from_slice(&(t.dims().len() as u32).to_le_bytes());
            for d in t.dims() {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ggml_type().id().to_le_bytes());
            header.extend_from_slice(&t.offset().to_le_bytes());
        }
        let data_offset = (header.len() as u64).next_multiple_of(alignment);
        header.resize(usize::try_from(data_offset).unwrap_or(header.len()), 0);
        out.write_all(&header).map_err(GgufError::Write)?;
        tracing::debug!(tensors = plan.len(), header_bytes = data_offset, "GGUF header written");
        Ok(GgufWriter { out, plan, alignment, data_offset, next: 0, written: 0 })
    }

    /// The planned tensors, with their data offsets, in the order they must be written.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.plan
    }

    /// The alignment in force (from `general.alignment`, else 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the output.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Writes the next tensor's bytes, all of them at once.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), GgufError> {
        let expected = self.expect(name)?.n_bytes();
        if self.written != 0 || bytes.len() as u64 != expected {
            return Err(GgufError::TensorSize {
                tensor: name.to_owned(),
                got: self.written.saturating_add(bytes.len() as u64),
                expected,
            });
        }
        self.write_tensor_chunk(name, bytes)
    }

    /// Writes part of the next tensor's bytes; the tensor is complete (and padded) once its
    /// chunks add up to its size, and only then may the following tensor start.
    pub fn write_tensor_chunk(&mut self, name: &str, chunk: &[u8]) -> Result<(), GgufError> {
        let expected = self.expect(name)?.n_bytes();
        let got = self.written.saturating_add(chunk.len() as u64);
        if got > expected {
            return Err(GgufError::TensorSize { tensor: name.to_owned(), got, expected });
        }
        self.out.write_all(chunk).map_err(GgufError::Write)?;
        self.written = got;
        if got == expected {
            let pad = expected.next_multiple_of(self.alignment) - expected;
            let zeros = vec![0u8; usize::try_from(pad).unwrap_or(0)];
            self.out.write_all(&zeros).map_err(GgufError::Write)?;
            self.next += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Checks that every planned tensor was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if let Some(t) = self.plan.get(self.next) {
            return Err(GgufError::MissingTensors { missing: self.plan.len() - self.next, next: t.name().to_owned() });
        }
        self.out.flush().map_err(GgufError::Write)?;
        Ok(self.out)
    }

    /// The planned tensor that `name` must be.
    fn expect(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        match self.plan.get(self.next) {
            Some(t) if t.name() == name => Ok(t),
            Some(t) => Err(GgufError::TensorOrder { tensor: name.to_owned(), expected: t.name().to_owned() }),
            None => Err(GgufError::TensorOrder {
                tensor: name.to_owned(),
                expected: format!("no more tensors (all {} written)", self.plan.len()),
            }),
        }
    }
}

/// Writes a whole GGUF file to `out` from metadata and (spec, bytes) pairs; returns `out`.
pub fn write_gguf<W: Write>(out: W, metadata: &Metadata, tensors: &[(TensorSpec, &[u8])]) -> Result<W, GgufError> {
    let specs = tensors.iter().map(|(s, _)| s.clone()).collect();
    let mut w = GgufWriter::new(out, metadata, specs)?;
    for (spec, bytes) in tensors {
        w.write_tensor(&spec.name, bytes)?;
    }
    w.finish()
}

/// [`write_gguf`] to a new file at `path` (created or truncated).
pub fn write_gguf_file(
    path: impl AsRef<Path>,
    metadata: &Metadata,
    tensors: &[(TensorSpec, &[u8])],
) -> Result<(), GgufError> {
    let path = path.as_ref();
    let file = File::create(path).map_err(|source| GgufError::Io { path: path.to_path_buf(), source })?;
    let out = write_gguf(BufWriter::new(file), metadata, tensors)?;
    let file = out.into_inner().map_err(|e| GgufError::Write(e.into_error()))?;
    file.sync_all().map_err(|source| GgufError::Io { path: path.to_path_buf(), source })
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(u8::from(*x)),
        Value::String(s) => put_str(buf, s),
        Value::Array(a) => put_array(buf, a),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(buf: &mut Vec<u8>, a: &Array) {
    buf.extend_from_slice(&a.elem_type().id().to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each_le {
        ($v:expr) => {
            for x in $v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => buf.extend_from_slice(v),
        Array::I8(v) => each_le!(v),
        Array::U16(v) => each_le!(v),
        Array::I16(v) => each_le!(v),
        Array::U32(v) => each_le!(v),
        Array::I32(v) => each_le!(v),
        Array::F32(v) => each_le!(v),
        Array::Bool(v) => buf.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_str(buf, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(buf, inner)),
        Array::U64(v) => each_le!(v),
        Array::I64(v) => each_le!(v),
        Array::F64(v) => each_le!(v),
    }
}
