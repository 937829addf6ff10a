//! `apr-ir inspect`: what is in a model file, and whether apr-ir can lower it.
//!
//! Inspection works on any file the readers parse, including architectures or tensor types
//! apr-ir cannot lower: those are reported, not fatal.

use anyhow::{Context, Result};
use apr_ir_model::gguf::{GgufFile, Value};
use apr_ir_model::safetensors::HfDir;
use apr_ir_model::Model;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A GGUF file or an HF model directory.
    model: PathBuf,
    /// List every tensor.
    #[arg(long)]
    tensors: bool,
    /// List every metadata key (arrays are summarized).
    #[arg(long)]
    metadata: bool,
}

struct TensorRow {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    bytes: u64,
}

pub fn run(args: Args) -> Result<()> {
    let path = &args.model;
    if !path.exists() {
        anyhow::bail!("{} does not exist", path.display());
    }
    if path.is_file() && crate::load::looks_like_json(path)? {
        return inspect_ir(path);
    }
    let mut rows = Vec::new();
    let mut meta_lines = Vec::new();
    if path.is_dir() {
        let hf = HfDir::open(path).with_context(|| format!("{}", path.display()))?;
        println!("format       hf-safetensors ({} shards)", hf.shards().len());
        for info in hf.tensor_infos() {
            let bytes = info.data_range().end - info.data_range().start;
            rows.push(TensorRow {
                name: info.name().into(),
                dtype: info.safe_dtype().name().to_lowercase(),
                shape: info.shape().to_vec(),
                bytes,
            });
        }
        if let serde_json::Value::Object(m) = hf.config() {
            for (k, v) in m {
                meta_lines.push(format!("{k} = {}", summarize_json(v)));
            }
        }
    } else {
        let file = GgufFile::open(path).with_context(|| format!("{}", path.display()))?;
        let g = file.gguf();
        println!(
            "format       gguf v{} (alignment {}, {} metadata keys)",
            g.version(),
            g.alignment(),
            g.metadata().len()
        );
        for t in g.tensors() {
            rows.push(TensorRow {
                name: t.name().into(),
                dtype: t.ggml_type().name().to_lowercase(),
                shape: t.shape(),
                bytes: t.n_bytes(),
            });
        }
        for (k, v) in g.metadata().iter() {
            meta_lines.push(format!("{k} = {}", summarize_value(v)));
        }
    }
    let total: u64 = rows.iter().map(|r| r.bytes).sum();
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for r in &rows {
        let e = by_type.entry(&r.dtype).or_default();
        e.0 += 1;
        e.1 += r.bytes;
    }
    let mix: Vec<String> = by_type.iter().map(|(t, (n, b))| format!("{t} ×{n} ({})", super::human_bytes(*b))).collect();
    println!("tensors      {} ({}): {}", rows.len(), super::human_bytes(total), mix.join(", "));
    match Model::open(path) {
        Ok(model) => {
            let p = &model.params;
            println!("name         {}", model.name);
            println!("architecture {}", p.arch.name());
            println!(
                "shape        {} layers, hidden {}, ffn {}, heads {}/{} kv × {}, vocab {}, context {}",
                p.n_layers, p.n_embd, p.n_ff, p.n_head, p.n_head_kv, p.head_dim, p.vocab, p.context_length
            );
            println!(
                "constants    rms_eps {:e}, rope {:?} theta {} over {} dims, freq scale {}, attn scale {:.6}",
                p.rms_eps, p.rope_mode, p.rope_theta, p.n_rot, p.rope_freq_scale, p.attn_scale
            );
            match model.lower(Some(1)) {
                Ok(g) => println!("lowering     ok ({} nodes, {} compute)", g.nodes.len(), g.stats().compute_nodes),
                Err(e) => println!("lowering     not possible: {e}"),
            }
            match model.tokenizer() {
                Ok(t) => {
                    let bos = match t.bos() {
                        Some(id) if t.add_bos() => format!("bos {id} (added to prompts)"),
                        Some(id) => format!("bos {id}"),
                        None => "no bos".into(),
                    };
                    println!(
                        "tokenizer    {}, {} tokens, {} merges; {bos}; stops at {:?}",
                        t.family(),
                        t.vocab_size(),
                        t.merge_count(),
                        t.eos_ids()
                    );
                }
                Err(e) => println!("tokenizer    not usable: {e} (run takes --tokens instead of --prompt)"),
            }
        }
        Err(e) => println!("lowering     not possible: {e}"),
    }
    if args.metadata {
        println!("\nmetadata:");
        for l in &meta_lines {
            println!("  {l}");
        }
    }
    if args.tensors {
        println!("\ntensors:");
        for r in &rows {
            println!("  {:<40} {:<6} {:?} {}", r.name, r.dtype, r.shape, super::human_bytes(r.bytes));
        }
    }
    Ok(())
}

/// A saved IR (`compile -o`): its graph's figures.
fn inspect_ir(path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let g = apr_ir::Graph::from_json(&text).with_context(|| format!("{} is not a valid IR JSON", path.display()))?;
    let s = g.stats();
    println!("format       apr-ir IR JSON");
    println!("name         {}", g.meta.name);
    println!("architecture {}", g.meta.arch);
    println!("nodes        {} ({} compute), max_ctx {}", s.nodes, s.compute_nodes, g.meta.max_ctx);
    println!(
        "weights      {} referenced, {} read per token",
        super::human_bytes(s.weight_bytes),
        super::human_bytes(s.weight_bytes_per_token)
    );
    println!("lowering     ok (already lowered)");
    Ok(())
}

fn summarize_value(v: &Value) -> String {
    match v {
        Value::String(s) => summarize_str(s),
        Value::Array(a) => format!("[{} × {}]", a.len(), a.type_description()),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
    }
}

fn summarize_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => summarize_str(s),
        serde_json::Value::Array(a) => format!("[{} items]", a.len()),
        other => {
            let s = other.to_string();
            summarize_str(&s).trim_matches('"').to_string()
        }
    }
}

fn summarize_str(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(80).collect();
    if s.chars().count() > 80 {
        format!("{one_line:?}… ({} chars)", s.chars().count())
    } else {
        format!("{one_line:?}")
    }
}
