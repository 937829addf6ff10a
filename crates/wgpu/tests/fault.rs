//! Injected faults (`Schedule::build_checked`) and the checker's device interface: a fault
//! changes the captured group values exactly from its group on (poison for a skipped
//! dispatch), isolation of a clean group on the CPU's operand values gives the CPU's value,
//! and the drill-down of a fused group shows the fault at the faulty node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::fuse::OptLevel;
use apr_ir::group::{Group, Kernel};
use apr_ir::{Graph, NodeId};
use apr_ir_cpu::{Capture, Interpreter};
use apr_ir_model::Model;
use apr_ir_wgpu::{Fault, FaultKind, Gpu, GpuOptions, Schedule, POISON_BITS};
use std::collections::HashMap;
use std::path::Path;

fn gpu() -> Option<Gpu> {
    match Gpu::open(&GpuOptions::default()) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true but {e}"),
        Err(e) => {
            eprintln!("note: skipping GPU test: {e}");
            None
        }
    }
}

fn open() -> Gpu {
    Gpu::open(&GpuOptions::default()).unwrap()
}

fn model() -> (Model, Graph) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen2-q8_0.gguf");
    let model = Model::open(&path).unwrap();
    let graph = model.lower(Some(8)).unwrap();
    (model, graph)
}

/// The CPU's value of every node at `pos` (after steps 0..pos with `tokens`).
fn cpu_values(g: &Graph, m: &Model, tokens: &[u32]) -> HashMap<NodeId, Vec<f32>> {
    let mut cpu = Interpreter::new(g, m).unwrap();
    let mut last = HashMap::new();
    for (pos, &t) in tokens.iter().enumerate() {
        let r = cpu.step(t, pos as u32, &Capture::All).unwrap();
        last = r.captured.into_iter().map(|(id, t)| (id, t.to_f32_vec())).collect();
    }
    last
}

/// The operand nodes of a group, as the checker lists them.
fn operands(g: &Graph, grp: &Group) -> Vec<NodeId> {
    match &grp.kernel {
        Kernel::Node => grp.value().and_then(|v| g.node(v)).map(|n| n.inputs.clone()).unwrap_or_default(),
        k => k.operands(),
    }
}

fn pick(values: &HashMap<NodeId, Vec<f32>>, ids: &[NodeId]) -> HashMap<NodeId, Vec<f32>> {
    ids.iter().filter_map(|id| values.get(id).map(|v| (*id, v.clone()))).collect()
}

fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let err: f64 = got.iter().zip(want).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum();
    let norm: f64 = want.iter().map(|&b| f64::from(b).powi(2)).sum();
    err / norm.max(1e-30)
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

const TOKENS: [u32; 2] = [510, 380];

#[test]
fn a_fault_changes_values_from_its_group_on() {
    if gpu().is_none() {
        return;
    }
    let (model, graph) = model();
    for level in [OptLevel::O0, OptLevel::O2] {
        let (groups, _) = apr_ir::fuse::fuse(&graph, level).unwrap();
        let mut clean = Schedule::build_checked(open(), &graph, &model, &groups, level, None).unwrap();
        let mut want = Vec::new();
        for (pos, &t) in TOKENS.iter().enumerate() {
            want = clean.step_groups(t, pos as u32).unwrap();
        }
        let order = clean.groups().to_vec();
        let interior = graph.find("blk.1.ffn_norm.rsqrt").unwrap();
        let mid = order[order.len() / 2].value().unwrap();
        let late = order[order.len() - 3].value().unwrap();
        for node in [interior, mid, late] {
            let k = order.iter().position(|grp| grp.covers.contains(&node)).unwrap();
            let len = want[k].len();
            for kind in FaultKind::ALL {
                let n = graph.node(node).unwrap();
                if kind == FaultKind::Swap && graph.node(node).unwrap().ty.shape.iter().all(|d| d.as_const() == Some(1))
                {
                    println!("-O{} {}: swap of a 1-element value changes nothing; skipped", level.number(), n.name);
                    continue;
                }
                let fault = Fault { node, kind };
                let mut s = Schedule::build_checked(open(), &graph, &model, &groups, level, Some(fault)).unwrap();
                assert_eq!(s.groups(), clean.groups());
                let mut got = Vec::new();
                for (pos, &t) in TOKENS.iter().enumerate() {
                    got = s.step_groups(t, pos as u32).unwrap();
                }
                let first = got.iter().zip(&want).position(|(a, b)| !same_bits(a, b));
                let what = format!(
                    "-O{} {}:{} (group {k} of {}, {len} values)",
                    level.number(),
                    n.name,
                    kind.name(),
                    order.len()
                );
                assert_eq!(first, Some(k), "{what}");
                if kind == FaultKind::Skip && order[k].value() == Some(node) {
                    assert!(got[k].iter().any(|x| x.to_bits() == POISON_BITS), "{what}: no poison");
                }
                if kind == FaultKind::Nan {
                    assert!(got[k].iter().any(|x| x.is_nan() && x.to_bits() != POISON_BITS), "{what}: no NaN");
                }
                println!("{what}: first difference at group {k}");
            }
        }
    }
}

