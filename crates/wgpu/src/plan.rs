//! Kernel plans: which kernel computes a dispatch group, from which buffers, with which
//! parameter words and how many threads. A group (`apr_ir::group::Group`) is one plan, or one
//! per weight piece where a weight is split across bindings: [`plan_node`] for the one-node
//! groups (the -O0 schedule is one per compute node), [`plan_fused`] for the fused kernels.

use crate::kernels::Family;
use crate::GpuError;
use apr_ir::fuse::OptLevel;
use apr_ir::group::{Group, Kernel};
use apr_ir::{DType, Dim, Graph, Node, NodeId, Op, RopeMode};

/// A buffer a dispatch binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buf {
    /// The value buffer of a node (views resolve to their source).
    Node(NodeId),
    /// Piece `k` of a weight split across bindings.
    Piece(NodeId, usize),
    /// A constant table the planner computed (rope coefficients), by index.
    Table(usize),
}

/// How many threads (or workgroups) a dispatch needs; evaluated per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grid {
    /// One thread per element of a shape (64 per workgroup).
    Threads(Vec<Dim>),
    /// One workgroup per item.
    Workgroups(u64),
}

/// One dispatch of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub node: NodeId,
    pub family: Family,
    pub dtype: Option<DType>,
    /// The dtype of a second weight (the up projection of `MatvecSwiGlu`).
    pub dtype2: Option<DType>,
    /// Operands then output, in binding order from binding 2.
    pub bindings: Vec<Buf>,
    pub params: Vec<u32>,
    pub grid: Grid,
}

/// Row ranges of a weight's pieces, given by the caller's buffer layout.
pub trait Pieces {
    /// `(row0, rows)` of each piece of weight `id`.
    fn pieces(&self, id: NodeId) -> Vec<(u64, u64)>;
}

/// A dim as a parameter word (`ctx` is the sentinel `u32::MAX`).
pub fn dim_word(d: Dim) -> Result<u32, GpuError> {
    match d {
        Dim::Sym(_) => Ok(u32::MAX),
        Dim::Const(n) => u32::try_from(n).ok().filter(|&w| w != u32::MAX).ok_or(GpuError::TooLarge(n)),
    }
}

/// Four dims, right-aligned and padded with 1s on the left.
fn dims4(shape: &[Dim]) -> Result<Vec<u32>, GpuError> {
    let mut out = vec![1u32; 4usize.saturating_sub(shape.len())];
    for d in shape {
        out.push(dim_word(*d)?);
    }
    Ok(out)
}

fn word(n: u64) -> Result<u32, GpuError> {
    dim_word(Dim::Const(n))
}

/// The node whose buffer holds `id`'s value (through reshapes).
pub fn storage_of(g: &Graph, mut id: NodeId) -> NodeId {
    while let Some(n) = g.node(id) {
        match (&n.op, n.inputs.first()) {
            (Op::Reshape { .. }, Some(&src)) => id = src,
            (Op::CacheWrite { .. }, Some(&state)) => id = state,
            _ => break,
        }
    }
    id
}

