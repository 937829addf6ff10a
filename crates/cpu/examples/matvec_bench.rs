//! Matrix-vector kernels on Qwen2.5 decode shapes: GB/s of weight bytes streamed, against this
//! machine's read bandwidth (measured first, in the same process, the way `bandwidth.rs` does).
//!
//! For each shape and type it times three paths on the same weights:
//! - `before`: `quant::dot_row` per row over rayon (the interpreter's previous `matmul::fast`);
//! - `scalar`: `kernels` with the portable implementation;
//! - `simd`: `kernels` with the fastest implementation this CPU has (AVX2+FMA+F16C).
//!
//! `cold` streams from DRAM: the weights are copied until the copies exceed 256 MiB (eight
//! times L3) and every call reads the next copy, as decode does (each matrix is read once per
//! token). `hot` repeats one copy (in cache when it fits). It also prints the relative L2 error
//! of `simd` against `matmul::naive` for a vector with a 26× outlier channel. `--quick` times
//! only the SIMD kernels, for a shorter while.
//!
//!
//! `--decode` instead times the weight streaming of one decoded token of the synthetic
//! Qwen2.5-0.5B Q4_K_M model (`apr-ir synth --preset qwen2.5-0.5b --quant q4_k_m`): every
//! matrix a token reads (q, k, v, o, gate, up, down of 24 layers, then the tied output
//! embedding), in order, one matrix-vector product each, with `before` and with the kernels.
//!
//! ```text
//! cargo run --release -p apr-ir-cpu --example matvec_bench [-- --all --quick --threads N --only q4_k,q6_k]
//! cargo run --release -p apr-ir-cpu --example matvec_bench -- --decode [--quick --threads N]
//! cargo run --release -p apr-ir-cpu --example matvec_bench -- --per-call [--rows N --threads N]
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

use apr_ir::DType;
use apr_ir_cpu::kernels::{self, Simd};
use apr_ir_cpu::matmul::{self, Dims, Rhs};
use apr_ir_model::lower::Arch;
use apr_ir_model::quant;
use apr_ir_model::synth::{Preset, SynthQuant, SynthSpec};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// CPU time used so far by all threads of this process, in seconds (Linux `schedstat`; 0 where
/// unavailable). On a shared machine, bytes per CPU-second show a kernel's own speed.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// Timing of one path: best wall time per call, and CPU time per call over all passes.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

/// Time `f(i)` in passes of `calls_per_pass` calls (`i = 0, 1, …`), for at least `min` and 3
/// passes.
fn time_per_call(min: Duration, calls_per_pass: usize, mut f: impl FnMut(usize)) -> Timing {
    f(0);
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut i = 1;
    let mut passes = 0;
    while passes < 3 || start.elapsed() < min {
        let t = Instant::now();
        for _ in 0..calls_per_pass {
            f(i);
            i += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() / calls_per_pass as f64);
        passes += 1;
    }
    Timing { wall: best, cpu: (cpu_seconds() - cpu0) / (i - 1) as f64 }
}

/// Read bandwidth with all threads (GB/s), as in `bandwidth.rs`.
fn bandwidth() -> f64 {
    let data: Vec<u64> = (0..(1usize << 27)).into_par_iter().map(|i| i as u64).collect();
    let share = data.len().div_ceil(rayon::current_num_threads());
    let t = time_per_call(Duration::from_millis(500), 1, |_| {
        let s = data
            .par_chunks(share)
            .map(|c| {
                c.chunks_exact(8).fold([0u64; 8], |mut a, v| {
                    for (a, v) in a.iter_mut().zip(v) {
                        *a = a.wrapping_add(*v);
                    }
                    a
                })
            })
            .map(|a| a.iter().fold(0u64, |x, y| x.wrapping_add(*y)))
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(s);
    });
    (data.len() * 8) as f64 / t.wall / 1e9
}

