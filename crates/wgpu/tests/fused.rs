#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]
//! The fused kernels (`kernels/{rms_norm,softmax,rope,swiglu,matvec_add,matvec_swiglu,attention,
//! attention_combine,rope_cache_write}.wgsl`; matvec_add also as matvec_cache_write), against the
//! CPU interpreter running the unfused nodes.
//!
//! naga validates every fused family's source for every dtype it is specialized for. On a real
//! adapter (Mesa's lavapipe in CI), small graphs written the way the lowering writes each
//! region (random odd shapes, every weight dtype for the matvecs, both rope modes, n_rot below
//! the head dimension, grouped-query attention over contexts cut into several chunks) are fused
//! by `apr_ir::fuse` at -O1 and -O2; the test checks that each region became the kernel it
//! should, runs the groups on the GPU in capture mode for several steps, and holds every group
//! output to the CPU's value of that node (NMSE, per kernel kind, see `bounds.rs`). Weights split
//! across bindings (a pretend binding limit) run too, the two weights of a SwiGLU projection
//! with different dtypes and so different piece boundaries.
//!
//! The seed is printed (`FUSED_SEED=N` replays it). Without an adapter the GPU tests print a
//! skip note, or fail when `CI=true`.

use apr_ir::fuse::{fuse, OptLevel};
use apr_ir::group::Group;
use apr_ir::{DType, Dim, Graph, GraphBuilder, GraphMeta, InputKind, NodeId, Op, RopeMode, TensorType};
use apr_ir_cpu::{Capture, Interpreter, WeightSource};
use apr_ir_model::quant;
use apr_ir_wgpu::kernels::{fused_source_for, Family};
use apr_ir_wgpu::{Gpu, GpuOptions, Schedule, WeightBytes};
use std::collections::HashMap;

#[path = "fused/bounds.rs"]
mod bounds;
#[path = "fused/suite.rs"]
mod suite;
#[path = "fused/throughput.rs"]
mod throughput;
use bounds::limits;
use suite::{Suite, Weights};

// ---- randomness ---------------------------------------------------------------------------

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() as u64 - 1) as usize]
    }

    fn normal(&mut self) -> f32 {
        let u = ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64).max(1e-300);
        let v = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    fn normals(&mut self, n: u64) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

fn rng(test: &str) -> Rng {
    let seed = std::env::var("FUSED_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    });
    println!("{test}: seed {seed} (FUSED_SEED={seed} replays it)");
    let mix = test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    Rng(seed ^ mix)
}

/// Sizes around the 64-thread workgroups and the 16-thread rows of the matvecs.
const SIZES: [u64; 11] = [1, 2, 3, 5, 7, 16, 31, 63, 64, 65, 130];

/// Every dtype that holds reals.
const DTYPES: [DType; 11] = DType::REALS;

/// K for a dtype: whole blocks; any length for the plain types.
fn inner_dim(rng: &mut Rng, dtype: DType) -> u64 {
    match dtype.block_len() {
        1 => rng.pick(&[1, 3, 7, 63, 64, 65, 130, 257]),
        32 => 32 * rng.pick(&[1, 2, 3, 5, 9, 17]),
        _ => 256 * rng.range(1, 3),
    }
}

// ---- naga ---------------------------------------------------------------------------------

const FUSED: [Family; 10] = [
    Family::RmsNorm,
    Family::Softmax,
    Family::Rope,
    Family::SwiGlu,
    Family::MatvecAdd,
    Family::MatvecSwiGlu,
    Family::Attention,
    Family::AttentionCombine,
    Family::RopeCacheWrite,
    Family::NormRope,
];

fn validate(src: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| format!("parse: {}", e.emit_to_string(src)))?;
    // The f16 variants need f16 arithmetic (`SHADER_F16`), nothing else.
    let caps = if src.starts_with("enable f16;") {
        naga::valid::Capabilities::SHADER_FLOAT16
    } else {
        naga::valid::Capabilities::empty()
    };
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("validate: {}", e.emit_to_string(src)))?;
    Ok(())
}