/// Plans for one compute node. `tables` receives constant tables the plans refer to.
pub fn plan_node(
    g: &Graph,
    n: &Node,
    pieces: &dyn Pieces,
    weight_f32: &dyn Fn(NodeId) -> Option<Vec<f32>>,
    tables: &mut Vec<Vec<f32>>,
) -> Result<Vec<Plan>, GpuError> {
    let unsupported =
        |why: &str| GpuError::Unsupported { node: n.id, name: n.name.clone(), op: n.op.name(), why: why.into() };
    let operand = |k: usize| -> Result<&Node, GpuError> {
        n.inputs.get(k).and_then(|i| g.node(*i)).ok_or_else(|| unsupported("missing operand"))
    };
    let buf = |k: usize| -> Result<Buf, GpuError> { Ok(Buf::Node(storage_of(g, operand(k)?.id))) };
    let out = Buf::Node(storage_of(g, n.id));
    let threads = Grid::Threads(n.ty.shape.clone());
    let one = |family: Family, bindings: Vec<Buf>, params: Vec<u32>, grid: Grid| {
        Ok(vec![Plan { node: n.id, family, dtype: None, dtype2: None, bindings, params, grid }])
    };
    let unary = |code: u32| -> Result<Vec<Plan>, GpuError> {
        let mut p = vec![code];
        p.extend(dims4(&n.ty.shape)?);
        one(Family::Unary, vec![buf(0)?, out], p, threads.clone())
    };
    let binary = |code: u32| -> Result<Vec<Plan>, GpuError> {
        let mut p = vec![code];
        p.extend(dims4(&n.ty.shape)?);
        p.extend(dims4(&operand(0)?.ty.shape)?);
        p.extend(dims4(&operand(1)?.ty.shape)?);
        one(Family::Binary, vec![buf(0)?, buf(1)?, out], p, threads.clone())
    };
    let reduce = |code: u32, axis: u32| -> Result<Vec<Plan>, GpuError> {
        let a = operand(0)?;
        let pad = 4 - a.ty.shape.len() as u32;
        let mut p = vec![code, axis + pad];
        p.extend(dims4(&a.ty.shape)?);
        one(Family::Reduce, vec![buf(0)?, out], p, threads.clone())
    };
    match &n.op {
        Op::Input { .. } | Op::Weight { .. } | Op::Const { .. } | Op::State | Op::Reshape { .. } => Ok(vec![]),
        Op::Neg => unary(0),
        Op::Exp => unary(1),
        Op::Sigmoid => unary(2),
        Op::Sqrt => unary(3),
        Op::Rsqrt => unary(4),
        Op::Cos => unary(5),
        Op::Sin => unary(6),
        Op::Add => binary(0),
        Op::Sub => binary(1),
        Op::Mul => binary(2),
        Op::Div => binary(3),
        Op::ReduceSum { axis } => reduce(0, *axis),
        Op::ReduceMean { axis } => reduce(1, *axis),
        Op::ReduceMax { axis } => reduce(2, *axis),
        Op::ArgMax { axis } => reduce(3, *axis),
        Op::Cast { to: _ } => {
            let src = operand(0)?;
            match src.op {
                Op::Weight { .. } => {}
                _ => return Err(unsupported("cast of a computed value (only weights are cast)")),
            }
            let count: u64 = src.ty.shape.iter().filter_map(|d| d.as_const()).product();
            let plans = pieces_plans(n, src, pieces, |k, _row0, _rows| {
                Ok((
                    Family::Cast,
                    vec![Buf::Piece(src.id, k), out],
                    vec![word(count)?],
                    Grid::Threads(src.ty.shape.clone()),
                ))
            })?;
            if plans.len() != 1 {
                return Err(unsupported("cast of a weight split across bindings"));
            }
            Ok(plans)
        }
        Op::MatMul { transpose_rhs } => {
            let (a, b) = (operand(0)?, operand(1)?);
            let rank = a.ty.shape.len();
            let (m_dim, k_dim) = (a.ty.shape[rank - 2], a.ty.shape[rank - 1]);
            let batch = a.ty.shape[..rank - 2].iter().try_fold(1u64, |acc, d| d.as_const().map(|c| acc * c));
            let batch = batch.ok_or_else(|| unsupported("symbolic batch dims"))?;
            if matches!(b.op, Op::Weight { .. }) && *transpose_rhs && b.ty.shape.len() == 2 {
                // y = x · Wᵀ with packed W: one workgroup per weight row, per piece.
                let m = batch * m_dim.as_const().ok_or_else(|| unsupported("symbolic rows"))?;
                let k = k_dim.as_const().ok_or_else(|| unsupported("symbolic K"))?;
                let n_total = b.ty.shape[0].as_const().unwrap_or(0);
                return pieces_plans(n, b, pieces, |p, row0, rows| {
                    Ok((
                        Family::Matvec,
                        vec![buf(0)?, Buf::Piece(b.id, p), out],
                        vec![word(m)?, word(k)?, word(n_total)?, word(row0)?, word(rows)?],
                        Grid::Workgroups(rows),
                    ))
                });
            }
            if b.ty.dtype != DType::F32 {
                return Err(unsupported("a non-f32 right operand that is not a 2-D weight"));
            }
            let bs = &b.ty.shape;
            let n_dim = if *transpose_rhs { bs[bs.len() - 2] } else { bs[bs.len() - 1] };
            let p = vec![
                word(batch)?,
                dim_word(m_dim)?,
                dim_word(k_dim)?,
                dim_word(n_dim)?,
                u32::from(*transpose_rhs),
                u32::from(bs.len() > 2),
            ];
            one(Family::MatmulF32, vec![buf(0)?, buf(1)?, out], p, threads)
        }
        Op::Slice { axis, start, len } => {
            let a = operand(0)?;
            let pad = 4 - a.ty.shape.len() as u32;
            let mut p = vec![axis + pad, word(*start)?, dim_word(*len)?];
            p.extend(dims4(&a.ty.shape)?);
            one(Family::Slice, vec![buf(0)?, out], p, threads)
        }
        Op::Gather => {
            let (table, ids) = (operand(0)?, operand(1)?);
            if !matches!(table.op, Op::Weight { .. }) {
                return Err(unsupported("gather from a computed table"));
            }
            let n_ids = ids.ty.shape[0].as_const().ok_or_else(|| unsupported("symbolic id count"))?;
            let cols = table.ty.shape[1].as_const().unwrap_or(0);
            pieces_plans(n, table, pieces, |p, row0, rows| {
                Ok((
                    Family::Gather,
                    vec![buf(1)?, Buf::Piece(table.id, p), out],
                    vec![word(n_ids)?, word(cols)?, word(row0)?, word(rows)?],
                    Grid::Threads(n.ty.shape.clone()),
                ))
            })
        }
        Op::RopeRotate { mode, n_rot } => {
            let hd = n.ty.shape.last().and_then(|d| d.as_const()).ok_or_else(|| unsupported("symbolic head dim"))?;
            let mut p = dims4(&n.ty.shape)?;
            p.extend([word(hd)?, *n_rot, mode_word(*mode)]);
            one(Family::RopeRotate, vec![buf(0)?, out], p, threads)
        }
        Op::RopeAngles { mode, n_rot, head_dim, theta_base, freq_scale } => {
            let factors = match n.inputs.get(1) {
                Some(&f) => {
                    // A weight, or a cast of one (the cast of an f32 weight is its values);
                    // anything else computed would need its own value, not its source's.
                    let weight = |id: NodeId| g.node(id).filter(|w| matches!(w.op, Op::Weight { .. })).map(|w| w.id);
                    let src = match g.node(f).map(|f| (&f.op, f.inputs.first())) {
                        Some((Op::Cast { .. }, Some(&w))) => weight(w),
                        _ => weight(f),
                    };
                    let why = "frequency factors that are not a weight (or a cast of one)";
                    Some(src.and_then(weight_f32).ok_or_else(|| unsupported(why))?)
                }
                None => None,
            };
            // Each coefficient exactly, as the limbs of its f64 significand and a power of two
            // (see rope_angles.wgsl): the kernel rounds pos·c once, as the CPU rounds its f64
            // angle once. (An f32 coefficient puts angles an ulp off, which cos and sin turn
            // into errors near 2e-3 at position 40k.)
            let mut coef = vec![0.0f32; ROPE_WORDS * *head_dim as usize];
            let half = (*n_rot / 2) as usize;
            for i in 0..half {
                let inv = theta_base.powf(-2.0 * i as f64 / f64::from(*n_rot));
                let f = factors.as_ref().and_then(|f| f.get(i)).map_or(1.0, |&x| f64::from(x));
                let c = rope_coefficient(freq_scale * inv / f);
                let (a, b) = match mode {
                    RopeMode::Neox => (i, i + half),
                    RopeMode::Interleaved => (2 * i, 2 * i + 1),
                };
                coef[ROPE_WORDS * a..ROPE_WORDS * (a + 1)].copy_from_slice(&c);
                coef[ROPE_WORDS * b..ROPE_WORDS * (b + 1)].copy_from_slice(&c);
            }
            tables.push(coef);
            one(Family::RopeAngles, vec![buf(0)?, Buf::Table(tables.len() - 1), out], vec![*head_dim], threads)
        }
        Op::CacheWrite { axis } => {
            let cache = operand(0)?;
            let dims: Vec<u64> = cache.ty.shape.iter().filter_map(|d| d.as_const()).collect();
            let ax = *axis as usize;
            let outer: u64 = dims[..ax].iter().product();
            let inner: u64 = dims[ax + 1..].iter().product();
            let value_shape = operand(1)?.ty.shape.clone();
            one(
                Family::CacheWrite,
                vec![buf(1)?, buf(2)?, out],
                vec![word(outer)?, word(dims[ax])?, word(inner)?],
                Grid::Threads(value_shape),
            )
        }
    }
}

