//! The apr-ir dataflow IR.
//!
//! A [`Graph`] is one decode step of a transformer: a list of [`Node`]s in topological
//! order, each applying one [`Op`] from a small closed set to earlier nodes. Leaves are
//! per-step inputs (token, position), scalar constants, persistent state (the KV cache) and
//! weights, which *name* a tensor of the model file rather than hold its bytes. Every node
//! has a stable readable name and a [`TensorType`] whose dims may be symbolic
//! ([`Dim::CTX`], the cache length), so one graph serves every position.
//!
//! The IR knows no file format, backend or device. [`Graph::verify`] states what backends
//! may rely on; the JSON, text and DOT forms are views of the same graph.

pub mod dot;
pub mod dtype;
mod error;
pub mod fuse;
mod graph;
pub mod group;
mod id;
pub mod infer;
pub mod names;
mod op;
mod shape;
mod text;
mod verify;

pub use dtype::DType;
pub use error::IrError;
pub use graph::{Graph, GraphBuilder, GraphMeta, Node, Output, Stats};
pub use id::NodeId;
pub use op::{InputKind, Op, OpClass, RopeMode};
pub use shape::{numel, numel_parts, Dim, Shape, Sym, TensorType, MAX_RANK};
pub use text::node_line;
pub use verify::MAX_CTX_LIMIT;
