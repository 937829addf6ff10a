//! Choosing and opening a backend for `run` and `bench`, and the CPU parity gate in front of
//! the GPU path.

use anyhow::{bail, Context, Result};
use apr_ir::fuse::OptLevel;
use apr_ir::Graph;
use apr_ir_cpu::{CpuDecoder, Interpreter};
use apr_ir_gen::Decoder;
use apr_ir_model::Model;
use apr_ir_wgpu::{Gpu, GpuDecoder, GpuOptions, Schedule};

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

/// Open `backend` for `graph`; the GPU schedule runs the dispatch groups of `level`. The CPU
/// path never touches wgpu (and has no levels: it interprets the graph node by node).
pub fn open<'a>(backend: Backend, graph: &'a Graph, model: &'a Model, level: OptLevel) -> Result<Opened<'a>> {
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
            let schedule = Schedule::build_fused(gpu, graph, model, level)
                .with_context(|| format!("building the GPU schedule at -O{}", level.number()))?;
            let dispatches = Some(schedule.dispatch_count());
            let gpu_bytes = Some(schedule.gpu_bytes);
            Ok(Opened { decoder: Box::new(GpuDecoder::new(schedule, positions)), device, dispatches, gpu_bytes })
        }
    }
}

/// The parity gate: decode the first `steps` prompt tokens on both backends (both fed the
/// same tokens) and hold every GPU logits row to the CPU's with `apr_ir_check::logits_gate`.
pub fn parity_gate(gpu: &mut dyn Decoder, graph: &Graph, model: &Model, prompt: &[u32], steps: usize) -> Result<()> {
    let mut cpu = CpuDecoder::new(Interpreter::new(graph, model)?, graph.meta.max_ctx);
    for (pos, &tok) in prompt.iter().take(steps).enumerate() {
        let a = cpu.step(tok, pos as u32)?;
        let b = gpu.step(tok, pos as u32)?;
        if let Err(why) = apr_ir_check::logits_gate(&b, &a, apr_ir_check::GateRule::default()) {
            bail!("GPU/CPU parity gate failed at position {pos}: {why} (--skip-parity-gate runs anyway, unverified)");
        }
    }
    Ok(())
}
