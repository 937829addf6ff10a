//! CPU logits against float64 references from HF transformers, computed on the weights
//! exactly as each fixture file holds them (tools/fixtures/make_models.py): relative L2
//! error < 1e-4 and equal argmax at every position, for qwen2 and llama in every type, qwen3
//! in f16 / q8_0 / q4_k, and for the HF safetensors directories. The opt-in `Precision::Int16` is measured too (its
//! worst relative L2 printed, held to a looser bound).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir_cpu::{Capture, Interpreter, Precision};
use apr_ir_model::Model;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A float64 `.npy` file of shape `[rows, cols]`.
fn read_npy_f64(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (run tools/fixtures/make_models.py)", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f8'") && header.contains("'fortran_order': False"), "{header}");
    let shape_txt = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> =
        shape_txt.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let data = bytes[10 + header_len..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
    (shape, data)
}

fn token_ids(arch: &str) -> Vec<u32> {
    let text = std::fs::read_to_string(fixtures().join(format!("models/{arch}.tokens.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn argmax(x: impl Iterator<Item = f64>) -> usize {
    x.enumerate().fold((0, f64::NEG_INFINITY), |(bi, bv), (i, v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

fn check(model_path: &Path, arch: &str, reference: &str) {
    check_with(model_path, arch, reference, Precision::Exact, 1e-4);
}

/// The worst relative L2 error over the positions (each held to `bound`, argmax equal).
fn check_with(model_path: &Path, arch: &str, reference: &str, precision: Precision, bound: f64) -> f64 {
    let model = Model::open(model_path).unwrap();
    let graph = model.lower(Some(64)).unwrap();
    let mut interp = Interpreter::new(&graph, &model).unwrap().with_precision(precision);
    let ids = token_ids(arch);
    let (shape, want) = read_npy_f64(&fixtures().join(format!("models/{reference}.logits.npy")));
    assert_eq!(shape[0], ids.len());
    let vocab = shape[1];
    let mut worst = 0.0f64;
    for (pos, &tok) in ids.iter().enumerate() {
        let step = interp.step(tok, pos as u32, &Capture::None).unwrap();
        let got = step.output("logits").unwrap().as_f32().unwrap();
        assert_eq!(got.len(), vocab);
        let row = &want[pos * vocab..(pos + 1) * vocab];
        let err: f64 = got.iter().zip(row).map(|(&g, &w)| (f64::from(g) - w).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = row.iter().map(|w| w * w).sum::<f64>().sqrt();
        let rel = err / norm;
        worst = worst.max(rel);
        assert!(rel < bound, "{}: position {pos}: relative L2 error {rel:.3e}", model_path.display());
        assert_eq!(
            argmax(got.iter().map(|&g| f64::from(g))),
            argmax(row.iter().copied()),
            "{}: argmax differs at position {pos}",
            model_path.display()
        );
    }
    println!("{}: worst relative L2 {worst:.2e} over {} positions ({precision:?})", model_path.display(), ids.len());
    worst
}

macro_rules! gguf_case {
    ($name:ident, $arch:literal, $ty:literal) => {
        #[test]
        fn $name() {
            let file = format!("{}-{}", $arch, $ty);
            check(&fixtures().join(format!("models/{file}.gguf")), $arch, &file);
        }
    };
}

gguf_case!(qwen2_f32, "qwen2", "f32");
gguf_case!(qwen2_f16, "qwen2", "f16");
gguf_case!(qwen2_q8_0, "qwen2", "q8_0");
gguf_case!(qwen2_q4_k, "qwen2", "q4_k");
gguf_case!(llama_f32, "llama", "f32");
gguf_case!(llama_f16, "llama", "f16");
gguf_case!(llama_q8_0, "llama", "q8_0");
gguf_case!(llama_q4_k, "llama", "q4_k");
// Qwen3 (tools/fixtures/make_qwen3.py): per-head q/k RMSNorm before rotary, head size 128
// with hidden 256 over 4 heads, tied embeddings, no rope.dimension_count key.
gguf_case!(qwen3_f16, "qwen3", "f16");
gguf_case!(qwen3_q8_0, "qwen3", "q8_0");
gguf_case!(qwen3_q4_k, "qwen3", "q4_k");

#[test]
fn qwen2_hf_dir() {
    check(&fixtures().join("hf/qwen2-tiny"), "qwen2", "qwen2-hf");
}

#[test]
fn qwen3_hf_dir() {
    check(&fixtures().join("hf/qwen3-tiny"), "qwen3", "qwen3-hf");
}

#[test]
fn llama_hf_dir() {
    check(&fixtures().join("hf/llama-tiny"), "llama", "llama-hf");
}

/// Llama 3.1/3.2's rope scaling (`rope_type: "llama3"`) in an HF directory:
/// tests/fixtures/hf/llama-rope3 (llama-tiny's files, linked, with a config that scales;
/// tools/fixtures/make_rope_llama3.py), whose per-frequency factors the model reader computes
/// as llama.cpp's converter would store them, against transformers' float64 logits with that
/// scaling (which differ from the unscaled ones).
#[test]
fn llama3_rope_scaling_hf_dir() {
    let dir = fixtures().join("hf/llama-rope3");
    let model = Model::open(&dir).unwrap();
    let factors = model.tensors.get("model.rope_freqs.weight").expect("no rope factors");
    assert_eq!(factors.shape, vec![16]);
    check(&dir, "llama", "llama-rope3-hf");
}

/// The opt-in 16-bit activations on the quantized fixtures (the only ones they change): the
/// measured worst relative L2 errors are printed; held to 1e-3 and equal argmax.
#[test]
fn int16_activations_stay_close() {
    for file in ["qwen2-q8_0", "qwen2-q4_k", "llama-q8_0", "llama-q4_k"] {
        let arch = file.split('-').next().unwrap();
        check_with(&fixtures().join(format!("models/{file}.gguf")), arch, file, Precision::Int16, 1e-3);
    }
}
