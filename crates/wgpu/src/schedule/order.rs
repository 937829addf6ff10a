//! Where values live and in what order dispatch groups run: a value's buffer through views,
//! cache writes and the aliases the rewrites proved ([`resolve`]), and the groups in an order
//! that respects what each reads ([`dependency_order`]).

use crate::plan::storage_of;
use crate::GpuError;
use apr_ir::group::Group;
use apr_ir::{Graph, NodeId, Op};
use std::collections::HashMap;

/// The node whose buffer holds `id`'s value: through views and cache writes
/// ([`storage_of`]), and from an output the rewrites proved equal to its group's first.
pub(super) fn resolve(g: &Graph, alias: &HashMap<NodeId, NodeId>, id: NodeId) -> NodeId {
    let mut id = storage_of(g, id);
    // Each step moves to a group's first output, which is never an alias: at most one hop
    // after the first, but bounded anyway.
    for _ in 0..g.nodes.len() {
        match alias.get(&id) {
            Some(&first) if first != id => id = storage_of(g, first),
            _ => break,
        }
    }
    id
}

/// `groups` in an order where each group comes after the groups whose values it reads: the
/// given order wherever that already holds (Kahn's algorithm, ready groups taken by their
/// position in `groups`). Each fusion window is ordered by `apr_ir::fuse`, but the windows are
/// concatenated with the nodes outside every layer first, so a group such as the final norm
/// can arrive before the layers it reads. A group that reads a `state` node itself (not
/// through its `cache_write`) reads the cache as it was before this step's write, so it goes
/// before the write, as in the graph's node order. `Err` on a cycle.
pub(super) fn dependency_order(
    g: &Graph,
    groups: &[Group],
    resolve: &dyn Fn(NodeId) -> NodeId,
) -> Result<Vec<Group>, GpuError> {
    let mut producer: HashMap<NodeId, usize> = HashMap::new();
    for (k, grp) in groups.iter().enumerate() {
        for &o in &grp.outputs {
            producer.insert(resolve(o), k);
        }
    }
    // The node a read names, through reshapes only (a cache write is not looked through).
    let viewed = |mut id: NodeId| {
        while let Some((Op::Reshape { .. }, Some(&src))) = g.node(id).map(|n| (&n.op, n.inputs.first())) {
            id = src;
        }
        id
    };
    // (before, after) pairs.
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for (k, grp) in groups.iter().enumerate() {
        let reads: Vec<NodeId> = if grp.kernel.is_node() {
            grp.value().and_then(|v| g.node(v)).map(|n| n.inputs.clone()).unwrap_or_default()
        } else {
            grp.kernel.operands()
        };
        for r in reads {
            let Some(&p) = producer.get(&resolve(r)) else { continue };
            let state = g.node(viewed(r)).is_some_and(|n| matches!(n.op, Op::State));
            if p != k {
                edges.push(if state { (k, p) } else { (p, k) });
            }
        }
    }
    edges.sort_unstable();
    edges.dedup();
    let mut indeg = vec![0usize; groups.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for (before, after) in edges {
        indeg[after] += 1;
        dependents[before].push(after);
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..groups.len()).filter(|&k| indeg[k] == 0).collect();
    let mut out = Vec::with_capacity(groups.len());
    while let Some(k) = ready.pop_first() {
        out.push(groups[k].clone());
        for &d in &dependents[k] {
            indeg[d] -= 1;
            if indeg[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if out.len() != groups.len() {
        return Err(GpuError::Internal("the dispatch groups read each other in a cycle".into()));
    }
    Ok(out)
}
