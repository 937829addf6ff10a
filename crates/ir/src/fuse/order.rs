//! Dependency order of dispatch groups, within a window and across the windows: readers of
//! a value run after its producer, and readers of a cache's old contents run before the
//! group that updates it in place.

use crate::group::{Group, Kernel};
use crate::{Graph, NodeId, Op};
use std::collections::{BTreeSet, HashMap};

/// Put groups in dependency order (Kahn); `None` on a cycle.
pub(super) fn order(g: &Graph, groups: Vec<Group>) -> Option<Vec<Group>> {
    let mut producer: HashMap<NodeId, usize> = HashMap::new();
    for (k, grp) in groups.iter().enumerate() {
        for &o in &grp.outputs {
            producer.insert(o, k);
        }
    }
    let storage = |mut id: NodeId| {
        while let Some(n) = g.node(id) {
            match (&n.op, n.inputs.first()) {
                (Op::Reshape { .. }, Some(&src)) => id = src,
                _ => break,
            }
        }
        id
    };
    let reads: Vec<Vec<NodeId>> = groups
        .iter()
        .map(|grp| {
            let r = match &grp.kernel {
                Kernel::Node => grp.value().and_then(|v| g.node(v)).map(|n| n.inputs.clone()).unwrap_or_default(),
                kn => kn.operands(),
            };
            r.into_iter().map(storage).collect()
        })
        .collect();
    let mut deps: Vec<BTreeSet<usize>> = reads
        .iter()
        .enumerate()
        .map(|(k, r)| r.iter().filter_map(|x| producer.get(x).copied()).filter(|&p| p != k).collect())
        .collect();
    // A cache is updated in place: whoever reads the state itself (its old contents) runs
    // before the group that writes it.
    for (k, grp) in groups.iter().enumerate() {
        let written = match &grp.kernel {
            Kernel::RopeCacheWrite { cache, .. }
            | Kernel::MatvecCacheWrite { cache, .. }
            | Kernel::NormRopeCacheWrite { cache, .. } => Some(*cache),
            Kernel::Node => grp
                .value()
                .and_then(|v| g.node(v))
                .filter(|n| matches!(n.op, Op::CacheWrite { .. }))
                .and_then(|n| n.inputs.first().copied()),
            _ => None,
        };
        if let Some(state) = written {
            for (j, r) in reads.iter().enumerate() {
                if j != k && r.contains(&state) {
                    deps[k].insert(j);
                }
            }
        }
    }
    let mut indeg: Vec<usize> = deps.iter().map(BTreeSet::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for (k, d) in deps.iter().enumerate() {
        for &p in d {
            dependents[p].push(k);
        }
    }
    // Ready groups in order of their value's node id, so the order stays close to the IR's.
    let key = |k: usize| groups[k].outputs.iter().min().copied();
    let mut ready: BTreeSet<(Option<NodeId>, usize)> =
        (0..groups.len()).filter(|&k| indeg[k] == 0).map(|k| (key(k), k)).collect();
    let mut out = Vec::with_capacity(groups.len());
    while let Some(first) = ready.pop_first() {
        out.push(first.1);
        for &d in &dependents[first.1] {
            indeg[d] -= 1;
            if indeg[d] == 0 {
                ready.insert((key(d), d));
            }
        }
    }
    if out.len() != groups.len() {
        return None;
    }
    let mut slots: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    out.into_iter().map(|k| slots[k].take()).collect()
}
