//! The differential check: run one IR on the reference and on a device, teacher-forced, and
//! name the first IR node where they part.
//!
//! Algorithm (DESIGN.md, "The checker"):
//! 1. For each position, the reference evaluates every node and the device runs its schedule
//!    in capture mode (every dispatch output read back, intermediates poisoned first).
//! 2. Dispatch outputs are compared, in schedule order, with the reference value of the IR
//!    node they materialize: non-finite values first, then NMSE against [`tolerance`].
//! 3. The first failing dispatch in (position, schedule order) is the suspect. A dispatch that
//!    left poison in its output is `missing`; one that produced NaN/Inf where the reference
//!    is finite is `nonfinite`. Otherwise it is re-run alone on the reference's operand values
//!    (isolation): still wrong → `kernel`, right → `drift` (errors accumulated upstream).
//! 4. A fused suspect is drilled into: its covered nodes run one dispatch each on the
//!    reference's operand values, and the first of them to fail is the culprit node.
//!
//! The checker knows nothing of how the device computes, and nothing of injected faults: it
//! reads numbers only, through the [`Reference`] and [`Device`] traits.

use crate::metrics::{compare, Metrics};
use crate::tolerance::{tolerance, Tolerance};
use apr_ir::group::Group;
use apr_ir::{names, Graph, NodeId};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The bit pattern a device writes into intermediate buffers before a capture step: a
/// signalling NaN no arithmetic produces, so "never written" is told apart from "computed NaN".
pub const POISON_BITS: u32 = 0x7fa5_a5a5;

/// Node values of one step, by node id.
pub type Values = HashMap<NodeId, Vec<f32>>;

/// The reference execution (the CPU interpreter).
pub trait Reference {
    /// Decode `token` at `pos`, returning the value of every compute node.
    fn step(&mut self, token: u32, pos: u32) -> Result<Values, String>;
}

/// The execution under test (the GPU schedule at some level).
pub trait Device {
    /// The dispatch groups, in execution order.
    fn groups(&self) -> &[Group];
    /// Decode `token` at `pos` in capture mode: the value each group wrote (its first output).
    fn step(&mut self, token: u32, pos: u32) -> Result<Vec<Vec<f32>>, String>;
    /// Run group `k` alone at `pos` with its operands set to `operands` (reference values of
    /// the operand nodes); the value it writes.
    fn isolate(&mut self, k: usize, operands: &Values, pos: u32) -> Result<Vec<f32>, String>;
    /// Run the nodes group `k` covers, one dispatch each, at `pos`, on `operands`; the value
    /// of every covered node.
    fn drill(&mut self, k: usize, operands: &Values, pos: u32) -> Result<Values, String>;
}

/// Why the culprit's value is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Its kernel is wrong: it fails even on the reference's inputs.
    Kernel,
    /// Its kernel is right on the reference's inputs: error accumulated upstream.
    Drift,
    /// The dispatch never wrote its output.
    Missing,
    /// NaN or infinity where the reference is finite.
    Nonfinite,
}

impl Cause {
    /// The word the reports use (`kernel`, `drift`, `missing`, `nonfinite`).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Kernel => "kernel",
            Cause::Drift => "drift",
            Cause::Missing => "missing",
            Cause::Nonfinite => "nonfinite",
        }
    }
}

/// The node named as the culprit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Culprit {
    pub node: u32,
    pub name: String,
    pub op: String,
    pub position: u32,
    /// Index of the dispatch (group) in the schedule.
    pub dispatch: usize,
    /// The nodes that dispatch covers (one for an unfused dispatch).
    pub fused_group: Vec<u32>,
    pub cause: Cause,
    pub metrics: MetricsJson,
    pub tolerance: Tolerance,
}

/// Metrics as the JSON report writes them (non-finite counts included).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetricsJson {
    pub nmse: f64,
    pub max_abs: f64,
    pub cosine: f64,
    pub nonfinite: usize,
}

impl From<Metrics> for MetricsJson {
    fn from(m: Metrics) -> MetricsJson {
        MetricsJson {
            nmse: finite_or(m.nmse, f64::MAX),
            max_abs: finite_or(m.max_abs, f64::MAX),
            cosine: finite_or(m.cosine, 0.0),
            nonfinite: m.nonfinite,
        }
    }
}

fn finite_or(v: f64, or: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        or
    }
}

