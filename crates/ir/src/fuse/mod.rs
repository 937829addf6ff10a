//! The fusion compiler: egg rewrites over the IR, extraction into dispatch groups.
//!
//! 1. The graph is cut into windows: one per layer (`blk.N.…`) and one for the rest. Layers
//!    are isomorphic, so each window's e-graph is small and compile time grows linearly with
//!    depth; nothing crosses a window (a fusion never spans two layers).
//! 2. Each window becomes an e-graph ([`lang`]) and is saturated with the level's rules
//!    ([`rules`]) under iteration, node and time limits.
//! 3. Extraction with a cost model (one unit per dispatch, plus the bytes it writes) picks,
//!    for every value the rest of the graph needs, either an original IR e-node or a fused
//!    kernel `F.<kind>`. Terms that exist only in the e-graph (new algebraic forms) are never
//!    picked: every dispatch must compute IR nodes, so the checker can compare them.
//! 4. Provenance: a dispatch *outputs* the IR nodes of its e-class and *covers* those plus
//!    every IR node between its root and its operands (the fused region). A fused region
//!    whose interior is needed outside it, an operand nothing materializes or a kernel whose
//!    shapes the backend cannot run ([`Kernel`] contract in [`validate`]) falls back to one
//!    dispatch per node; a window whose groups cannot be ordered falls back entirely.
//!
//! [`crate::group::check_coverage`] holds the result to "every compute node covered by
//! exactly one dispatch"; the tests check it at every level on every lowered model.

pub mod lang;
pub mod rules;

use crate::group::{Group, Kernel};
use crate::{names, Dim, Graph, IrError, NodeId, Op};
use egg::{CostFunction, Extractor, Id, Language, Runner, SymbolLang};
use lang::{has_attr, Window};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Optimization level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OptLevel {
    /// One dispatch per compute node.
    O0,
    /// Row-local regions fused: RMSNorm, softmax (with its scale), RoPE, SwiGLU.
    O1,
    /// Also matvec epilogues (bias, residual), SwiGLU projections, attention, RoPE + cache write.
    O2,
}

impl OptLevel {
    /// `0`, `1` or `2`.
    pub fn from_number(n: u8) -> Option<OptLevel> {
        match n {
            0 => Some(OptLevel::O0),
            1 => Some(OptLevel::O1),
            2 => Some(OptLevel::O2),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        match self {
            OptLevel::O0 => 0,
            OptLevel::O1 => 1,
            OptLevel::O2 => 2,
        }
    }
}

/// What fusion did, for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuseStats {
    pub windows: usize,
    /// Largest e-graph (e-nodes) of any window after saturation.
    pub max_egraph_nodes: usize,
    /// Fused groups per kernel kind.
    pub kernels: BTreeMap<String, usize>,
    /// Fused regions dropped back to one dispatch per node, and why.
    pub fallbacks: Vec<String>,
}

/// Limits of one window's saturation.
const ITER_LIMIT: usize = 12;
const NODE_LIMIT: usize = 20_000;
const TIME_LIMIT: Duration = Duration::from_secs(2);

