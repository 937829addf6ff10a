//! `apr-ir synth`: a random-weight GGUF with a known model's shapes.

use crate::load::synth_spec;
use anyhow::{Context, Result};
use std::io::BufWriter;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture: qwen2, qwen3, llama.
    #[arg(long)]
    arch: String,
    /// Shapes: tiny, qwen2.5-0.5b, qwen2.5-7b, qwen3-0.6b.
    #[arg(long)]
    preset: String,
    /// Weight encoding: f32, f16, q8_0, q4_k, q4_k_m.
    #[arg(long)]
    quant: String,
    /// Seed for the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output GGUF file.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let spec = synth_spec(&args.arch, &args.preset, &args.quant, args.seed)?;
    let total = spec.data_bytes();
    let tmp = args.output.with_extension("gguf.partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let bar = crate::progress::bytes(total, &format!("writing {}", spec.model_name()));
    let result = spec.write(BufWriter::with_capacity(1 << 22, file), &|done| bar.set_position(done));
    bar.finish_and_clear();
    let writer = match result {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).context("writing the synthetic model");
        }
    };
    writer.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).context("flushing")?;
    std::fs::rename(&tmp, &args.output).with_context(|| format!("renaming to {}", args.output.display()))?;
    eprintln!("wrote {} ({}, {} of tensor data)", args.output.display(), spec.model_name(), super::human_bytes(total));
    Ok(())
}
