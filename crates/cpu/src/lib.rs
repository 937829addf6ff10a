//! The apr-ir reference interpreter.
//!
//! This crate *is* the semantics of the IR: every op is implemented here first, naively and
//! obviously right (`ops`, `matmul::naive`), and every other backend is held to it. Hot ops
//! have fast twins (`matmul::fast` and `kernels`: quantized matrix-vector products from the
//! memory-mapped blocks or from a load-time re-encoding of them, spread over rayon) that tests
//! hold to the naive ones; an opt-in `Precision::Int16` trades exactness for speed. The
//! interpreter knows no architecture: it evaluates whatever verified graph it is given, one
//! decode step at a time, keeping the KV cache as the graph's state, and can capture any set
//! of node values per step (the checker's taps).

pub mod bandwidth;
mod decoder;
mod interp;
pub mod kernels;
pub mod matmul;
pub mod ops;
pub mod tensor;

pub use decoder::CpuDecoder;
pub use interp::{Capture, Interpreter, Kernels, StepResult, WeightSource};
pub use kernels::Precision;
pub use tensor::{Data, Tensor};

use apr_ir::{Node, NodeId};

/// Why a step could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CpuError {
    #[error("node {node} {name} ({op}): {reason}")]
    Node { node: NodeId, name: String, op: &'static str, reason: String },
    #[error("weight {name}: {reason}")]
    Weight { name: String, reason: String },
    #[error("position {pos} is past the compiled context of {max_ctx}")]
    Position { pos: u32, max_ctx: u64 },
    #[error(transparent)]
    Ir(#[from] apr_ir::IrError),
}

impl CpuError {
    pub(crate) fn node(n: &Node, reason: impl Into<String>) -> CpuError {
        CpuError::Node { node: n.id, name: n.name.clone(), op: n.op.name(), reason: reason.into() }
    }
}
