//! Adapter and device: the real limits of the adapter, clear errors when there is none.

use crate::kernels::{source_for, Family};
use crate::GpuError;
use apr_ir::DType;
use std::sync::{Arc, Mutex};

/// Options for opening the GPU.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Pretend the adapter's storage-binding limit is this many bytes (tests use it to prove
    /// that big tensors are split across bindings).
    pub max_binding_override: Option<u64>,
    /// Do not request `SHADER_F16` even where the adapter has it: F16 weights are then read as
    /// u32 words and decoded with integer operations, the path of adapters without it (tests
    /// use it to run both paths on one adapter).
    pub no_f16: bool,
}

/// An opened device with the limits apr-ir plans against.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// The storage-binding size the planner uses (≤ the adapter's).
    pub max_binding: u64,
    /// Whether kernels read F16 weights as `f16` storage (`kernels::source_for`); otherwise as
    /// u32 words, decoded with integer operations. True when the adapter has `SHADER_F16`,
    /// [`GpuOptions::no_f16`] is not set, and the f16 kernels convert every f16 exactly on this
    /// device (probed when it opens: `probe_f16`).
    pub f16: bool,
    /// Whether timestamps can be written between the dispatches of a compute pass
    /// (`TIMESTAMP_QUERY` and `TIMESTAMP_QUERY_INSIDE_PASSES`, requested where the adapter has
    /// both): [`crate::Schedule::step_profiled`] needs them.
    pub timestamps: bool,
    /// How F16 weights are read and, on the u32 path, why.
    f16_path: String,
    /// The first error wgpu reported outside an error scope (validation, out of memory,
    /// device lost); checked after each step so it becomes an error, not a panic.
    errors: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// Open the first Vulkan adapter (high performance preferred), asking for its real limits.
    pub fn open(opts: &GpuOptions) -> Result<Gpu, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            // Real limits, not fingerprint-resistant buckets: we plan against them.
            apply_limit_buckets: false,
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let want_f16 = !opts.no_f16 && adapter.features().contains(wgpu::Features::SHADER_F16);
        let mut required_features = if want_f16 { wgpu::Features::SHADER_F16 } else { wgpu::Features::empty() };
        let stamps = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if adapter.features().contains(stamps) {
            required_features |= stamps;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("apr-ir"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::default(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::default(),
        }))
        .map_err(|e| GpuError::Device(e.to_string()))?;
        let errors: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string().replace('\n', " "));
            }
        }));
        let lost = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut slot) = lost.lock() {
                slot.get_or_insert_with(|| format!("device lost ({reason:?}): {msg}"));
            }
        });
        let (f16, f16_path) = if opts.no_f16 {
            (false, "u32 (GpuOptions::no_f16)".to_string())
        } else if !device.features().contains(wgpu::Features::SHADER_F16) {
            (false, "u32 (no SHADER_F16)".to_string())
        } else {
            // After the handlers: an error the probe's scope does not catch is the device's.
            match probe_f16(&device, &queue) {
                Ok(()) => (true, "f16".to_string()),
                Err(why) => {
                    tracing::warn!(%why, "F16 weights stay u32 words: the f16 kernels are inexact here");
                    (false, format!("u32 (SHADER_F16, but {why})"))
                }
            }
        };
        let adapter_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let max_binding = opts.max_binding_override.map_or(adapter_binding, |o| o.min(adapter_binding)) & !3;
        let (name, backend) = (&info.name, info.backend);
        tracing::info!(adapter = %name, ?backend, max_binding, f16_weights = %f16_path, "opened GPU");
        let timestamps = device.features().contains(stamps);
        Ok(Gpu { device, queue, info, limits, max_binding, f16, timestamps, f16_path, errors })
    }

    /// Fail with the first error wgpu reported, if any.
    pub fn check(&self) -> Result<(), GpuError> {
        match self.errors.lock().ok().and_then(|mut e| e.take()) {
            Some(msg) => Err(GpuError::Device(msg)),
            None => Ok(()),
        }
    }

    /// "NVIDIA H100 (Vulkan, driver 570.1, f16 weights as f16)": the last part says how
    /// kernels read F16 weights (`as f16` with `SHADER_F16`, `as u32 (why)` without).
    pub fn describe(&self) -> String {
        let (name, backend, driver) = (&self.info.name, self.info.backend, &self.info.driver_info);
        format!("{name} ({backend:?}, driver {driver}, f16 weights as {})", self.f16_path)
    }
}

