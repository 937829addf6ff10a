//! `apr-ir synth`: every architecture × quantization writes a GGUF that our reader opens and
//! compiles, that gguf-py (llama.cpp's reader) reads the same way, with llama.cpp's Q4_K_M
//! tensor mix, deterministically in the seed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::DType;
use apr_ir_model::gguf::GgufFile;
use apr_ir_model::lower::Arch;
use apr_ir_model::synth::{Preset, SynthQuant, SynthSpec};
use apr_ir_model::{quant, Model};
use apr_ir_tests::{apr_ir, gguf_py_available, gguf_py_dump, par_map, tool_or_skip, TempDir, ARCHS};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

const QUANTS: [&str; 5] = ["f32", "f16", "q8_0", "q4_k", "q4_k_m"];

/// `apr-ir synth --arch A --preset P --quant Q [--seed S] -o <dir>/<name>`, checked to succeed.
fn synth(dir: &TempDir, name: &str, arch: &str, preset: &str, quant: &str, seed: Option<&str>) -> PathBuf {
    let out = dir.join(name);
    let mut args: Vec<&OsStr> =
        ["synth", "--arch", arch, "--preset", preset, "--quant", quant].into_iter().map(OsStr::new).collect();
    if let Some(s) = seed {
        args.extend([OsStr::new("--seed"), OsStr::new(s)]);
    }
    args.extend([OsStr::new("-o"), out.as_os_str()]);
    let run = apr_ir(&args);
    run.ok();
    assert!(run.stderr.contains("wrote"), "{run:#?}");
    assert!(out.is_file(), "{run:#?}\nno file");
    out
}

/// llama.cpp's `use_more_bits` (llama-quant.cpp), written out from its definition.
fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The ggml type llama.cpp's recipe gives a tensor (name, row-major shape) of a model with
/// `n_layers` layers; `tied` when the model has no `output.weight`.
fn expected_type(quant: &str, name: &str, shape: &[u64], n_layers: i64, tied: bool) -> &'static str {
    if shape.len() == 1 {
        return "F32"; // norms and biases
    }
    let layer = name.strip_prefix("blk.").and_then(|r| r.split('.').next()).map(|l| l.parse::<i64>().unwrap());
    let more_bits = layer.is_some_and(|l| use_more_bits(l, n_layers));
    let chosen = match quant {
        "f32" => "F32",
        "f16" => "F16",
        "q8_0" => "Q8_0",
        "q4_k" => "Q4_K",
        "q4_k_m" if name == "output.weight" || (tied && name == "token_embd.weight") => "Q6_K",
        "q4_k_m" if more_bits && (name.ends_with(".attn_v.weight") || name.ends_with(".ffn_down.weight")) => "Q6_K",
        "q4_k_m" => "Q4_K",
        other => panic!("quant {other}"),
    };
    // Rows that are not whole 256-element K-blocks fall back (llama_tensor_get_type).
    let row = *shape.last().unwrap();
    match chosen {
        "Q4_K" if !row.is_multiple_of(256) => "Q5_0",
        "Q6_K" if !row.is_multiple_of(256) => "Q8_0",
        t => t,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-12
}

