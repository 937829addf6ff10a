//! The closed set of IR operations.
//!
//! Granularity is chosen for the checker: RMSNorm, softmax, RoPE and SwiGLU are each
//! several nodes, so a divergence can be pinned to *one step* of them (the square, the mean,
//! the rsqrt, ...), while a (quantized) matrix product is one node. Composite layers are
//! built from these primitives by the model lowering; fused kernels exist only in backends.
//!
//! Every `match` on [`Op`] in the workspace is exhaustive: adding an op must be handled by
//! the interpreter, the backends and the cost model alike.

use crate::{DType, Shape};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a graph input carries per decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// The token id being decoded, `i32[1]`.
    Token,
    /// Its 0-based position in the sequence, `i32[1]`.
    Position,
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeMode {
    /// Dimension `i` rotates with `i + n_rot/2` (GPT-NeoX, HF `rotate_half`; GGUF qwen2).
    Neox,
    /// Dimension `2i` rotates with `2i + 1` (GPT-J / Meta layout; GGUF llama, whose
    /// converters permute q and k rows into this order).
    Interleaved,
}

/// An IR operation. Operands are listed per variant as `(a, b, ...)`; all computed
/// floating-point values are `f32`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "attrs", rename_all = "snake_case")]
pub enum Op {
    // ---- leaves: their type is declared, not inferred --------------------------------
    /// A per-step input (`()` → `i32[1]`).
    Input {
        kind: InputKind,
    },
    /// A tensor of the model file, referenced by name; its bytes are never in the graph.
    Weight {
        tensor: String,
    },
    /// A scalar constant (`()` → `f32[]`), e.g. an epsilon or a softmax scale.
    Const {
        value: f64,
    },
    /// Persistent state that outlives a step (the KV cache); written only by `CacheWrite`.
    State,

    // ---- elementwise, unary: f32 → f32 -------------------------------------------------
    Neg,
    Exp,
    /// `1 / (1 + exp(-x))`
    Sigmoid,
    Sqrt,
    /// `1 / sqrt(x)`
    Rsqrt,
    Cos,
    Sin,
    /// Convert any float or quantized dtype to `to` (only `f32` is a valid target);
    /// quantized inputs are dequantized.
    Cast {
        to: DType,
    },

    // ---- elementwise, binary with numpy broadcasting: (f32, f32) → f32 ------------------
    Add,
    Sub,
    Mul,
    Div,

    // ---- reductions over one axis; the axis is kept with size 1 -----------------------
    ReduceSum {
        axis: u32,
    },
    ReduceMean {
        axis: u32,
    },
    ReduceMax {
        axis: u32,
    },
    /// Index of the first maximum, as `i32`.
    #[serde(rename = "argmax")]
    ArgMax {
        axis: u32,
    },

    // ---- contraction ---------------------------------------------------------------------
    /// `(a: f32[..B, M, K], b)` → `f32[..B, M, N]`, where `b` is `[..B, N, K]` when
    /// `transpose_rhs` (the weight layout of `nn.Linear` and GGUF: `y = a · bᵀ`) or
    /// `[..B, K, N]` otherwise. `b` may omit the batch dims (shared weights) and may have
    /// any float or quantized dtype (quantized only with `transpose_rhs`).
    #[serde(rename = "matmul")]
    MatMul {
        transpose_rhs: bool,
    },

    // ---- movement --------------------------------------------------------------------------
    /// Same elements, new shape (row-major reinterpretation; never moves data).
    Reshape {
        shape: Shape,
    },
    /// `(a)` → elements `start .. start + len` of `axis`.
    Slice {
        axis: u32,
        start: u64,
        len: crate::Dim,
    },
    /// `(table: [R, C] any float/quantized dtype, ids: i32[n])` → `f32[n, C]`: row lookup.
    Gather,
    /// The "rotate half" step of RoPE over the last axis, within the first `n_rot`
    /// dimensions: Neox `y[i] = -x[i+h], y[i+h] = x[i]` (`h = n_rot/2`); Interleaved
    /// `y[2i] = -x[2i+1], y[2i+1] = x[2i]`; dimensions past `n_rot` become 0.
    RopeRotate {
        mode: RopeMode,
        n_rot: u32,
    },

    // ---- positional ---------------------------------------------------------------------
    /// `(pos: i32[1] [, freq_factors: f32[n_rot/2]])` → `f32[head_dim]`: the rotation angle
    /// of every head dimension, laid out as `mode` pairs them:
    /// `angle_i = pos * freq_scale * theta_base^(-2i/n_rot) / freq_factors[i]`;
    /// dimensions past `n_rot` get angle 0 (they pass through unrotated).
    RopeAngles {
        mode: RopeMode,
        n_rot: u32,
        head_dim: u32,
        theta_base: f64,
        freq_scale: f64,
    },