/// Rows a workgroup of the fused matvec kernels computes (`matvec_add.wgsl`,
/// `matvec_swiglu.wgsl`).
const MATVEC_ROWS: u64 = 2;

/// The largest head dimension `attention.wgsl` takes (its workgroup holds one query head).
pub const ATTENTION_MAX_D: u64 = 256;

/// Plans for one dispatch group at `level`. A one-node group ([`Kernel::Node`]) is planned by
/// [`plan_node`], except that at -O1 and -O2 a product of one row with a packed 2-D weight takes
/// the fused matvec kernel without its epilogue (`matvec_add.wgsl`) instead of `matvec.wgsl`;
/// fused kernels by [`plan_fused`]. Buffers are named by the storage node of each value (views
/// resolved); where a group has several outputs, it computes and writes the first, and the
/// caller gives the others that buffer.
pub fn plan_group(
    g: &Graph,
    grp: &Group,
    level: OptLevel,
    pieces: &dyn Pieces,
    weight_f32: &dyn Fn(NodeId) -> Option<Vec<f32>>,
    tables: &mut Vec<Vec<f32>>,
) -> Result<Vec<Plan>, GpuError> {
    let v = grp
        .value()
        .and_then(|v| g.node(v))
        .ok_or_else(|| GpuError::Internal(format!("a dispatch group without an output: {:?}", grp.covers)))?;
    match &grp.kernel {
        Kernel::Node => {
            if level > OptLevel::O0 {
                if let Some(plans) = plan_row_matvec(g, v, pieces)? {
                    return Ok(plans);
                }
            }
            plan_node(g, v, pieces, weight_f32, tables)
        }
        _ => plan_fused(g, grp, pieces),
    }
}

