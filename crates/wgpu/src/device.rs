//! Adapter and device: the real limits of the adapter, clear errors when there is none.

use crate::GpuError;
use std::sync::{Arc, Mutex};

/// Options for opening the GPU.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Pretend the adapter's storage-binding limit is this many bytes (tests use it to prove
    /// that big tensors are split across bindings).
    pub max_binding_override: Option<u64>,
}

/// An opened device with the limits apr-ir plans against.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// The storage-binding size the planner uses (≤ the adapter's).
    pub max_binding: u64,
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
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("apr-ir"),
            required_features: wgpu::Features::empty(),
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
        let adapter_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let max_binding = opts.max_binding_override.map_or(adapter_binding, |o| o.min(adapter_binding)) & !3;
        tracing::info!(adapter = %info.name, backend = ?info.backend, max_binding, "opened GPU");
        Ok(Gpu { device, queue, info, limits, max_binding, errors })
    }

    /// Fail with the first error wgpu reported, if any.
    pub fn check(&self) -> Result<(), GpuError> {
        match self.errors.lock().ok().and_then(|mut e| e.take()) {
            Some(msg) => Err(GpuError::Device(msg)),
            None => Ok(()),
        }
    }

    /// "NVIDIA H100 (Vulkan)".
    pub fn describe(&self) -> String {
        format!("{} ({:?}, driver {})", self.info.name, self.info.backend, self.info.driver_info)
    }
}
