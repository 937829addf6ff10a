//! `apr-ir bench`: decode speed, and how close it comes to streaming the weights at memory
//! bandwidth (each decoded token reads every matrix once). On the CPU it also measures the
//! machine's read bandwidth just before and after the timed decode and reports the fraction.

use anyhow::{bail, Result};
use apr_ir_gen::{Sampler, SamplerConfig};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A GGUF file or an HF model directory; the built-in default model if omitted.
    model: Option<PathBuf>,
    /// Where to run.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: crate::backend::Backend,
    /// Optimization level of the GPU schedule: 0 = one dispatch per compute node, 1 = row-local
    /// fusion, 2 = also matvec epilogues, attention, cache writes (the CPU ignores it).
    #[arg(short = 'O', default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    opt: u8,
    /// Prompt positions processed before timing decode (one token at a time).
    #[arg(long, default_value_t = 16)]
    prompt_tokens: u32,
    /// Tokens decoded and timed.
    #[arg(long, default_value_t = 32)]
    gen_tokens: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// GPU only: after the timed tokens, decode --gen-tokens more with a timestamp written
    /// between every two dispatches, and report the GPU time per token by kernel.
    #[arg(long)]
    profile: bool,
}

/// One kernel's share of the profiled GPU time.
#[derive(Serialize)]
struct KernelProfile {
    /// Family and specialized dtypes (`MatvecSwiGlu q4_k+q4_k`).
    kernel: String,
    dispatches_per_token: usize,
    us_per_token: f64,
    /// Fraction of the profiled GPU time per token.
    share: f64,
    /// The node of its slowest dispatch (the first output of that dispatch group).
    slowest_node: String,
    slowest_us: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    device: String,
    dispatches_per_token: Option<usize>,
    /// The GPU schedule's level (absent on the CPU).
    opt_level: Option<u8>,
    gpu_bytes: Option<u64>,
    state_bytes: u64,
    prompt_tokens: u32,
    gen_tokens: u32,
    prompt_tok_per_s: f64,
    decode_tok_per_s: f64,
    ms_per_token_median: f64,
    ms_per_token_min: f64,
    weight_bytes_per_token: u64,
    weight_gb_per_s: f64,
    /// CPU only: this machine's read bandwidth with the same threads, measured around the
    /// decode (best pass of both measurements), GB/s.
    read_bandwidth_gb_per_s: Option<f64>,
    /// CPU only: `weight_gb_per_s / read_bandwidth_gb_per_s`.
    bandwidth_fraction: Option<f64>,
    /// With `--profile`: GPU microseconds per token between the first dispatch's timestamp and
    /// the end of the last, and the kernels by time, largest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile_us_per_token: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profile: Vec<KernelProfile>,
}

/// Bytes of the array the CPU roofline is measured on (32× a 32 MiB L3).
const ROOFLINE_BYTES: usize = 1 << 30;

/// The CPU roofline: read bandwidth with rayon's threads (see `apr_ir_cpu::bandwidth`).
fn read_bandwidth() -> Option<f64> {
    let data = apr_ir_cpu::bandwidth::array(ROOFLINE_BYTES)?;
    apr_ir_cpu::bandwidth::measure(&data, rayon::current_num_threads(), 3).ok()
}

