//! The model crate's error type.

use crate::chat::ChatError;
use crate::gguf::GgufError;
use crate::lower::{LowerError, ParamError};
use crate::quant::QuantError;
use crate::safetensors::SafeTensorsError;
use crate::tokenizer::TokenizerError;

/// Anything that can go wrong reading, writing or lowering a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    SafeTensors(#[from] SafeTensorsError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}
