//! End-to-end CPU decode timing of a model file, like `apr-ir bench --backend cpu` but with
//! only this crate's dependencies (so it builds while other crates are in flux), plus CPU
//! seconds per token (on a shared machine, the interpreter's own cost).
//!
//! Prompt positions are fed one token at a time (not timed), then `--gen-tokens` greedy
//! tokens are timed one step each; prints the median and best ms/token and the weight bytes
//! streamed per second (every matrix is read once per token). `--int16` runs the opt-in
//! `Precision::Int16` (16-bit activations; not the exact reference).
//!
//! ```text
//! cargo run --release -p apr-ir-cpu --example decode_bench -- MODEL.gguf [--prompt-tokens 8 --gen-tokens 16 --int16]
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

use apr_ir_cpu::{CpuDecoder, Interpreter, Precision};
use apr_ir_gen::{Decoder, Sampler, SamplerConfig};
use apr_ir_model::Model;
use std::time::Instant;

/// CPU time used so far by all threads of this process, in seconds (Linux `schedstat`).
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u32| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().unwrap())
    };
    let path = args.get(1).filter(|a| !a.starts_with("--")).expect("usage: decode_bench MODEL [options]");
    let (prompt, gen) = (value("--prompt-tokens", 8), value("--gen-tokens", 16));
    let model = Model::open(path).unwrap();
    let graph = model.lower(Some(u64::from(prompt + gen))).unwrap();
    let per_token = graph.stats().weight_bytes_per_token;
    let precision = if args.iter().any(|a| a == "--int16") { Precision::Int16 } else { Precision::Exact };
    let mut dec =
        CpuDecoder::new(Interpreter::new(&graph, &model).unwrap().with_precision(precision), graph.meta.max_ctx);
    let vocab = model.params.vocab;
    let mut logits = Vec::new();
    for pos in 0..prompt {
        logits = dec.step(((u64::from(pos) * 7919 + 13) % vocab) as u32, pos).unwrap();
    }
    let mut greedy = Sampler::new(SamplerConfig::greedy());
    let mut times = Vec::new();
    let cpu0 = cpu_seconds();
    for i in 0..gen {
        let tok = greedy.sample(&logits);
        let t = Instant::now();
        logits = dec.step(tok, prompt + i).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    let cpu = (cpu_seconds() - cpu0) / f64::from(gen);
    times.sort_by(f64::total_cmp);
    let (median, best) = (times[times.len() / 2], times[0]);
    println!("model        {} ({} threads, {precision:?})", model.name, rayon::current_num_threads());
    println!(
        "decode       {gen} tokens: {:.2} ms/token median, {:.2} best, {:.2} CPU-ms/token",
        median * 1e3,
        best * 1e3,
        cpu * 1e3
    );
    println!(
        "weights      {:.1} MB per token: {:.2} GB/s at the median, {:.2} at the best",
        per_token as f64 / 1e6,
        per_token as f64 / median / 1e9,
        per_token as f64 / best / 1e9
    );
}
