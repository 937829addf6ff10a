//! Architecture hyper-parameters, read from model metadata.
//!
//! Every constant the lowering uses comes from here, and everything here comes from the
//! model (GGUF metadata, an HF `config.json`, or a synthetic preset) — never from a default
//! that happens to fit one family. Where a file may omit a key, the default is the one the
//! format's reference implementation (llama.cpp, HF transformers) uses.

use apr_ir::RopeMode;
use serde::Serialize;

/// A decoder-only architecture apr-ir can lower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Qwen2 / Qwen2.5: q/k/v biases, NeoX rotary.
    Qwen2,
    /// LLaMA family (LLaMA 2/3, Mistral-style GGUFs with arch `llama`).
    Llama,
    /// Qwen3 (dense): no q/k/v biases; q and k RMS-normalized per head before rotary, NeoX
    /// rotary, an explicit head size.
    Qwen3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Llama => "llama",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// The rotary pairing of the architecture's GGUF layout: llama.cpp's converter permutes
    /// LLaMA's q/k rows into interleaved pairs; Qwen's stay in HF's rotate-half (NeoX) layout.
    pub fn gguf_rope_mode(self) -> RopeMode {
        match self {
            Arch::Qwen2 | Arch::Qwen3 => RopeMode::Neox,
            Arch::Llama => RopeMode::Interleaved,
        }
    }

    /// The architecture an HF `config.json`'s `model_type` names. Mistral's dense models are
    /// the LLaMA block (their sliding window is handled by the caller).
    pub fn from_hf_model_type(s: &str) -> Option<Arch> {
        match s {
            "mistral" => Some(Arch::Llama),
            other => Arch::from_name(other),
        }
    }

    pub fn from_name(s: &str) -> Option<Arch> {
        match s {
            "qwen2" => Some(Arch::Qwen2),
            "llama" => Some(Arch::Llama),
            "qwen3" => Some(Arch::Qwen3),
            _ => None,
        }
    }
}

/// Where the tensors' names and rotary layout come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// GGUF names (`blk.0.attn_q.weight`).
    Gguf,
    /// HF transformers names (`model.layers.0.self_attn.q_proj.weight`).
    Hf,
}

/// Hyper-parameters of a decoder-only transformer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchParams {
    pub arch: Arch,
    pub naming: Naming,
    pub n_layers: u32,
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
    /// Rotated dimensions per head (≤ head_dim).
    pub n_rot: u32,
    pub rope_theta: f64,
    /// Linear rope scaling: positions are multiplied by this (1 / scaling factor).
    pub rope_freq_scale: f64,
    pub rope_mode: RopeMode,
    pub rms_eps: f64,
    pub vocab: u64,
    /// Context length the model was trained for.
    pub context_length: u64,
    /// Attention logit scale; 1/sqrt(head_dim) unless the model says otherwise.
    pub attn_scale: f64,
}

/// Why a model's parameters are unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error("missing metadata key {0}")]
    Missing(String),
    #[error("metadata key {key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("unsupported architecture {0:?} (apr-ir lowers qwen2, qwen3 and llama)")]
    UnsupportedArch(String),
    #[error("{0}")]
    Inconsistent(String),
}

/// Key/value access to model metadata, whatever the file format.
pub trait MetaSource {
    /// An unsigned integer value (any integer width the format allows), or `None` if absent.
    fn uint(&self, key: &str) -> Result<Option<u64>, ParamError>;
    /// A float value (f32 or f64), or `None` if absent.
    fn float(&self, key: &str) -> Result<Option<f64>, ParamError>;
    /// A string value, or `None` if absent.
    fn string(&self, key: &str) -> Result<Option<String>, ParamError>;
}

/// Limits that keep a hostile file from asking for absurd graphs.
const MAX_LAYERS: u64 = 4096;
const MAX_DIM: u64 = 1 << 20;
const MAX_VOCAB: u64 = 1 << 24;

