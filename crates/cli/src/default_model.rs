//! The built-in default model, used whenever MODEL is omitted.
//!
//! A tiny Qwen2-architecture chat model that adds numbers, trained by
//! `tools/default_model/train.py` and committed as `assets/default.gguf`.

use anyhow::{Context, Result};
use apr_ir_model::gguf::GgufFile;
use apr_ir_model::Model;

static BYTES: &[u8] = include_bytes!("../../../assets/default.gguf");

/// The name the default model goes by in messages.
pub const NAME: &str = "<built-in default model>";

pub fn open() -> Result<Model> {
    let file = GgufFile::from_static(NAME, BYTES).context("the built-in default model")?;
    Model::from_gguf(file, "default".into()).context("the built-in default model")
}