/// The dispatch groups of `g` at `level`, in an order that respects data dependencies.
pub fn fuse(g: &Graph, level: OptLevel) -> Result<(Vec<Group>, FuseStats), IrError> {
    let mut stats = FuseStats::default();
    if level == OptLevel::O0 {
        return Ok((crate::group::unfused(g), stats));
    }
    let consts = const_values(g);
    let mut rules = rules::algebra(&consts);
    rules.extend(rules::fusion_o1(&consts));
    if level >= OptLevel::O2 {
        rules.extend(rules::fusion_o2());
    }
    let users = g.users();
    let outputs: HashSet<NodeId> = g.outputs.iter().map(|o| o.node).collect();

    // Windows: layers in order, then everything else.
    let mut windows: BTreeMap<Option<u32>, Vec<NodeId>> = BTreeMap::new();
    for n in &g.nodes {
        windows.entry(names::layer_of(&n.name)).or_default().push(n.id);
    }
    let mut groups = Vec::new();
    for members in windows.values() {
        stats.windows += 1;
        let window = Window::build(g, members);
        let inside: HashSet<NodeId> = members.iter().copied().collect();
        let roots: Vec<NodeId> = window
            .members
            .iter()
            .map(|(id, _)| *id)
            .filter(|&id| {
                outputs.contains(&id)
                    || users[id.index()].iter().any(|u| !inside.contains(u))
                    || g.node(id).is_some_and(|n| matches!(n.op, Op::CacheWrite { .. }))
            })
            .collect();
        let runner = Runner::default()
            .with_egraph(window.egraph)
            .with_iter_limit(ITER_LIMIT)
            .with_node_limit(NODE_LIMIT)
            .with_time_limit(TIME_LIMIT)
            .run(&rules);
        let window = Window { egraph: runner.egraph, class: window.class, members: window.members };
        stats.max_egraph_nodes = stats.max_egraph_nodes.max(window.egraph.total_number_of_nodes());
        let fallback = crate::group::unfused_subset(g, members);
        match extract_window(g, &window, &roots, &users, &mut stats) {
            Some(found) => groups.extend(found),
            None => {
                stats.fallbacks.push(format!("window of {} nodes: groups could not be ordered", members.len()));
                groups.extend(fallback);
            }
        }
    }
    // Windows are independent, but a window reads what earlier ones write (the head reads
    // the last layer): order all groups by their data dependencies.
    let groups = match order(g, groups) {
        Some(ordered) => ordered,
        None => {
            stats.fallbacks.push("the fused groups could not be ordered; using one dispatch per node".into());
            crate::group::unfused(g)
        }
    };
    for grp in &groups {
        if !grp.kernel.is_node() {
            *stats.kernels.entry(grp.kernel.name().to_string()).or_default() += 1;
        }
    }
    crate::group::check_coverage(g, &groups)?;
    Ok((groups, stats))
}

/// The scalar constants' values by leaf symbol (`c:4`), for the rules' conditions.
fn const_values(g: &Graph) -> rules::Consts {
    Arc::new(
        g.nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Const { value } => Some((format!("c:{}", n.id.0), value)),
                _ => None,
            })
            .collect(),
    )
}

/// Extraction cost: dispatches, then bytes written. Terms that are not IR nodes (or fused
/// kernels over IR values) cost infinity, so they are never picked.
struct Cost<'a> {
    original: &'a HashSet<SymbolLang>,
    original_class: &'a HashSet<Id>,
    bytes: &'a HashMap<Id, f64>,
    egraph: &'a egg::EGraph<SymbolLang, ()>,
}

impl CostFunction<SymbolLang> for Cost<'_> {
    type Cost = f64;
    fn cost<C>(&mut self, enode: &SymbolLang, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let children: f64 = enode.children.iter().map(|&c| costs(c)).sum();
        let op = enode.op.as_str();
        if enode.children.is_empty() {
            return 0.0;
        }
        let id = self.egraph.lookup(enode.clone()).map(|c| self.egraph.find(c));
        let own = id.and_then(|c| self.bytes.get(&c)).copied().unwrap_or(0.0) * 1e-9;
        if op.starts_with("F.") {
            if enode.children.iter().all(|c| self.original_class.contains(&self.egraph.find(*c))) {
                return 1.0 + own + children;
            }
            return f64::INFINITY;
        }
        let canon = enode.clone().map_children(|c| self.egraph.find(c));
        if !self.original.contains(&canon) {
            return f64::INFINITY;
        }
        if op == "reshape" {
            return children;
        }
        1.0 + own + children
    }
}

/// One candidate dispatch: the e-class it writes and the e-node chosen for it.
struct Candidate {
    class: Id,
    enode: SymbolLang,
}

