//! Plans for the fused kernels ([`plan_fused`]), and the fused matvec that one-row products take
//! from -O1 ([`plan_row_matvec`]).

use super::{dim_word, mode_word, storage_of, word, Buf, Grid, Pieces, Plan};
use crate::kernels::Family;
use crate::GpuError;
use apr_ir::group::{Group, Kernel};
use apr_ir::{DType, Dim, Graph, Node, NodeId, Op};

/// Rows a workgroup of the fused matvec kernels computes (`matvec_add.wgsl`,
/// `matvec_swiglu.wgsl`).
const MATVEC_ROWS: u64 = 2;

/// The largest head dimension `attention.wgsl` takes: the fusion's contract
/// (`apr_ir::fuse::validate` leaves larger heads unfused).
pub use apr_ir::fuse::ATTENTION_MAX_D;

/// The most chunks `attention.wgsl` cuts the context into (per query head; the workgroup size
/// of `attention_combine.wgsl`).
const ATTENTION_MAX_SPLITS: u64 = 64;

/// `x · Wᵀ` with one row of x and a packed 2-D weight, through `matvec_add.wgsl` (no addend);
/// `None` for any other product.
pub(super) fn plan_row_matvec(g: &Graph, n: &Node, pieces: &dyn Pieces) -> Result<Option<Vec<Plan>>, GpuError> {
    let Op::MatMul { transpose_rhs: true } = n.op else { return Ok(None) };
    let (Some(a), Some(b)) = (n.inputs.first().and_then(|&i| g.node(i)), n.inputs.get(1).and_then(|&i| g.node(i)))
    else {
        return Ok(None);
    };
    let rows = consts(&a.ty.shape).map(|s| s[..s.len().saturating_sub(1)].iter().product::<u64>());
    if !matches!(b.op, Op::Weight { .. }) || b.ty.shape.len() != 2 || rows != Some(1) || a.ty.dtype != DType::F32 {
        return Ok(None);
    }
    matvec_add_plans(g, n, a.id, b, None, None, pieces).map(Some)
}

/// The dispatches of `x · Wᵀ (+ addend)` for output node `n`: one per piece of `w`. With
/// `cache = Some((d, s))` the outputs are a `[N / d, 1, d]` row written at the step's position of
/// `n`'s `[N / d, s, d]` cache buffer.
fn matvec_add_plans(
    g: &Graph,
    n: &Node,
    x: NodeId,
    w: &Node,
    addend: Option<NodeId>,
    cache: Option<(u64, u64)>,
    pieces: &dyn Pieces,
) -> Result<Vec<Plan>, GpuError> {
    let (d, s) = cache.unwrap_or((0, 0));
    let k = w.ty.shape.get(1).and_then(|d| d.as_const()).ok_or_else(|| unsupported(n, "matvec", "a symbolic K"))?;
    let xb = Buf::Node(storage_of(g, x));
    let ab = addend.map_or(xb, |a| Buf::Node(storage_of(g, a)));
    let out = Buf::Node(storage_of(g, n.id));
    pieces
        .pieces(w.id)
        .into_iter()
        .enumerate()
        .map(|(p, (row0, rows))| {
            Ok(Plan {
                node: n.id,
                family: Family::MatvecAdd,
                dtype: Some(w.ty.dtype),
                dtype2: None,
                bindings: vec![xb, Buf::Piece(w.id, p), ab, Buf::Piece(w.id, p), out],
                params: vec![word(k)?, word(row0)?, word(rows)?, u32::from(addend.is_some()), word(d)?, word(s)?],
                grid: Grid::Workgroups(rows.div_ceil(MATVEC_ROWS)),
            })
        })
        .collect()
}

fn unsupported(n: &Node, op: &'static str, why: &str) -> GpuError {
    GpuError::Unsupported { node: n.id, name: n.name.clone(), op, why: why.into() }
}

/// Every dim of a shape, if none is symbolic.
fn consts(shape: &[Dim]) -> Option<Vec<u64>> {
    shape.iter().map(|d| d.as_const()).collect()
}

