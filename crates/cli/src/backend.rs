//! Choosing and opening a backend for `run` and `bench`, and the CPU parity gate in front of
//! the GPU path.

use anyhow::{bail, Context, Result};
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

/// Open `backend` for `graph`. The CPU path never touches wgpu.
pub fn open<'a>(backend: Backend, graph: &'a Graph, model: &'a Model) -> Result<Opened<'a>> {
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
            let schedule = Schedule::build(gpu, graph, model).context("building the GPU schedule")?;
            let dispatches = Some(schedule.dispatch_count());
            let gpu_bytes = Some(schedule.gpu_bytes);
            Ok(Opened { decoder: Box::new(GpuDecoder::new(schedule, positions)), device, dispatches, gpu_bytes })
        }
    }
}

/// The parity gate: decode the first `steps` prompt tokens on both backends (both fed the
/// same tokens) and require logits cosine ≥ 0.99 (f64) and the same argmax unless the top two
/// CPU logits are within rounding.
pub fn parity_gate(gpu: &mut dyn Decoder, graph: &Graph, model: &Model, prompt: &[u32], steps: usize) -> Result<()> {
    let mut cpu = CpuDecoder::new(Interpreter::new(graph, model)?, graph.meta.max_ctx);
    for (pos, &tok) in prompt.iter().take(steps).enumerate() {
        let a = cpu.step(tok, pos as u32)?;
        let b = gpu.step(tok, pos as u32)?;
        if a.len() != b.len() || a.is_empty() {
            bail!("GPU/CPU parity gate failed at position {pos}: {} GPU logits vs {} CPU logits", b.len(), a.len());
        }
        let dot: f64 = a.iter().zip(&b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
        let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let cosine = dot / (na * nb).max(f64::MIN_POSITIVE);
        let (ia, ib) = (apr_ir_gen::argmax(&a), apr_ir_gen::argmax(&b));
        let near_tie = (a[ia as usize] - a[ib as usize]).abs() <= 1e-3 * a[ia as usize].abs().max(1.0);
        if cosine.is_nan() || cosine < 0.99 || (ia != ib && !near_tie) {
            bail!(
                "GPU/CPU parity gate failed at position {pos}: logits cosine {cosine:.4}, argmax {ib} vs CPU {ia} \
                 (--skip-parity-gate runs anyway, unverified)"
            );
        }
    }
    Ok(())
}