/// Groups for one window, or `None` if they cannot be put in dependency order.
fn extract_window(
    g: &Graph,
    w: &Window,
    roots: &[NodeId],
    users: &[Vec<NodeId>],
    stats: &mut FuseStats,
) -> Option<Vec<Group>> {
    let eg = &w.egraph;
    let canon = |n: &SymbolLang| n.clone().map_children(|c| eg.find(c));
    let original: HashSet<SymbolLang> = w.members.iter().map(|(_, e)| canon(e)).collect();
    let mut members_of: HashMap<Id, Vec<NodeId>> = HashMap::new();
    for (id, _) in &w.members {
        if let Some(c) = w.class_of(*id) {
            members_of.entry(c).or_default().push(*id);
        }
    }
    let original_class: HashSet<Id> = w.class.values().map(|&c| eg.find(c)).collect();
    let bytes: HashMap<Id, f64> = members_of
        .iter()
        .filter_map(|(&c, ids)| {
            let n = g.node(*ids.first()?)?;
            Some((c, n.ty.bytes(1).unwrap_or(0) as f64))
        })
        .collect();
    let extractor =
        Extractor::new(eg, Cost { original: &original, original_class: &original_class, bytes: &bytes, egraph: eg });
    let is_attr = |c: Id| eg[c].nodes.iter().any(|n| n.children.is_empty() && n.op.as_str().starts_with("attr:"));
    let operand_classes = |n: &SymbolLang| -> Vec<Id> {
        let skip = usize::from(has_attr(n, is_attr));
        n.children.iter().skip(skip).map(|&c| eg.find(c)).collect()
    };

    // Walk the chosen terms from the roots.
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut stack: Vec<Id> = roots.iter().filter_map(|&r| w.class_of(r)).collect();
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let best = extractor.find_best_node(c).clone();
        if !extractor.find_best_cost(c).is_finite() {
            return None;
        }
        if best.children.is_empty() {
            continue;
        }
        stack.extend(operand_classes(&best));
        if best.op.as_str() != "reshape" {
            candidates.push(Candidate { class: c, enode: best });
        }
    }

    // Provenance of each candidate: the classes it covers.
    let class_of = |id: NodeId| w.class_of(id);
    let mut planned: Vec<(Candidate, BTreeSet<Id>, Option<Kernel>)> = Vec::new();
    for cand in candidates {
        let mut covered: BTreeSet<Id> = BTreeSet::from([cand.class]);
        let fused = cand.enode.op.as_str().starts_with("F.");
        if fused {
            let stop: HashSet<Id> = operand_classes(&cand.enode).into_iter().collect();
            let mut queue: Vec<NodeId> = members_of.get(&cand.class).cloned().unwrap_or_default();
            while let Some(n) = queue.pop() {
                for &i in g.node(n).map(|n| n.inputs.as_slice()).unwrap_or(&[]) {
                    let Some(ci) = class_of(i) else { continue };
                    if stop.contains(&ci) || !members_of.contains_key(&ci) {
                        continue;
                    }
                    if covered.insert(ci) {
                        queue.extend(members_of.get(&ci).cloned().unwrap_or_default());
                    }
                }
            }
        }
        planned.push((cand, covered, None));
    }

    // Operand representatives: a node of the class that will hold the value.
    let member_ids: HashSet<NodeId> = w.members.iter().map(|(m, _)| *m).collect();
    let rep = |c: Id| -> Option<NodeId> {
        // Leaves and nodes outside the window first (they are always there), then the
        // lowest node id of the window (a view or a materialized value).
        let in_class = w.class.iter().filter(|(_, &cls)| eg.find(cls) == c).map(|(&id, _)| id);
        in_class.min_by_key(|&id| (member_ids.contains(&id), id))
    };

    // Fused kernels: operands, escape and shape checks; failures fall back to single nodes.
    let mut demote: Vec<usize> = Vec::new();
    for (k, (cand, covered, kernel)) in planned.iter_mut().enumerate() {
        if !cand.enode.op.as_str().starts_with("F.") {
            continue;
        }
        let ops: Option<Vec<NodeId>> = operand_classes(&cand.enode).into_iter().map(rep).collect();
        let covers: BTreeSet<NodeId> =
            covered.iter().flat_map(|c| members_of.get(c).cloned().unwrap_or_default()).collect();
        let escapes = covers
            .iter()
            .filter(|n| class_of(**n) != Some(cand.class))
            .any(|n| roots.contains(n) || users[n.index()].iter().any(|u| !covers.contains(u)));
        let made = ops.and_then(|o| make_kernel(cand.enode.op.as_str(), &o));
        match made {
            Some(kn) if !escapes && validate(g, &kn, &covers) => *kernel = Some(kn),
            _ => {
                stats.fallbacks.push(format!(
                    "{} at {}: {}",
                    cand.enode.op,
                    members_of
                        .get(&cand.class)
                        .and_then(|m| m.first())
                        .and_then(|&m| g.node(m))
                        .map_or("?", |n| n.name.as_str()),
                    if escapes { "an inner value is used outside" } else { "operands or shapes unsupported" }
                ));
                demote.push(k);
            }
        }
    }

    // Build groups: fused ones, then single nodes for everything else of the window.
    let mut groups: Vec<Group> = Vec::new();
    let mut claimed: HashSet<Id> = HashSet::new();
    for (k, (cand, covered, kernel)) in planned.iter().enumerate() {
        if demote.contains(&k) {
            continue;
        }
        let Some(kernel) = kernel else { continue };
        let mut covers: Vec<NodeId> = covered
            .iter()
            .flat_map(|c| members_of.get(c).cloned().unwrap_or_default())
            .filter(|&n| g.node(n).is_some_and(|n| n.op.is_compute()))
            .collect();
        covers.sort();
        let outputs = compute_members(g, members_of.get(&cand.class));
        if outputs.is_empty() || covered.iter().any(|c| claimed.contains(c)) {
            return None;
        }
        claimed.extend(covered.iter().copied());
        let mut outputs = outputs;
        outputs.sort();
        groups.push(Group { covers, outputs, kernel: kernel.clone() });
    }
    // Every other class with compute nodes: one -O0 dispatch, computing the node whose
    // e-node was chosen (or any of them), the others sharing its value.
    let chosen: HashMap<Id, SymbolLang> = planned.iter().map(|(c, _, _)| (c.class, canon(&c.enode))).collect();
    let mut rest: Vec<(Id, Vec<NodeId>)> = members_of
        .iter()
        .filter(|(c, _)| !claimed.contains(c))
        .map(|(&c, m)| (c, compute_members(g, Some(m))))
        .collect();
    rest.retain(|(_, m)| !m.is_empty());
    for (c, mut ms) in rest {
        ms.sort();
        if let Some(e) = chosen.get(&c) {
            if let Some(pos) = w.members.iter().position(|(id, en)| ms.contains(id) && canon(en) == *e) {
                let first = w.members[pos].0;
                ms.retain(|&m| m != first);
                ms.insert(0, first);
            }
        }
        let mut covers = ms.clone();
        covers.sort();
        groups.push(Group { covers, outputs: ms, kernel: Kernel::Node });
    }
    order(g, groups)
}