/// Row ranges where neither of two row-split weights changes piece: `(row0, rows, piece of the
/// first, its row at row0, piece of the second, its row at row0)`.
fn common_ranges(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64, usize, u64, usize, u64)> {
    let mut out = Vec::new();
    let (mut i, mut j, mut r) = (0, 0, 0);
    while let (Some(&(a0, an)), Some(&(b0, bn))) = (a.get(i), b.get(j)) {
        let end = (a0 + an).min(b0 + bn);
        if end > r {
            out.push((r, end - r, i, r - a0, j, r - b0));
            r = end;
        }
        i += usize::from(a0 + an == end);
        j += usize::from(b0 + bn == end);
    }
    out
}

/// How many dispatches a group of `kernel` takes when no weight of it is split across bindings:
/// two for attention (its chunks, then their combination), one for every other kernel.
pub fn passes(kernel: &Kernel) -> u64 {
    match kernel {
        Kernel::Attention { .. } => 2,
        _ => 1,
    }
}

/// Plans for a fused group (any kernel but [`Kernel::Node`]): one dispatch, one per weight
/// piece (per range of rows where neither weight changes piece, for `MatvecSwiGlu`), or two for
/// attention (the chunks of the context, then their combination, through scratch memory). The
/// shapes are those `apr_ir::fuse::validate` admits; anything else is refused, not guessed.
pub fn plan_fused(g: &Graph, grp: &Group, pieces: &dyn Pieces) -> Result<Vec<Plan>, GpuError> {
    let v = grp
        .value()
        .and_then(|v| g.node(v))
        .ok_or_else(|| GpuError::Internal(format!("a dispatch group without an output: {:?}", grp.covers)))?;
    let kind = grp.kernel.name();
    let bad = |why: &str| unsupported(v, kind, why);
    let node = |id: NodeId| g.node(id).ok_or_else(|| bad("a missing operand"));
    let buf = |id: NodeId| Buf::Node(storage_of(g, id));
    let out = buf(v.id);
    let shape = |id: NodeId| -> Result<Vec<u64>, GpuError> {
        consts(&node(id)?.ty.shape).ok_or_else(|| bad("symbolic dims in an operand"))
    };
    let last = |s: &[u64]| s.last().copied().unwrap_or(1).max(1);
    // An f32 operand read as a plain array: a computed value, a constant, or an f32 weight in
    // one buffer.
    let f32_operand = |id: NodeId| -> Result<Buf, GpuError> {
        let n = node(id)?;
        if n.ty.dtype != DType::F32 {
            return Err(bad(&format!("a {} operand where f32 is needed", n.ty.dtype)));
        }
        if matches!(n.op, Op::Weight { .. }) && pieces.pieces(id).len() != 1 {
            return Err(bad("an f32 operand weight split across bindings"));
        }
        Ok(buf(id))
    };
    let rope_attrs = || -> Result<(u32, u32), GpuError> {
        grp.covers
            .iter()
            .find_map(|&c| match g.node(c).map(|n| &n.op) {
                Some(Op::RopeRotate { mode, n_rot }) => Some((mode_word(*mode), *n_rot)),
                _ => None,
            })
            .ok_or_else(|| bad("no rope_rotate among the covered nodes"))
    };
    let one = |family: Family, bindings: Vec<Buf>, params: Vec<u32>, grid: Grid| {
        Ok(vec![Plan { node: v.id, family, dtype: None, dtype2: None, bindings, params, grid }])
    };
    // A per-head norm and RoPE (norm_rope.wgsl) over operands [x, eps, weight, cos, sin]: one
    // workgroup per head; `cache_rows` is the cache's S when it stores into one, else 0.
    let norm_rope = |operands: [NodeId; 5], cache_rows: u64| -> Result<Vec<Plan>, GpuError> {
        let (mode, n_rot) = rope_attrs()?;
        let xs = shape(operands[0])?;
        let hd = last(&xs);
        if hd > apr_ir::fuse::NORM_ROPE_MAX_D {
            return Err(bad(&format!("a head dimension of {hd} (at most {})", apr_ir::fuse::NORM_ROPE_MAX_D)));
        }
        let mut bindings = operands.iter().map(|&id| f32_operand(id)).collect::<Result<Vec<_>, _>>()?;
        bindings.push(out);
        let rows = xs.iter().product::<u64>() / hd;
        let params = vec![word(rows)?, word(hd)?, n_rot, mode, word(cache_rows)?];
        one(Family::NormRope, bindings, params, Grid::Workgroups(rows))
    };
    match grp.kernel {
        Kernel::Node => Err(GpuError::Internal("plan_fused called for a one-node group".into())),
        Kernel::RmsNorm { x, eps, weight } => {
            let xs = shape(x)?;
            let len = last(&xs);
            let rows = xs.iter().product::<u64>() / len;
            let bindings = vec![f32_operand(x)?, f32_operand(eps)?, f32_operand(weight)?, out];
            one(Family::RmsNorm, bindings, vec![word(rows)?, word(len)?], Grid::Workgroups(rows))
        }
        Kernel::Softmax { x, scale } => {
            let s = &node(x)?.ty.shape;
            let (len, outer) = s.split_last().ok_or_else(|| bad("a scalar input"))?;
            let rows = consts(outer).ok_or_else(|| bad("symbolic rows"))?.iter().product::<u64>();
            let sb = match scale {
                Some(c) => f32_operand(c)?,
                None => f32_operand(x)?,
            };
            let params = vec![word(rows)?, dim_word(*len)?, u32::from(scale.is_some())];
            one(Family::Softmax, vec![f32_operand(x)?, sb, out], params, Grid::Workgroups(rows))
        }
        Kernel::Rope { x, cos, sin } => {
            let (mode, n_rot) = rope_attrs()?;
            let xs = shape(x)?;
            let count = xs.iter().product::<u64>();
            let bindings = vec![f32_operand(x)?, f32_operand(cos)?, f32_operand(sin)?, out];
            let params = vec![word(count)?, word(last(&xs))?, n_rot, mode];
            one(Family::Rope, bindings, params, Grid::Threads(node(x)?.ty.shape.clone()))
        }
        Kernel::SwiGlu { gate, up } => {
            let count = shape(gate)?.iter().product::<u64>();
            let bindings = vec![f32_operand(gate)?, f32_operand(up)?, out];
            one(Family::SwiGlu, bindings, vec![word(count)?], Grid::Threads(node(gate)?.ty.shape.clone()))
        }
        Kernel::MatvecAdd { x, weight, addend } => {
            f32_operand(x)?;
            f32_operand(addend)?;
            matvec_add_plans(g, v, x, node(weight)?, Some(addend), None, pieces)
        }
        Kernel::MatvecCacheWrite { cache, x, weight, addend, pos: _ } => {
            f32_operand(x)?;
            if let Some(a) = addend {
                f32_operand(a)?;
            }
            let Op::CacheWrite { axis: 1 } = v.op else { return Err(bad("an output that is not a cache write")) };
            let [_, s, d] = shape(cache)?[..] else { return Err(bad("a cache that is not [Hkv, S, D]")) };
            matvec_add_plans(g, v, x, node(weight)?, addend, Some((d, s)), pieces)
        }
        Kernel::MatvecSwiGlu { x, gate, up } => {
            f32_operand(x)?;
            let (gw, uw) = (node(gate)?, node(up)?);
            let k = shape(gate)?.get(1).copied().ok_or_else(|| bad("a gate weight that is not 2-D"))?;
            common_ranges(&pieces.pieces(gate), &pieces.pieces(up))
                .into_iter()
                .map(|(row0, rows, gp, g_row, up_piece, u_row)| {
                    Ok(Plan {
                        node: v.id,
                        family: Family::MatvecSwiGlu,
                        dtype: Some(gw.ty.dtype),
                        dtype2: Some(uw.ty.dtype),
                        bindings: vec![
                            buf(x),
                            Buf::Piece(gate, gp),
                            Buf::Piece(up, up_piece),
                            Buf::Piece(gate, gp),
                            Buf::Piece(up, up_piece),
                            out,
                        ],
                        params: vec![word(k)?, word(row0)?, word(rows)?, word(g_row)?, word(u_row)?],
                        grid: Grid::Workgroups(rows.div_ceil(MATVEC_ROWS)),
                    })
                })
                .collect()
        }
        Kernel::Attention { q, k_cache, v_cache, scale } => {
            let qs = shape(q)?;
            let (kst, vst) = (storage_of(g, k_cache), storage_of(g, v_cache));
            let ks = shape(kst)?;
            let [hkv, group, d] = qs[..] else { return Err(bad("a query that is not [Hkv, G, D]")) };
            if ks.len() != 3 || ks[0] != hkv || ks[2] != d || shape(vst)? != ks {
                return Err(bad("caches that are not [Hkv, S, D] like the query"));
            }
            if d > ATTENTION_MAX_D {
                return Err(bad(&format!("a head dimension of {d} (at most {ATTENTION_MAX_D})")));
            }
            let heads = hkv * group;
            // Splits of the context: one per 64 positions of the compiled context, at most
            // ATTENTION_MAX_SPLITS. attention.wgsl sizes the chunks per token (at least one
            // 32-position tile each), so a full context has chunks of two tiles or more.
            let splits = ks[1].div_ceil(64).clamp(1, ATTENTION_MAX_SPLITS);
            let scratch = Buf::Scratch(4 * heads * splits * (d + 2));
            let first = Plan {
                node: v.id,
                family: Family::Attention,
                dtype: None,
                dtype2: None,
                bindings: vec![f32_operand(q)?, Buf::Node(kst), Buf::Node(vst), f32_operand(scale)?, scratch],
                params: vec![word(group)?, word(d)?, word(ks[1])?, word(heads)?, word(splits)?],
                grid: Grid::Workgroups(heads * splits),
            };
            let combine = Plan {
                node: v.id,
                family: Family::AttentionCombine,
                dtype: None,
                dtype2: None,
                bindings: vec![scratch, out],
                params: vec![word(d)?, word(heads)?, word(splits)?],
                grid: Grid::Workgroups(heads),
            };
            Ok(vec![first, combine])
        }
        Kernel::NormRope { x, eps, weight, cos, sin } => norm_rope([x, eps, weight, cos, sin], 0),
        Kernel::NormRopeCacheWrite { cache, x, eps, weight, cos, sin, pos: _ } => {
            let Op::CacheWrite { axis: 1 } = v.op else { return Err(bad("an output that is not a cache write")) };
            let [_, s, _] = shape(cache)?[..] else { return Err(bad("a cache that is not [Hkv, S, D]")) };
            norm_rope([x, eps, weight, cos, sin], s)
        }
        Kernel::RopeCacheWrite { cache, x, cos, sin, pos } => {
            let (mode, n_rot) = rope_attrs()?;
            let Op::CacheWrite { axis } = v.op else { return Err(bad("an output that is not a cache write")) };
            let cs = shape(cache)?;
            let ax = axis as usize;
            let full = cs.get(ax).copied().ok_or_else(|| bad("a cache axis out of range"))?;
            let (outer, inner) = (cs[..ax].iter().product::<u64>(), cs[ax + 1..].iter().product::<u64>());
            let xs = shape(x)?;
            let count = xs.iter().product::<u64>();
            if count != outer * inner {
                return Err(bad("a row that is not one position of the cache"));
            }
            let bindings = vec![f32_operand(x)?, f32_operand(cos)?, f32_operand(sin)?, buf(pos), out];
            let params = vec![word(count)?, word(last(&xs))?, n_rot, mode, word(full)?, word(inner)?];
            one(Family::RopeCacheWrite, bindings, params, Grid::Threads(node(x)?.ty.shape.clone()))
        }
    }
}
