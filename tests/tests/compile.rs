//! `apr-ir compile`: the `--json` report, the `-o` IR + schedule file, reloading that file,
//! stable names, and compiling a 7B model from shapes alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::names::layer_of;
use apr_ir_model::lower::Arch;
use apr_ir_model::synth::{Preset, SynthQuant, SynthSpec};
use apr_ir_tests::{
    all_fixtures, apr_ir, compile_to_json, compile_to_json_at, file_params, file_tensors, gguf_fixtures, par_map,
    Fixture, IrJson, TempDir,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::Duration;

/// The contract fields of `compile --json`, all unsigned integers.
const CONTRACT: [&str; 6] = ["nodes", "compute_nodes", "dispatches", "opt_level", "weight_bytes", "gpu_bytes"];

/// Fields beyond the contract that these tests read: the dispatch groups (the entries of the
/// `-o` schedule), which `dispatches` may exceed.
const EXTRA: [&str; 1] = ["groups"];

/// `compile ARGS --json`: exactly one line holding one JSON object with every contract field
/// (and [`EXTRA`]).
fn compile_json(args: &[&OsStr]) -> BTreeMap<&'static str, u64> {
    let mut all = args.to_vec();
    all.push(OsStr::new("--json"));
    let run = apr_ir(&all);
    let out = run.ok();
    assert_eq!(out.lines().count(), 1, "{run:#?}\n--json must print exactly one line");
    let v = run.json();
    assert!(v.is_object(), "{run:#?}\nnot a JSON object");
    CONTRACT
        .iter()
        .chain(&EXTRA)
        .map(|&k| {
            (k, v[k].as_u64().unwrap_or_else(|| panic!("{run:#?}\nfield {k} missing or not an unsigned integer")))
        })
        .collect()
}

/// The schedule in `ir` covers every compute node exactly once, covers nothing else,
/// and each dispatch materializes some of what it covers. Checked here from the JSON alone.
fn check_schedule(label: &str, ir: &IrJson) {
    for (k, n) in ir.nodes.iter().enumerate() {
        assert_eq!(n.id, k as u64, "{label}: node ids must be positions");
        assert!(!n.name.is_empty(), "{label}: node %{k} has no name");
        assert!(n.inputs.iter().all(|&i| i < n.id), "{label}: node {} uses a later node", n.name);
    }
    let names: BTreeSet<&str> = ir.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.len(), ir.nodes.len(), "{label}: node names must be unique");
    let mut covered = vec![0u32; ir.nodes.len()];
    for (k, d) in ir.dispatches.iter().enumerate() {
        assert!(!d.covers.is_empty() && !d.outputs.is_empty(), "{label}: dispatch {k} is empty: {d:?}");
        for &id in &d.covers {
            let n =
                ir.nodes.get(id as usize).unwrap_or_else(|| panic!("{label}: dispatch {k} covers missing node {id}"));
            assert!(n.is_compute(), "{label}: dispatch {k} covers {} ({}), which needs no kernel", n.name, n.op);
            covered[id as usize] += 1;
        }
        assert!(
            d.outputs.iter().all(|o| d.covers.contains(o)),
            "{label}: dispatch {k} outputs a node it does not cover: {d:?}"
        );
    }
    for n in &ir.nodes {
        let want = u32::from(n.is_compute());
        assert_eq!(
            covered[n.id as usize], want,
            "{label}: node {} ({}) is covered {} times",
            n.name, n.op, covered[n.id as usize]
        );
    }
}

