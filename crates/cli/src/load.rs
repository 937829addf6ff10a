//! Where a graph comes from: a model file (GGUF or HF directory), a saved IR JSON, or
//! shapes alone (`--arch --preset --quant`).

use anyhow::{bail, Context, Result};
use apr_ir::Graph;
use apr_ir_model::lower::{lower, Arch, LowerOptions};
use apr_ir_model::synth::{Preset, SynthQuant, SynthSpec};
use apr_ir_model::Model;
use std::path::{Path, PathBuf};

/// The model-selection arguments shared by `compile` and `dot`.
#[derive(clap::Args, Debug, Clone)]
pub struct Source {
    /// A GGUF file, an HF model directory (config.json + safetensors), or an IR JSON; the
    /// built-in default model if omitted.
    pub model: Option<PathBuf>,
    /// Compile from shapes alone: architecture (qwen2, qwen3, llama).
    #[arg(long, requires = "preset")]
    pub arch: Option<String>,
    /// Compile from shapes alone: tiny, qwen2.5-0.5b, qwen2.5-7b, qwen3-0.6b.
    #[arg(long, requires = "arch")]
    pub preset: Option<String>,
    /// Compile from shapes alone: f32, f16, q8_0, q4_k, q4_k_m (default q4_k_m).
    #[arg(long, requires = "preset")]
    pub quant: Option<String>,
    /// KV-cache rows (context positions) to provision; the model's context length if omitted.
    #[arg(long)]
    pub ctx: Option<u64>,
}

/// A lowered graph and where it came from.
pub struct Loaded {
    pub graph: Graph,
    pub origin: String,
}

pub fn synth_spec(arch: &str, preset: &str, quant: &str, seed: u64) -> Result<SynthSpec> {
    let arch = Arch::from_name(arch).with_context(|| format!("unknown --arch {arch:?} (qwen2, qwen3, llama)"))?;
    let preset = Preset::from_name(preset)
        .with_context(|| format!("unknown --preset {preset:?} ({})", Preset::NAMES.join(", ")))?;
    let quant = SynthQuant::from_name(quant)
        .with_context(|| format!("unknown --quant {quant:?} ({})", SynthQuant::NAMES.join(", ")))?;
    Ok(SynthSpec { arch, preset, quant, seed })
}

impl Source {
    pub fn load(&self) -> Result<Loaded> {
        match (&self.model, &self.arch, &self.preset) {
            (Some(_), Some(_), _) => bail!("give either MODEL or --arch/--preset, not both"),
            (Some(path), None, _) => load_path(path, self.ctx),
            (None, Some(arch), Some(preset)) => {
                let spec = synth_spec(arch, preset, self.quant.as_deref().unwrap_or("q4_k_m"), 0)?;
                let opts = LowerOptions { name: spec.model_name(), max_ctx: self.ctx };
                let graph = lower(&spec.params(), &spec.table(), &opts)?;
                Ok(Loaded { graph, origin: format!("shapes of {}", spec.model_name()) })
            }
            (None, None, _) => {
                let model = crate::default_model::open()?;
                let graph = model.lower(self.ctx)?;
                Ok(Loaded { graph, origin: crate::default_model::NAME.to_string() })
            }
            (None, Some(_), None) => bail!("--arch needs --preset"),
        }
    }
}

fn load_path(path: &Path, ctx: Option<u64>) -> Result<Loaded> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    if path.is_file() && looks_like_json(path)? {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let graph = Graph::from_json(&text).with_context(|| format!("{} is not a valid IR JSON", path.display()))?;
        return Ok(Loaded { graph, origin: format!("IR {}", path.display()) });
    }
    let model = Model::open(path).with_context(|| format!("{}", path.display()))?;
    let graph = model.lower(ctx).with_context(|| format!("lowering {}", path.display()))?;
    Ok(Loaded { graph, origin: format!("{} {}", model.format(), path.display()) })
}

pub fn looks_like_json(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
}

/// Open a model file, or the built-in default model when no path is given.
pub fn open_model(path: Option<&Path>) -> Result<Model> {
    match path {
        Some(p) => {
            if !p.exists() {
                bail!("{} does not exist", p.display());
            }
            Model::open(p).with_context(|| format!("{}", p.display()))
        }
        None => crate::default_model::open(),
    }
}
