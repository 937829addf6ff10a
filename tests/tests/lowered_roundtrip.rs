//! Lowered fixture models: exact JSON and text round-trips, and facts the lowering must take
//! from the files (layer count, rotary layout, constants, biases, the LM head).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::{Graph, Op, RopeMode};
use apr_ir_model::lower::{lower, Arch, LowerOptions};
use apr_ir_model::synth::{Preset, SynthQuant, SynthSpec};
use apr_ir_model::Model;
use apr_ir_tests::{all_fixtures, file_params, Fixture};

fn lowered(fx: &Fixture) -> Graph {
    let model = Model::open(&fx.path).unwrap_or_else(|e| panic!("{}: {e}", fx.label()));
    model.lower(None).unwrap_or_else(|e| panic!("{}: {e}", fx.label()))
}

#[track_caller]
fn check_round_trips(label: &str, g: &Graph) {
    let json = g.to_json();
    let back = Graph::from_json(&json).unwrap_or_else(|e| panic!("{label}: JSON does not parse back: {e}"));
    assert!(back == *g, "{label}: JSON round trip changed the graph");
    assert_eq!(back.to_json(), json, "{label}: JSON re-printed differently");

    let text = g.to_text();
    let back = Graph::from_text(&text).unwrap_or_else(|e| panic!("{label}: text does not parse back: {e}"));
    assert!(back == *g, "{label}: text round trip changed the graph");
    assert_eq!(back.to_text(), text, "{label}: text re-printed differently");
}

#[test]
fn every_fixture_round_trips_through_json_and_text() {
    for fx in all_fixtures() {
        check_round_trips(&fx.label(), &lowered(&fx));
    }
}

#[test]
fn the_7b_shape_graph_round_trips() {
    let spec = SynthSpec { arch: Arch::Qwen2, preset: Preset::Qwen25_7B, quant: SynthQuant::Q4KM, seed: 0 };
    let g = lower(&spec.params(), &spec.table(), &LowerOptions { name: spec.model_name(), max_ctx: None }).unwrap();
    assert!(g.nodes.len() > 1000, "{} nodes", g.nodes.len());
    check_round_trips("qwen2.5-7b shapes", &g);
}

/// The operand of `n` at `k`, as a node.
fn operand<'g>(g: &'g Graph, n: &apr_ir::Node, k: usize) -> &'g apr_ir::Node {
    g.node(n.inputs[k]).unwrap_or_else(|| panic!("{} has no operand {k}", n.name))
}

#[test]
fn lowering_follows_the_files() {
    for fx in all_fixtures() {
        let label = fx.label();
        let g = lowered(&fx);
        let p = file_params(&fx);

        let count = |f: &dyn Fn(&apr_ir::Node) -> bool| g.nodes.iter().filter(|n| f(n)).count() as u64;
        assert_eq!(
            count(&|n| matches!(n.op, Op::CacheWrite { .. })),
            2 * p.n_layers,
            "{label}: one K and one V cache write per layer"
        );

        let angles: Vec<&apr_ir::Node> = g.nodes.iter().filter(|n| matches!(n.op, Op::RopeAngles { .. })).collect();
        assert_eq!(angles.len(), 1, "{label}: one rope_angles node");
        let Op::RopeAngles { mode, theta_base, .. } = angles[0].op else { unreachable!() };
        // GGUF llama q/k rows are permuted into the interleaved (GPT-J) pairing; qwen2/qwen3
        // GGUFs and HF checkpoints use NeoX's rotate_half.
        let want_mode = if fx.arch == "llama" && !fx.hf { RopeMode::Interleaved } else { RopeMode::Neox };
        assert_eq!(mode, want_mode, "{label}: rope mode");
        assert_eq!(theta_base, p.rope_theta, "{label}: rope theta must be the file's value");
        for n in g.nodes.iter().filter(|n| matches!(n.op, Op::RopeRotate { .. })) {
            assert!(
                matches!(n.op, Op::RopeRotate { mode: m, .. } if m == want_mode),
                "{label}: {} pairs dims differently from the angles",
                n.name
            );
        }

        // Every RMSNorm adds the file's epsilon (as stored: f32 in GGUF, the JSON number in HF).
        let eps_adds: Vec<&apr_ir::Node> = g.nodes.iter().filter(|n| n.name.ends_with(".eps_add")).collect();
        // qwen3 adds a per-head RMSNorm of q and of k in every layer, over the head's last axis.
        let per_layer = if fx.arch == "qwen3" { 4 } else { 2 };
        assert_eq!(eps_adds.len() as u64, per_layer * p.n_layers + 1, "{label}: norms per layer and the output norm");
        for n in eps_adds {
            let c = operand(&g, n, 1);
            assert_eq!(c.op, Op::Const { value: p.rms_eps }, "{label}: {} adds {} ({:?})", n.name, c.name, c.op);
        }
        // The attention scale is 1/sqrt(head_dim).
        for n in g.nodes.iter().filter(|n| n.name.ends_with(".attn.scaled")) {
            let Op::Const { value } = operand(&g, n, 1).op else {
                panic!("{label}: {} does not scale by a constant", n.name)
            };
            assert!((value - 1.0 / (p.head_dim as f64).sqrt()).abs() < 1e-15, "{label}: attention scale {value}");
        }

        let biases = count(&|n| n.name.ends_with(".bias_add"));
        match fx.arch {
            "qwen2" => assert_eq!(biases, 3 * p.n_layers, "{label}: q/k/v biases"),
            _ => assert_eq!(biases, 0, "{label}: llama and qwen3 have no biases"),
        }
        if fx.arch == "qwen3" {
            let head_means =
                g.nodes.iter().filter(|n| n.name.ends_with("attn_q_norm.mean") || n.name.ends_with("attn_k_norm.mean"));
            assert_eq!(head_means.clone().count() as u64, 2 * p.n_layers, "{label}: q and k head norm means");
            for n in head_means {
                assert_eq!(n.op, Op::ReduceMean { axis: 2 }, "{label}: {} must reduce over each head", n.name);
                assert_eq!(n.ty.shape.last(), Some(&apr_ir::Dim::Const(1)), "{label}: {}", n.name);
            }
            let heads = g.nodes.iter().filter(|n| n.name.ends_with("attn_q_norm") || n.name.ends_with("attn_k_norm"));
            assert_eq!(heads.count() as u64, 2 * p.n_layers, "{label}: q and k head norms");
            assert_eq!(p.head_dim, 128, "{label}: qwen3's explicit head size (not hidden / heads = 64)");
        }

        let logits = g.node(g.output("logits").expect("a logits output")).unwrap();
        assert!(matches!(logits.op, Op::MatMul { transpose_rhs: true }), "{label}: logits is {:?}", logits.op);
        let head = operand(&g, logits, 1);
        let want_head = match (fx.arch, fx.hf) {
            ("llama" | "qwen3", false) => "token_embd.weight", // tied
            ("llama" | "qwen3", true) => "model.embed_tokens.weight",
            (_, false) => "output.weight",
            (_, true) => "lm_head.weight",
        };
        assert_eq!(head.op, Op::Weight { tensor: want_head.into() }, "{label}: LM head");
    }
}