/// A pseudo-random value in [-1, 1) for index `i` (SplitMix64 of `i`).
fn noise(i: u64) -> f32 {
    let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// `n × k` weights of `dtype`, quantized from random values.
fn weights(dtype: DType, n: usize, k: usize) -> Vec<u8> {
    let rb = dtype.bytes_for(k as u64).unwrap() as usize;
    let mut out = vec![0u8; n * rb];
    out.par_chunks_mut(rb).enumerate().for_each(|(r, row)| {
        let vals: Vec<f32> = (0..k).map(|i| 0.02 * noise((r * k + i) as u64)).collect();
        quant::quantize(dtype, &vals, row).unwrap();
    });
    out
}

/// The previous `matmul::fast` for one vector: `dot_row` per row, rayon over rows.
fn before(dtype: DType, w: &[u8], x: &[f32], out: &mut [f32]) {
    let rb = w.len() / out.len();
    let v: Vec<f32> = w.par_chunks_exact(rb).with_min_len(16).map(|r| quant::dot_row(dtype, r, x).unwrap()).collect();
    out.copy_from_slice(&v);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match value("--threads").map(|t| t.parse::<usize>()) {
        Some(Ok(t)) => rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| run(&args)),
        Some(Err(e)) => eprintln!("--threads: {e}"),
        None => run(&args),
    }
}

fn run(args: &[String]) {
    if args.iter().any(|a| a == "--decode") {
        decode(args.iter().any(|a| a == "--quick"));
        return;
    }
    if args.iter().any(|a| a == "--per-call") {
        per_call(args);
        return;
    }
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let only: Option<Vec<String>> = value("--only").map(|s| s.split(',').map(String::from).collect());
    let all = args.iter().any(|a| a == "--all");
    let quick = args.iter().any(|a| a == "--quick");
    let min = Duration::from_millis(if quick { 100 } else { 400 });
    let bw = bandwidth();
    println!("threads: {}, simd: {:?}", rayon::current_num_threads(), Simd::detect());
    println!("read bandwidth: {bw:.2} GB/s (all threads, 1 GiB, best of passes)\n");
    println!(
        "{:<8} {:>14} {:>9} | {:>14} {:>14} {:>14} {:>14} | {:>8} {:>9} | {:>11}",
        "type",
        "shape",
        "MB",
        "before cold",
        "scalar cold",
        "simd cold",
        "simd hot",
        "% of bw",
        "rel L2",
        "hot GB/cpu-s"
    );
    let shapes = [(896usize, 896usize), (4864, 896), (896, 4864), (151_936, 896)];
    let mut types = vec![DType::Q5_0, DType::Q8_0, DType::Q4K, DType::Q6K];
    if all {
        types.extend([DType::F16, DType::BF16, DType::F32, DType::Q4_0]);
    }
    for (n, k) in shapes {
        for &dtype in &types {
            if k % dtype.block_len() as usize != 0 || only.as_ref().is_some_and(|o| !o.contains(&dtype.to_string())) {
                continue;
            }
            let one = weights(dtype, n, k);
            let bytes = one.len();
            let copies = ((256usize << 20) / bytes).max(1) + 1;
            let many: Vec<Vec<u8>> = (0..copies).map(|_| one.clone()).collect();
            let mut x: Vec<f32> = (0..k).map(|i| noise(u64::MAX - i as u64)).collect();
            x[k / 3] = 26.0 * 0.577; // 26× the RMS of uniform [-1, 1) values
            let mut out = vec![0.0f32; n];
            let gbs = |t: f64| bytes as f64 / t / 1e9;
            let calls = copies.min(64);
            // `--quick`: only the SIMD kernels.
            let nan = Timing { wall: f64::NAN, cpu: f64::NAN };
            let t_before =
                if quick { nan } else { time_per_call(min, calls, |i| before(dtype, &many[i % copies], &x, &mut out)) };
            let mut with = |simd: Simd, cold: bool| {
                time_per_call(min, calls, |i| {
                    let w = if cold { &many[i % copies] } else { &one };
                    kernels::matmul_with(simd, dtype, w, n, k, &x, &mut out).unwrap();
                })
            };
            let t_scalar = if quick { nan } else { with(Simd::Scalar, true) };
            let (t_cold, t_hot) = (with(Simd::detect(), true), with(Simd::detect(), false));
            kernels::matvec(dtype, &one, n, &x, &mut out).unwrap();
            let want = matmul::naive(
                &x,
                Rhs::Packed { dtype, bytes: &one },
                Dims { batch: 1, rhs_batched: false, m: 1, k, n },
            )
            .unwrap();
            let err: f64 = out.iter().zip(&want).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum();
            let norm: f64 = want.iter().map(|&b| f64::from(b).powi(2)).sum();
            println!(
                "{:<8} {:>14} {:>9.2} | {:>9.2} GB/s {:>9.2} GB/s {:>9.2} GB/s {:>9.2} GB/s | {:>7.0}% {:>9.1e} | {:>11.2}",
                dtype.to_string(),
                format!("{n}x{k}"),
                bytes as f64 / 1e6,
                gbs(t_before.wall),
                gbs(t_scalar.wall),
                gbs(t_cold.wall),
                gbs(t_hot.wall),
                100.0 * gbs(t_cold.wall) / bw,
                (err / norm).sqrt(),
                gbs(t_hot.cpu)
            );
        }
    }
}

