//! The NMSE bounds the fused-kernel tests hold each group's outputs to.

use apr_ir::group::{Group, Kernel};
use apr_ir::{Graph, NodeId};
use std::collections::HashMap;

/// The NMSE a group output may show against the CPU, by the kernel that wrote it. The fused
/// kernels round like the unfused nodes except where noted: sums in f32 where the CPU sums in
/// f64 (norm, softmax), dot products in another order and with the block scales factored out
/// (matvecs), an online softmax (attention); device exp / inverseSqrt are a few ulp from the
/// CPU's.
fn limit(k: &Kernel) -> f64 {
    match k {
        Kernel::Node => 1e-9,
        Kernel::Rope { .. } | Kernel::SwiGlu { .. } | Kernel::RopeCacheWrite { .. } => 1e-10,
        Kernel::RmsNorm { .. }
        | Kernel::Softmax { .. }
        | Kernel::NormRope { .. }
        | Kernel::NormRopeCacheWrite { .. } => 1e-9,
        Kernel::MatvecAdd { .. }
        | Kernel::MatvecSwiGlu { .. }
        | Kernel::MatvecCacheWrite { .. }
        | Kernel::Attention { .. } => 1e-8,
    }
}

/// The NMSE each group's outputs are held to: its kernel's [`limit`], or more where it reads
/// another group's outputs, whose error reaches it unchanged in relative terms (a SwiGLU over
/// two matvec outputs inherits their rounding; when a dot product cancels to a small value,
/// that is a large relative error, and with one output row nothing averages it out).
pub(crate) fn limits(graph: &Graph, groups: &[Group]) -> Vec<f64> {
    let producer: HashMap<NodeId, usize> =
        groups.iter().enumerate().flat_map(|(gi, g)| g.covers.iter().map(move |&c| (c, gi))).collect();
    fn group_limit(
        gi: usize,
        graph: &Graph,
        groups: &[Group],
        producer: &HashMap<NodeId, usize>,
        memo: &mut [Option<f64>],
    ) -> f64 {
        if let Some(v) = memo[gi] {
            return v;
        }
        let g = &groups[gi];
        let mut v = limit(&g.kernel);
        let mut stack: Vec<NodeId> =
            g.covers.iter().flat_map(|&c| graph.nodes[c.index()].inputs.iter().copied()).collect();
        while let Some(i) = stack.pop() {
            match producer.get(&i) {
                Some(&p) if p == gi => {}
                Some(&p) => v = v.max(group_limit(p, graph, groups, producer, memo)),
                // A view or a leaf: look through a view to what it reads.
                None => stack.extend(graph.nodes[i.index()].inputs.iter().copied()),
            }
        }
        memo[gi] = Some(v);
        v
    }
    let mut memo = vec![None; groups.len()];
    (0..groups.len()).map(|gi| group_limit(gi, graph, groups, &producer, &mut memo)).collect()
}
