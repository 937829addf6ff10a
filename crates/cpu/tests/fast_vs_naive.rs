//! The interpreter's fast paths agree with the naive definitions: f32 products (the
//! attention path over the KV cache) on random shapes, and whole-model decoding with each
//! kernel set. Capture mode records every node with the graph's types.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir_cpu::matmul::{self, Dims, Rhs};
use apr_ir_cpu::{Capture, Interpreter, Kernels};
use apr_ir_model::Model;
use proptest::prelude::*;
use std::path::Path;

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let err: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let norm: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
    (err / norm.max(1e-30)).sqrt()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn f32_products_match(batch in 1usize..5, m in 1usize..4, k in 1usize..70, n in 1usize..90,
                          transposed in any::<bool>(), rhs_batched in any::<bool>(), seed in any::<u64>()) {
        let mut s = seed | 1;
        let mut rnd = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5 };
        let a: Vec<f32> = (0..batch * m * k).map(|_| rnd()).collect();
        let b: Vec<f32> = (0..if rhs_batched { batch } else { 1 } * n * k).map(|_| rnd()).collect();
        let d = Dims { batch, rhs_batched, m, k, n };
        let rhs = Rhs::F32 { data: &b, transposed };
        let fast = matmul::fast(&a, rhs, d).unwrap();
        let naive = matmul::naive(&a, rhs, d).unwrap();
        prop_assert!(rel_l2(&fast, &naive) < 1e-5, "seed {seed}: {}", rel_l2(&fast, &naive));
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

#[test]
fn fast_and_naive_kernels_decode_alike() {
    for file in ["qwen2-q4_k.gguf", "llama-q8_0.gguf", "qwen2-f16.gguf"] {
        let model = Model::open(fixture(file)).unwrap();
        let graph = model.lower(Some(8)).unwrap();
        let mut fast = Interpreter::new(&graph, &model).unwrap();
        let mut naive = Interpreter::new(&graph, &model).unwrap().with_kernels(Kernels::Naive);
        for (pos, tok) in [5u32, 17, 300, 42, 7, 99].into_iter().enumerate() {
            let a = fast.step(tok, pos as u32, &Capture::None).unwrap();
            let b = naive.step(tok, pos as u32, &Capture::None).unwrap();
            let (a, b) = (a.output("logits").unwrap().as_f32().unwrap(), b.output("logits").unwrap().as_f32().unwrap());
            let e = rel_l2(a, b);
            assert!(e < 1e-5, "{file} position {pos}: relative L2 {e:.2e}");
        }
    }
}

#[test]
fn capture_all_records_every_computed_node_with_its_type() {
    let model = Model::open(fixture("llama-f32.gguf")).unwrap();
    let graph = model.lower(Some(8)).unwrap();
    let mut interp = Interpreter::new(&graph, &model).unwrap();
    for pos in 0..3u32 {
        let r = interp.step(10 + pos, pos, &Capture::All).unwrap();
        let ctx = u64::from(pos) + 1;
        for n in graph.nodes.iter().filter(|n| n.op.is_compute()) {
            let t = r.captured.get(&n.id).unwrap_or_else(|| panic!("{} not captured", n.name));
            let mut want: Vec<usize> = n.ty.shape.iter().map(|d| d.eval(ctx) as usize).collect();
            if let apr_ir::Op::CacheWrite { axis } = n.op {
                want[axis as usize] = ctx as usize; // a cache write shows the rows in use
            }
            assert_eq!(t.shape, want, "{} at position {pos}", n.name);
        }
        // The cache holds this step's k row at `pos`.
        let k = graph.find("blk.0.attn_k_rope").unwrap();
        let w = graph.find("blk.0.cache_k.write").unwrap();
        let (k, cache) = (&r.captured[&k], &r.captured[&w]);
        let (kv, hd) = (cache.shape[0], cache.shape[2]);
        for h in 0..kv {
            let row = &cache.as_f32().unwrap()[(h * ctx as usize + pos as usize) * hd..][..hd];
            assert_eq!(row, &k.as_f32().unwrap()[h * hd..(h + 1) * hd]);
        }
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let model = Model::open(fixture("qwen2-f32.gguf")).unwrap();
    let graph = model.lower(Some(4)).unwrap();
    let mut interp = Interpreter::new(&graph, &model).unwrap();
    let e = interp.step(100_000, 0, &Capture::None).unwrap_err().to_string();
    assert!(e.contains("outside the table"), "{e}");
    let e = interp.step(1, 4, &Capture::None).unwrap_err().to_string();
    assert!(e.contains("past the compiled context"), "{e}");
}
