//! The apr-ir wgpu backend.
//!
//! It computes what the CPU interpreter computes, on any Vulkan adapter: Mesa's software
//! lavapipe in CI, NVIDIA on the GPU machine. Every IR op has a WGSL kernel (`kernels/`,
//! validated by naga in tests), and so does every fused kernel of `apr_ir::fuse` (-O1, -O2:
//! one dispatch per dispatch group, one buffer per group output); packed weights stay packed
//! on the GPU and are dequantized inside the kernels that read them. A [`Schedule`] is the
//! "manual graph": buffers, pipelines, bind groups and the dispatch list are built once, and a
//! token costs one 16-byte uniform write, one compute pass and one submit. A weight larger than
//! the adapter's storage-binding limit is split by rows across bindings, never dropped.
//!
//! This crate decides no semantics: `apr-ir-cpu` is the specification.

mod decoder;
mod device;
pub mod fault;
pub mod kernels;
pub mod plan;
mod schedule;

pub use decoder::GpuDecoder;
pub use device::{Gpu, GpuOptions};
pub use fault::{Fault, FaultKind, POISON_BITS};
pub use schedule::{Captured, ObjectCounts, Schedule, WeightBytes};

use apr_ir::NodeId;

/// Why the GPU path could not run.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter: {0} (install a Vulkan driver; in CI, Mesa's lavapipe: mesa-vulkan-drivers)")]
    NoAdapter(String),
    #[error("GPU device: {0}")]
    Device(String),
    #[error("node {node} {name} ({op}): the wgpu backend does not support {why}")]
    Unsupported { node: NodeId, name: String, op: &'static str, why: String },
    #[error("weight {name}: {why}")]
    Weight { name: String, why: String },
    #[error("a buffer of {0} bytes is larger than the device allows")]
    TooLarge(u64),
    #[error("position {pos} is past the compiled context of {max_ctx}")]
    Position { pos: u32, max_ctx: u64 },
    #[error("internal: {0}")]
    Internal(String),
    #[error(transparent)]
    Ir(#[from] apr_ir::IrError),
}
