//! GPU logits against the float64 HF references (relative L2 < 1e-3, equal argmax at every
//! position) for every fixture, at every optimization level (-O0, -O1, -O2: the dispatch groups
//! of `apr_ir::fuse`), on whatever Vulkan adapter is present (lavapipe in CI).
//! Also: decoding allocates nothing after warm-up, and tensors over the binding limit are
//! split across bindings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::fuse::OptLevel;
use apr_ir_model::Model;
use apr_ir_wgpu::{Gpu, GpuOptions, Schedule};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The GPU, or `None` with a note when there is none — except in CI, where that fails.
fn gpu(opts: &GpuOptions) -> Option<Gpu> {
    match Gpu::open(opts) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true but {e}"),
        Err(e) => {
            eprintln!("note: skipping GPU test: {e}");
            None
        }
    }
}

fn read_npy_f64(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + hlen..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn token_ids(arch: &str) -> Vec<u32> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("models/{arch}.tokens.json"))).unwrap())
            .unwrap();
    v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn argmax(x: impl Iterator<Item = f64>) -> usize {
    x.enumerate().fold((0, f64::NEG_INFINITY), |(bi, bv), (i, v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

/// [`check_at`] at -O0, -O1 and -O2; the -O2 schedule.
fn check(model_path: &Path, arch: &str, reference: &str, opts: &GpuOptions) -> Option<Schedule> {
    let mut last = None;
    for level in [OptLevel::O0, OptLevel::O1, OptLevel::O2] {
        last = Some(check_at(model_path, arch, reference, opts, level)?);
    }
    last
}

fn check_at(model_path: &Path, arch: &str, reference: &str, opts: &GpuOptions, level: OptLevel) -> Option<Schedule> {
    let gpu = gpu(opts)?;
    let model = Model::open(model_path).unwrap();
    let graph = model.lower(Some(32)).unwrap();
    let mut s = Schedule::build_fused(gpu, &graph, &model, level).unwrap();
    // The f16 fixtures' matrices are read as f16 storage exactly when the device has SHADER_F16.
    if reference.ends_with("-f16") {
        assert_eq!(s.f16_pipelines() > 0, s.gpu().f16, "{reference}: {} f16 pipelines", s.f16_pipelines());
    }
    let ids = token_ids(arch);
    let want = read_npy_f64(&fixtures().join(format!("models/{reference}.logits.npy")));
    let vocab = want.len() / ids.len();
    let mut worst = 0.0f64;
    let mut counts = None;
    for (pos, &tok) in ids.iter().enumerate() {
        let got = s.step(tok, pos as u32).unwrap();
        assert_eq!(got.len(), vocab);
        let row = &want[pos * vocab..(pos + 1) * vocab];
        let err: f64 = got.iter().zip(row).map(|(&g, &w)| (f64::from(g) - w).powi(2)).sum::<f64>().sqrt();
        let rel = err / row.iter().map(|w| w * w).sum::<f64>().sqrt();
        worst = worst.max(rel);
        assert!(rel < 1e-3, "{} -O{}: position {pos}: relative L2 {rel:.3e}", model_path.display(), level.number());
        assert_eq!(
            argmax(got.iter().map(|&g| f64::from(g))),
            argmax(row.iter().copied()),
            "{} -O{}: argmax at {pos}",
            model_path.display(),
            level.number()
        );
        // After the first token, decoding creates no GPU objects.
        match counts {
            None => counts = Some(s.object_counts()),
            Some(c) => assert_eq!(s.object_counts(), c, "a decoded token created GPU objects"),
        }
    }
    println!(
        "{} -O{} on {}: worst relative L2 {worst:.2e}, {} dispatches/token",
        model_path.display(),
        level.number(),
        s.gpu().describe(),
        s.dispatch_count()
    );
    Some(s)
}

macro_rules! gguf_case {
    ($name:ident, $arch:literal, $ty:literal) => {
        #[test]
        fn $name() {
            let file = format!("{}-{}", $arch, $ty);
            check(&fixtures().join(format!("models/{file}.gguf")), $arch, &file, &GpuOptions::default());
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
gguf_case!(qwen3_f16, "qwen3", "f16");
gguf_case!(qwen3_q8_0, "qwen3", "q8_0");
gguf_case!(qwen3_q4_k, "qwen3", "q4_k");

/// The f16 fixtures on the u32 path too (a device opened with `no_f16`); the cases above read
/// them as f16 storage where the adapter has `SHADER_F16`.
#[test]
fn f16_fixtures_without_shader_f16() {
    let opts = GpuOptions { no_f16: true, ..GpuOptions::default() };
    for arch in ["qwen2", "llama"] {
        let file = format!("{arch}-f16");
        let Some(s) = check(&fixtures().join(format!("models/{file}.gguf")), arch, &file, &opts) else { return };
        assert!(!s.gpu().f16 && s.f16_pipelines() == 0, "{file}: no_f16 was not honoured");
    }
}

#[test]
fn hf_dirs() {
    check(&fixtures().join("hf/qwen2-tiny"), "qwen2", "qwen2-hf", &GpuOptions::default());
    check(&fixtures().join("hf/llama-tiny"), "llama", "llama-hf", &GpuOptions::default());
    check(&fixtures().join("hf/qwen3-tiny"), "qwen3", "qwen3-hf", &GpuOptions::default());
}

/// Llama 3's rope scaling from an HF config (per-frequency factors computed at open; see
/// `llama3_rope_scaling_hf_dir` in the CPU tests): tests/fixtures/hf/llama-rope3, at every level.
#[test]
fn llama3_rope_scaling_hf_dir() {
    check(&fixtures().join("hf/llama-rope3"), "llama", "llama-rope3-hf", &GpuOptions::default());
}

#[test]
fn weights_over_the_binding_limit_are_split_not_dropped() {
    // 64 KiB bindings: the 512x256 f32 embedding/LM head (512 KiB) becomes 8 pieces.
    let opts = GpuOptions { max_binding_override: Some(64 << 10), ..GpuOptions::default() };
    let Some(split) = check(&fixtures().join("models/llama-f32.gguf"), "llama", "llama-f32", &opts) else { return };
    let Some(whole) = check(&fixtures().join("models/llama-f32.gguf"), "llama", "llama-f32", &GpuOptions::default())
    else {
        return;
    };
    assert!(split.dispatch_count() > whole.dispatch_count(), "the split weights should add dispatches");
}