/// One comparison, for the per-node table and the per-layer curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub position: u32,
    pub dispatch: usize,
    pub node: u32,
    pub name: String,
    pub layer: Option<u32>,
    pub nmse: f64,
    pub max_abs: f64,
    pub cosine: f64,
    pub pass: bool,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `pass` or `mismatch`.
    pub verdict: &'static str,
    pub positions: u32,
    pub opt_level: u8,
    /// Node comparisons made (dispatch outputs × positions, plus drill-down).
    pub nodes_compared: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Culprit>,
    /// Worst NMSE per layer (`None` = outside layers) per position: the error curve.
    pub layer_curve: BTreeMap<String, Vec<f64>>,
    /// Every comparison of the last position checked (and the failing one).
    pub rows: Vec<Row>,
    /// The worst comparison of each row of the tolerance table over every position: the
    /// evidence the table is held to (clean runs stay below it by a margin).
    pub worst_by_rule: BTreeMap<&'static str, Worst>,
    /// The model's name.
    pub model: String,
}

/// The worst comparison under one tolerance rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Worst {
    pub nmse: f64,
    /// The rule's bound.
    pub bound: f64,
    pub node: u32,
    pub name: String,
    pub position: u32,
    /// Comparisons made under this rule.
    pub count: u64,
}

/// Options of a check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub opt_level: u8,
    /// Position of the first token (0 for a whole run; a repro starts where the mismatch was).
    pub first_position: u32,
    /// Keep going after a mismatch? (No: the first divergence is the answer.)
    pub stop_at_first: bool,
}

/// How far a kernel run alone on the reference's exact inputs may be from the reference:
/// f32 rounding in another order. Clean isolations of every fixture's dispatches stay below
/// 1e-10 (the kernels accumulate in f32 like the CPU); a ×1.05 anywhere is 2.5e-3 at its node.
pub const ISOLATION_NMSE: f64 = 1e-8;

/// `nmse` fails the bound (NaN fails too).
fn exceeds(nmse: f64, bound: f64) -> bool {
    nmse.partial_cmp(&bound) != Some(std::cmp::Ordering::Less) && nmse != bound
}

/// Whether every element of `v` is the poison pattern's NaN... or any is: a dispatch that
/// wrote only part of its output is missing too.
pub fn has_poison(v: &[f32]) -> bool {
    v.iter().any(|x| x.to_bits() == POISON_BITS)
}

/// The operand nodes of a group (the IR inputs of its value node for a plain dispatch).
pub fn operands(g: &Graph, grp: &Group) -> Vec<NodeId> {
    match &grp.kernel {
        apr_ir::group::Kernel::Node => {
            grp.value().and_then(|v| g.node(v)).map(|n| n.inputs.clone()).unwrap_or_default()
        }
        k => k.operands(),
    }
}

/// Reference values of `ids` (views and leaves resolved by the caller's capture: a node the
/// reference did not record is left out, and the device uses its own buffer for it).
fn pick(values: &Values, ids: &[NodeId]) -> Values {
    ids.iter().filter_map(|id| values.get(id).map(|v| (*id, v.clone()))).collect()
}

