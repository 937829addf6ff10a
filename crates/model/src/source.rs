//! Opening a model, whatever its format: a GGUF file or an HF directory
//! (`config.json` + safetensors). Either becomes hyper-parameters plus a tensor table, which
//! is all the lowering needs; weight bytes stay in the memory map until a backend asks.

use crate::chat::ChatTemplate;
use crate::gguf::{GgufFile, Metadata};
use crate::lower::{
    hf_llama3_rope_factors, lower, ArchParams, LowerError, LowerOptions, MetaSource, ParamError, TensorTable,
};
use crate::safetensors::HfDir;
use crate::tokenizer::Tokenizer;
use crate::ModelError;
use apr_ir::{DType, Graph};
use std::collections::BTreeMap;
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
    /// What the lowering sees: the file's tensors, except those in `widened` (as f32).
    pub tensors: TensorTable,
    /// 1-D f16/bf16 tensors of an HF directory (norm gains, biases), widened to f32 bytes at
    /// open: exact, the layout GGUF converters give them, so an HF checkpoint lowers to the
    /// graph its GGUF conversion would (no per-token casts, norms that fuse). Matrices and
    /// embeddings keep their stored type.
    widened: BTreeMap<String, Vec<u8>>,
}

/// Largest 1-D tensor [`Model::open`] widens to f32 (a norm or bias is one row of the model).
const WIDEN_MAX_ELEMS: u64 = 1 << 20;

impl Model {
    /// Open a GGUF file or an HF model directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let path = path.as_ref();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
        if path.is_dir() {
            let hf = HfDir::open(path)?;
            let params = ArchParams::from_hf(&JsonMeta(hf.config()))?;
            let mut tensors = TensorTable::default();
            let mut widened = BTreeMap::new();
            for info in hf.tensor_infos() {
                let mut dtype = info.dtype().map_err(|_| info.safe_dtype().name().to_string());
                let shape = info.shape().to_vec();
                if let (Ok(stored @ (DType::F16 | DType::BF16)), &[n]) = (dtype.clone(), shape.as_slice()) {
                    if n <= WIDEN_MAX_ELEMS {
                        widened.insert(info.name().to_string(), widen(&hf, info.name(), stored)?);
                        dtype = Ok(DType::F32);
                    }
                }
                tensors.insert(info.name(), dtype, shape);
            }
            // Llama 3's rope scaling: the per-frequency factors a GGUF conversion would store.
            if let Some(factors) = hf_llama3_rope_factors(&JsonMeta(hf.config()), &params)? {
                let freqs = "model.rope_freqs.weight";
                tensors.insert(freqs, Ok(DType::F32), vec![factors.len() as u64]);
                widened.insert(freqs.to_string(), factors.iter().flat_map(|f| f.to_le_bytes()).collect());
            }
            let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("model").to_string();
            return Ok(Model { file: ModelFile::Hf(hf), name, params, tensors, widened });
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
        Ok(Model { file: ModelFile::Gguf(file), name, params, tensors, widened: BTreeMap::new() })
    }

    /// Lower to the IR of one decode step.
    pub fn lower(&self, max_ctx: Option<u64>) -> Result<Graph, ModelError> {
        let opts = LowerOptions { name: self.name.clone(), max_ctx };
        Ok(lower(&self.params, &self.tensors, &opts)?)
    }

    /// The bytes of a tensor in the dtype its table entry gives: a slice of the memory map, or
    /// for a tensor widened at open its f32 copy.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], ModelError> {
        if let Some(b) = self.widened.get(name) {
            return Ok(b);
        }
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

/// The f32 little-endian bytes of 1-D tensor `name` of `hf`, stored as `dtype` (f16 or bf16).
fn widen(hf: &HfDir, name: &str, dtype: DType) -> Result<Vec<u8>, ModelError> {
    let bytes = hf.tensor(name)?.bytes;
    let mut values = vec![0.0f32; bytes.len() / 2];
    crate::quant::dequantize(dtype, bytes, &mut values)?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
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

#[cfg(test)]
mod rope_tests {
    use super::JsonMeta;
    use crate::lower::{hf_llama3_rope_factors, ArchParams};
    use serde_json::json;

    fn params(config: &serde_json::Value) -> ArchParams {
        ArchParams::from_hf(&JsonMeta(config)).unwrap()
    }

    /// Both config layouts (transformers 4's `rope_scaling` with a top-level `rope_theta`, and
    /// transformers 5's `rope_parameters`) give the same factors: 1 for short wavelengths,
    /// `factor` for long ones, a ramp between; other rope types give none; bad values are errors.
    #[test]
    fn llama3_rope_factors_from_either_config_layout() {
        let base = json!({"model_type": "llama", "hidden_size": 256, "num_attention_heads": 8,
            "num_hidden_layers": 2, "intermediate_size": 256, "vocab_size": 512, "head_dim": 32});
        let scaling = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        let mut old = base.clone();
        old["rope_theta"] = json!(10000.0);
        old["rope_scaling"] = scaling.clone();
        let mut new = base.clone();
        new["rope_parameters"] = scaling.clone();
        new["rope_parameters"]["rope_theta"] = json!(10000.0);
        let a = hf_llama3_rope_factors(&JsonMeta(&old), &params(&old)).unwrap().unwrap();
        let b = hf_llama3_rope_factors(&JsonMeta(&new), &params(&new)).unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        assert_eq!((a[0], a[1], a[15]), (1.0, 1.0, 8.0));
        assert!(a.iter().any(|&f| f > 1.0 && f < 8.0) && a.windows(2).all(|w| w[0] <= w[1]), "{a:?}");

        let mut plain = base.clone();
        plain["rope_theta"] = json!(10000.0);
        assert_eq!(hf_llama3_rope_factors(&JsonMeta(&plain), &params(&plain)).unwrap(), None);
        let mut bad = new.clone();
        bad["rope_parameters"]["high_freq_factor"] = json!(0.5);
        assert!(hf_llama3_rope_factors(&JsonMeta(&bad), &params(&bad)).is_err());
    }

    /// `model_type` names: Mistral's dense checkpoints lower as the LLaMA block, exact up to
    /// their sliding window (the context is capped there); Qwen3 keeps its explicit head size.
    #[test]
    fn hf_model_types() {
        use crate::lower::Arch;
        let base = json!({"model_type": "mistral", "hidden_size": 256, "num_attention_heads": 8,
            "num_hidden_layers": 2, "intermediate_size": 256, "vocab_size": 512,
            "max_position_embeddings": 32768, "sliding_window": 4096});
        let p = params(&base);
        assert_eq!((p.arch, p.context_length), (Arch::Llama, 4096));
        let mut unwindowed = base.clone();
        unwindowed["sliding_window"] = serde_json::Value::Null;
        assert_eq!(params(&unwindowed).context_length, 32768);
        let mut llama = base.clone();
        llama["model_type"] = json!("llama");
        assert_eq!(params(&llama).context_length, 32768, "only mistral's window is a window");
        let mut qwen3 = base.clone();
        qwen3["model_type"] = json!("qwen3");
        qwen3["head_dim"] = json!(128);
        let p = params(&qwen3);
        assert_eq!((p.arch, p.head_dim, p.n_rot, p.context_length), (Arch::Qwen3, 128, 128, 32768));
        let mut other = base.clone();
        other["model_type"] = json!("gemma2");
        let err = ArchParams::from_hf(&JsonMeta(&other)).unwrap_err().to_string();
        assert!(err.contains("gemma2") && err.contains("qwen3"), "{err}");
    }
}
