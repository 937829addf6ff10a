//! Injected faults, for the checker's self-tests (`apr-ir check --inject-fault`).
//!
//! A fault breaks one IR node's value on the GPU; callers see nothing else of it. It lives in
//! the schedule ([`crate::Schedule::build_checked`]): where the faulty node is a group's value,
//! a small in-place dispatch (`kernels/fault.wgsl`) follows the group's dispatches (for
//! [`FaultKind::Skip`], the group's dispatches are dropped instead); where it is interior to a
//! fused group, that group is realized by the -O0 dispatches of its covered nodes (their
//! values in buffers of their own) with the fault right after the faulty node's: numerically
//! what a fused kernel with a faulty step computes. The group list is unchanged.

use crate::kernels::Family;
use crate::plan::{plan_group, storage_of, Buf, Grid, Pieces, Plan};
use crate::GpuError;
use apr_ir::fuse::OptLevel;
use apr_ir::group::Group;
use apr_ir::{DType, Dim, Graph, NodeId, Op};

/// The bit pattern written into intermediate buffers before a capture step: a signalling NaN
/// no arithmetic produces (arithmetic quiets NaNs), so "never written" is told apart from
/// "computed NaN". Equal to `apr_ir_check::checker::POISON_BITS` (tested in crates/cli).
pub const POISON_BITS: u32 = 0x7fa5_a5a5;

/// A fault injected into one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub node: NodeId,
    pub kind: FaultKind,
}

/// What the fault does to the node's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Every element ×1.05.
    Scale,
    /// Every element +1.
    Offset,
    /// Every element negated.
    Sign,
    /// Element 0 set to NaN.
    Nan,
    /// The dispatch computing it is dropped.
    Skip,
    /// The first and second halves of the flat value exchanged (odd length: the middle stays).
    Swap,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] =
        [FaultKind::Scale, FaultKind::Offset, FaultKind::Sign, FaultKind::Nan, FaultKind::Skip, FaultKind::Swap];

    /// The kind named `s` ("scale", "offset", "sign", "nan", "skip", "swap").
    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Scale => "scale",
            FaultKind::Offset => "offset",
            FaultKind::Sign => "sign",
            FaultKind::Nan => "nan",
            FaultKind::Skip => "skip",
            FaultKind::Swap => "swap",
        }
    }

    fn code(self) -> u32 {
        match self {
            FaultKind::Scale => 0,
            FaultKind::Offset => 1,
            FaultKind::Sign => 2,
            FaultKind::Nan => 3,
            FaultKind::Skip => 4,
            FaultKind::Swap => 5,
        }
    }
}

/// Whether `grp` must be realized node by node: the fault is in it but not its value.
pub(crate) fn expands(grp: &Group, fault: Option<Fault>) -> bool {
    fault.is_some_and(|f| grp.covers.contains(&f.node) && grp.value() != Some(f.node))
}

/// The covered nodes in topological order (node ids are).
pub(crate) fn covers_in_order(grp: &Group) -> Vec<NodeId> {
    let mut c = grp.covers.clone();
    c.sort_unstable();
    c
}

/// The plans of one group with `fault` applied: [`plan_group`]'s where the fault is elsewhere.
pub(crate) fn plan_faulty_group(
    g: &Graph,
    grp: &Group,
    level: OptLevel,
    fault: Option<Fault>,
    pieces: &dyn Pieces,
    weight_f32: &dyn Fn(NodeId) -> Option<Vec<f32>>,
    tables: &mut Vec<Vec<f32>>,
) -> Result<Vec<Plan>, GpuError> {
    let Some(f) = fault.filter(|f| grp.covers.contains(&f.node)) else {
        return plan_group(g, grp, level, pieces, weight_f32, tables);
    };
    if grp.value() == Some(f.node) {
        if f.kind == FaultKind::Skip {
            return Ok(Vec::new());
        }
        let mut plans = plan_group(g, grp, level, pieces, weight_f32, tables)?;
        plans.push(fault_plan(g, f)?);
        return Ok(plans);
    }
    plan_nodes(g, grp, Some(f), pieces, weight_f32, tables)
}

/// The -O0 plans of every node `grp` covers, in order, with `fault` after its node's.
pub(crate) fn plan_nodes(
    g: &Graph,
    grp: &Group,
    fault: Option<Fault>,
    pieces: &dyn Pieces,
    weight_f32: &dyn Fn(NodeId) -> Option<Vec<f32>>,
    tables: &mut Vec<Vec<f32>>,
) -> Result<Vec<Plan>, GpuError> {
    let mut plans = Vec::new();
    for c in covers_in_order(grp) {
        let mine = fault.filter(|f| f.node == c);
        if mine.is_some_and(|f| f.kind == FaultKind::Skip) {
            continue;
        }
        plans.extend(plan_group(g, &Group::single(c), OptLevel::O0, pieces, weight_f32, tables)?);
        if let Some(f) = mine {
            plans.push(fault_plan(g, f)?);
        }
    }
    Ok(plans)
}

/// The in-place fault dispatch on `f.node`'s value (in its storage buffer).
fn fault_plan(g: &Graph, f: Fault) -> Result<Plan, GpuError> {
    let n = g.node(f.node).ok_or_else(|| GpuError::Internal(format!("fault node {} not in the graph", f.node)))?;
    let unsupported = |why: &str| GpuError::Unsupported {
        node: n.id,
        name: n.name.clone(),
        op: n.op.name(),
        why: format!("a fault on {why}"),
    };
    let word = |x: u64| u32::try_from(x).map_err(|_| GpuError::TooLarge(x));
    let shape = &n.ty.shape;
    let prod = |dims: &[Dim]| -> Result<u64, GpuError> {
        dims.iter().map(|d| d.as_const().ok_or_else(|| unsupported("a value with several symbolic dims"))).product()
    };
    // The value as [outer, rows, inner] in a buffer of `full` rows (u32::MAX = ctx).
    let (outer, rows, inner, full, grid) = if let Op::CacheWrite { axis } = n.op {
        let ax = axis as usize;
        if ax >= shape.len() {
            return Err(unsupported("a cache write with its axis out of range"));
        }
        let (outer, inner) = (prod(&shape[..ax])?, prod(&shape[ax + 1..])?);
        let full = prod(&shape[ax..=ax])?;
        (outer, u32::MAX, inner, word(full)?, vec![Dim::Const(outer), Dim::CTX, Dim::Const(inner)])
    } else {
        match shape.iter().position(|d| d.as_const().is_none()) {
            None => {
                let count = prod(shape)?;
                (1, word(count)?, 1, word(count)?, vec![Dim::Const(count)])
            }
            Some(s) => {
                let (outer, inner) = (prod(&shape[..s])?, prod(&shape[s + 1..])?);
                (outer, u32::MAX, inner, u32::MAX, vec![Dim::Const(outer), Dim::CTX, Dim::Const(inner)])
            }
        }
    };
    let int = u32::from(n.ty.dtype == DType::I32);
    Ok(Plan {
        node: n.id,
        family: Family::Fault,
        dtype: None,
        dtype2: None,
        bindings: vec![Buf::Node(storage_of(g, n.id))],
        params: vec![f.kind.code(), word(outer)?, rows, word(inner)?, full, f32::NAN.to_bits(), int],
        grid: Grid::Threads(grid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse(k.name()), Some(k));
        }
        assert_eq!(FaultKind::parse("bogus"), None);
        assert!(f32::from_bits(POISON_BITS).is_nan());
        // Signalling: the quiet bit is clear, so no arithmetic result has this pattern.
        assert_eq!(POISON_BITS & 0x0040_0000, 0);
    }
}