/// `x · Wᵀ` with one row of x and a packed 2-D weight, through `matvec_add.wgsl` (no addend);
/// `None` for any other product.
fn plan_row_matvec(g: &Graph, n: &Node, pieces: &dyn Pieces) -> Result<Option<Vec<Plan>>, GpuError> {
    let Op::MatMul { transpose_rhs: true } = n.op else { return Ok(None) };
    let (Some(a), Some(b)) = (n.inputs.first().and_then(|&i| g.node(i)), n.inputs.get(1).and_then(|&i| g.node(i)))
    else {
        return Ok(None);
    };
    let rows = consts(&a.ty.shape).map(|s| s[..s.len().saturating_sub(1)].iter().product::<u64>());
    if !matches!(b.op, Op::Weight { .. }) || b.ty.shape.len() != 2 || rows != Some(1) || a.ty.dtype != DType::F32 {
        return Ok(None);
    }
    matvec_add_plans(g, n, a.id, b, None, pieces).map(Some)
}

/// The dispatches of `x · Wᵀ (+ addend)` for output node `n`: one per piece of `w`.
fn matvec_add_plans(
    g: &Graph,
    n: &Node,
    x: NodeId,
    w: &Node,
    addend: Option<NodeId>,
    pieces: &dyn Pieces,
) -> Result<Vec<Plan>, GpuError> {
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
                params: vec![word(k)?, word(row0)?, word(rows)?, u32::from(addend.is_some())],
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

/// Plans for a fused group (any kernel but [`Kernel::Node`]): one dispatch, or one per weight
/// piece (per range of rows where neither weight changes piece, for `MatvecSwiGlu`). The
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
            matvec_add_plans(g, v, x, node(weight)?, Some(addend), pieces)
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
            let bindings = vec![f32_operand(q)?, Buf::Node(kst), Buf::Node(vst), f32_operand(scale)?, out];
            let params = vec![word(group)?, word(d)?, word(ks[1])?, word(heads)?];
            one(Family::Attention, bindings, params, Grid::Workgroups(heads))
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

type PieceSpec = (Family, Vec<Buf>, Vec<u32>, Grid);

/// One plan per piece of weight `w`, each specialized for the weight's dtype.
fn pieces_plans(
    n: &Node,
    w: &Node,
    pieces: &dyn Pieces,
    mut f: impl FnMut(usize, u64, u64) -> Result<PieceSpec, GpuError>,
) -> Result<Vec<Plan>, GpuError> {
    pieces
        .pieces(w.id)
        .into_iter()
        .enumerate()
        .map(|(k, (row0, rows))| {
            let (family, bindings, params, grid) = f(k, row0, rows)?;
            Ok(Plan { node: n.id, family, dtype: Some(w.ty.dtype), dtype2: None, bindings, params, grid })
        })
        .collect()
}

/// Table entries per head dimension of `rope_angles`.
const ROPE_WORDS: usize = 5;

/// A positive f64 `c` as `[m3, m2, m1, m0, e]`: `c = (m3·2⁴⁸ + m2·2³² + m1·2¹⁶ + m0)·2^e` with
/// 16-bit limbs of its 53-bit significand, each an integer an f32 holds exactly. Zeros, and
/// values no angle can use (subnormal, infinite, NaN), give all zeros.
fn rope_coefficient(c: f64) -> [f32; ROPE_WORDS] {
    if !c.is_normal() || c < 0.0 {
        return [0.0; ROPE_WORDS];
    }
    let bits = c.to_bits();
    let m = (bits & ((1 << 52) - 1)) | (1 << 52);
    let e = ((bits >> 52) & 0x7ff) as i32 - 1075;
    let limb = |k: u32| ((m >> (16 * k)) & 0xffff) as f32;
    [limb(3), limb(2), limb(1), limb(0), e as f32]
}

fn mode_word(m: RopeMode) -> u32 {
    match m {
        RopeMode::Neox => 0,
        RopeMode::Interleaved => 1,
    }
}
