//! `apr-ir check`: run one IR on the CPU reference and on the GPU schedule, teacher-forced,
//! and name the IR node where they diverge (crates/check); write the reports.
//!
//! Exit codes: 0 parity holds, 1 mismatch (the report names the node), 2 could not run.

use anyhow::{bail, Context, Result};
use apr_ir::fuse::{fuse, OptLevel};
use apr_ir::group::Group;
use apr_ir::Graph;
use apr_ir_check::checker::{check, CheckOptions, Device, Reference, Report, Values};
use apr_ir_check::report;
use apr_ir_cpu::{Capture, Data, Interpreter, WeightSource};
use apr_ir_wgpu::{Fault, FaultKind, Gpu, GpuOptions, Schedule, WeightBytes};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A GGUF file, an HF model directory, or a repro directory written by --repro; the
    /// built-in default model if omitted.
    model: Option<PathBuf>,
    /// Text whose tokens start the stream (then the CPU's greedy choices follow).
    #[arg(long, conflicts_with = "tokens")]
    prompt: Option<String>,
    /// Token ids that start the stream: 1,2,3.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    tokens: Option<Vec<u32>>,
    /// Positions to decode and compare.
    #[arg(long, default_value_t = 64)]
    positions: u32,
    /// Optimization level of the GPU schedule.
    #[arg(short = 'O', default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    opt: u8,
    /// Inject a fault into the GPU backend: NODE[:KIND], KIND one of scale (×1.05, default),
    /// offset, sign, nan, skip, swap. The checker is not told; it must find it.
    #[arg(long, value_name = "NODE[:KIND]")]
    inject_fault: Option<String>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Write the culprit's neighbourhood as DOT here.
    #[arg(long, value_name = "FILE")]
    dot: Option<PathBuf>,
    /// Write JUnit XML here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a minimized repro of a mismatch (the culprit's dispatch with captured inputs).
    #[arg(long, value_name = "DIR")]
    repro: Option<PathBuf>,
    /// KV-cache rows to allocate (default: enough for the positions checked).
    #[arg(long)]
    ctx: Option<u64>,
}

/// The CPU interpreter as the checker's reference: every node's value per step.
struct CpuReference<'a> {
    interp: Interpreter<'a>,
}

impl Reference for CpuReference<'_> {
    fn step(&mut self, token: u32, pos: u32) -> Result<Values, String> {
        let r = self.interp.step(token, pos, &Capture::All).map_err(|e| e.to_string())?;
        Ok(r.captured
            .into_iter()
            .map(|(id, t)| {
                let v = match t.data {
                    Data::F32(v) => v,
                    Data::I32(v) => v.into_iter().map(|x| x as f32).collect(),
                };
                (id, v)
            })
            .collect())
    }
}

/// The GPU schedule as the checker's device.
struct GpuDevice {
    schedule: Schedule,
}

impl Device for GpuDevice {
    fn groups(&self) -> &[Group] {
        self.schedule.groups()
    }
    fn step(&mut self, token: u32, pos: u32) -> Result<Vec<Vec<f32>>, String> {
        self.schedule.step_groups(token, pos).map_err(|e| e.to_string())
    }
    fn isolate(&mut self, k: usize, operands: &Values, pos: u32) -> Result<Vec<f32>, String> {
        self.schedule.isolate(k, operands, pos).map_err(|e| e.to_string())
    }
    fn drill(&mut self, k: usize, operands: &Values, pos: u32) -> Result<Values, String> {
        self.schedule.drill(k, operands, pos).map_err(|e| e.to_string())
    }
}

/// `NODE[:KIND]` against the graph.
pub fn parse_fault(g: &Graph, spec: &str) -> Result<Fault> {
    let (node, kind) = match spec.rsplit_once(':') {
        Some((n, k)) if FaultKind::parse(k).is_some() => (n, k),
        _ => (spec, "scale"),
    };
    let id =
        g.find(node).with_context(|| format!("--inject-fault: no node {node:?} (give an id like %12 or a name)"))?;
    if !g.node(id).is_some_and(|n| n.op.is_compute()) {
        bail!("--inject-fault: {node} computes nothing (a leaf or a view); pick a compute node");
    }
    let kind = FaultKind::parse(kind).with_context(|| format!("--inject-fault: unknown kind {kind:?}"))?;
    Ok(Fault { node: id, kind })
}