    // ---- state ---------------------------------------------------------------------------
    /// `(cache: [.., S, ..], value: [.., 1, ..], pos: i32[1])` → the cache with index `pos`
    /// of `axis` replaced by `value`. Backends update the state in place.
    CacheWrite {
        axis: u32,
    },
}

/// Coarse operation classes, for cost models, fusion and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    Leaf,
    Elementwise,
    Reduce,
    MatMul,
    Movement,
    Positional,
    State,
}

impl Op {
    /// The mnemonic used in the text form and in JSON's `op` field.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            Op::Const { .. } => "const",
            Op::State => "state",
            Op::Neg => "neg",
            Op::Exp => "exp",
            Op::Sigmoid => "sigmoid",
            Op::Sqrt => "sqrt",
            Op::Rsqrt => "rsqrt",
            Op::Cos => "cos",
            Op::Sin => "sin",
            Op::Cast { .. } => "cast",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::ReduceSum { .. } => "reduce_sum",
            Op::ReduceMean { .. } => "reduce_mean",
            Op::ReduceMax { .. } => "reduce_max",
            Op::ArgMax { .. } => "argmax",
            Op::MatMul { .. } => "matmul",
            Op::Reshape { .. } => "reshape",
            Op::Slice { .. } => "slice",
            Op::Gather => "gather",
            Op::RopeRotate { .. } => "rope_rotate",
            Op::RopeAngles { .. } => "rope_angles",
            Op::CacheWrite { .. } => "cache_write",
        }
    }

    /// The op's class.
    pub fn class(&self) -> OpClass {
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::Const { .. } | Op::State => OpClass::Leaf,
            Op::Neg
            | Op::Exp
            | Op::Sigmoid
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Cos
            | Op::Sin
            | Op::Cast { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div => OpClass::Elementwise,
            Op::ReduceSum { .. } | Op::ReduceMean { .. } | Op::ReduceMax { .. } | Op::ArgMax { .. } => OpClass::Reduce,
            Op::MatMul { .. } => OpClass::MatMul,
            Op::Reshape { .. } | Op::Slice { .. } | Op::Gather | Op::RopeRotate { .. } => OpClass::Movement,
            Op::RopeAngles { .. } => OpClass::Positional,
            Op::CacheWrite { .. } => OpClass::State,
        }
    }

    /// Leaves have no operands and a declared type.
    pub fn is_leaf(&self) -> bool {
        self.class() == OpClass::Leaf
    }

    pub fn is_elementwise(&self) -> bool {
        self.class() == OpClass::Elementwise
    }

    pub fn is_reduce(&self) -> bool {
        self.class() == OpClass::Reduce
    }

    pub fn is_matmul(&self) -> bool {
        self.class() == OpClass::MatMul
    }

    /// A view reinterprets its operand's buffer and costs no kernel.
    pub fn is_view(&self) -> bool {
        match self {
            Op::Reshape { .. } => true,
            Op::Input { .. }
            | Op::Weight { .. }
            | Op::Const { .. }
            | Op::State
            | Op::Neg
            | Op::Exp
            | Op::Sigmoid
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Cos
            | Op::Sin
            | Op::Cast { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::ReduceSum { .. }
            | Op::ReduceMean { .. }
            | Op::ReduceMax { .. }
            | Op::ArgMax { .. }
            | Op::MatMul { .. }
            | Op::Slice { .. }
            | Op::Gather
            | Op::RopeRotate { .. }
            | Op::RopeAngles { .. }
            | Op::CacheWrite { .. } => false,
        }
    }

    /// A compute node needs a kernel: it is neither a leaf nor a view. At -O0 each compute
    /// node is one GPU dispatch.
    pub fn is_compute(&self) -> bool {
        !self.is_leaf() && !self.is_view()
    }

    /// Allowed operand counts, as an inclusive range.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::Const { .. } | Op::State => (0, 0),
            Op::Neg
            | Op::Exp
            | Op::Sigmoid
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Cos
            | Op::Sin
            | Op::Cast { .. }
            | Op::ReduceSum { .. }
            | Op::ReduceMean { .. }
            | Op::ReduceMax { .. }
            | Op::ArgMax { .. }
            | Op::Reshape { .. }
            | Op::Slice { .. }
            | Op::RopeRotate { .. } => (1, 1),
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::MatMul { .. } | Op::Gather => (2, 2),
            Op::RopeAngles { .. } => (1, 2),
            Op::CacheWrite { .. } => (3, 3),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
