//! `apr-ir compile`: lower, verify, plan dispatches, report.

use crate::load::Source;
use anyhow::{Context, Result};
use apr_ir::fuse::{fuse, FuseStats};
use apr_ir::group::{check_coverage, Group};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// Optimization level: 0 = one dispatch per compute node, 1 = row-local fusion
    /// (norms, softmax, RoPE, SwiGLU), 2 = also matvec epilogues, attention, cache writes.
    #[arg(short = 'O', default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    opt: u8,
    /// Write the IR and its schedule as JSON to this file.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Write the IR's human text form to this file.
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Print the statistics as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// The `compile --json` object (the CLI contract's fields first).
#[derive(Serialize)]
struct Report {
    nodes: u64,
    compute_nodes: u64,
    /// GPU dispatches per decoded token (a group may take more than one: attention takes two).
    dispatches: u64,
    opt_level: u8,
    weight_bytes: u64,
    gpu_bytes: u64,
    model: String,
    arch: String,
    max_ctx: u64,
    state_bytes: u64,
    activation_bytes: u64,
    compile_ms: f64,
    /// Dispatch groups: the entries of the schedule `-o` writes.
    groups: u64,
    fusion: FuseStats,
}

#[derive(Serialize)]
struct Schedule<'a> {
    opt_level: u8,
    dispatches: &'a [Group],
}

#[derive(Serialize)]
struct Compiled<'a> {
    #[serde(flatten)]
    graph: &'a apr_ir::Graph,
    schedule: Schedule<'a>,
}

pub fn run(args: Args) -> Result<()> {
    let level = super::opt_level(args.opt)?;
    let opt = level.number();
    let start = Instant::now();
    let loaded = args.source.load()?;
    let g = &loaded.graph;
    let (groups, fusion) = fuse(g, level).context("fusing the graph")?;
    check_coverage(g, &groups).context("schedule does not cover the graph")?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let s = g.stats();
    let report = Report {
        nodes: s.nodes,
        compute_nodes: s.compute_nodes,
        dispatches: groups.iter().map(|grp| apr_ir_wgpu::plan::passes(&grp.kernel)).sum(),
        opt_level: opt,
        weight_bytes: s.weight_bytes,
        // Weights as stored + KV cache + every activation unaliased (an upper bound until
        // the GPU buffer planner shares activation buffers).
        gpu_bytes: s.weight_bytes.saturating_add(s.state_bytes).saturating_add(s.activation_bytes),
        model: g.meta.name.clone(),
        arch: g.meta.arch.clone(),
        max_ctx: g.meta.max_ctx,
        state_bytes: s.state_bytes,
        activation_bytes: s.activation_bytes,
        compile_ms,
        groups: groups.len() as u64,
        fusion,
    };
    if let Some(path) = &args.output {
        let doc = Compiled { graph: g, schedule: Schedule { opt_level: opt, dispatches: &groups } };
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.text {
        std::fs::write(path, g.to_text()).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        use super::human_bytes as hb;
        println!("model        {} ({})", report.model, loaded.origin);
        println!("arch         {}   max_ctx {}", report.arch, report.max_ctx);
        println!("nodes        {} ({} compute)", report.nodes, report.compute_nodes);
        println!("dispatches   {} per token at -O{} ({} groups)", report.dispatches, report.opt_level, report.groups);
        println!("weights      {}", hb(report.weight_bytes));
        println!("kv cache     {}", hb(report.state_bytes));
        println!("activations  {} (unaliased)", hb(report.activation_bytes));
        println!("gpu bytes    {}", hb(report.gpu_bytes));
        if !report.fusion.kernels.is_empty() {
            let kinds: Vec<String> = report.fusion.kernels.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            println!("fused        {}", kinds.join(", "));
        }
        if !report.fusion.fallbacks.is_empty() {
            println!("unfused      {} region(s) left unfused (see --json)", report.fusion.fallbacks.len());
        }
        println!("compiled in  {:.1} ms", report.compile_ms);
        if let Some(path) = &args.output {
            println!("wrote        {}", path.display());
        }
    }
    Ok(())
}