/// Run the check over `positions` positions, teacher-forced: both executions get `prompt`,
/// then the reference's greedy choice (argmax of its first graph output) at each next position.
pub fn check(
    g: &Graph,
    reference: &mut dyn Reference,
    device: &mut dyn Device,
    prompt: &[u32],
    positions: u32,
    opts: &CheckOptions,
) -> Result<Report, String> {
    let logits = g.outputs.first().map(|o| o.node);
    let mut next = prompt.first().copied().unwrap_or(0);
    let groups: Vec<Group> = device.groups().to_vec();
    let mut report = Report {
        verdict: "pass",
        positions: 0,
        opt_level: opts.opt_level,
        nodes_compared: 0,
        culprit: None,
        layer_curve: BTreeMap::new(),
        rows: Vec::new(),
        worst_by_rule: BTreeMap::new(),
        model: g.meta.name.clone(),
    };
    let first = opts.first_position;
    for pos in first..first.saturating_add(positions) {
        let token = next;
        let want = reference.step(token, pos)?;
        next = match prompt.get((pos - first) as usize + 1) {
            Some(&t) => t,
            None => logits.and_then(|l| want.get(&l)).map_or(0, |v| argmax(v)),
        };
        let got = device.step(token, pos)?;
        if got.len() != groups.len() {
            return Err(format!("device returned {} values for {} dispatches", got.len(), groups.len()));
        }
        report.positions = pos - first + 1;
        let mut rows = Vec::with_capacity(groups.len());
        let mut worst: BTreeMap<String, f64> = BTreeMap::new();
        let mut first_fail: Option<(usize, Metrics, Tolerance, Cause)> = None;
        for (k, (grp, value)) in groups.iter().zip(&got).enumerate() {
            let Some(out) = grp.value() else { continue };
            let Some(reference_value) = want.get(&out) else { continue };
            let m = compare(value, reference_value);
            let tol = tolerance(g, out);
            let ref_finite = reference_value.iter().all(|v| v.is_finite());
            let cause = if has_poison(value) {
                Some(Cause::Missing)
            } else if m.nonfinite > 0 && ref_finite {
                Some(Cause::Nonfinite)
            } else if ref_finite && exceeds(m.nmse, tol.nmse) {
                Some(Cause::Kernel)
            } else {
                None
            };
            report.nodes_compared += 1;
            let n = g.node(out);
            let layer = n.and_then(|n| names::layer_of(&n.name));
            let key = layer.map_or("other".to_string(), |l| format!("blk.{l}"));
            let e = worst.entry(key).or_insert(0.0);
            *e = e.max(finite_or(m.nmse, f64::MAX));
            let w = report.worst_by_rule.entry(tol.rule).or_insert_with(|| Worst {
                nmse: -1.0,
                bound: tol.nmse,
                node: out.0,
                name: String::new(),
                position: pos,
                count: 0,
            });
            w.count += 1;
            if finite_or(m.nmse, f64::MAX) > w.nmse {
                w.nmse = finite_or(m.nmse, f64::MAX);
                w.node = out.0;
                w.name = n.map(|n| n.name.clone()).unwrap_or_default();
                w.position = pos;
            }
            rows.push(Row {
                position: pos,
                dispatch: k,
                node: out.0,
                name: n.map(|n| n.name.clone()).unwrap_or_default(),
                layer,
                nmse: finite_or(m.nmse, f64::MAX),
                max_abs: finite_or(m.max_abs, f64::MAX),
                cosine: finite_or(m.cosine, 0.0),
                pass: cause.is_none(),
            });
            if let (None, Some(c)) = (&first_fail, cause) {
                first_fail = Some((k, m, tol, c));
            }
        }
        for (layer, v) in worst {
            let curve = report.layer_curve.entry(layer).or_default();
            curve.resize((pos - first) as usize, 0.0);
            curve.push(v);
        }
        report.rows = rows;
        if let Some((k, m, tol, cause)) = first_fail {
            report.verdict = "mismatch";
            report.culprit =
                Some(localize(g, device, &groups, k, m, tol, cause, &want, pos, &mut report.nodes_compared)?);
            if opts.stop_at_first {
                break;
            }
        }
    }
    Ok(report)
}

/// Index of the first maximum (0 for an empty or all-NaN vector).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    u32::try_from(best).unwrap_or(0)
}

