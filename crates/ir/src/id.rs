//! Typed node ids.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Index of a node in a [`crate::Graph`]. Displays as `%12`, as in the text form.
///
/// Node ids are dense: `graph.nodes[id.index()]` is the node, and every node's inputs have
/// smaller ids (the node list is in topological order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The node's position in the graph's node list.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}