pub fn run(args: Args) -> Result<()> {
    if args.gen_tokens == 0 || args.prompt_tokens == 0 {
        bail!("--prompt-tokens and --gen-tokens must be at least 1");
    }
    if args.profile && args.backend != crate::backend::Backend::Gpu {
        bail!("--profile times GPU dispatches: it needs --backend gpu");
    }
    let model = crate::load::open_model(args.model.as_deref())?;
    let profiled = if args.profile { args.gen_tokens } else { 0 };
    let positions = u64::from(args.prompt_tokens) + u64::from(args.gen_tokens) + u64::from(profiled);
    if positions > model.params.context_length {
        bail!("{positions} positions exceed the model's context of {}", model.params.context_length);
    }
    let graph = model.lower(Some(positions))?;
    let per_token = graph.stats().weight_bytes_per_token;
    let level = super::opt_level(args.opt)?;
    let opened = crate::backend::open(args.backend, &graph, &model, level, None)?;
    let mut dec = opened.decoder;
    let cpu = args.backend == crate::backend::Backend::Cpu;
    let bw_before = if cpu { read_bandwidth() } else { None };
    let vocab = model.params.vocab;
    let start = Instant::now();
    let mut logits = Vec::new();
    for pos in 0..args.prompt_tokens {
        let tok = ((u64::from(pos) * 7919 + 13) % vocab) as u32;
        logits = dec.step(tok, pos)?;
    }
    let prompt_s = start.elapsed().as_secs_f64();
    let mut greedy = Sampler::new(SamplerConfig::greedy());
    let mut times = Vec::with_capacity(args.gen_tokens as usize);
    for i in 0..args.gen_tokens {
        let tok = greedy.sample(&logits);
        let t0 = Instant::now();
        logits = dec.step(tok, args.prompt_tokens + i)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let bw_after = if cpu { read_bandwidth() } else { None };
    let mut stamps: Vec<Vec<apr_ir_gen::DispatchTime>> = Vec::new();
    for i in 0..profiled {
        let tok = greedy.sample(&logits);
        let Some(step) = dec.step_profiled(tok, args.prompt_tokens + args.gen_tokens + i) else {
            bail!("this backend cannot time its dispatches");
        };
        let (l, t) = step?;
        logits = l;
        stamps.push(t);
    }
    let (profile_us, profile) = kernel_profile(&stamps);
    let bandwidth = match (bw_before, bw_after) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let total: f64 = times.iter().sum();
    let r = Report {
        model: model.name.clone(),
        device: opened.device.clone(),
        dispatches_per_token: opened.dispatches,
        opt_level: opened.dispatches.map(|_| level.number()),
        gpu_bytes: opened.gpu_bytes,
        state_bytes: graph.stats().state_bytes,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        prompt_tok_per_s: f64::from(args.prompt_tokens) / prompt_s,
        decode_tok_per_s: f64::from(args.gen_tokens) / total,
        ms_per_token_median: median * 1e3,
        ms_per_token_min: times[0] * 1e3,
        weight_bytes_per_token: per_token,
        weight_gb_per_s: per_token as f64 / median / 1e9,
        read_bandwidth_gb_per_s: bandwidth,
        bandwidth_fraction: bandwidth.map(|b| per_token as f64 / median / 1e9 / b),
        profile_us_per_token: profile_us,
        profile,
    };
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("model        {} on {}", r.model, r.device);
        if let Some(d) = r.dispatches_per_token {
            println!("dispatches   {d} per token at -O{}", level.number());
        }
        if let Some(b) = r.gpu_bytes {
            println!(
                "gpu memory   {} allocated (kv cache {})",
                super::human_bytes(b),
                super::human_bytes(r.state_bytes)
            );
        }
        println!("prompt       {} tokens at {:.1} tok/s", r.prompt_tokens, r.prompt_tok_per_s);
        println!(
            "decode       {} tokens at {:.1} tok/s, {:.2} ms/token median ({:.2} min)",
            r.gen_tokens, r.decode_tok_per_s, r.ms_per_token_median, r.ms_per_token_min
        );
        println!(
            "weights      {} per token, streamed at {:.2} GB/s",
            super::human_bytes(r.weight_bytes_per_token),
            r.weight_gb_per_s
        );
        if let (Some(bw), Some(f)) = (r.read_bandwidth_gb_per_s, r.bandwidth_fraction) {
            println!(
                "roofline     read bandwidth {bw:.2} GB/s ({} threads, measured around the run): {:.0}% of it",
                rayon::current_num_threads(),
                f * 100.0
            );
        }
        if let Some(total) = r.profile_us_per_token {
            println!(
                "profile      {total:.0} µs of GPU time per token over {profiled} tokens (timestamps between dispatches; they add a few %)"
            );
            println!(
                "  {:<34} {:>9} {:>10} {:>7} {:>9}  slowest dispatch",
                "kernel", "per token", "µs/token", "share", "µs each"
            );
            for k in &r.profile {
                println!(
                    "  {:<34} {:>9} {:>10.1} {:>6.1}% {:>9.1}  {} ({:.1} µs)",
                    k.kernel,
                    k.dispatches_per_token,
                    k.us_per_token,
                    k.share * 100.0,
                    k.us_per_token / k.dispatches_per_token.max(1) as f64,
                    k.slowest_node,
                    k.slowest_us
                );
            }
        }
    }
    Ok(())
}

/// Per-kernel totals of profiled steps (each step a list of dispatch times): the GPU time per
/// token and the kernels, largest first. `(None, [])` without steps.
fn kernel_profile(steps: &[Vec<apr_ir_gen::DispatchTime>]) -> (Option<f64>, Vec<KernelProfile>) {
    if steps.is_empty() {
        return (None, Vec::new());
    }
    let n = steps.len() as f64;
    let mut kernels: Vec<KernelProfile> = Vec::new();
    for step in steps {
        for d in step {
            let k = match kernels.iter().position(|k| k.kernel == d.kernel) {
                Some(i) => &mut kernels[i],
                None => {
                    kernels.push(KernelProfile {
                        kernel: d.kernel.clone(),
                        dispatches_per_token: 0,
                        us_per_token: 0.0,
                        share: 0.0,
                        slowest_node: String::new(),
                        slowest_us: 0.0,
                    });
                    let last = kernels.len() - 1;
                    &mut kernels[last]
                }
            };
            k.us_per_token += d.micros / n;
            if d.micros > k.slowest_us {
                k.slowest_us = d.micros;
                k.slowest_node.clone_from(&d.node);
            }
        }
    }
    for k in &mut kernels {
        k.dispatches_per_token = steps[0].iter().filter(|d| d.kernel == k.kernel).count();
    }
    let total: f64 = kernels.iter().map(|k| k.us_per_token).sum();
    for k in &mut kernels {
        k.share = if total > 0.0 { k.us_per_token / total } else { 0.0 };
    }
    kernels.sort_by(|a, b| b.us_per_token.total_cmp(&a.us_per_token));
    (Some(total), kernels)
}