/// Whether the kernels of the f16 path are exact on `device`: its F16 cast kernel
/// (`kernels::source_for`, the dequantizer every f16-path kernel uses) run over all 65536 f16 bit
/// patterns must give the CPU dequantizer's f32 bit for bit (a NaN only has to stay a NaN).
///
/// The kernel converts with `f32(h)`, which a device may make inexact for subnormals: Vulkan lets
/// a float conversion flush a subnormal operand to zero unless the shader declares
/// `DenormPreserve` (VK_KHR_shader_float_controls), which naga never emits, and naga 30 cannot
/// bitcast a `vec2<f16>` to a u32 to decode them from their bits instead. A device that flushes
/// keeps F16 weights as u32 words (the exact integer decoding of `dequant.wgsl`). Denormal
/// handling is a device's default float controls, the same for every kernel naga emits (none
/// declares float-control modes), so the cast kernel stands for the matvec and gather ones.
fn probe_f16(device: &wgpu::Device, queue: &wgpu::Queue) -> Result<(), String> {
    const N: u64 = 1 << 16;
    let patterns: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let mut want = vec![0.0f32; N as usize];
    apr_ir_model::quant::dequantize(DType::F16, &patterns, &mut want).map_err(|e| e.to_string())?;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
        device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
    };
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let step = buffer("f16 probe step", 16, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
    let prm = buffer("f16 probe prm", 4, storage);
    let w = buffer("f16 probe w", 2 * N, storage);
    let out = buffer("f16 probe out", 4 * N, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC);
    let staging = buffer("f16 probe read-back", 4 * N, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
    queue.write_buffer(&step, 0, &[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    queue.write_buffer(&prm, 0, &(N as u32).to_le_bytes());
    queue.write_buffer(&w, 0, &patterns);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("f16 probe"),
        source: wgpu::ShaderSource::Wgsl(source_for(Family::Cast, Some(DType::F16), true).into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("f16 probe"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let entries: Vec<wgpu::BindGroupEntry> = [&step, &prm, &w, &out]
        .iter()
        .zip(0..)
        .map(|(b, binding)| wgpu::BindGroupEntry { binding, resource: b.as_entire_binding() })
        .collect();
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("f16 probe"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("f16 probe") });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups((N / 64) as u32, 1, 1);
    }
    enc.copy_buffer_to_buffer(&out, 0, &staging, 0, 4 * N);
    queue.submit([enc.finish()]);
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(format!("the f16 cast kernel failed: {}", e.to_string().replace('\n', " ")));
    }
    let slice = staging.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let got: Vec<f32> = {
        let view = slice.get_mapped_range().map_err(|e| e.to_string())?;
        view.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    staging.unmap();
    let wrong = |(g, c): &(&f32, &f32)| if c.is_nan() { !g.is_nan() } else { g.to_bits() != c.to_bits() };
    let bad = got.iter().zip(&want).filter(wrong).count();
    match got.iter().zip(&want).position(|p| wrong(&p)) {
        None if got.len() == want.len() => Ok(()),
        None => Err(format!("the probe read back {} of {N} values", got.len())),
        Some(h) => Err(format!(
            "f32(h) is inexact for {bad} of {N} f16 patterns, e.g. {h:#06x} gave {:e} for {:e}",
            got[h], want[h]
        )),
    }
}
