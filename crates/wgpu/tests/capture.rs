//! Capture mode: every group output's GPU value, read back after a step, equals the CPU
//! interpreter's value of the same node (the checker's taps), and poisoning shows which
//! buffers a step did not write. At -O0 that is every computed node; at -O2 the outputs of the
//! fused groups (their interiors never exist on the GPU).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::fuse::OptLevel;
use apr_ir_cpu::{Capture, Interpreter};
use apr_ir_model::Model;
use apr_ir_wgpu::{Gpu, GpuOptions, Schedule};
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

#[test]
fn every_node_matches_the_cpu() {
    every_group_output_matches_the_cpu(OptLevel::O0);
}

#[test]
fn every_fused_group_output_matches_the_cpu() {
    every_group_output_matches_the_cpu(OptLevel::O1);
    every_group_output_matches_the_cpu(OptLevel::O2);
}

fn every_group_output_matches_the_cpu(level: OptLevel) {
    let Some(gpu) = gpu() else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen2-q4_k.gguf");
    let model = Model::open(&path).unwrap();
    let graph = model.lower(Some(8)).unwrap();
    let mut cpu = Interpreter::new(&graph, &model).unwrap();
    let mut gpu = Schedule::build_fused(gpu, &graph, &model, level).unwrap();
    let outputs: Vec<_> = gpu.groups().iter().flat_map(|g| g.outputs.clone()).collect();
    if level == OptLevel::O0 {
        assert_eq!(outputs.len(), graph.nodes.iter().filter(|n| n.op.is_compute()).count());
    } else {
        assert!(gpu.groups().iter().any(|g| !g.kernel.is_node()), "-O{}: nothing fused", level.number());
    }
    let computed: Vec<_> = outputs.iter().map(|&id| &graph.nodes[id.index()]).collect();
    for (pos, tok) in [510u32, 380, 198, 391, 220].into_iter().enumerate() {
        let c = cpu.step(tok, pos as u32, &Capture::All).unwrap();
        let g = gpu.step_capture(tok, pos as u32).unwrap();
        for n in &computed {
            let want = c.captured[&n.id].to_f32_vec();
            let got = g.values.get(&n.id).unwrap_or_else(|| panic!("{} not captured", n.name));
            assert_eq!(got.len(), want.len(), "-O{}: {} at position {pos}", level.number(), n.name);
            if matches!(n.op, apr_ir::Op::ArgMax { .. }) {
                continue;
            }
            assert!(
                got.iter().all(|v| v.is_finite()),
                "-O{}: {} has non-finite values at position {pos}",
                level.number(),
                n.name
            );
            let err: f64 = got.iter().zip(&want).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum();
            let norm: f64 = want.iter().map(|&b| f64::from(b).powi(2)).sum();
            let nmse = err / norm.max(1e-30);
            assert!(nmse < 1e-9, "-O{}: {} ({}) at position {pos}: NMSE {nmse:.3e}", level.number(), n.name, n.op);
        }
        let logits = c.output("logits").unwrap().as_f32().unwrap();
        assert_eq!(g.logits.len(), logits.len());
    }
}