/// Name the culprit inside dispatch `k`, which failed at `pos` with cause `cause`.
#[allow(clippy::too_many_arguments)]
fn localize(
    g: &Graph,
    device: &mut dyn Device,
    groups: &[Group],
    k: usize,
    m: Metrics,
    tol: Tolerance,
    cause: Cause,
    want: &Values,
    pos: u32,
    compared: &mut u64,
) -> Result<Culprit, String> {
    let mut k = k;
    let mut grp = &groups[k];
    let out = grp.value().ok_or("a dispatch without outputs")?;
    let mut node = out;
    let mut metrics = m;
    let mut tolerance_used = tol;
    let mut cause = cause;
    let mut ops = operands(g, grp);
    if cause == Cause::Kernel {
        let alone = device.isolate(k, &pick(want, &ops), pos)?;
        *compared += 1;
        let mi = compare(&alone, want.get(&out).map(Vec::as_slice).unwrap_or(&[]));
        if mi.nonfinite == 0 && mi.nmse <= tol.nmse && !has_poison(&alone) {
            cause = Cause::Drift;
        }
    }
    if cause == Cause::Drift {
        // The suspect's kernel is right on exact inputs, so its error came from upstream,
        // where it stayed under the tolerances (a softmax temperature, say). Re-run every
        // earlier dispatch of this position on the reference's inputs: a kernel whose output
        // then differs by more than f32 rounding ([`ISOLATION_NMSE`]) is where it started.
        let earlier = k;
        for (j, gj) in groups.iter().enumerate().take(earlier) {
            let Some(oj) = gj.value() else { continue };
            let Some(wj) = want.get(&oj) else { continue };
            let opj = operands(g, gj);
            let alone = device.isolate(j, &pick(want, &opj), pos)?;
            *compared += 1;
            let mj = compare(&alone, wj);
            if has_poison(&alone) || mj.nonfinite > 0 || exceeds(mj.nmse, ISOLATION_NMSE) {
                k = j;
                grp = gj;
                node = oj;
                metrics = mj;
                tolerance_used = Tolerance { nmse: ISOLATION_NMSE, rule: "isolation" };
                cause = Cause::Kernel;
                ops = opj;
                break;
            }
        }
    }
    if grp.covers.len() > 1 && cause != Cause::Drift {
        // Drill down: which covered node goes wrong first on the reference's inputs?
        let values = device.drill(k, &pick(want, &ops), pos)?;
        for &c in &grp.covers {
            let (Some(got), Some(w)) = (values.get(&c), want.get(&c)) else { continue };
            *compared += 1;
            let mc = compare(got, w);
            let tc = tolerance(g, c);
            let w_finite = w.iter().all(|v| v.is_finite());
            let bad = has_poison(got) || (mc.nonfinite > 0 && w_finite) || (w_finite && exceeds(mc.nmse, tc.nmse));
            if bad {
                node = c;
                metrics = mc;
                tolerance_used = tc;
                cause = if has_poison(got) {
                    Cause::Missing
                } else if mc.nonfinite > 0 {
                    Cause::Nonfinite
                } else {
                    Cause::Kernel
                };
                break;
            }
        }
    }
    let n = g.node(node).ok_or("culprit not in graph")?;
    Ok(Culprit {
        node: node.0,
        name: n.name.clone(),
        op: n.op.name().to_string(),
        position: pos,
        dispatch: k,
        fused_group: grp.covers.iter().map(|c| c.0).collect(),
        cause,
        metrics: metrics.into(),
        tolerance: tolerance_used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apr_ir::{DType, GraphBuilder, GraphMeta, InputKind, Op, TensorType};

    /// token → gather → neg → exp → neg: four dispatches at -O0, or gather + one fused group.
    fn chain() -> Graph {
        let meta = GraphMeta { name: "chain".into(), arch: "test".into(), max_ctx: 4, extra: Default::default() };
        let mut b = GraphBuilder::new(meta);
        let t = b.leaf("token", Op::Input { kind: InputKind::Token }, TensorType::new(DType::I32, &[1])).unwrap();
        let w = b.leaf("w", Op::Weight { tensor: "w".into() }, TensorType::new(DType::F32, &[4, 8])).unwrap();
        let x = b.push("x", Op::Gather, &[w, t]).unwrap();
        let a = b.push("blk.0.a", Op::Neg, &[x]).unwrap();
        let e = b.push("blk.0.e", Op::Exp, &[a]).unwrap();
        let o = b.push("blk.0.o", Op::Neg, &[e]).unwrap();
        b.output("out", o);
        b.finish().unwrap()
    }

    fn truth(pos: u32) -> Values {
        let x: Vec<f32> = (0..8).map(|i| (i as f32 + pos as f32) * 0.1).collect();
        let a: Vec<f32> = x.iter().map(|v| -v).collect();
        let e: Vec<f32> = a.iter().map(|v| v.exp()).collect();
        let o: Vec<f32> = e.iter().map(|v| -v).collect();
        [(NodeId(2), x), (NodeId(3), a), (NodeId(4), e), (NodeId(5), o)].into_iter().collect()
    }

    struct Ref;
    impl Reference for Ref {
        fn step(&mut self, _: u32, pos: u32) -> Result<Values, String> {
            Ok(truth(pos))
        }
    }

    /// A device that computes like the truth but with a fault on one node from one position,
    /// propagated downstream; `fuse` groups the three layer nodes into one dispatch.
    type Fault = Option<(NodeId, u32, fn(&mut Vec<f32>))>;

    struct Fake {
        groups: Vec<Group>,
        fault: Fault,
    }
    impl Fake {
        fn eval(&self, pos: u32, from: Option<&Values>) -> Values {
            let mut v = truth(pos);
            let faulty = |id: NodeId, val: &mut Vec<f32>| {
                if let Some((n, p, f)) = self.fault {
                    if n == id && pos >= p {
                        f(val);
                    }
                }
            };
            let mut x = from.and_then(|f| f.get(&NodeId(2)).cloned()).unwrap_or_else(|| v[&NodeId(2)].clone());
            faulty(NodeId(2), &mut x);
            let mut a: Vec<f32> = x.iter().map(|q| -q).collect();
            faulty(NodeId(3), &mut a);
            let mut e: Vec<f32> = a.iter().map(|q| q.exp()).collect();
            faulty(NodeId(4), &mut e);
            let mut o: Vec<f32> = e.iter().map(|q| -q).collect();
            faulty(NodeId(5), &mut o);
            v.insert(NodeId(2), x);
            v.insert(NodeId(3), a);
            v.insert(NodeId(4), e);
            v.insert(NodeId(5), o);
            v
        }
    }
    impl Device for Fake {
        fn groups(&self) -> &[Group] {
            &self.groups
        }
        fn step(&mut self, _: u32, pos: u32) -> Result<Vec<Vec<f32>>, String> {
            let v = self.eval(pos, None);
            Ok(self.groups.iter().map(|grp| v[&grp.value().unwrap()].clone()).collect())
        }
        fn isolate(&mut self, k: usize, operands: &Values, pos: u32) -> Result<Vec<f32>, String> {
            // Re-evaluate from the reference's operand of the group's first covered node.
            let grp = &self.groups[k];
            let first = grp.covers[0];
            let mut from = truth(pos);
            from.extend(operands.clone());
            let v = if first == NodeId(2) { self.eval(pos, None) } else { self.eval_from(pos, first, &from) };
            Ok(v[&grp.value().unwrap()].clone())
        }
        fn drill(&mut self, k: usize, operands: &Values, pos: u32) -> Result<Values, String> {
            let first = self.groups[k].covers[0];
            let mut from = truth(pos);
            from.extend(operands.clone());
            Ok(self.eval_from(pos, first, &from))
        }
    }
    impl Fake {
        /// Evaluate from node `first` on, with the reference's values before it.
        fn eval_from(&self, pos: u32, first: NodeId, reference: &Values) -> Values {
            let dev = self.eval(pos, Some(reference));
            let mut out = reference.clone();
            for id in first.0..=5 {
                out.insert(NodeId(id), dev[&NodeId(id)].clone());
            }
            // Values before `first` come from the reference; recompute the chain from there.
            let mut x = reference[&NodeId(first.0 - 1)].clone();
            for id in first.0..=5 {
                x = match id {
                    3 | 5 => x.iter().map(|q| -q).collect(),
                    _ => x.iter().map(|q| q.exp()).collect(),
                };
                if let Some((n, p, f)) = self.fault {
                    if n.0 == id && pos >= p {
                        f(&mut x);
                    }
                }
                out.insert(NodeId(id), x.clone());
            }
            out
        }
    }

    fn unfused(g: &Graph) -> Vec<Group> {
        apr_ir::group::unfused(g)
    }

    fn fused(g: &Graph) -> Vec<Group> {
        let mut v = unfused(g);
        let tail = v.split_off(1);
        v.push(Group {
            covers: tail.iter().map(|t| t.covers[0]).collect(),
            outputs: vec![NodeId(5)],
            kernel: apr_ir::group::Kernel::Node,
        });
        v
    }

    fn run(groups: Vec<Group>, fault: Fault) -> Report {
        let g = chain();
        let mut dev = Fake { groups, fault };
        check(
            &g,
            &mut Ref,
            &mut dev,
            &[1, 2, 3, 0],
            4,
            &CheckOptions { opt_level: 0, first_position: 0, stop_at_first: true },
        )
        .unwrap()
    }

    #[test]
    fn a_clean_run_passes() {
        let g = chain();
        let r = run(unfused(&g), None);
        assert_eq!(r.verdict, "pass");
        assert_eq!(r.positions, 4);
        assert_eq!(r.nodes_compared, 16);
    }

    #[test]
    fn a_scaled_node_is_named_with_cause_kernel_unfused_and_fused() {
        let g = chain();
        let scale: fn(&mut Vec<f32>) = |v| v.iter_mut().for_each(|x| *x *= 1.05);
        for groups in [unfused(&g), fused(&g)] {
            let r = run(groups, Some((NodeId(4), 2, scale)));
            let c = r.culprit.unwrap();
            assert_eq!((c.node, c.position, c.cause), (4, 2, Cause::Kernel), "{c:?}");
            assert!((c.metrics.nmse - 0.0025).abs() < 1e-4);
        }
    }

    #[test]
    fn poison_is_missing_and_nan_is_nonfinite() {
        let g = chain();
        let skip: fn(&mut Vec<f32>) = |v| v.iter_mut().for_each(|x| *x = f32::from_bits(POISON_BITS));
        let nan: fn(&mut Vec<f32>) = |v| v[1] = f32::NAN;
        for groups in [unfused(&g), fused(&g)] {
            let c = run(groups.clone(), Some((NodeId(3), 0, skip))).culprit.unwrap();
            assert_eq!((c.node, c.cause), (3, Cause::Missing), "{c:?}");
            let c = run(groups, Some((NodeId(5), 1, nan))).culprit.unwrap();
            assert_eq!((c.node, c.cause, c.position), (5, Cause::Nonfinite, 1), "{c:?}");
        }
    }
}