/// The compute nodes among `ms`.
fn compute_members(g: &Graph, ms: Option<&Vec<NodeId>>) -> Vec<NodeId> {
    ms.map(|m| m.iter().copied().filter(|&n| g.node(n).is_some_and(|x| x.op.is_compute())).collect())
        .unwrap_or_default()
}

/// The kernel a fused symbol stands for, given its operand nodes.
fn make_kernel(sym: &str, o: &[NodeId]) -> Option<Kernel> {
    let at = |i: usize| o.get(i).copied();
    Some(match sym {
        "F.rms_norm" => Kernel::RmsNorm { x: at(0)?, eps: at(1)?, weight: at(2)? },
        "F.softmax" => Kernel::Softmax { x: at(0)?, scale: None },
        "F.softmax_scaled" => Kernel::Softmax { x: at(0)?, scale: Some(at(1)?) },
        "F.rope" => Kernel::Rope { x: at(0)?, cos: at(1)?, sin: at(2)? },
        "F.swiglu" => Kernel::SwiGlu { gate: at(0)?, up: at(1)? },
        "F.matvec_add" => Kernel::MatvecAdd { x: at(0)?, weight: at(1)?, addend: at(2)? },
        "F.matvec_swiglu" => Kernel::MatvecSwiGlu { x: at(0)?, gate: at(1)?, up: at(2)? },
        "F.attention" => Kernel::Attention { q: at(0)?, k_cache: at(1)?, v_cache: at(2)?, scale: at(3)? },
        "F.rope_cache_write" => {
            Kernel::RopeCacheWrite { cache: at(0)?, x: at(1)?, cos: at(2)?, sin: at(3)?, pos: at(4)? }
        }
        _ => return None,
    })
}

/// The shapes the fused kernels support (the contract the GPU codegen relies on).
///
/// Row-local kernels: operand `x` is f32 of any rank, rows along its last axis; per-row
/// operands (`weight`, `cos`, `sin`) have exactly the last axis' length (or broadcast from
/// `[.., 1, len]`); scalars are `const` nodes. Matvecs: `x` is `[1, K]` or `[K]`-like with one
/// row, the weight 2-D `[N, K]`, the addend `N` elements. Attention: `q` `[Hkv, G, D]`, the
/// caches `[Hkv, S, D]` with positions on axis 1.
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
                && qt.is_some_and(|q| q.shape.len() == 3)
                && matches!((qt, kt), (Some(q), Some(k)) if q.shape[0] == k.shape[0] && q.shape[2] == k.shape[2])
                && ty(*v_cache).map(|t| &t.shape) == kt.map(|t| &t.shape)
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

