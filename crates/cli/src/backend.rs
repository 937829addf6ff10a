//! Choosing and opening a backend for `run` and `bench`, and the CPU parity gate in front of
//! the GPU path.

use anyhow::{Context, Result};
use apr_ir::fuse::{fuse, OptLevel};
use apr_ir::Graph;
use apr_ir_check::gate::GateFailure;
use apr_ir_cpu::{CpuDecoder, Interpreter};
use apr_ir_gen::Decoder;
use apr_ir_model::Model;
use apr_ir_wgpu::{Fault, Gpu, GpuDecoder, GpuOptions, Schedule};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Gpu,
}

/// An opened backend, with what it runs on.
pub struct Opened<'a> {
    pub decoder: Box<dyn Decoder + 'a>,
    pub device: String,
    pub dispatches: Option<usize>,
    /// Bytes of GPU buffers the schedule allocated.
    pub gpu_bytes: Option<u64>,
}

/// Open `backend` for `graph`; the GPU schedule runs the dispatch groups of `level`, with
/// `fault` injected if given (a self-test of the parity gate: the gate is not told). The CPU
/// path never touches wgpu (and has no levels: it interprets the graph node by node).
pub fn open<'a>(
    backend: Backend,
    graph: &'a Graph,
    model: &'a Model,
    level: OptLevel,
    fault: Option<Fault>,
) -> Result<Opened<'a>> {
    let positions = graph.meta.max_ctx;
    match backend {
        Backend::Cpu => Ok(Opened {
            decoder: Box::new(CpuDecoder::new(Interpreter::new(graph, model)?, positions)),
            device: format!("cpu ({} threads)", rayon::current_num_threads()),
            dispatches: None,
            gpu_bytes: None,
        }),
        Backend::Gpu => {
            let gpu = Gpu::open(&GpuOptions::default())?;
            let device = gpu.describe();
            let (groups, _) = fuse(graph, level).context("fusing the graph")?;
            let schedule = Schedule::build_checked(gpu, graph, model, &groups, level, fault)
                .with_context(|| format!("building the GPU schedule at -O{}", level.number()))?;
            let dispatches = Some(schedule.dispatch_count());
            let gpu_bytes = Some(schedule.gpu_bytes);
            Ok(Opened { decoder: Box::new(GpuDecoder::new(schedule, positions)), device, dispatches, gpu_bytes })
        }
    }
}

/// Where the parity gate failed.
pub struct GateFailed {
    /// The first position whose GPU logits failed the gate.
    pub pos: u32,
    pub why: GateFailure,
}

/// The parity gate: decode the first `steps` prompt tokens on both backends (both fed the
/// same tokens) and hold every GPU logits row to the CPU's with `apr_ir_check::logits_gate`;
/// the first failing position, if any.
pub fn parity_gate(
    gpu: &mut dyn Decoder,
    graph: &Graph,
    model: &Model,
    prompt: &[u32],
    steps: usize,
) -> Result<Option<GateFailed>> {
    // A few steps: not worth re-encoding every matrix first (see `Interpreter::new_stored`).
    let mut cpu = CpuDecoder::new(Interpreter::new_stored(graph, model)?, graph.meta.max_ctx);
    for (pos, &tok) in prompt.iter().take(steps).enumerate() {
        let pos = u32::try_from(pos).context("prompt too long")?;
        let a = cpu.step(tok, pos)?;
        let b = gpu.step(tok, pos)?;
        if let Err(why) = apr_ir_check::logits_gate(&b, &a, apr_ir_check::GateRule::default()) {
            return Ok(Some(GateFailed { pos, why }));
        }
    }
    Ok(None)
}
