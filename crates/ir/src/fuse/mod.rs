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
//!    shapes the backend cannot run ([`Kernel`] contract in [`validate`](fn@validate)) falls back to one
//!    dispatch per node; a window whose groups cannot be ordered falls back entirely.
//!
//! [`crate::group::check_coverage`] holds the result to "every compute node covered by
//! exactly one dispatch"; the tests check it at every level on every lowered model.

pub mod lang;
mod order;
pub mod rules;
mod simplify;
mod validate;

use order::order;
pub use simplify::simplify;
pub use validate::{validate, ATTENTION_MAX_D, NORM_ROPE_MAX_D};

use crate::group::{Group, Kernel};
use crate::{names, Graph, IrError, NodeId, Op};
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
        "F.norm_rope" => Kernel::NormRope { x: at(0)?, eps: at(1)?, weight: at(2)?, cos: at(3)?, sin: at(4)? },
        "F.norm_rope_cache_write" => Kernel::NormRopeCacheWrite {
            cache: at(0)?,
            x: at(1)?,
            eps: at(2)?,
            weight: at(3)?,
            cos: at(4)?,
            sin: at(5)?,
            pos: at(6)?,
        },
        "F.matvec_add_cache_write" => {
            Kernel::MatvecCacheWrite { cache: at(0)?, x: at(1)?, weight: at(2)?, addend: Some(at(3)?), pos: at(4)? }
        }
        "F.matvec_cache_write" => {
            Kernel::MatvecCacheWrite { cache: at(0)?, x: at(1)?, weight: at(2)?, addend: None, pos: at(3)? }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