/// Run the check; `Ok(true)` when parity holds.
pub fn run(args: Args) -> Result<bool> {
    let level = super::opt_level(args.opt)?;
    if args.positions == 0 {
        bail!("--positions must be at least 1");
    }
    if let Some(dir) = args.model.as_ref().filter(|p| p.join(crate::repro::MANIFEST).exists()) {
        return crate::repro::check_repro(dir, &args.json, &args.html, &args.junit);
    }
    let model = crate::load::open_model(args.model.as_deref())?;
    let ctx = args.ctx.unwrap_or(u64::from(args.positions).max(16));
    let graph = model.lower(Some(ctx)).context("lowering the model")?;
    if u64::from(args.positions) > graph.meta.max_ctx {
        bail!("--positions {} exceeds the KV cache ({} rows; raise --ctx)", args.positions, graph.meta.max_ctx);
    }
    let prompt: Vec<u32> = match (&args.tokens, &args.prompt) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) => {
            let tok = model.tokenizer()?;
            let ids = tok.encode(p, true);
            if ids.is_empty() {
                bail!("the prompt encodes to no tokens");
            }
            ids
        }
        (None, None) => vec![model.tokenizer().ok().and_then(|t| t.bos()).unwrap_or(0)],
    };
    let vocab =
        graph.outputs.first().and_then(|o| graph.node(o.node)).and_then(|n| n.ty.last_dim()).and_then(|d| d.as_const());
    if let (Some(v), Some(bad)) = (vocab, prompt.iter().find(|&&t| u64::from(t) >= vocab.unwrap_or(u64::MAX))) {
        bail!("token {bad} is outside the vocabulary ({v} tokens)");
    }
    let fault = args.inject_fault.as_deref().map(|f| parse_fault(&graph, f)).transpose()?;
    let report = run_check(&graph, &model, &model, level, fault, &prompt, 0, args.positions)?;
    print!("{}", report::summary(&report));
    write_reports(&graph, &report, &args.json, &args.html, &args.dot, &args.junit)?;
    if let (Some(dir), Some(c)) = (&args.repro, &report.culprit) {
        crate::repro::write(dir, &graph, &model, level, fault, c, &prompt)?;
    }
    Ok(report.culprit.is_none())
}

/// One differential run at `level` (fault optional) over `positions` positions from `first`
/// (the caller prints or writes the report).
#[allow(clippy::too_many_arguments)]
pub fn run_check(
    graph: &Graph,
    cpu_weights: &dyn WeightSource,
    gpu_weights: &dyn WeightBytes,
    level: OptLevel,
    fault: Option<Fault>,
    prompt: &[u32],
    first: u32,
    positions: u32,
) -> Result<Report> {
    let (groups, _) = fuse(graph, level).context("fusing the graph")?;
    let gpu = Gpu::open(&GpuOptions::default())?;
    let schedule =
        Schedule::build_checked(gpu, graph, gpu_weights, &groups, level, fault).context("building the GPU schedule")?;
    let mut device = GpuDevice { schedule };
    let mut reference = CpuReference { interp: Interpreter::new(graph, cpu_weights)? };
    let opts = CheckOptions { opt_level: level.number(), first_position: first, stop_at_first: true };
    let progress = crate::progress::spinner(&format!("checking {positions} positions at -O{}", level.number()));
    let r = check(graph, &mut reference, &mut device, prompt, positions, &opts).map_err(anyhow::Error::msg);
    progress.finish_and_clear();
    r
}

/// Write whichever reports were asked for.
pub fn write_reports(
    graph: &Graph,
    r: &Report,
    json: &Option<PathBuf>,
    html: &Option<PathBuf>,
    dot: &Option<PathBuf>,
    junit: &Option<PathBuf>,
) -> Result<()> {
    let write = |p: &Option<PathBuf>, text: String| -> Result<()> {
        if let Some(p) = p {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    };
    write(json, report::json(r))?;
    write(html, report::html(graph, r))?;
    write(dot, report::dot(graph, r))?;
    write(junit, report::junit(r))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The wgpu backend poisons with the pattern the checker looks for (wgpu cannot depend on
    /// the checker, so the two constants are tied here).
    #[test]
    fn poison_bits_agree() {
        assert_eq!(apr_ir_wgpu::POISON_BITS, apr_ir_check::checker::POISON_BITS);
    }
}
