//! Differential checking of two executions of the same IR.
//!
//! Today this crate holds the comparison primitives — [`metrics`] (non-finite counts first,
//! then NMSE, max abs error, cosine) and the logits [`gate`] that `apr-ir run --backend gpu`
//! applies before trusting the GPU. Localization (naming the IR node where two runs diverge)
//! builds on them. It contains no kernels and runs nothing itself.

pub mod gate;
pub mod metrics;

pub use gate::{logits_gate, GateFailure, GateRule};
pub use metrics::{compare, Metrics};
