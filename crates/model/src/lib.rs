//! Model files for apr-ir: reading and writing GGUF and safetensors, ggml's quantized block
//! formats, lowering decoder-only architectures (qwen2, qwen3, llama) to the IR, and writing
//! synthetic models with real shapes and random weights.
//!
//! This crate reads files and builds graphs; it never runs them.

pub mod chat;
mod error;
pub mod gguf;
pub mod lower;
pub mod quant;
pub mod safetensors;
mod source;
pub mod synth;
pub mod tokenizer;

pub use error::ModelError;
pub use source::{JsonMeta, Model, ModelFile};
