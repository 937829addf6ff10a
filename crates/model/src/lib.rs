//! Model files for apr-ir.
pub mod gguf;
pub mod quant;
pub mod safetensors;