/// Our reader and codecs agree with gguf-py on names, types, shapes and dequantized values.
fn compare_with_gguf_py(path: &Path, py: &serde_json::Value, arch: &str) {
    let file = GgufFile::open(path).unwrap();
    let label = path.display();
    assert_eq!(py["arch"], arch, "{label}");
    let ours: Vec<&str> = file.gguf().metadata().keys().collect();
    let theirs: Vec<&str> = py["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(ours, theirs, "{label}: metadata keys");
    let py_tensors = py["tensors"].as_array().unwrap();
    assert_eq!(py_tensors.len(), file.gguf().tensors().len(), "{label}");
    for (t, p) in file.gguf().tensors().iter().zip(py_tensors) {
        assert_eq!(p["name"], t.name(), "{label}: tensor order");
        assert_eq!(p["type"], t.ggml_type().name(), "{label}: {}", t.name());
        let shape: Vec<u64> = p["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(shape, t.dims(), "{label}: {} dims (ne0 first)", t.name());
        let dtype = t.dtype().unwrap();
        let mut values = vec![0f32; t.n_elements() as usize];
        quant::dequantize(dtype, file.tensor_data(t), &mut values).unwrap();
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let sumsq: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let (ps, pq) = (p["sum"].as_f64().unwrap(), p["sumsq"].as_f64().unwrap());
        assert!(close(sum, ps), "{label}: {} sum {sum} vs gguf-py {ps}", t.name());
        assert!(close(sumsq, pq), "{label}: {} sumsq {sumsq} vs gguf-py {pq}", t.name());
        assert!(sumsq > 0.0, "{label}: {} is all zeros", t.name());
    }
}

#[test]
fn every_arch_and_quant_reads_back_here_and_in_gguf_py() {
    let with_py = tool_or_skip(
        "gguf-py (python3 -c 'import gguf, numpy')",
        gguf_py_available(),
        "pip install gguf numpy",
        "the gguf-py comparison",
    );
    let cases: Vec<(&str, &str)> = ARCHS.iter().flat_map(|&a| QUANTS.iter().map(move |&q| (a, q))).collect();
    let dir = TempDir::new("synth-all");
    let paths = par_map(&cases, |&(arch, q)| {
        let path = synth(&dir, &format!("{arch}-{q}.gguf"), arch, "tiny", q, None);
        let label = format!("{arch}/{q}");

        // (a) Our reader, the lowering and the CLI take it.
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{label}: {e}"));
        let model = Model::open(&path).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(model.params.arch.name(), arch);
        model.lower(None).unwrap_or_else(|e| panic!("{label}: {e}"));
        let run = apr_ir([OsStr::new("compile"), path.as_os_str(), OsStr::new("--json")]);
        run.ok();
        let spec = SynthSpec {
            arch: Arch::from_name(arch).unwrap(),
            preset: Preset::Tiny,
            quant: SynthQuant::from_name(q).unwrap(),
            seed: 0,
        };
        assert_eq!(run.json()["weight_bytes"].as_u64(), Some(spec.data_bytes()), "{label}: {run:#?}");
        let data: u64 = file.gguf().tensors().iter().map(|t| t.n_bytes()).sum();
        assert_eq!(data, spec.data_bytes(), "{label}");

        // The tensor types follow llama.cpp's recipe.
        let n_layers = file.gguf().metadata().get_u64(&format!("{arch}.block_count")).unwrap() as i64;
        let tied = file.gguf().tensor("output.weight").is_none();
        for t in file.gguf().tensors() {
            let want = expected_type(q, t.name(), &t.shape(), n_layers, tied);
            assert_eq!(t.ggml_type().name(), want, "{label}: {}", t.name());
        }
        path
    });

    // (b) llama.cpp's reader sees the same files.
    if with_py {
        let dumps = gguf_py_dump(&paths);
        par_map(&cases.iter().zip(paths.iter().zip(&dumps)).collect::<Vec<_>>(), |((arch, _), (path, py))| {
            compare_with_gguf_py(path, py, arch)
        });
    }
}

#[test]
fn q4_k_m_upgrades_the_layers_llama_cpp_picks() {
    // Two layers: n/8 = 0 and 7n/8 = 1, so only layer 1 gets Q6_K attn_v and ffn_down.
    assert!(!use_more_bits(0, 2) && use_more_bits(1, 2));
    let dir = TempDir::new("synth-q4km");
    let path = synth(&dir, "m.gguf", "qwen2", "tiny", "q4_k_m", None);
    let file = GgufFile::open(&path).unwrap();
    let ty = |name: &str| file.gguf().require_tensor(name).unwrap().ggml_type().name();
    assert_eq!(ty("output.weight"), "Q6_K");
    assert_eq!(ty("blk.1.attn_v.weight"), "Q6_K");
    assert_eq!(ty("blk.1.ffn_down.weight"), "Q6_K");
    assert_eq!(ty("blk.0.attn_v.weight"), "Q4_K");
    assert_eq!(ty("blk.0.ffn_down.weight"), "Q4_K");
    assert_eq!(ty("blk.1.attn_q.weight"), "Q4_K");
    assert_eq!(ty("token_embd.weight"), "Q4_K");
    assert_eq!(ty("blk.0.attn_q.bias"), "F32");
    assert_eq!(ty("output_norm.weight"), "F32");
    assert_eq!(file.gguf().metadata().get_u32("general.file_type").unwrap(), 15, "LLAMA_FTYPE_MOSTLY_Q4_K_M");
}

#[test]
fn the_seed_alone_decides_the_bytes() {
    let dir = TempDir::new("synth-seed");
    let a = std::fs::read(synth(&dir, "a.gguf", "llama", "tiny", "q4_k_m", None)).unwrap();
    let b = std::fs::read(synth(&dir, "b.gguf", "llama", "tiny", "q4_k_m", Some("0"))).unwrap();
    let c = std::fs::read(synth(&dir, "c.gguf", "llama", "tiny", "q4_k_m", Some("1"))).unwrap();
    assert!(a == b, "the same seed must give identical bytes");
    assert_eq!(a.len(), c.len(), "the seed changes values, not layout");
    assert!(a != c, "a different seed must give different weights");
    let header_len = GgufFile::open(dir.join("a.gguf")).unwrap().gguf().data_offset() as usize;
    assert_eq!(a[..header_len], c[..header_len], "the header does not depend on the seed");
}

#[test]
fn qwen2_5_0_5b_q4_k_m_falls_back_where_rows_are_not_k_blocks() {
    // Not written (about 400 MB): the tensor list decides the types.
    let spec = SynthSpec { arch: Arch::Qwen2, preset: Preset::Qwen25_0_5B, quant: SynthQuant::Q4KM, seed: 0 };
    let tensors = spec.tensors();
    let n_layers = spec.params().n_layers as i64;
    assert_eq!(n_layers, 24);
    assert!(tensors.iter().all(|t| t.name != "output.weight"), "0.5B ties its LM head to the embedding");
    for t in &tensors {
        let want = expected_type("q4_k_m", &t.name, &t.shape, n_layers, true);
        assert_eq!(t.dtype.name().to_uppercase(), want, "{} {:?}", t.name, t.shape);
    }
    let ty = |name: &str| tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name}")).dtype;
    // Rows of 896 are not whole 256-blocks: Q4_K → Q5_0, Q6_K → Q8_0.
    assert_eq!(ty("token_embd.weight"), DType::Q8_0, "tied embedding: Q6_K, then the Q8_0 fallback");
    assert_eq!(ty("blk.3.attn_q.weight"), DType::Q5_0);
    assert_eq!(ty("blk.0.attn_v.weight"), DType::Q8_0, "layer 0 uses more bits");
    assert_eq!(ty("blk.3.attn_v.weight"), DType::Q5_0);
    assert_eq!(ty("blk.5.attn_v.weight"), DType::Q8_0, "(5 - 3) % 3 == 2");
    assert_eq!(ty("blk.3.ffn_gate.weight"), DType::Q5_0);
    // ffn_down rows are 4864 = 19 × 256 wide: no fallback.
    assert_eq!(ty("blk.0.ffn_down.weight"), DType::Q6K);
    assert_eq!(ty("blk.3.ffn_down.weight"), DType::Q4K);
    assert_eq!(ty("blk.23.ffn_down.weight"), DType::Q6K);
    assert_eq!(ty("blk.0.attn_norm.weight"), DType::F32);
    assert_eq!(ty("blk.0.attn_k.bias"), DType::F32);
}