fn check_fixture(fx: &Fixture) {
    let label = fx.label();
    let model = fx.path.as_os_str();
    let report = compile_json(&[OsStr::new("compile"), model, OsStr::new("-O0")]);
    assert_eq!(report["opt_level"], 0, "{label}");
    assert_eq!(report["dispatches"], report["compute_nodes"], "{label}: at -O0 every compute node is one dispatch");
    assert!(report["compute_nodes"] < report["nodes"], "{label}: {report:?}");

    // Weight bytes: every tensor of these files is used, so it is the sum over the file's table
    // — except that opening an HF directory widens its 1-D f16/bf16 tensors (norm gains,
    // biases) to f32, as GGUF converters store them: 4 bytes an element.
    let tensors = file_tensors(fx);
    let widened =
        |t: &apr_ir_tests::FileTensor| fx.hf && t.shape.len() == 1 && ["F16", "BF16"].contains(&t.type_name.as_str());
    let file_bytes: u64 = tensors.iter().map(|t| if widened(t) { 2 * t.bytes } else { t.bytes }).sum();
    assert_eq!(report["weight_bytes"], file_bytes, "{label}: weight_bytes vs the file's tensor table");
    assert!(report["gpu_bytes"] > report["weight_bytes"], "{label}: gpu bytes hold the weights and more: {report:?}");

    let dir = TempDir::new(&format!("compile-{label}"));
    // Every level: exact coverage from the JSON alone, fewer dispatches as the level rises.
    let mut last = u64::MAX;
    for level in [0u8, 1, 2] {
        let (_, ir) = compile_to_json_at(&fx.path, &dir, &format!("o{level}"), Some(level));
        check_schedule(&format!("{label} -O{level}"), &ir);
        let n = ir.dispatches.len() as u64;
        assert!(n < last, "{label}: -O{level} has {n} dispatches, not fewer than the level below ({last})");
        last = n;
        // The reported count is the GPU's: one dispatch per group, two per attention group (its
        // chunks of the context, then their combination), which -O2 fuses.
        let r = compile_json(&[OsStr::new("compile"), model, OsStr::new(&format!("-O{level}"))]);
        let kinds = ir.raw["schedule"]["dispatches"].as_array().expect("schedule.dispatches");
        let attention = kinds.iter().filter(|d| d["kernel"]["kind"] == "attention").count() as u64;
        assert_eq!(r["groups"], n, "{label} -O{level}");
        assert_eq!(r["dispatches"], n + attention, "{label} -O{level}");
        assert_eq!(attention > 0, level == 2, "{label} -O{level}: {attention} attention groups");
    }
    let default = compile_json(&[OsStr::new("compile"), model]);
    assert_eq!(default["opt_level"], 1, "{label}: -O1 is the default");
    let report_o0 = report.clone();
    let report = default;
    let (out, ir) = compile_to_json(&fx.path, &dir, "a");
    assert_eq!(ir.nodes.len() as u64, report["nodes"], "{label}");
    assert_eq!(ir.nodes.iter().filter(|n| n.is_compute()).count() as u64, report["compute_nodes"], "{label}");
    assert_eq!(ir.dispatches.len() as u64, report["groups"], "{label}");
    check_schedule(&label, &ir);

    let weights: BTreeSet<&str> = ir
        .nodes
        .iter()
        .filter(|n| n.op == "weight")
        .map(|n| n.attrs["tensor"].as_str().expect("weight tensor name"))
        .collect();
    let in_file: BTreeSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let _ = report_o0;
    assert_eq!(weights, in_file, "{label}: the graph should use every tensor of the file, and only those");

    // The written file is itself a MODEL, and gives the same figures.
    let again = compile_json(&[OsStr::new("compile"), out.as_os_str()]);
    assert_eq!(again, report, "{label}: compiling the -o JSON");

    // Stable names (and everything else): a second compile writes the same bytes.
    let (out2, _) = compile_to_json(&fx.path, &dir, "b");
    let (a, b) = (std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    assert!(a == b, "{label}: two compiles of the same model differ");
}

/// An HF checkpoint lowers to the graph of its GGUF conversion: its bf16/f16 norm gains and
/// biases are widened at open (no per-token casts), so it fuses exactly as the GGUF fixture of
/// the same architecture does, level by level.
#[test]
fn hf_directories_fuse_like_gguf_files() {
    for fx in all_fixtures().into_iter().filter(|f| f.hf) {
        let gguf = gguf_fixtures().into_iter().find(|g| g.arch == fx.arch && g.label().ends_with("-f16")).unwrap();
        for level in ["-O0", "-O1", "-O2"] {
            let a = compile_json(&[OsStr::new("compile"), fx.path.as_os_str(), OsStr::new(level)]);
            let b = compile_json(&[OsStr::new("compile"), gguf.path.as_os_str(), OsStr::new(level)]);
            assert_eq!(a["dispatches"], b["dispatches"], "{} vs {} at {level}", fx.label(), gguf.label());
            assert_eq!(a["compute_nodes"], b["compute_nodes"], "{} vs {} at {level}", fx.label(), gguf.label());
        }
    }
}

#[test]
fn every_fixture_compiles_to_the_contract() {
    let fixtures = all_fixtures();
    assert_eq!(fixtures.len(), 14, "8 qwen2/llama GGUFs, 3 qwen3 GGUFs, 3 HF directories");
    par_map(&fixtures, check_fixture);
}

#[test]
fn human_output_names_the_written_file() {
    let fx = &gguf_fixtures()[0];
    let dir = TempDir::new("compile-human");
    let out = dir.join("ir.json");
    let run = apr_ir([OsStr::new("compile"), fx.path.as_os_str(), OsStr::new("-o"), out.as_os_str()]);
    let text = run.ok();
    for want in ["nodes", "dispatches", "per token at -O1", "fused", "gpu bytes"] {
        assert!(text.contains(want), "{run:#?}\nmissing {want:?}");
    }
    assert!(text.contains(&out.display().to_string()), "{run:#?}\nshould name {}", out.display());
}

#[test]
fn ctx_sizes_the_kv_cache() {
    let fx = gguf_fixtures().into_iter().find(|f| f.label() == "qwen2-f32").unwrap();
    let p = file_params(&fx);
    let run = apr_ir([
        OsStr::new("compile"),
        fx.path.as_os_str(),
        OsStr::new("--ctx"),
        OsStr::new("64"),
        OsStr::new("--json"),
    ]);
    run.ok();
    let v = run.json();
    assert_eq!(v["max_ctx"], 64, "{run:#?}");
    // K and V per layer: n_kv_heads (2) × 64 rows × head_dim, f32.
    let n_kv = 2;
    assert_eq!(v["state_bytes"].as_u64(), Some(p.n_layers * 2 * n_kv * 64 * p.head_dim * 4), "{run:#?}");
}

#[test]
fn seven_b_from_shapes_is_fast_and_the_right_size() {
    let args = ["compile", "--arch", "qwen2", "--preset", "qwen2.5-7b", "--quant", "q4_k_m", "--json"];
    let run = apr_ir(args);
    run.ok();
    let limit = if cfg!(debug_assertions) { Duration::from_secs(3) } else { Duration::from_secs(1) };
    assert!(
        run.elapsed < limit,
        "compiling 7B from shapes took {:?} (limit {limit:?}, process start included)",
        run.elapsed
    );
    println!("compile qwen2.5-7b q4_k_m from shapes: {:?} wall clock", run.elapsed);
    let v = run.json();
    let weight_bytes = v["weight_bytes"].as_u64().unwrap();
    let spec = SynthSpec { arch: Arch::Qwen2, preset: Preset::Qwen25_7B, quant: SynthQuant::Q4KM, seed: 0 };
    assert_eq!(weight_bytes, spec.data_bytes(), "weight bytes vs the synth spec");
    // The real Qwen2.5-7B-Instruct Q4_K_M holds about 4.68e9 bytes of tensor data.
    let rel = (weight_bytes as f64 - 4.68e9).abs() / 4.68e9;
    assert!(rel < 0.03, "weight bytes {weight_bytes} are {:.1}% away from 4.68e9", rel * 100.0);
    assert!(v["dispatches"].as_u64() < v["compute_nodes"].as_u64(), "-O1 (the default) fuses");

    // 28 layers worth of nodes: layers 0..=27 present, each with the same nodes.
    let dir = TempDir::new("compile-7b");
    let out = dir.join("7b.json");
    let mut with_o: Vec<&OsStr> = args[..7].iter().map(OsStr::new).collect();
    with_o.extend([OsStr::new("-o"), out.as_os_str()]);
    apr_ir(&with_o).ok();
    let ir = IrJson::read(&out);
    assert_eq!(ir.nodes.len() as u64, v["nodes"].as_u64().unwrap());
    let mut per_layer: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for n in &ir.nodes {
        if let Some(l) = layer_of(&n.name) {
            per_layer.entry(l).or_default().push(n.name.strip_prefix(&format!("blk.{l}.")).unwrap().to_string());
        }
    }
    assert_eq!(per_layer.keys().copied().collect::<Vec<_>>(), (0..28).collect::<Vec<_>>());
    let first = &per_layer[&0];
    assert!(first.len() > 30, "a layer should be dozens of nodes, got {}", first.len());
    for (l, parts) in &per_layer {
        assert_eq!(parts, first, "layer {l} differs from layer 0");
    }
    let outside = ir.nodes.len() - 28 * first.len();
    assert!(outside < first.len(), "{outside} nodes outside the layers");
    check_schedule("qwen2.5-7b", &ir);
}
