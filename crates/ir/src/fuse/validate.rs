//! The shape contract of the fused kernels: [`validate`] admits a fused kernel only for the
//! operand shapes and dtypes the GPU codegen supports; anything else falls back to one
//! dispatch per node.

use crate::group::Kernel;
use crate::{Dim, Graph, NodeId, Op};
use std::collections::BTreeSet;

/// The shapes the fused kernels support (the contract the GPU codegen relies on).
///
/// Row-local kernels: operand `x` is f32 of any rank, rows along its last axis; per-row
/// operands (`weight`, `cos`, `sin`) have exactly the last axis' length (or broadcast from
/// `[.., 1, len]`); scalars are `const` nodes. Matvecs: `x` is `[1, K]` or `[K]`-like with one
/// row, the weight 2-D `[N, K]`, the addend `N` elements; a matvec into a cache writes its `N`
/// outputs as the `[Hkv, 1, D]` row at the position (`N = Hkv·D`) of a `[Hkv, S, D]` cache.
/// Attention: `q` `[Hkv, G, D]` with `D` ≤ [`ATTENTION_MAX_D`], the caches `[Hkv, S, D]` with
/// positions on axis 1.
pub fn validate(g: &Graph, k: &Kernel, covers: &BTreeSet<NodeId>) -> bool {
    let ty = |id: NodeId| g.node(id).map(|n| &n.ty);
    let last = |id: NodeId| ty(id).and_then(|t| t.last_dim());
    let numel_const =
        |id: NodeId| ty(id).and_then(|t| crate::numel_parts(&t.shape)).and_then(|(n, s)| (s == 0).then_some(n));
    let f32ok = |id: NodeId| {
        ty(id).is_some_and(|t| t.dtype == crate::DType::F32 && t.shape.iter().all(|d| matches!(d, Dim::Const(_))))
    };
    let is_const = |id: NodeId| g.node(id).is_some_and(|n| matches!(n.op, Op::Const { .. }));
    let rowvec = |id: NodeId, len: Option<Dim>| {
        numel_const(id).is_some()
            && last(id) == len
            && numel_const(id)
                == len.and_then(|d| match d {
                    Dim::Const(n) => Some(n),
                    Dim::Sym(_) => None,
                })
    };
    match k {
        Kernel::Node => true,
        Kernel::RmsNorm { x, eps, weight } => f32ok(*x) && is_const(*eps) && rowvec(*weight, last(*x)),
        Kernel::Softmax { x, scale } => {
            ty(*x).is_some_and(|t| t.dtype == crate::DType::F32) && scale.is_none_or(&is_const)
        }
        Kernel::Rope { x, cos, sin } => {
            f32ok(*x)
                && rowvec(*cos, last(*x))
                && rowvec(*sin, last(*x))
                && covers.iter().any(|&c| matches!(g.node(c).map(|n| &n.op), Some(Op::RopeRotate { .. })))
        }
        Kernel::NormRope { x, eps, weight, cos, sin } => norm_rope_ok(g, covers, *x, *eps, *weight, *cos, *sin),
        Kernel::NormRopeCacheWrite { cache, x, eps, weight, cos, sin, pos } => {
            let cs = ty(*cache).map(|t| t.shape.clone());
            let xs = ty(*x).map(|t| t.shape.clone());
            let row_ok = matches!((cs.as_deref(), xs.as_deref()), (Some([h, _, d]), Some([xh, one, xd]))
                if h == xh && d == xd && one.as_const() == Some(1));
            norm_rope_ok(g, covers, *x, *eps, *weight, *cos, *sin)
                && row_ok
                && g.node(*cache).is_some_and(|n| matches!(n.op, Op::State))
                && covers.iter().any(|&c| {
                    g.node(c)
                        .is_some_and(|n| matches!(n.op, Op::CacheWrite { axis: 1 }) && n.inputs.first() == Some(cache))
                })
                && g.node(*pos).is_some_and(|n| matches!(n.op, Op::Input { kind: crate::InputKind::Position }))
        }
        Kernel::SwiGlu { gate, up } => f32ok(*gate) && ty(*gate).map(|t| &t.shape) == ty(*up).map(|t| &t.shape),
        Kernel::MatvecAdd { x, weight, addend } => {
            let n = ty(*weight).filter(|t| t.shape.len() == 2).and_then(|t| match t.shape[0] {
                Dim::Const(n) => Some(n),
                Dim::Sym(_) => None,
            });
            matvec_x(g, *x, *weight) && n.is_some() && numel_const(*addend) == n && f32ok(*addend)
        }
        Kernel::MatvecSwiGlu { x, gate, up } => {
            matvec_x(g, *x, *gate) && matvec_x(g, *x, *up) && ty(*gate).map(|t| &t.shape) == ty(*up).map(|t| &t.shape)
        }
        Kernel::Attention { q, k_cache, v_cache, scale } => {
            let cache_ok = |c: NodeId| {
                g.node(c).is_some_and(|n| matches!(n.op, Op::CacheWrite { axis: 1 }) && n.ty.shape.len() == 3)
            };
            let qt = ty(*q);
            let kt = ty(*k_cache);
            cache_ok(*k_cache)
                && cache_ok(*v_cache)
                && is_const(*scale)
                && f32ok(*q)
                && qt.is_some_and(|q| q.shape.len() == 3 && q.shape[2].as_const().is_some_and(|d| d <= ATTENTION_MAX_D))
                && matches!((qt, kt), (Some(q), Some(k)) if q.shape[0] == k.shape[0] && q.shape[2] == k.shape[2])
                && ty(*v_cache).map(|t| &t.shape) == kt.map(|t| &t.shape)
        }
        Kernel::MatvecCacheWrite { cache, x, weight, addend, pos } => {
            let n = ty(*weight).filter(|t| t.shape.len() == 2).and_then(|t| t.shape[0].as_const());
            let cs = ty(*cache).map(|t| t.shape.iter().filter_map(|d| d.as_const()).collect::<Vec<_>>());
            let state_ok = g.node(*cache).is_some_and(|n| matches!(n.op, Op::State));
            // The covered cache write stores a [Hkv, 1, D] row of this cache.
            let row_ok = covers.iter().filter_map(|&c| g.node(c)).any(|c| {
                matches!(c.op, Op::CacheWrite { axis: 1 })
                    && c.inputs.first() == Some(cache)
                    && c.inputs.get(1).and_then(|&v| ty(v)).is_some_and(|t| match (&cs, t.shape.as_slice()) {
                        (Some(cs), [h, one, d]) => {
                            cs.len() == 3
                                && h.as_const() == Some(cs[0])
                                && one.as_const() == Some(1)
                                && d.as_const() == Some(cs[2])
                        }
                        _ => false,
                    })
            });
            let n_ok = matches!((n, &cs), (Some(n), Some(cs)) if cs.len() == 3 && cs[0] * cs[2] == n);
            state_ok
                && row_ok
                && n_ok
                && matvec_x(g, *x, *weight)
                && addend.is_none_or(|a| numel_const(a) == n && f32ok(a))
                && g.node(*pos).is_some_and(|n| matches!(n.op, Op::Input { kind: crate::InputKind::Position }))
        }
        Kernel::RopeCacheWrite { cache, x, cos, sin, pos } => {
            let state_ok = g.node(*cache).is_some_and(|n| matches!(n.op, Op::State));
            let cw_ok = covers.iter().any(|&c| matches!(g.node(c).map(|n| &n.op), Some(Op::CacheWrite { axis: 1 })));
            state_ok
                && cw_ok
                && f32ok(*x)
                && rowvec(*cos, last(*x))
                && rowvec(*sin, last(*x))
                && g.node(*pos).is_some_and(|n| matches!(n.op, Op::Input { kind: crate::InputKind::Position }))
        }
    }
}