impl ArchParams {
    /// Read GGUF metadata (`general.architecture`, `{arch}.*`). `vocab` is the row count of
    /// `token_embd.weight`, which the caller knows from the tensor table.
    pub fn from_gguf(meta: &dyn MetaSource, vocab: u64) -> Result<ArchParams, ParamError> {
        let arch_name =
            meta.string("general.architecture")?.ok_or(ParamError::Missing("general.architecture".into()))?;
        let arch = Arch::from_name(&arch_name).ok_or(ParamError::UnsupportedArch(arch_name.clone()))?;
        let k = |s: &str| format!("{arch_name}.{s}");
        let req = |s: &str| -> Result<u64, ParamError> { meta.uint(&k(s))?.ok_or_else(|| ParamError::Missing(k(s))) };
        let n_embd = req("embedding_length")?;
        let n_head = req("attention.head_count")?;
        let n_head_kv = meta.uint(&k("attention.head_count_kv"))?.unwrap_or(n_head);
        let head_dim = match meta.uint(&k("attention.key_length"))? {
            Some(d) => d,
            None if n_head > 0 => n_embd / n_head,
            None => 0,
        };
        if let Some(v) = meta.uint(&k("attention.value_length"))? {
            if v != head_dim {
                return Err(ParamError::Inconsistent(format!(
                    "value head size {v} differs from key head size {head_dim}"
                )));
            }
        }
        let n_rot = meta.uint(&k("rope.dimension_count"))?.unwrap_or(head_dim);
        let rope_freq_scale = rope_scaling(meta, &arch_name)?;
        let p = ArchParams {
            arch,
            naming: Naming::Gguf,
            n_layers: u32::try_from(req("block_count")?).unwrap_or(u32::MAX),
            n_embd,
            n_ff: req("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            n_rot: u32::try_from(n_rot).unwrap_or(u32::MAX),
            rope_theta: meta.float(&k("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_freq_scale,
            rope_mode: arch.gguf_rope_mode(),
            rms_eps: meta
                .float(&k("attention.layer_norm_rms_epsilon"))?
                .ok_or_else(|| ParamError::Missing(k("attention.layer_norm_rms_epsilon")))?,
            vocab,
            context_length: req("context_length")?,
            attn_scale: meta.float(&k("attention.scale"))?.unwrap_or(0.0),
        };
        p.finish()
    }

    /// Read an HF `config.json` (as a [`MetaSource`] over its top-level keys).
    pub fn from_hf(config: &dyn MetaSource) -> Result<ArchParams, ParamError> {
        let model_type = config.string("model_type")?.ok_or(ParamError::Missing("model_type".into()))?;
        let arch = Arch::from_hf_model_type(&model_type).ok_or(ParamError::UnsupportedArch(model_type.clone()))?;
        let req = |s: &str| -> Result<u64, ParamError> { config.uint(s)?.ok_or_else(|| ParamError::Missing(s.into())) };
        let mut context_length = config.uint("max_position_embeddings")?.unwrap_or(2048);
        // Mistral 7B v0.1 attends over a sliding window of its last `sliding_window` positions;
        // within the window that is plain causal attention, so the model is exact up to it.
        // (Qwen configs carry a `sliding_window` too, unused unless `use_sliding_window`.)
        if model_type == "mistral" {
            if let Some(w) = config.uint("sliding_window")? {
                context_length = context_length.min(w);
            }
        }
        let n_embd = req("hidden_size")?;
        let n_head = req("num_attention_heads")?;
        let head_dim = match config.uint("head_dim")? {
            Some(d) => d,
            None if n_head > 0 => n_embd / n_head,
            None => 0,
        };
        let partial = config.float("partial_rotary_factor")?.unwrap_or(1.0);
        let p = ArchParams {
            arch,
            naming: Naming::Hf,
            n_layers: u32::try_from(req("num_hidden_layers")?).unwrap_or(u32::MAX),
            n_embd,
            n_ff: req("intermediate_size")?,
            n_head,
            n_head_kv: config.uint("num_key_value_heads")?.unwrap_or(n_head),
            head_dim,
            n_rot: (head_dim as f64 * partial) as u32,
            // transformers 5 moved rope settings under `rope_parameters`.
            rope_theta: match config.float("rope_theta")? {
                Some(t) => t,
                None => config.float("rope_parameters.rope_theta")?.unwrap_or(10_000.0),
            },
            rope_freq_scale: hf_rope_scaling(config)?,
            // HF checkpoints keep q/k in the layout `rotate_half` expects.
            rope_mode: RopeMode::Neox,
            rms_eps: config.float("rms_norm_eps")?.unwrap_or(1e-6),
            vocab: req("vocab_size")?,
            context_length,
            attn_scale: 0.0,
        };
        p.finish()
    }

    /// Fill derived values and check consistency and sanity bounds.
    pub fn finish(mut self) -> Result<ArchParams, ParamError> {
        let bad =
            |what: &str, v: u64, max: u64| ParamError::Inconsistent(format!("{what} = {v} is out of range 1..={max}"));
        for (what, v, max) in [
            ("layers", u64::from(self.n_layers), MAX_LAYERS),
            ("embedding length", self.n_embd, MAX_DIM),
            ("feed-forward length", self.n_ff, MAX_DIM * 4),
            ("head count", self.n_head, MAX_DIM),
            ("kv head count", self.n_head_kv, MAX_DIM),
            ("head dim", self.head_dim, MAX_DIM),
            ("vocab", self.vocab, MAX_VOCAB),
            ("context length", self.context_length, apr_ir::MAX_CTX_LIMIT),
        ] {
            if v == 0 || v > max {
                return Err(bad(what, v, max));
            }
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(ParamError::Inconsistent(format!(
                "{} heads do not split into {} kv groups",
                self.n_head, self.n_head_kv
            )));
        }
        if self.n_rot == 0 || !self.n_rot.is_multiple_of(2) || u64::from(self.n_rot) > self.head_dim {
            return Err(ParamError::Inconsistent(format!(
                "rope dims {} must be even and at most head dim {}",
                self.n_rot, self.head_dim
            )));
        }
        for (what, v) in
            [("rope theta", self.rope_theta), ("rms eps", self.rms_eps), ("rope freq scale", self.rope_freq_scale)]
        {
            if !(v.is_finite() && v > 0.0) {
                return Err(ParamError::Inconsistent(format!("{what} = {v} must be positive")));
            }
        }
        if self.attn_scale == 0.0 {
            self.attn_scale = 1.0 / (self.head_dim as f64).sqrt();
        }
        if !(self.attn_scale.is_finite() && self.attn_scale > 0.0) {
            return Err(ParamError::Inconsistent(format!("attention scale {} must be positive", self.attn_scale)));
        }
        Ok(self)
    }

    /// Query heads per kv head.
    pub fn group(&self) -> u64 {
        self.n_head / self.n_head_kv
    }
}

fn rope_scaling(meta: &dyn MetaSource, arch: &str) -> Result<f64, ParamError> {
    let key = format!("{arch}.rope.scaling.type");
    match meta.string(&key)?.as_deref() {
        None | Some("none") => Ok(1.0),
        Some("linear") => {
            let fkey = format!("{arch}.rope.scaling.factor");
            let factor = meta.float(&fkey)?.ok_or(ParamError::Missing(fkey.clone()))?;
            if !(factor.is_finite() && factor > 0.0) {
                return Err(ParamError::Invalid { key: fkey, reason: format!("factor {factor} must be positive") });
            }
            Ok(1.0 / factor)
        }
        Some(other) => {
            Err(ParamError::Invalid { key, reason: format!("rope scaling {other:?} is not supported (none, linear)") })
        }
    }
}

fn hf_rope_scaling(config: &dyn MetaSource) -> Result<f64, ParamError> {
    let kind = config
        .string("rope_scaling.type")?
        .or(config.string("rope_scaling.rope_type")?)
        .or(config.string("rope_parameters.rope_type")?);
    let factor_key =
        if config.float("rope_scaling.factor")?.is_some() { "rope_scaling.factor" } else { "rope_parameters.factor" };
    match kind.as_deref() {
        // llama3: per-frequency factors, given to the lowering as a tensor (`hf_llama3_rope_factors`).
        None | Some("default" | "llama3") => Ok(1.0),
        Some("linear") => {
            let f = config.float(factor_key)?.ok_or(ParamError::Missing(factor_key.into()))?;
            if !(f.is_finite() && f > 0.0) {
                return Err(ParamError::Invalid { key: factor_key.into(), reason: format!("{f} must be positive") });
            }
            Ok(1.0 / f)
        }
        Some(other) => Err(ParamError::Invalid {
            key: "rope_scaling".into(),
            reason: format!("{other:?} is not supported (default, linear, llama3)"),
        }),
    }
}

/// Llama 3.1/3.2's rope scaling from an HF `config.json` (`rope_type: "llama3"` under
/// `rope_scaling` or, in transformers 5, `rope_parameters`): the factor each of the
/// `head_dim / 2` rotary frequencies is divided by, as llama.cpp's converter writes them into a
/// GGUF's `rope_freqs.weight` (and as transformers scales `inv_freq`): wavelengths shorter than
/// `original_max_position_embeddings / high_freq_factor` keep 1, longer than
/// `… / low_freq_factor` get `factor`, and those between a smooth ramp. `None` for any other
/// rope type. Computed in f64, rounded once to f32.
pub fn hf_llama3_rope_factors(config: &dyn MetaSource, p: &ArchParams) -> Result<Option<Vec<f32>>, ParamError> {
    let kind = config
        .string("rope_scaling.type")?
        .or(config.string("rope_scaling.rope_type")?)
        .or(config.string("rope_parameters.rope_type")?);
    if kind.as_deref() != Some("llama3") {
        return Ok(None);
    }
    let section = if config.string("rope_scaling.rope_type")?.is_some() || config.string("rope_scaling.type")?.is_some()
    {
        "rope_scaling"
    } else {
        "rope_parameters"
    };
    let get = |k: &str, default: f64| -> Result<f64, ParamError> {
        let key = format!("{section}.{k}");
        let v = config.float(&key)?.unwrap_or(default);
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(ParamError::Invalid { key, reason: format!("{v} must be positive") })
        }
    };
    let factor = get("factor", 8.0)?;
    let (low, high) = (get("low_freq_factor", 1.0)?, get("high_freq_factor", 4.0)?);
    let old_context = get("original_max_position_embeddings", 8192.0)?;
    if high <= low {
        return Err(ParamError::Invalid {
            key: format!("{section}.high_freq_factor"),
            reason: format!("{high} must exceed low_freq_factor {low}"),
        });
    }
    let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
    let dim = p.head_dim as f64;
    let factors = (0..p.head_dim / 2)
        .map(|i| {
            let freq = 1.0 / p.rope_theta.powf(2.0 * i as f64 / dim);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_context / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect();
    Ok(Some(factors))
}
