//! Throughput benchmarks for the GPU machine (ignored in CI): decode-shape matvecs and attention at
//! a long context.

use super::*;

/// Weights whose bytes many tensors share (benchmarks upload one matrix many times).
struct Shared {
    bytes: HashMap<DType, Vec<u8>>,
    dtype_of: HashMap<String, DType>,
    other: Weights,
}

impl WeightBytes for Shared {
    fn bytes(&self, tensor: &str) -> Result<&[u8], String> {
        match self.dtype_of.get(tensor) {
            Some(d) => self.bytes.get(d).map(Vec::as_slice).ok_or_else(|| format!("no bytes for {d}")),
            None => self.other.bytes(tensor),
        }
    }
}

/// Decode-shape matvec throughput on the GPU machine, by level: `cargo test --release -p
/// apr-ir-wgpu --test fused -- --ignored --nocapture`. For each dtype (`FUSED_BENCH_DTYPES`,
/// default q4_k,q6_k,q8_0,f16) a graph holds `R` = 32 products of one x with copies of an
/// N × K matrix (`FUSED_BENCH_NK`, default Qwen2.5-7B's FFN 18944x3584; the copies together
/// exceed the L2 cache), and 16 gate/up pairs; a step runs them all. Printed: µs per matrix and
/// weight GB/s, the median of 5 steps after a quarter-second warm-up, at -O0 (matvec.wgsl),
/// -O1 (matvec_add.wgsl without addend; the SwiGLU unfused) and -O2 (matvec_swiglu.wgsl).
#[test]
#[ignore = "a benchmark for the GPU machine"]
fn matvec_throughput() {
    const R: usize = 32;
    let shape = std::env::var("FUSED_BENCH_NK").unwrap_or_else(|_| "18944x3584".into());
    let (n, k): (u64, u64) = shape.split_once('x').map(|(n, k)| (n.parse().unwrap(), k.parse().unwrap())).unwrap();
    let dtypes = std::env::var("FUSED_BENCH_DTYPES").unwrap_or_else(|_| "q4_k,q6_k,q8_0,f16".into());
    let mut rng = rng("throughput");
    for name in dtypes.split(',') {
        let dtype = DType::ALL.iter().copied().find(|d| d.to_string().eq_ignore_ascii_case(name)).unwrap();
        let values = rng.normals(n * k);
        let mut bytes = vec![0u8; dtype.bytes_for(n * k).unwrap() as usize];
        quant::quantize(dtype, &values, &mut bytes).unwrap();
        let matrix_bytes = bytes.len() as f64;
        let mut s = Suite::new();
        let x = s.per_token(&mut rng, "x", &[1, k]);
        let mut dtype_of = HashMap::new();
        let mut weight = |s: &mut Suite, tag: String| {
            let name = s.name(&tag);
            dtype_of.insert(name.clone(), dtype);
            s.b.leaf(&name, Op::Weight { tensor: name.clone() }, TensorType::new(dtype, &[n, k])).unwrap()
        };
        let mut outs = Vec::new();
        for i in 0..R {
            let w = weight(&mut s, format!("w{i}"));
            outs.push(s.matvec(x, w));
        }
        for i in 0..R / 2 {
            let (g, u) = (weight(&mut s, format!("gate{i}")), weight(&mut s, format!("up{i}")));
            let g = s.push("ffn_gate", Op::MatMul { transpose_rhs: true }, &[x, g]);
            let u = s.push("ffn_up", Op::MatMul { transpose_rhs: true }, &[x, u]);
            outs.push(s.swiglu(g, u));
        }
        for (i, o) in outs.into_iter().enumerate() {
            s.b.output(format!("out{i}"), o);
        }
        let Suite { b, w, .. } = s;
        let graph = b.finish().unwrap();
        let weights = Shared { bytes: HashMap::from([(dtype, bytes)]), dtype_of, other: w };
        for level in [OptLevel::O0, OptLevel::O1, OptLevel::O2] {
            let Some(gpu) = gpu(&GpuOptions::default()) else { return };
            let describe = gpu.describe();
            let mut sched = Schedule::build_fused(gpu, &graph, &weights, level).unwrap();
            let warm = std::time::Instant::now();
            while warm.elapsed().as_secs_f64() < 0.25 {
                sched.step(0, 0).unwrap();
            }
            let mut times: Vec<f64> = (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    sched.step(0, 0).unwrap();
                    t.elapsed().as_secs_f64() / (2 * R) as f64
                })
                .collect();
            times.sort_by(f64::total_cmp);
            println!(
                "{dtype:>5} {n}x{k} -O{} ({} dispatches) on {describe}: {:8.1} µs a matrix, {:7.1} GB/s",
                level.number(),
                sched.dispatch_count(),
                times[2] * 1e6,
                matrix_bytes / times[2] / 1e9
            );
        }
    }
}

/// Attention throughput at a long context on the GPU machine: `cargo test --release -p
/// apr-ir-wgpu --test fused attention_throughput -- --ignored --nocapture`. 28 layers of
/// Qwen2.5-7B's attention (4 kv heads, 7 query heads each, head dimension 128; the q/k/v rows
/// from a table), decoded up to `FUSED_BENCH_CTX` (default 4096) positions; printed: ms per
/// step (all 28 layers) over the last 8 steps, at -O1 (the unfused scores, softmax and weighted
/// sum) and -O2 (attention.wgsl).
#[test]
#[ignore = "a benchmark for the GPU machine"]
fn attention_throughput() {
    let ctx: u64 = std::env::var("FUSED_BENCH_CTX").ok().and_then(|v| v.parse().ok()).unwrap_or(4096);
    let mut rng = rng("attention throughput");
    let mut s = Suite::with_ctx(ctx);
    for _ in 0..28 {
        attention_case(&mut s, &mut rng, 4, 7, 128, RopeMode::Neox);
    }
    let Suite { b, w, .. } = s;
    let graph = b.finish().unwrap();
    for level in [OptLevel::O1, OptLevel::O2] {
        let Some(gpu) = gpu(&GpuOptions::default()) else { return };
        let describe = gpu.describe();
        let mut sched = Schedule::build_fused(gpu, &graph, &w, level).unwrap();
        let last = 8.min(ctx);
        for pos in 0..ctx - last {
            sched.step(0, pos as u32).unwrap();
        }
        let t = std::time::Instant::now();
        for pos in ctx - last..ctx {
            sched.step(0, pos as u32).unwrap();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / last as f64;
        println!(
            "attention x28 at ctx {ctx} -O{} ({} dispatches) on {describe}: {ms:.3} ms a step",
            level.number(),
            sched.dispatch_count()
        );
    }
}