/// The largest head dimension the attention kernel takes (its workgroup holds a query head's q
/// and its share of the output); larger heads stay unfused.
pub const ATTENTION_MAX_D: u64 = 256;

/// The largest head dimension `norm_rope` takes (its workgroup holds one head).
pub const NORM_ROPE_MAX_D: u64 = 256;

/// A per-head norm and RoPE: `x` f32 rows of at most [`NORM_ROPE_MAX_D`], a constant `eps`,
/// f32 `weight`, `cos` and `sin` of the row's length, and a rotation among the covered nodes.
fn norm_rope_ok(
    g: &Graph,
    covers: &BTreeSet<NodeId>,
    x: NodeId,
    eps: NodeId,
    weight: NodeId,
    cos: NodeId,
    sin: NodeId,
) -> bool {
    let ty = |id: NodeId| g.node(id).map(|n| &n.ty);
    let len = ty(x).and_then(|t| t.last_dim()).and_then(|d| d.as_const());
    let f32_consts = |id: NodeId| {
        ty(id).is_some_and(|t| t.dtype == crate::DType::F32 && t.shape.iter().all(|d| d.as_const().is_some()))
    };
    // Exactly `len` elements, the last axis `len`.
    let row = |id: NodeId| {
        ty(id).is_some_and(|t| {
            t.last_dim().and_then(|d| d.as_const()) == len
                && t.shape.iter().map(|d| d.as_const()).product::<Option<u64>>() == len
        })
    };
    f32_consts(x)
        && len.is_some_and(|n| n <= NORM_ROPE_MAX_D)
        && g.node(eps).is_some_and(|n| matches!(n.op, Op::Const { .. }))
        && [weight, cos, sin].iter().all(|&r| row(r) && f32_consts(r))
        && covers.iter().any(|&c| matches!(g.node(c).map(|n| &n.op), Some(Op::RopeRotate { .. })))
}

/// `x` is one row of the weight's K columns.
fn matvec_x(g: &Graph, x: NodeId, w: NodeId) -> bool {
    let (Some(xt), Some(wt)) = (g.node(x).map(|n| &n.ty), g.node(w).map(|n| &n.ty)) else { return false };
    let rows = crate::numel_parts(&xt.shape).and_then(|(n, s)| (s == 0).then_some(n));
    wt.shape.len() == 2
        && xt.dtype == crate::DType::F32
        && matches!(g.node(w).map(|n| &n.op), Some(Op::Weight { .. }))
        && xt.last_dim() == Some(wt.shape[1])
        && matches!((rows, wt.shape[1]), (Some(n), Dim::Const(k)) if n == k)
}