/// Best single-call time of each kernel on hot weights (`--per-call`): on a shared machine the
/// fastest of many short calls is the one no other process interrupted, so this is the most
/// repeatable measure of a kernel's own speed. Shapes are 256 rows (weights stay in L2) of
/// k = 896 and 4864, or `--rows N`.
fn per_call(args: &[String]) {
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let rows: usize = value("--rows").map_or(256, |r| r.parse().unwrap());
    println!("threads: {}, simd: {:?}, {rows} rows, best call of ~0.3 s", rayon::current_num_threads(), Simd::detect());
    for k in [896usize, 4864] {
        for dtype in [DType::Q5_0, DType::Q8_0, DType::Q4K, DType::Q6K, DType::F16] {
            if k % dtype.block_len() as usize != 0 {
                continue;
            }
            let w = weights(dtype, rows, k);
            let x: Vec<f32> = (0..k).map(|i| noise(u64::MAX - i as u64)).collect();
            let mut out = vec![0.0f32; rows];
            let mut best = f64::INFINITY;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(300) {
                let t = Instant::now();
                kernels::matvec(dtype, &w, rows, &x, &mut out).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{:<6} {rows}x{k:<5} {:8.1} us  {:6.2} GB/s",
                dtype.to_string(),
                best * 1e6,
                w.len() as f64 / best / 1e9
            );
            // The interpreter's path: re-encoded where it re-encodes, exact and 16-bit activations.
            let r = kernels::repack(dtype, &w, rows, k).unwrap();
            for precision in [kernels::Precision::Exact, kernels::Precision::Int16] {
                let rows_ref = match &r {
                    Some(r) => kernels::Rows::Repacked(r),
                    None => kernels::Rows::Stored { dtype, bytes: &w },
                };
                let mut best = f64::INFINITY;
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(300) {
                    let t = Instant::now();
                    kernels::matvec_batch_with(&mut [(rows_ref, out.as_mut_slice())], &x, precision).unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let tag = format!("{}{} {:?}", dtype, if r.is_some() { "*" } else { "" }, precision);
                println!("  {tag:<18} {:8.1} us  {:6.2} GB/s of file bytes", best * 1e6, w.len() as f64 / best / 1e9);
            }
        }
    }
}

/// One decoded token's matrix-vector products over the synthetic Qwen2.5-0.5B Q4_K_M weights,
/// three ways: `before` (`dot_row` per row), `stored` (the kernels on the file's layout, one
/// matrix at a time) and `interpreter` (what the interpreter runs: `q5_0` and `q6_k`
/// re-encoded at load time, see `kernels::repack`, and the products of one vector — q/k/v,
/// gate/up — batched into one parallel pass, `kernels::matvec_batch`). GB/s are of the file's
/// weight bytes; the re-encoded weights are more bytes, printed too. Each path runs whole
/// tokens, best of ~2 s; the breakdown by shape is the best time of each batch over five
/// tokens (interpreter path). The last line is the opt-in `Precision::Int16` (16-bit
/// activations; not exact). `quick`: only the repacked path, for
/// about half a second (to fit the quiet moments of a shared machine).
fn decode(quick: bool) {
    let spec = SynthSpec { arch: Arch::Qwen2, preset: Preset::Qwen25_0_5B, quant: SynthQuant::Q4KM, seed: 0 };
    let tensors = spec.tensors();
    let is_matmul = |name: &str| {
        ["attn_q.", "attn_k.", "attn_v.", "attn_output.", "ffn_gate.", "ffn_up.", "ffn_down."]
            .iter()
            .any(|p| name.contains(p))
    };
    // Layer matrices in file (= execution) order, then the output projection (tied: token_embd).
    let mut order: Vec<_> = tensors.iter().filter(|t| t.shape.len() == 2 && is_matmul(&t.name)).collect();
    order.extend(tensors.iter().filter(|t| t.name == "output.weight" || t.name == "token_embd.weight").take(1));
    eprintln!("generating {} matrices …", order.len());
    struct Mat {
        dtype: DType,
        n: usize,
        k: usize,
        w: Vec<u8>,
        repacked: Option<kernels::Repacked>,
    }
    let mats: Vec<Mat> = order
        .iter()
        .map(|t| {
            let (n, k) = (t.shape[0] as usize, t.shape[1] as usize);
            let w = weights(t.dtype, n, k);
            let repacked = kernels::repack(t.dtype, &w, n, k).unwrap();
            Mat { dtype: t.dtype, n, k, w, repacked }
        })
        .collect();
    let total: usize = mats.iter().map(|m| m.w.len()).sum();
    let read: usize = mats.iter().map(|m| m.repacked.as_ref().map_or(m.w.len(), |r| r.bytes().len())).sum();
    let mut by_type: Vec<(DType, usize)> = Vec::new();
    for m in &mats {
        match by_type.iter_mut().find(|(d, _)| *d == m.dtype) {
            Some((_, b)) => *b += m.w.len(),
            None => by_type.push((m.dtype, m.w.len())),
        }
    }
    let bw = bandwidth();
    let xs: Vec<Vec<f32>> = [896usize, 4864].iter().map(|&k| (0..k).map(|i| noise(i as u64)).collect()).collect();
    let x_for = |k: usize| if k == 896 { &xs[0] } else { &xs[1] };
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0.0f32; m.n]).collect();
    // Batches as the interpreter forms them: k and v join q, up joins gate.
    let mut batches: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, t) in order.iter().enumerate() {
        match batches.last_mut() {
            Some(b) if ["attn_k.", "attn_v.", "ffn_up."].iter().any(|p| t.name.contains(p)) => b.end = i + 1,
            _ => batches.push(i..i + 1),
        }
    }
    let batch = |range: std::ops::Range<usize>, outs: &mut [Vec<f32>], precision: kernels::Precision| {
        let ms = &mats[range.clone()];
        let mut jobs: Vec<(kernels::Rows<'_>, &mut [f32])> = ms
            .iter()
            .zip(outs[range].iter_mut())
            .map(|(m, o)| {
                let rows = match &m.repacked {
                    Some(r) => kernels::Rows::Repacked(r),
                    None => kernels::Rows::Stored { dtype: m.dtype, bytes: &m.w },
                };
                (rows, o.as_mut_slice())
            })
            .collect();
        kernels::matvec_batch_with(&mut jobs, x_for(ms[0].k), precision).unwrap();
    };
    #[derive(Clone, Copy, PartialEq)]
    enum Path {
        Before,
        Stored,
        Repacked,
        Int16,
    }
    let one = |m: &Mat, out: &mut [f32], path: Path| match path {
        Path::Before => before(m.dtype, &m.w, x_for(m.k), out),
        Path::Stored | Path::Repacked | Path::Int16 => kernels::matvec(m.dtype, &m.w, m.n, x_for(m.k), out).unwrap(),
    };
    let min = Duration::from_millis(if quick { 500 } else { 2000 });
    let mut timings = Vec::new();
    let paths = [
        ("before (dot_row)", Path::Before),
        ("stored layout", Path::Stored),
        ("interpreter", Path::Repacked),
        ("int16 (opt-in)", Path::Int16),
    ];
    for (name, path) in paths.into_iter().skip(if quick { 2 } else { 0 }) {
        let t = time_per_call(if path == Path::Before { min / 2 } else { min }, 1, |_| {
            if path == Path::Repacked || path == Path::Int16 {
                let p = if path == Path::Int16 { kernels::Precision::Int16 } else { kernels::Precision::Exact };
                for b in &batches {
                    batch(b.clone(), &mut outs, p);
                }
            } else {
                for (m, out) in mats.iter().zip(outs.iter_mut()) {
                    one(m, out, path);
                }
            }
        });
        timings.push((name, t));
    }
    // Where a token's time goes: best time of each batch over a few tokens, summed by shape.
    let mut best = vec![f64::INFINITY; batches.len()];
    for _ in 0..5 {
        for (range, b) in batches.iter().zip(best.iter_mut()) {
            let t = Instant::now();
            batch(range.clone(), &mut outs, kernels::Precision::Exact);
            *b = b.min(t.elapsed().as_secs_f64());
        }
    }
    let mut classes: Vec<(String, usize, f64, usize)> = Vec::new();
    for (range, b) in batches.iter().zip(&best) {
        let name: Vec<String> = mats[range.clone()]
            .iter()
            .map(|m| format!("{}{} {}x{}", m.dtype, if m.repacked.is_some() { "*" } else { "" }, m.n, m.k))
            .collect();
        let name = name.join(" + ");
        let bytes: usize = mats[range.clone()].iter().map(|m| m.w.len()).sum();
        match classes.iter_mut().find(|c| c.0 == name) {
            Some(c) => (c.1, c.2, c.3) = (c.1 + bytes, c.2 + b, c.3 + 1),
            None => classes.push((name, bytes, *b, 1)),
        }
    }
    println!("threads: {}, simd: {:?}", rayon::current_num_threads(), Simd::detect());
    println!("read bandwidth: {bw:.2} GB/s");
    let types: Vec<String> = by_type.iter().map(|(d, b)| format!("{d} {:.1} MB", *b as f64 / 1e6)).collect();
    println!("weights per token: {:.1} MB in the file ({})", total as f64 / 1e6, types.join(", "));
    println!("  interpreter: {:.1} MB read per token (* = re-encoded)", read as f64 / 1e6);
    for (name, bytes, t, count) in &classes {
        let gbs = *bytes as f64 / t / 1e9;
        println!("  {name:<50} ×{count:<3} {:7.2} ms  {gbs:6.2} GB/s", t * 1e3);
    }
    println!("GB/s of file bytes; % of the read bandwidth above:");
    for (name, t) in timings {
        let gbs = total as f64 / t.wall / 1e9;
        println!(
            "{name:<17} {:7.1} ms/token  {:6.2} GB/s  {:5.0}% of bandwidth  ({:.2} GB per CPU-second)",
            t.wall * 1e3,
            gbs,
            100.0 * gbs / bw,
            total as f64 / t.cpu / 1e9
        );
    }
}
