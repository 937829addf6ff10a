//! The tolerance table: how far a backend's value of a node may be from the reference's.
//!
//! One table for every op, keyed by what the node computes (its op class) and, for products,
//! whether a packed (quantized) weight is involved. The numbers start from ggml's backend
//! tests and the incident's gates (DESIGN.md) and are held to evidence by the checker tests:
//! clean runs of every fixture at -O0/-O1/-O2 over 64 positions must stay below them
//! (worst observed margins are printed by `tests/check.rs`), and a ×1.05 error on any single
//! node — NMSE = 0.05² = 2.5e-3 — must exceed them all. docs/tolerances.md has the reasons
//! and the measured margins (lavapipe fixtures, 0.5B and 7B on an H200).
//!
//! NMSE is Σ(got − want)² / Σ want². Non-finite values fail before any threshold is looked at.

use apr_ir::{Graph, NodeId, Op, OpClass};
use serde::Serialize;

/// Thresholds for one node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Largest NMSE that passes.
    pub nmse: f64,
    /// Which row of the table applied.
    pub rule: &'static str,
}

/// The rows of the table, for reports and docs: (rule, NMSE bound, what it covers).
pub const TABLE: [(&str, f64, &str); 5] = [
    ("elementwise", 1e-7, "unary/binary elementwise ops, casts, movement, rope, cache writes"),
    ("reduce", 1e-7, "sums, means, maxima over one axis (f32 accumulation in another order)"),
    ("softmax", 1e-6, "the division closing a softmax, and exp of shifted scores"),
    ("matmul", 5e-4, "products with f32 operands or packed weights, attention scores and weighting"),
    ("logits", 5e-4, "the graph outputs (also held to the logits gate: cosine and argmax)"),
];

fn row(rule: &'static str) -> Tolerance {
    let nmse = TABLE.iter().find(|(r, _, _)| *r == rule).map_or(1e-7, |(_, v, _)| *v);
    Tolerance { nmse, rule }
}

/// The tolerance for node `id` of `g`.
pub fn tolerance(g: &Graph, id: NodeId) -> Tolerance {
    let Some(n) = g.node(id) else { return row("elementwise") };
    if g.outputs.iter().any(|o| o.node == id) {
        return row("logits");
    }
    let feeds_softmax = |n: &apr_ir::Node| n.name.contains("softmax");
    match n.op.class() {
        OpClass::MatMul => row("matmul"),
        OpClass::Reduce => row("reduce"),
        OpClass::Elementwise if matches!(n.op, Op::Div | Op::Exp | Op::Sub) && feeds_softmax(n) => row("softmax"),
        OpClass::Leaf | OpClass::Elementwise | OpClass::Movement | OpClass::Positional | OpClass::State => {
            row("elementwise")
        }
    }
}
