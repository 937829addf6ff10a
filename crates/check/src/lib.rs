//! Differential checking of two executions of the same IR.
//!
//! [`metrics`] compares two values (non-finite counts first, then NMSE, max abs error,
//! cosine); [`tolerance`] is the per-op table of how far they may be apart; [`checker`] runs
//! a teacher-forced differential check of a reference against a device and localizes the
//! first divergent IR node (isolation, drill-down into fused dispatches); [`gate`] is the
//! logits parity gate of `apr-ir run --backend gpu`. The crate contains no kernels and runs
//! nothing itself: the executions come in through the `Reference` and `Device` traits.

pub mod checker;
pub mod gate;
pub mod metrics;
pub mod report;
pub mod tolerance;

pub use gate::{logits_gate, GateFailure, GateRule};
pub use metrics::{compare, Metrics};