/// Put groups in dependency order (Kahn); `None` on a cycle.
fn order(g: &Graph, groups: Vec<Group>) -> Option<Vec<Group>> {
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
            Kernel::RopeCacheWrite { cache, .. } => Some(*cache),
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

#[cfg(test)]
mod tests;

/// The algebra rules alone, applied to the whole graph and extracted as the smallest
/// equivalent graph (new terms allowed). Used to test the rules' soundness: interpreting
/// `g` and `simplify(g)` must agree. Outputs keep their names; nodes are renamed after an
/// original node of their e-class where there is one.
pub fn simplify(g: &Graph) -> Result<Graph, IrError> {
    let all: Vec<NodeId> = g.nodes.iter().map(|n| n.id).collect();
    let window = Window::build(g, &all);
    let consts = const_values(g);
    let runner = Runner::default()
        .with_egraph(window.egraph)
        .with_iter_limit(ITER_LIMIT)
        .with_node_limit(NODE_LIMIT)
        .with_time_limit(TIME_LIMIT)
        .run(&rules::algebra(&consts));
    let eg = &runner.egraph;
    let extractor = Extractor::new(eg, egg::AstSize);
    let name_of: HashMap<Id, String> = {
        let mut m: HashMap<Id, String> = HashMap::new();
        for (id, _) in window.members.iter().rev() {
            if let (Some(&c), Some(n)) = (window.class.get(id), g.node(*id)) {
                m.insert(eg.find(c), n.name.clone());
            }
        }
        m
    };
    let mut b = crate::GraphBuilder::new(g.meta.clone());
    let mut built: HashMap<Id, NodeId> = HashMap::new();
    let mut used_names: HashSet<String> = HashSet::new();
    let mut roots: Vec<Id> = g.outputs.iter().filter_map(|o| window.class.get(&o.node).map(|&c| eg.find(c))).collect();
    roots.extend(
        g.nodes
            .iter()
            .filter(|n| matches!(n.op, Op::CacheWrite { .. }))
            .filter_map(|n| window.class.get(&n.id))
            .map(|&c| eg.find(c)),
    );
    // Post-order without recursion: a class is built once all its operands are.
    for root in roots {
        let mut stack: Vec<(Id, bool)> = vec![(root, false)];
        while let Some((c, expanded)) = stack.pop() {
            if built.contains_key(&c) {
                continue;
            }
            let best = extractor.find_best_node(c).clone();
            if best.children.is_empty() {
                let leaf = lang::leaf_node(best.op)
                    .and_then(|id| g.node(id))
                    .ok_or_else(|| IrError::Graph(format!("simplify: unexpected leaf {}", best.op)))?;
                let id = b.leaf(leaf.name.clone(), leaf.op.clone(), leaf.ty.clone())?;
                built.insert(c, id);
                continue;
            }
            let is_attr =
                |x: Id| eg[x].nodes.iter().any(|n| n.children.is_empty() && n.op.as_str().starts_with("attr:"));
            let skip = usize::from(has_attr(&best, is_attr));
            let operands: Vec<Id> = best.children.iter().skip(skip).map(|&x| eg.find(x)).collect();
            if !expanded {
                stack.push((c, true));
                stack.extend(operands.iter().filter(|x| !built.contains_key(x)).map(|&x| (x, false)));
                continue;
            }
            let attr_of = |x: Id| eg[x].nodes.iter().find(|n| n.children.is_empty()).and_then(|n| lang::attr_op(n.op));
            let op = lang::decode_op(&best, attr_of)
                .ok_or_else(|| IrError::Graph(format!("simplify: cannot rebuild {}", best.op)))?;
            let inputs: Vec<NodeId> = operands
                .iter()
                .map(|x| built.get(x).copied().ok_or_else(|| IrError::Graph("simplify: operand cycle".into())))
                .collect::<Result<_, _>>()?;
            let base = name_of.get(&c).cloned().unwrap_or_else(|| format!("rw.{}", usize::from(c)));
            let name = if used_names.insert(base.clone()) { base } else { format!("{base}.rw{}", usize::from(c)) };
            used_names.insert(name.clone());
            let id = b.push(name, op, &inputs)?;
            built.insert(c, id);
        }
    }
    for o in &g.outputs {
        let c = window.class.get(&o.node).map(|&c| eg.find(c));
        if let Some(id) = c.and_then(|c| built.get(&c)) {
            b.output(o.name.clone(), *id);
        }
    }
    b.finish()
}
