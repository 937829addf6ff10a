//! The wgpu objects a [`Schedule`](super::Schedule) is made of and the plumbing around them:
//! compute pipelines and their explicit bind group layouts, workgroup counts, dispatch
//! recording, batched uploads and staging-buffer read-back.

use super::Dispatch;
use crate::device::Gpu;
use crate::kernels::{fused_source_for, source_for};
use crate::plan::{Grid, Plan};
use crate::GpuError;
use apr_ir::DType;

/// The pipeline of a plan's kernel and its bind group layout.
pub(super) fn make_pipeline(gpu: &Gpu, p: &Plan) -> (wgpu::ComputePipeline, wgpu::BindGroupLayout) {
    let key = (p.family, p.dtype, p.dtype2);
    let layout = bind_group_layout(&gpu.device, p.bindings.len());
    let pipeline_layout = gpu.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(&format!("{key:?}")),
        source: wgpu::ShaderSource::Wgsl(kernel_source(p, gpu.f16).into()),
    };
    // Every check stays on except the loop counter naga adds to each loop so that a driver
    // cannot assume an infinite loop away (on the H200 it cost ~5 % of a 7B decode step:
    // BENCHMARKS.md, "GPU: loop bounding, f16 block scales").
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    checks.force_loop_bounding = false;
    // SAFETY: `ShaderRuntimeChecks::force_loop_bounding = false` requires that no shader
    // contains an infinite loop. Every loop in `kernels/*.wgsl` is a `for` whose variable steps
    // monotonically towards a bound that is a size or count below 2³¹ (so a u32 step cannot
    // wrap past it); `kernels::tests::every_loop_terminates` holds the sources to that form.
    // Bounds checks and every other check keep wgpu's defaults.
    let module = unsafe { gpu.device.create_shader_module_trusted(desc, checks) };
    let pipe = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&format!("{key:?}")),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    (pipe, layout)
}

/// The WGSL source of a plan's kernel on a device whose `SHADER_F16` is `shader_f16`.
fn kernel_source(p: &Plan, shader_f16: bool) -> String {
    if p.family.fused() {
        let dtypes: Vec<DType> = [p.dtype, p.dtype2].into_iter().flatten().collect();
        return fused_source_for(p.family, &dtypes, shader_f16);
    }
    source_for(p.family, p.dtype, shader_f16)
}

/// Binding 0: the step uniform; 1: parameters; then `n` storage buffers, the last written.
fn bind_group_layout(device: &wgpu::Device, n: usize) -> wgpu::BindGroupLayout {
    let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let mut entries = vec![
        wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        },
        storage(1, true),
    ];
    for k in 0..n {
        entries.push(storage(2 + k as u32, k + 1 < n));
    }
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries })
}

/// Workgroups `(x, y)` for a grid once `ctx` is bound (64 threads each; y only when x alone
/// cannot reach the count).
pub(super) fn workgroups(grid: &Grid, ctx: u64) -> (u32, u32) {
    let groups = match grid {
        Grid::Threads(shape) => shape.iter().map(|d| d.eval(ctx)).product::<u64>().div_ceil(64),
        Grid::Workgroups(n) => *n,
    };
    let x = groups.min(65_535);
    let y = if x == 0 { 0 } else { groups.div_ceil(x) };
    (x as u32, y as u32)
}

/// Bytes of queued uploads after which the queue is flushed, so staging memory stays small
/// instead of holding a copy of every weight until the first submit.
const UPLOAD_FLUSH: usize = 256 << 20;

/// Queues buffer uploads, flushing every [`UPLOAD_FLUSH`] bytes.
pub(super) struct Uploader<'a> {
    gpu: &'a Gpu,
    pending: usize,
}

impl<'a> Uploader<'a> {
    /// Uploads to `gpu`, none pending yet.
    pub(super) fn new(gpu: &'a Gpu) -> Self {
        Uploader { gpu, pending: 0 }
    }

    /// Write `bytes` to `buf`, padding to a multiple of 4.
    pub(super) fn write(&mut self, buf: &wgpu::Buffer, bytes: &[u8]) {
        let whole = bytes.len() & !3;
        for (i, chunk) in bytes[..whole].chunks(UPLOAD_FLUSH).enumerate() {
            self.gpu.queue.write_buffer(buf, (i * UPLOAD_FLUSH) as u64, chunk);
            self.pending += chunk.len();
            if self.pending >= UPLOAD_FLUSH {
                self.gpu.queue.submit([]);
                let _ = self.gpu.device.poll(wgpu::PollType::wait_indefinitely());
                self.pending = 0;
            }
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.gpu.queue.write_buffer(buf, whole as u64, &tail);
        }
    }
}

/// Map a staging buffer and copy it out as f32.
pub(super) fn read_back(gpu: &Gpu, staging: &wgpu::Buffer) -> Result<Vec<f32>, GpuError> {
    let bytes = read_back_bytes(gpu, staging)?;
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Map a staging buffer and copy out its bytes.
pub(super) fn read_back_bytes(gpu: &Gpu, staging: &wgpu::Buffer) -> Result<Vec<u8>, GpuError> {
    let slice = staging.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Device(e.to_string()))?;
    rx.recv().map_err(|e| GpuError::Device(e.to_string()))?.map_err(|e| GpuError::Device(e.to_string()))?;
    let out = {
        let view = slice.get_mapped_range().map_err(|e| GpuError::Device(e.to_string()))?;
        view.to_vec()
    };
    staging.unmap();
    Ok(out)
}

/// Record one dispatch at `ctx`.
pub(super) fn encode(pass: &mut wgpu::ComputePass<'_>, pipelines: &[wgpu::ComputePipeline], d: &Dispatch, ctx: u64) {
    let (x, y) = workgroups(&d.grid, ctx);
    if x == 0 {
        return;
    }
    pass.set_pipeline(&pipelines[d.pipeline]);
    pass.set_bind_group(0, &d.bind_group, &[]);
    pass.dispatch_workgroups(x, y, 1);
}
