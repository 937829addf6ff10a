//! Shapes with symbolic dimensions, and tensor types.
//!
//! One compiled graph serves every decode position, so a dimension that grows with the
//! position is symbolic: [`Dim::Ctx`] is the number of key/value-cache rows in use while
//! decoding the token at position `pos`, i.e. `pos + 1`. It never exceeds the graph's
//! `max_ctx`. Everything else is a constant.

use crate::DType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One dimension of a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Const(u64),
    /// A symbol bound per decode step.
    Sym(Sym),
}

/// The symbols a dimension may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sym {
    /// Cache rows in use: current position + 1.
    Ctx,
}

impl Dim {
    /// The symbolic cache length.
    pub const CTX: Dim = Dim::Sym(Sym::Ctx);

    /// The size of this dimension once `ctx` is bound.
    pub const fn eval(self, ctx: u64) -> u64 {
        match self {
            Dim::Const(n) => n,
            Dim::Sym(Sym::Ctx) => ctx,
        }
    }

    /// The constant size, if this dimension is not symbolic.
    pub const fn as_const(self) -> Option<u64> {
        match self {
            Dim::Const(n) => Some(n),
            Dim::Sym(_) => None,
        }
    }
}

impl From<u64> for Dim {
    fn from(n: u64) -> Dim {
        Dim::Const(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Const(n) => write!(f, "{n}"),
            Dim::Sym(Sym::Ctx) => f.write_str("ctx"),
        }
    }
}

/// A row-major shape, outermost dimension first (the innermost, contiguous one is last).
pub type Shape = Vec<Dim>;

/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 4;

/// Element count of a shape as `constant * ctx^power`, or `None` on overflow.
pub fn numel_parts(shape: &[Dim]) -> Option<(u64, u32)> {
    let mut constant: u64 = 1;
    let mut power = 0u32;
    for d in shape {
        match d {
            Dim::Const(n) => constant = constant.checked_mul(*n)?,
            Dim::Sym(Sym::Ctx) => power += 1,
        }
    }
    Some((constant, power))
}

/// Element count once `ctx` is bound, or `None` on overflow.
pub fn numel(shape: &[Dim], ctx: u64) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, d| acc.checked_mul(d.eval(ctx)))
}

/// The type of a node's value: element type and shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    /// A type from a dtype and constant dims.
    pub fn new(dtype: DType, dims: &[u64]) -> TensorType {
        TensorType { dtype, shape: dims.iter().map(|&n| Dim::Const(n)).collect() }
    }

    /// Bytes this value occupies once `ctx` is bound, or `None` on overflow or a
    /// partial quantization block.
    pub fn bytes(&self, ctx: u64) -> Option<u64> {
        self.dtype.bytes_for(numel(&self.shape, ctx)?)
    }

    /// The innermost dimension, if the type is not a scalar.
    pub fn last_dim(&self) -> Option<Dim> {
        self.shape.last().copied()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