#[test]
fn every_fused_kernel_validates_for_every_dtype() {
    assert_eq!(Family::ALL.iter().filter(|f| f.fused()).copied().collect::<Vec<_>>(), FUSED);
    let mut failures = Vec::new();
    for family in FUSED {
        // The matvecs once per weight dtype (and MatvecSwiGlu with every pair of dtypes: its two
        // weights are specialized separately); the others have no weight.
        let cases: Vec<Vec<DType>> = match family.weights() {
            0 => vec![vec![]],
            1 => DType::ALL.iter().map(|&d| vec![d]).collect(),
            _ => DType::ALL.iter().flat_map(|&a| DType::ALL.iter().map(move |&b| vec![a, b])).collect(),
        };
        for dtypes in cases {
            for f16 in [false, true] {
                let src = fused_source_for(family, &dtypes, f16);
                if let Err(e) = validate(&src) {
                    failures.push(format!("{family:?} {dtypes:?} (f16 {f16}): {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

// ---- running ------------------------------------------------------------------------------

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

/// Fuse the suite's graph at each level, check the expected kernels, run `steps` steps on
/// both backends and hold every group output to the CPU.
fn run(test: &str, suite: Suite, opts: &GpuOptions, steps: u32) {
    let Suite { b, w, cases, vocab, .. } = suite;
    let graph: Graph = b.finish().unwrap_or_else(|e| panic!("{test}: verify: {e}"));
    let mut failures = Vec::new();
    for level in [OptLevel::O1, OptLevel::O2] {
        let (groups, stats) = fuse(&graph, level).unwrap();
        let kernel_of = |id: NodeId| groups.iter().find(|g| g.outputs.contains(&id)).map(|g| g.kernel.name());
        for (label, out, o1, o2) in &cases {
            let want = if level == OptLevel::O1 { *o1 } else { *o2 };
            let got = kernel_of(*out);
            if got != Some(want) {
                failures.push(format!(
                    "-O{}: {label}: fused as {got:?}, expected {want} ({:?})",
                    level.number(),
                    stats.fallbacks
                ));
            }
        }
        let Some(gpu) = gpu(opts) else { return };
        let mut cpu = Interpreter::new(&graph, &w).unwrap();
        let mut sched = Schedule::build_groups(gpu, &graph, &w, &groups, level)
            .unwrap_or_else(|e| panic!("{test} -O{}: build: {e}", level.number()));
        if opts.max_binding_override.is_none() {
            // Unsplit weights: the dispatches `apr-ir compile` reports.
            let passes: u64 = groups.iter().map(|g| apr_ir_wgpu::plan::passes(&g.kernel)).sum();
            assert_eq!(sched.dispatch_count() as u64, passes, "{test} -O{}", level.number());
        }
        let mut acc: HashMap<NodeId, (f64, f64)> = HashMap::new();
        let mut r = Rng(u64::from(steps));
        for pos in 0..steps {
            let token = r.range(0, vocab - 1) as u32;
            let c = cpu.step(token, pos, &Capture::All).unwrap();
            let g = sched.step_capture(token, pos).unwrap();
            for grp in &groups {
                for o in &grp.outputs {
                    let want = c.captured[o].to_f32_vec();
                    let got = g.values.get(o).unwrap_or_else(|| panic!("{test}: {o} not captured"));
                    assert_eq!(got.len(), want.len(), "{test}: {} at {pos}", graph.nodes[o.index()].name);
                    let e = acc.entry(*o).or_default();
                    for (&a, &b) in got.iter().zip(&want) {
                        if !(a.is_finite() && b.is_finite()) {
                            if !(a.is_nan() && b.is_nan() || a == b) {
                                failures.push(format!(
                                    "-O{}: {} at position {pos}: gpu {a}, cpu {b}",
                                    level.number(),
                                    graph.nodes[o.index()].name
                                ));
                            }
                            continue;
                        }
                        e.0 += (f64::from(a) - f64::from(b)).powi(2);
                        e.1 += f64::from(b).powi(2);
                    }
                }
            }
        }
        let nmse = |id: &NodeId| acc.get(id).map_or(0.0, |(e, n)| if *n > 0.0 { e / n } else { *e });
        let bounds = limits(&graph, &groups);
        for (grp, &bound) in groups.iter().zip(&bounds) {
            for o in &grp.outputs {
                let v = nmse(o);
                if v > bound {
                    failures.push(format!(
                        "-O{}: {} ({}): NMSE {v:.3e} over {bound:.0e}",
                        level.number(),
                        graph.nodes[o.index()].name,
                        grp.kernel.name(),
                    ));
                }
            }
        }
        let mut worst: HashMap<&str, f64> = HashMap::new();
        for grp in &groups {
            let e = worst.entry(grp.kernel.name()).or_default();
            *e = grp.outputs.iter().map(nmse).fold(*e, f64::max);
        }
        for (label, out, ..) in &cases {
            println!("  -O{} {label}: nmse {:.2e}", level.number(), nmse(out));
        }
        let mut kinds: Vec<_> = worst.into_iter().collect();
        kinds.sort_by(|a, b| a.0.cmp(b.0));
        for (kind, v) in kinds {
            println!("{test} -O{}: {kind:<18} worst NMSE {v:.2e}", level.number());
        }
        println!("{test} -O{}: {} dispatches for {} groups", level.number(), sched.dispatch_count(), groups.len());
    }
    assert!(failures.is_empty(), "{test}: {} failures:\n{}", failures.len(), failures.join("\n"));
}

// ---- cases --------------------------------------------------------------------------------

fn row_local_cases(s: &mut Suite, rng: &mut Rng) {
    // RMSNorm: rows of odd lengths, one row (decoding) and several.
    for _ in 0..4 {
        let rows = rng.pick(&[1, 1, 3]);
        let len = rng.pick(&[1, 3, 63, 64, 65, 300, 896]);
        let x = s.per_token(rng, "x", &[rows, len]);
        let wv = rng.normals(len);
        let w = s.weight("norm.weight", DType::F32, &[len], &wv);
        let eps = s.constant("eps", rng.pick(&[1e-6, 1e-5]));
        let y = s.rms_norm(x, w, eps);
        s.done(format!("rms_norm [{rows}, {len}]"), y, "rms_norm", "rms_norm");
    }
    // Both paths of the kernel: a row held in registers (up to 16·256 elements) and longer ones.
    for (rows, len) in [(1, 4096), (1, 4097), (2, 5000)] {
        let x = s.per_token(rng, "x", &[rows, len]);
        let wv = rng.normals(len);
        let w = s.weight("norm.weight", DType::F32, &[len], &wv);
        let eps = s.constant("eps", 1e-6);
        let y = s.rms_norm(x, w, eps);
        s.done(format!("rms_norm [{rows}, {len}]"), y, "rms_norm", "rms_norm");
    }
    // Softmax, plain and of a scaled input.
    for scaled in [false, true] {
        let shape = [rng.pick(&[1, 2, 3]), rng.pick(&SIZES), rng.pick(&[1, 5, 63, 64, 65, 200])];
        let x = s.per_token(rng, "x", &shape);
        let x = if scaled {
            let c = s.constant("scale", 0.125 * (rng.range(1, 9) as f64));
            s.push("scaled", Op::Mul, &[x, c])
        } else {
            x
        };
        let y = s.softmax(x);
        s.done(format!("softmax {shape:?} scaled {scaled}"), y, "softmax", "softmax");
    }
    // RoPE: both modes, n_rot = head_dim and below it.
    for mode in [RopeMode::Neox, RopeMode::Interleaved] {
        for partial in [false, true] {
            let hd = 2 * rng.pick(&[1, 2, 3, 16, 32, 33, 64]);
            let n_rot = if partial { 2 * rng.range(1, (hd / 2 - 1).max(1)) as u32 } else { hd as u32 };
            let shape = [rng.pick(&[1, 2, 3]), rng.pick(&[1, 2, 7]), hd];
            let x = s.per_token(rng, "x", &shape);
            let y = s.rope(x, mode, n_rot);
            s.done(format!("rope {mode:?} {shape:?} n_rot {n_rot}"), y, "rope", "rope");
        }
    }
    // Per-head norm then RoPE (Qwen3's q and k): heads of up to 256, both modes, n_rot below
    // the head dimension; the key rows stored into a cache.
    for mode in [RopeMode::Neox, RopeMode::Interleaved] {
        for partial in [false, true] {
            let hd = 2 * rng.pick(&[1, 3, 32, 33, 64, 128]);
            let n_rot = if partial { 2 * rng.range(1, (hd / 2 - 1).max(1)) as u32 } else { hd as u32 };
            let heads = rng.pick(&[1, 2, 7]);
            let eps = s.constant("eps", 1e-6);
            let x = s.per_token(rng, "q", &[heads, 1, hd]);
            let w = s.data(rng, "q_norm.weight", &[hd]);
            let y = s.rms_norm(x, w, eps);
            let y = s.rope(y, mode, n_rot);
            s.done(format!("rope(rms_norm) {mode:?} [{heads}, 1, {hd}] n_rot {n_rot}"), y, "norm_rope", "norm_rope");

            let x = s.per_token(rng, "k", &[heads, 1, hd]);
            let w = s.data(rng, "k_norm.weight", &[hd]);
            let y = s.rms_norm(x, w, eps);
            let y = s.rope(y, mode, n_rot);
            let (written, _) = s.cache("cache_k", y, heads, hd);
            let label = format!("cache_write(rope(rms_norm)) {mode:?} [{heads}, 1, {hd}] n_rot {n_rot}");
            s.done(label, written, "node", "norm_rope_cache_write");
        }
    }
    // SwiGLU of two values (no projection: stays an -O1 kernel at -O2).
    for _ in 0..2 {
        let n = rng.pick(&[1, 3, 63, 64, 65, 1000]);
        let g = s.per_token(rng, "gate", &[1, n]);
        let u = s.per_token(rng, "up", &[1, n]);
        let y = s.swiglu(g, u);
        s.done(format!("swiglu [1, {n}]"), y, "swiglu", "swiglu");
    }
}

#[test]
fn row_local_kernels_match_the_cpu() {
    let mut rng = rng("row_local");
    let mut s = Suite::new();
    row_local_cases(&mut s, &mut rng);
    run("row_local", s, &GpuOptions::default(), 3);
}

/// Projections of every dtype: with a bias, with a residual, alone (a one-node group, which
/// takes the fused matvec kernel at -O1 and -O2 too), and gate/up pairs of two dtypes.
fn matvec_cases(s: &mut Suite, rng: &mut Rng, dtypes: &[DType], n_max: u64) {
    for (i, &dtype) in dtypes.iter().enumerate() {
        let k = inner_dim(rng, dtype);
        let n = rng.range(1, n_max);
        let x = s.per_token(rng, "x", &[1, k]);
        let w = s.weight("w", dtype, &[n, k], &rng.normals(n * k));
        let y = s.matvec(x, w);
        let bias = s.data(rng, "bias", &[n]);
        let out = s.push("bias_add", Op::Add, &[y, bias]);
        s.done(format!("matvec + bias {dtype}[{n}, {k}]"), out, "node", "matvec_add");

        let x = s.per_token(rng, "x", &[1, k]);
        let w = s.weight("w", dtype, &[n, k], &rng.normals(n * k));
        let y = s.matvec(x, w);
        let res = s.per_token(rng, "residual", &[1, n]);
        let out = s.push("residual", Op::Add, &[res, y]);
        s.done(format!("residual + matvec {dtype}[{n}, {k}]"), out, "node", "matvec_add");

        let x = s.per_token(rng, "x", &[1, k]);
        let w = s.weight("w", dtype, &[n, k], &rng.normals(n * k));
        let y = s.matvec(x, w);
        s.done(format!("matvec {dtype}[{n}, {k}]"), y, "node", "node");

        // A value projection stored into its cache, with a bias and without: at -O2 the matvec
        // writes each head's row at the position itself (every step's, so `run` compares
        // rows written at several positions).
        for bias in [true, false] {
            let (hkv, d) = (rng.range(1, 3), rng.range(1, 70));
            let x = s.per_token(rng, "x", &[1, k]);
            let w = s.weight("attn_v.weight", dtype, &[hkv * d, k], &rng.normals(hkv * d * k));
            let mut y = s.matvec(x, w);
            if bias {
                let b = s.data(rng, "attn_v.bias", &[hkv * d]);
                y = s.push("attn_v.bias_add", Op::Add, &[y, b]);
            }
            let row = s.push(
                "attn_v.heads",
                Op::Reshape { shape: vec![Dim::Const(hkv), Dim::Const(1), Dim::Const(d)] },
                &[y],
            );
            let (written, _) = s.cache("cache_v", row, hkv, d);
            let label = format!("cache_write(matvec {dtype}[{hkv}·{d}, {k}]{})", if bias { " + bias" } else { "" });
            s.done(label, written, "node", "matvec_cache_write");
        }

        // Gate and up: this dtype and another one (same K: both must take whole blocks).
        let other = dtypes[(i + 1 + rng.range(0, dtypes.len() as u64 - 1) as usize) % dtypes.len()];
        let k = lcm_blocks(rng, dtype, other);
        let x = s.per_token(rng, "x", &[1, k]);
        let gw = s.weight("gate", dtype, &[n, k], &rng.normals(n * k));
        let uw = s.weight("up", other, &[n, k], &rng.normals(n * k));
        let g = s.push("ffn_gate", Op::MatMul { transpose_rhs: true }, &[x, gw]);
        let u = s.push("ffn_up", Op::MatMul { transpose_rhs: true }, &[x, uw]);
        let y = s.swiglu(g, u);
        s.done(format!("swiglu(x·{dtype}[{n}, {k}]ᵀ, x·{other}ᵀ)"), y, "swiglu", "matvec_swiglu");
    }
}

/// A K of whole blocks for both dtypes.
fn lcm_blocks(rng: &mut Rng, a: DType, b: DType) -> u64 {
    let block = a.block_len().max(b.block_len());
    if block == 1 {
        inner_dim(rng, a)
    } else {
        block * rng.range(1, if block == 256 { 2 } else { 5 })
    }
}

#[test]
fn matvec_kernels_match_the_cpu_for_every_dtype() {
    let mut rng = rng("matvec");
    let mut s = Suite::new();
    matvec_cases(&mut s, &mut rng, &DTYPES, 140);
    run("matvec", s, &GpuOptions::default(), 3);
}

/// Weights split by rows across bindings (a pretend limit of 4 KiB): one dispatch per piece,
/// per common range of the two pieces of a gate/up pair.
#[test]
fn matvec_kernels_over_split_weights() {
    let mut rng = rng("split");
    let mut s = Suite::new();
    let limit = 4096u64;
    for (a, b, k) in [(DType::Q8_0, DType::Q4K, 512), (DType::F32, DType::Q6K, 256), (DType::F16, DType::Q4_0, 96)] {
        // Enough rows for several pieces of each (and not a multiple of either).
        let rows = |d: DType| limit / d.bytes_for(k).unwrap();
        let n = rows(a).max(rows(b)) * 2 + rng.range(1, 9);
        let x = s.per_token(&mut rng, "x", &[1, k]);
        let w = s.weight("w", a, &[n, k], &rng.normals(n * k));
        let y = s.matvec(x, w);
        let bias = s.data(&mut rng, "bias", &[n]);
        let out = s.push("bias_add", Op::Add, &[y, bias]);
        s.done(format!("matvec + bias {a}[{n}, {k}] split"), out, "node", "matvec_add");

        let x = s.per_token(&mut rng, "x", &[1, k]);
        let gw = s.weight("gate", a, &[n, k], &rng.normals(n * k));
        let uw = s.weight("up", b, &[n, k], &rng.normals(n * k));
        let g = s.push("ffn_gate", Op::MatMul { transpose_rhs: true }, &[x, gw]);
        let u = s.push("ffn_up", Op::MatMul { transpose_rhs: true }, &[x, uw]);
        let y = s.swiglu(g, u);
        s.done(format!("swiglu(x·{a}[{n}, {k}]ᵀ, x·{b}ᵀ) split"), y, "swiglu", "matvec_swiglu");
    }
    run("split", s, &GpuOptions { max_binding_override: Some(limit), ..GpuOptions::default() }, 2);
}

/// One decode step of attention as the lowering writes it: new k/v rows (the k row roped)
/// written into the caches, the rows in use viewed, scores, scale, softmax, weighted sum;
/// grouped-query heads. Run (`MAX_CTX` = 300 compiled positions, 270 steps) over contexts that
/// attention.wgsl cuts into one to five chunks of one or two 32-position tiles, partial tiles
/// included.
fn attention_case(s: &mut Suite, rng: &mut Rng, hkv: u64, group: u64, d: u64, mode: RopeMode) {
    attention_case_expecting(s, rng, (hkv, group, d), mode, "attention");
}

/// [`attention_case`], with the kernel expected for its output at -O2.
fn attention_case_expecting(
    s: &mut Suite,
    rng: &mut Rng,
    (hkv, group, d): (u64, u64, u64),
    mode: RopeMode,
    o2: &'static str,
) {
    // Rotary pairs are whole: n_rot is even, nonzero, at most the head dimension, sometimes
    // below it.
    let pairs = if rng.range(0, 2) == 0 { rng.range(1, d / 2) } else { d / 2 };
    let n_rot = 2 * pairs as u32;
    let q = s.per_token(rng, "q", &[hkv, group, d]);
    let q = s.rope(q, mode, n_rot);
    let k = s.per_token(rng, "k", &[hkv, 1, d]);
    let k = s.rope(k, mode, n_rot);
    let v = s.per_token(rng, "v", &[hkv, 1, d]);
    let (_, k_all) = s.cache("cache_k", k, hkv, d);
    let (_, v_all) = s.cache("cache_v", v, hkv, d);
    let scores = s.push("attn.scores", Op::MatMul { transpose_rhs: true }, &[q, k_all]);
    let scale = s.constant("attn_scale", 1.0 / (d as f64).sqrt());
    let scaled = s.push("attn.scaled", Op::Mul, &[scores, scale]);
    let probs = s.softmax(scaled);
    let out = s.push("attn.weighted", Op::MatMul { transpose_rhs: false }, &[probs, v_all]);
    s.done(format!("attention q[{hkv}, {group}, {d}] {mode:?} n_rot {n_rot}"), out, "node", o2);
}

#[test]
fn attention_and_rope_cache_write_match_the_cpu() {
    let mut rng = rng("attention");
    let mut s = Suite::new();
    for (hkv, group, d) in
        [(1, 1, 2), (2, 3, 64), (1, 7, rng.pick(&[3, 65, 130, 200])), (2, 2, 256), (3, 1, 2 * rng.range(1, 40))]
    {
        let mode = if rng.range(0, 1) == 0 { RopeMode::Neox } else { RopeMode::Interleaved };
        attention_case(&mut s, &mut rng, hkv, group, d, mode);
    }
    // Heads over attention.wgsl's 256 dimensions stay unfused, and still match.
    attention_case_expecting(&mut s, &mut rng, (1, 2, 260), RopeMode::Neox, "node");
    // The cache writes themselves (rope + write fused at -O2) are group outputs too: `run`
    // compares every group output, the rows in use of each cache included.
    run("attention", s, &GpuOptions::default(), 270);
}

/// Where each group's output lives is checked against the IR: every group's value node has the
/// kernel's shape contract, and the groups of a suite cover it (a sanity check of the test).
#[test]
fn suites_fuse_every_region() {
    let mut rng = rng("coverage");
    let mut s = Suite::new();
    row_local_cases(&mut s, &mut rng);
    matvec_cases(&mut s, &mut rng, &[DType::Q4K], 9);
    attention_case(&mut s, &mut rng, 2, 2, 8, RopeMode::Neox);
    let graph = s.b.finish().unwrap();
    for level in [OptLevel::O0, OptLevel::O1, OptLevel::O2] {
        let (groups, _) = fuse(&graph, level).unwrap();
        apr_ir::group::check_coverage(&graph, &groups).unwrap();
        let fused: Vec<&Group> = groups.iter().filter(|g| !g.kernel.is_node()).collect();
        assert_eq!(fused.is_empty(), level == OptLevel::O0);
    }
}
