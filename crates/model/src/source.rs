//! Opening a model, whatever its format: a GGUF file or an HF directory
//! (`config.json` + safetensors). Either becomes hyper-parameters plus a tensor table, which
//! is all the lowering needs; weight bytes stay in the memory map until a backend asks.

use crate::chat::ChatTemplate;
use crate::gguf::{GgufFile, Metadata};
use crate::lower::{lower, ArchParams, LowerError, LowerOptions, MetaSource, ParamError, TensorTable};
use crate::safetensors::HfDir;
use crate::tokenizer::Tokenizer;
use crate::ModelError;
use apr_ir::Graph;
use std::path::Path;

/// The file a model was read from.
#[derive(Debug)]
pub enum ModelFile {
    Gguf(GgufFile),
    Hf(HfDir),
}

/// An opened model: its file, hyper-parameters and tensor table.
#[derive(Debug)]
pub struct Model {
    pub file: ModelFile,
    pub name: String,
    pub params: ArchParams,
    pub tensors: TensorTable,
}

impl Model {
    /// Open a GGUF file or an HF model directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let path = path.as_ref();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
        if path.is_dir() {
            let hf = HfDir::open(path)?;
            let params = ArchParams::from_hf(&JsonMeta(hf.config()))?;
            let mut tensors = TensorTable::default();
            for info in hf.tensor_infos() {
                let dtype = info.dtype().map_err(|_| info.safe_dtype().name().to_string());
                tensors.insert(info.name(), dtype, info.shape().to_vec());
            }
            let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("model").to_string();
            return Ok(Model { file: ModelFile::Hf(hf), name, params, tensors });
        }
        Model::from_gguf(GgufFile::open(path)?, stem)
    }

    /// A model from an opened GGUF file; `fallback_name` is used if it names none.
    pub fn from_gguf(file: GgufFile, fallback_name: String) -> Result<Model, ModelError> {
        let stem = fallback_name;
        let g = file.gguf();
        let mut tensors = TensorTable::default();
        for info in g.tensors() {
            let dtype = info.dtype().map_err(|_| info.ggml_type().name().to_string());
            tensors.insert(info.name(), dtype, info.shape());
        }
        let embd =
            tensors.get("token_embd.weight").ok_or_else(|| LowerError::MissingTensor("token_embd.weight".into()))?;
        let vocab = embd.shape.first().copied().unwrap_or(0);
        let params = ArchParams::from_gguf(g.metadata(), vocab)?;
        let name = g.metadata().opt_str("general.name").ok().flatten().map(str::to_string).unwrap_or(stem);
        Ok(Model { file: ModelFile::Gguf(file), name, params, tensors })
    }

    /// Lower to the IR of one decode step.
    pub fn lower(&self, max_ctx: Option<u64>) -> Result<Graph, ModelError> {
        let opts = LowerOptions { name: self.name.clone(), max_ctx };
        Ok(lower(&self.params, &self.tensors, &opts)?)
    }

    /// The stored bytes of a tensor (a slice of the memory map), in the tensor's dtype.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], ModelError> {
        match &self.file {
            ModelFile::Gguf(f) => Ok(f.tensor(name)?.1),
            ModelFile::Hf(h) => Ok(h.tensor(name)?.bytes),
        }
    }

    /// The model's tokenizer (GGUF metadata, or the HF directory's `tokenizer.json`).
    pub fn tokenizer(&self) -> Result<Tokenizer, ModelError> {
        Ok(match &self.file {
            ModelFile::Gguf(f) => Tokenizer::from_gguf(f.gguf().metadata())?,
            ModelFile::Hf(h) => Tokenizer::from_hf_dir(h.dir())?,
        })
    }

    /// The model's chat template, if it has one.
    pub fn chat_template(&self) -> Result<Option<ChatTemplate>, ModelError> {
        Ok(match &self.file {
            ModelFile::Gguf(f) => ChatTemplate::from_gguf(f.gguf().metadata())?,
            ModelFile::Hf(h) => ChatTemplate::from_hf_dir(h.dir())?,
        })
    }

    /// The format's name, for messages.
    pub fn format(&self) -> &'static str {
        match self.file {
            ModelFile::Gguf(_) => "gguf",
            ModelFile::Hf(_) => "hf-safetensors",
        }
    }
}

impl MetaSource for Metadata {
    fn uint(&self, key: &str) -> Result<Option<u64>, ParamError> {
        self.opt_as::<u64>(key).map_err(|e| invalid(key, e))
    }

    fn float(&self, key: &str) -> Result<Option<f64>, ParamError> {
        self.opt_as::<f64>(key).map_err(|e| invalid(key, e))
    }

    fn string(&self, key: &str) -> Result<Option<String>, ParamError> {
        self.opt_str(key).map(|s| s.map(str::to_string)).map_err(|e| invalid(key, e))
    }
}

fn invalid(key: &str, e: impl std::fmt::Display) -> ParamError {
    ParamError::Invalid { key: key.to_string(), reason: e.to_string() }
}

/// An HF `config.json`; dotted keys (`rope_scaling.type`) reach into nested objects.
pub struct JsonMeta<'a>(pub &'a serde_json::Value);

impl JsonMeta<'_> {
    fn lookup(&self, key: &str) -> Option<&serde_json::Value> {
        let v = key.split('.').try_fold(self.0, |v, part| v.get(part))?;
        (!v.is_null()).then_some(v)
    }
}

impl MetaSource for JsonMeta<'_> {
    fn uint(&self, key: &str) -> Result<Option<u64>, ParamError> {
        match self.lookup(key) {
            None => Ok(None),
            Some(v) => {
                v.as_u64().map(Some).ok_or_else(|| invalid(key, format!("expected a non-negative integer, got {v}")))
            }
        }
    }

    fn float(&self, key: &str) -> Result<Option<f64>, ParamError> {
        match self.lookup(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| invalid(key, format!("expected a number, got {v}"))),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ParamError> {
        match self.lookup(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| invalid(key, format!("expected a string, got {v}"))),
        }
    }
}
