//! Lowering of decoder-only transformer architectures to the IR.
//!
//! The lowering reads only hyper-parameters ([`ArchParams`]) and a table of tensor names,
//! dtypes and shapes ([`TensorTable`]): it never touches weight bytes, so a 7B model lowers
//! (and compiles) without reading its weights, and shape-only presets lower the same way.

mod decoder;
mod params;

pub use decoder::{lower, LowerOptions};
pub use params::{hf_llama3_rope_factors, Arch, ArchParams, MetaSource, Naming, ParamError};

use apr_ir::DType;
use std::collections::BTreeMap;

/// A tensor's dtype (or, for a type apr-ir cannot use, that type's name) and its shape,
/// row-major with the outermost dimension first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub dtype: Result<DType, String>,
    pub shape: Vec<u64>,
}

/// The tensors of a model, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorTable {
    pub tensors: BTreeMap<String, TensorEntry>,
}

impl TensorTable {
    pub fn insert(&mut self, name: impl Into<String>, dtype: Result<DType, String>, shape: Vec<u64>) {
        self.tensors.insert(name.into(), TensorEntry { dtype, shape });
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }
}

/// Why lowering failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error("tensor {0} is missing")]
    MissingTensor(String),
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    Shape { name: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("tensor {name} has type {type_name}, which apr-ir does not support")]
    UnsupportedType { name: String, type_name: String },
    #[error("tensor {name} has type {dtype}, which is not allowed for {role}")]
    WrongType { name: String, dtype: DType, role: &'static str },
    #[error("a context of {asked} positions is not in 1..={model} (the model's context length)")]
    Context { asked: u64, model: u64 },
    #[error(transparent)]
    Ir(#[from] apr_ir::IrError),
}
