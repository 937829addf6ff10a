//! A small wgpu harness for kernel tests: a device opened by `apr_ir_wgpu::Gpu::open` (the
//! adapter's real limits, `SHADER_F16` where it has it unless told not to), explicit bind group
//! layouts in the kernels' binding convention (0 = step uniform, 1 = `prm`, then read-only
//! operands, the last binding read-write), dispatches in one compute pass, read-back of f32
//! buffers.
//!
//! No adapter: the caller gets `None` and a note on stderr, unless `CI=true`, where that is a
//! failure (CI installs Mesa's lavapipe, so a missing adapter there is a broken setup).

use apr_ir_wgpu::GpuOptions;
use std::sync::OnceLock;
use wgpu::util::DeviceExt;

/// A device and its queue, with the adapter's name for messages.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: String,
    /// Whether the device has `SHADER_F16`: kernels over F16 weights read `f16` storage.
    pub f16: bool,
    opened: apr_ir_wgpu::Gpu,
}

/// A compiled kernel: its pipeline and the layout of its bindings.
pub struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    bindings: u32,
}

/// One dispatch: the buffers for bindings 0.. in order and the workgroup grid.
pub struct Dispatch<'a> {
    pub kernel: &'a Kernel,
    pub buffers: Vec<&'a wgpu::Buffer>,
    pub grid: (u32, u32),
}

/// The process-wide device (with `SHADER_F16` where the adapter has it), or `None` (after a
/// note) when there is no Vulkan adapter.
pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    shared(&GPU, GpuOptions::default())
}

/// A second process-wide device, opened with `no_f16`: F16 weights as u32 words.
pub fn gpu_without_f16() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    shared(&GPU, GpuOptions { no_f16: true, ..GpuOptions::default() })
}

fn shared(cell: &'static OnceLock<Option<Gpu>>, opts: GpuOptions) -> Option<&'static Gpu> {
    cell.get_or_init(|| match open(&opts) {
        Ok(gpu) => {
            eprintln!("packed kernels: adapter {}", gpu.adapter);
            Some(gpu)
        }
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("no wgpu adapter in CI (CI=true): {why}");
            }
            eprintln!("packed kernels: SKIPPED, no wgpu adapter: {why} (install mesa-vulkan-drivers)");
            None
        }
    })
    .as_ref()
}

fn open(opts: &GpuOptions) -> Result<Gpu, String> {
    let opened = apr_ir_wgpu::Gpu::open(opts).map_err(|e| e.to_string())?;
    Ok(Gpu {
        device: opened.device.clone(),
        queue: opened.queue.clone(),
        adapter: opened.describe(),
        f16: opened.f16,
        opened,
    })
}

/// Whether the adapter `Gpu::open` picks has `SHADER_F16`, asked of wgpu directly (not through
/// apr-ir), so a test can hold the device's path to it.
pub fn adapter_has_shader_f16() -> bool {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
        ..Default::default()
    }))
    .is_ok_and(|a| a.features().contains(wgpu::Features::SHADER_F16))
}

impl Gpu {
    /// Compile `source` with entry point `main` and `bindings` bindings (the last read-write).
    pub fn kernel(&self, label: &str, source: &str, bindings: u32) -> Kernel {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..bindings)
            .map(|binding| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: if binding == 0 {
                        wgpu::BufferBindingType::Uniform
                    } else {
                        wgpu::BufferBindingType::Storage { read_only: binding + 1 < bindings }
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Kernel { pipeline, layout, bindings }
    }

    /// A storage buffer holding `bytes`, zero-padded to a multiple of 4 (and at least 4) bytes.
    pub fn storage(&self, bytes: &[u8]) -> wgpu::Buffer {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &padded,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// A storage buffer of u32 words (the `prm` parameters).
    pub fn words(&self, words: &[u32]) -> wgpu::Buffer {
        self.storage(&le_bytes(words.iter().map(|w| w.to_le_bytes())))
    }

    /// A storage buffer of f32 values.
    pub fn floats(&self, values: &[f32]) -> wgpu::Buffer {
        self.storage(&le_bytes(values.iter().map(|v| v.to_le_bytes())))
    }

    /// The step uniform: pos, ctx = pos + 1, token, padding.
    pub fn step(&self, pos: u32) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("step"),
            contents: &le_bytes([pos, pos + 1, 0, 0].iter().map(|w| w.to_le_bytes())),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// Record `dispatches` in one compute pass and submit it; waits for completion.
    pub fn run(&self, dispatches: &[Dispatch<'_>]) {
        let groups: Vec<wgpu::BindGroup> = dispatches
            .iter()
            .map(|d| {
                assert_eq!(d.buffers.len(), d.kernel.bindings as usize, "one buffer per binding");
                let entries: Vec<wgpu::BindGroupEntry> = d
                    .buffers
                    .iter()
                    .zip(0..)
                    .map(|(b, binding)| wgpu::BindGroupEntry { binding, resource: b.as_entire_binding() })
                    .collect();
                self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &d.kernel.layout,
                    entries: &entries,
                })
            })
            .collect();
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            for (d, group) in dispatches.iter().zip(&groups) {
                pass.set_pipeline(&d.kernel.pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(d.grid.0, d.grid.1, 1);
            }
        }
        self.queue.submit([encoder.finish()]);
        self.device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
        // Validation errors (a shader the device refuses, a bad binding) as a failure here.
        self.opened.check().unwrap_or_else(|e| panic!("{e}"));
    }

    /// The first `n` f32 values of `buffer`.
    pub fn read_f32(&self, buffer: &wgpu::Buffer, n: usize) -> Vec<f32> {
        let size = buffer.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
        rx.recv().expect("map callback").expect("map");
        let view = staging.get_mapped_range(..).expect("mapped range");
        let values = view.chunks_exact(4).take(n).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        drop(view);
        staging.unmap();
        values
    }
}

/// A grid of `n` workgroups at most `max_x` wide (2-D when one row is not enough).
pub fn grid(n: u32, max_x: u32) -> (u32, u32) {
    let x = n.clamp(1, max_x.max(1));
    (x, n.div_ceil(x).max(1))
}

fn le_bytes<const N: usize>(items: impl Iterator<Item = [u8; N]>) -> Vec<u8> {
    items.flatten().collect()
}

/// splitmix64: a tiny seeded generator, so a failing case replays from its printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The seed from `PACKED_KERNELS_SEED`, else from the clock.
pub fn seed() -> u64 {
    std::env::var("PACKED_KERNELS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    })
}
