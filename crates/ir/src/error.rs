//! Errors of the IR crate.

use crate::NodeId;

/// Why a graph (or a piece of one) is not valid. Variants carry the node and its op.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IrError {
    #[error("node {node} ({op}): {reason}")]
    Node { node: NodeId, op: &'static str, reason: String },
    #[error("node {node} has id {found}: ids must equal positions")]
    BadId { node: NodeId, found: NodeId },
    #[error("node {node} ({op}): operand {input} is not an earlier node")]
    NotTopological { node: NodeId, op: &'static str, input: NodeId },
    #[error("node {node}: name {name:?} is used by node {first} too")]
    DuplicateName { node: NodeId, first: NodeId, name: String },
    #[error("graph: {0}")]
    Graph(String),
    #[error("text form, line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("json: {0}")]
    Json(String),
}

impl IrError {
    pub(crate) fn node(node: NodeId, op: &crate::Op, reason: impl Into<String>) -> IrError {
        IrError::Node { node, op: op.name(), reason: reason.into() }
    }
}