#[test]
fn isolation_on_cpu_operands_gives_the_cpu_value() {
    if gpu().is_none() {
        return;
    }
    let (model, graph) = model();
    let values = cpu_values(&graph, &model, &TOKENS);
    let pos = (TOKENS.len() - 1) as u32;
    for level in [OptLevel::O0, OptLevel::O2] {
        let mut s = Schedule::build_fused(open(), &graph, &model, level).unwrap();
        for (p, &t) in TOKENS.iter().enumerate() {
            s.step_groups(t, p as u32).unwrap();
        }
        let groups = s.groups().to_vec();
        for (k, grp) in groups.iter().enumerate() {
            let v = grp.value().unwrap();
            let n = graph.node(v).unwrap();
            if matches!(n.op, apr_ir::Op::ArgMax { .. }) {
                continue;
            }
            let got = s.isolate(k, &pick(&values, &operands(&graph, grp)), pos).unwrap();
            let e = nmse(&got, &values[&v]);
            assert!(e < 1e-9, "-O{} group {k} {} ({}): NMSE {e:.3e}", level.number(), n.name, grp.kernel.name());
        }
    }
}

#[test]
fn drill_shows_the_fault_at_the_faulty_node() {
    if gpu().is_none() {
        return;
    }
    let (model, graph) = model();
    let values = cpu_values(&graph, &model, &TOKENS);
    let pos = (TOKENS.len() - 1) as u32;
    let node = graph.find("blk.1.ffn_norm.rsqrt").unwrap();
    let (groups, _) = apr_ir::fuse::fuse(&graph, OptLevel::O2).unwrap();
    for kind in [FaultKind::Scale, FaultKind::Offset, FaultKind::Sign, FaultKind::Nan, FaultKind::Skip] {
        let fault = Fault { node, kind };
        let mut s = Schedule::build_checked(open(), &graph, &model, &groups, OptLevel::O2, Some(fault)).unwrap();
        for (p, &t) in TOKENS.iter().enumerate() {
            s.step_groups(t, p as u32).unwrap();
        }
        let k = s.groups().iter().position(|grp| grp.covers.contains(&node)).unwrap();
        let grp = s.groups()[k].clone();
        assert!(grp.covers.len() > 1 && grp.value() != Some(node), "rsqrt is interior to a fused group");
        let drilled = s.drill(k, &pick(&values, &operands(&graph, &grp)), pos).unwrap();
        let mut covers = grp.covers.clone();
        covers.sort_unstable();
        for c in covers {
            let (Some(got), Some(want)) = (drilled.get(&c), values.get(&c)) else { continue };
            let e = nmse(got, want);
            let name = &graph.node(c).unwrap().name;
            if c < node {
                assert!(e < 1e-9, "{}: {name} before the fault: NMSE {e:.3e}", kind.name());
            } else if c == node {
                match kind {
                    FaultKind::Skip => assert!(got.iter().all(|x| x.to_bits() == POISON_BITS), "{name}: {got:?}"),
                    FaultKind::Nan => assert!(got[0].is_nan(), "{name}: {got:?}"),
                    FaultKind::Scale => assert!((e - 0.0025).abs() < 1e-4, "{name}: NMSE {e}"),
                    _ => assert!(e > 1e-3, "{}: {name}: NMSE {e}", kind.name()),
                }
                println!("drill {}:{}: NMSE {e:.3e} at the faulty node", name, kind.name());
            }
        }
        assert!(drilled.contains_key(&node));
    }
}
