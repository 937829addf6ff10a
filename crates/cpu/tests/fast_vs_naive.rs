//! The interpreter's fast paths agree with the naive definitions: f32 products (the
//! attention path over the KV cache) on random shapes, and whole-model decoding with each
//! kernel set, and with weights re-encoded at load time or not. Capture mode records every node
//! with the graph's types.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::{DType, Graph};
use apr_ir_cpu::matmul::{self, Dims, Rhs};
use apr_ir_cpu::{kernels, Capture, Interpreter, Kernels, WeightSource};
use apr_ir_model::{quant, Model};
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

/// Units in the last place of `want` between `got` and `want` (f32), 0 for equal values.
fn ulps(got: f32, want: f32) -> f64 {
    if got == want || (got.is_nan() && want.is_nan()) {
        return 0.0;
    }
    let ulp = f64::from(f32::from_bits(want.abs().to_bits() + 1) - want.abs()).max(f64::from(f32::from_bits(1)));
    (f64::from(got) - f64::from(want)).abs() / ulp
}

/// The fast sigmoid (SwiGLU's) against the f64 definition: a dense sweep over the range
/// where it computes in f32, both edges of that range, extremes and specials, and random
/// lengths (so the 8-lane path and its scalar tail both run).
#[test]
fn fast_sigmoid_is_within_4_ulp_of_the_definition() {
    let mut x: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 * 1e-3).collect();
    x.extend([-80.0, 80.0, -80.001, 80.001, -87.0, 87.0, -104.0, 104.0, -1e30, 1e30, 1e-30, -1e-30, 0.0, -0.0]);
    x.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, f32::MAX, f32::MIN]);
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for len in [0usize, 1, 7, 8, 9, 4864] {
        let mut xs: Vec<f32> = (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 40.0 - 20.0
            })
            .collect();
        xs.extend_from_slice(&x[..len.min(x.len())]);
        let want: Vec<f32> = xs.iter().map(|&v| apr_ir_cpu::ops::sigmoid(v)).collect();
        for simd in [kernels::Simd::Scalar, kernels::Simd::detect()] {
            let got = kernels::sigmoid_with(simd, &xs);
            assert_eq!(got.len(), xs.len());
            for ((&g, &w), &v) in got.iter().zip(&want).zip(&xs) {
                assert!(ulps(g, w) <= 4.0, "{simd:?}: σ({v}) = {g}, want {w} ({} ulp)", ulps(g, w));
            }
        }
    }
    let want: Vec<f32> = x.iter().map(|&v| apr_ir_cpu::ops::sigmoid(v)).collect();
    let got = kernels::sigmoid(&x);
    let worst = got.iter().zip(&want).map(|(&g, &w)| ulps(g, w)).fold(0.0, f64::max);
    println!("fast sigmoid: worst {worst} ulp over {} values", x.len());
    for ((&g, &w), &v) in got.iter().zip(&want).zip(&x) {
        assert!(ulps(g, w) <= 4.0, "σ({v}) = {g}, want {w} ({} ulp)", ulps(g, w));
    }
    // The polynomial path is really taken (not the definition everywhere): some values differ.
    if kernels::Simd::detect() == kernels::Simd::Avx2 {
        assert!(got.iter().zip(&want).any(|(g, w)| g != w), "the AVX2 path never ran");
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

/// Weights held in memory, by tensor name.
struct Weights(Vec<(String, Vec<u8>)>);

impl WeightSource for Weights {
    fn tensor_bytes(&self, name: &str) -> Result<&[u8], String> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice()).ok_or_else(|| format!("no tensor {name}"))
    }
}

/// `q5_0` matrices are re-encoded when the interpreter is built; the logits are bit-for-bit
/// those of the stored layout, and close to the naive product's. The two products of `x` run
/// as one batch (`kernels::matvec_batch`), with the same bits as each on its own.
#[test]
fn repacked_and_batched_products_decode_bit_for_bit_alike() {
    let text = r#"graph {"name":"repack","arch":"test","max_ctx":4}
%0 = input{kind="token"}() : i32[1] "token"
%1 = weight{tensor="emb"}() : f32[8,96] "emb"
%2 = gather(%1, %0) : f32[1,96] "x"
%3 = weight{tensor="w"}() : q5_0[40,96] "w"
%4 = matmul{transpose_rhs=true}(%2, %3) : f32[1,40] "logits"
%5 = weight{tensor="v"}() : q8_0[24,96] "v"
%6 = matmul{transpose_rhs=true}(%2, %5) : f32[1,24] "other"
output "logits" = %4
output "other" = %6
"#;
    let graph = Graph::from_text(text).unwrap();
    let emb: Vec<f32> = (0..8 * 96).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    let w: Vec<f32> = (0..40 * 96).map(|i| ((i * 53 % 97) as f32 - 48.0) / 300.0).collect();
    let v: Vec<f32> = (0..24 * 96).map(|i| ((i * 29 % 89) as f32 - 44.0) / 200.0).collect();
    let mut wq = vec![0u8; 40 * 96 / 32 * 22];
    quant::quantize(DType::Q5_0, &w, &mut wq).unwrap();
    let mut vq = vec![0u8; 24 * 96 / 32 * 34];
    quant::quantize(DType::Q8_0, &v, &mut vq).unwrap();
    let weights = Weights(vec![
        ("emb".into(), emb.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ("w".into(), wq.clone()),
        ("v".into(), vq.clone()),
    ]);
    let mut repacked = Interpreter::new(&graph, &weights).unwrap();
    assert_eq!(repacked.repacked_bytes(), 40 * 96 / 32 * 36);
    let mut stored = Interpreter::new(&graph, &weights).unwrap().with_repacking(false);
    assert_eq!(stored.repacked_bytes(), 0);
    let mut never = Interpreter::new_stored(&graph, &weights).unwrap();
    assert_eq!(never.repacked_bytes(), 0);
    let mut naive = Interpreter::new(&graph, &weights).unwrap().with_kernels(Kernels::Naive);
    let bits = |t: &[f32]| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for tok in 0..8 {
        let run = |i: &mut Interpreter<'_>| {
            let r = i.step(tok, 0, &Capture::None).unwrap();
            let get = |name: &str| r.output(name).unwrap().as_f32().unwrap().to_vec();
            (get("logits"), get("other"))
        };
        let (a, b, c) = (run(&mut repacked), run(&mut stored), run(&mut naive));
        assert_eq!(run(&mut never), b, "token {tok}");
        // Each product on its own, straight from the stored bytes.
        let x = &emb[tok as usize * 96..][..96];
        let (mut wx, mut vx) = (vec![0.0f32; 40], vec![0.0f32; 24]);
        kernels::matvec(DType::Q5_0, &wq, 40, x, &mut wx).unwrap();
        kernels::matvec(DType::Q8_0, &vq, 24, x, &mut vx).unwrap();
        for got in [&a, &b] {
            assert_eq!(bits(&got.0), bits(&wx), "token {tok}");
            assert_eq!(bits(&got.1), bits(&vx), "token {tok}");
        }
        assert!(rel_l2(&a.0, &c.0) < 1e-6 && rel_l2(&a.1, &c.1) < 1e-6, "token {tok}");
    }
}
