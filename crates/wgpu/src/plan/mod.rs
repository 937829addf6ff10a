//! Kernel plans: which kernel computes a dispatch group, from which buffers, with which
//! parameter words and how many threads. A group (`apr_ir::group::Group`) is one plan, or one
//! per weight piece where a weight is split across bindings: [`plan_node`] for the one-node
//! groups (the -O0 schedule is one per compute node), [`plan_fused`] (`fused.rs`) for the fused
//! kernels.

mod fused;

use fused::plan_row_matvec;
pub use fused::{passes, plan_fused, ATTENTION_MAX_D};

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
    /// Scratch memory of at least this many bytes, private to one group's dispatches: written by
    /// one and read by the next (attention's partial results). Groups run one after another, so
    /// the schedule gives every scratch binding the same buffer.
    Scratch(u64),
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
