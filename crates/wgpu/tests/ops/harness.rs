#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]
//! The differential harness of `tests/ops.rs`.
//!
//! A [`Suite`] is one graph holding many independent cases: each [`Case`] is a tiny subgraph,
//! built with [`GraphBuilder`] over in-memory weights, whose output node is the op under test.
//! The suite runs on the CPU interpreter (the specification) and on one wgpu [`Schedule`] (so
//! one device per suite) for the same steps, in capture mode (every computed node's value read
//! back, intermediates poisoned with NaN before each step, so an element a kernel failed to write
//! shows), and every case's output is compared. The first case's output is also the graph's
//! `logits`, so the plain read-back path is compared too.
//!
//! NMSE = Σ(cpu − gpu)² / Σ cpu² over every element of every step; when the CPU values are all
//! zero, the plain Σ(cpu − gpu)² is used. Non-finite values must agree in place and kind before
//! any number is compared. i32 outputs (argmax) come back from the GPU as bit patterns in f32
//! words and are compared bit for bit.

use apr_ir::{DType, Dim, Graph, GraphBuilder, GraphMeta, InputKind, NodeId, Op, TensorType};
use apr_ir_cpu::{Capture, Data, Interpreter, Kernels, WeightSource};
use apr_ir_model::quant;
use apr_ir_wgpu::{Gpu, GpuOptions, Schedule, WeightBytes};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

// ---- randomness -------------------------------------------------------------------------

/// splitmix64: small, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        (f64::from(lo) + self.unit() * (f64::from(hi) - f64::from(lo))) as f32
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() as u64 - 1) as usize]
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    pub fn uniforms(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

/// The run's seed (`OPS_SEED=N` replays one), printed by each test with its name.
pub fn rng(test: &str) -> Rng {
    let seed = std::env::var("OPS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    });
    println!("{test}: seed {seed} (OPS_SEED={seed} replays it)");
    // Each test mixes its name in, so tests run with one seed still get different data.
    let mix = test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    Rng::new(seed ^ mix)
}

/// Sizes that stress the 64-thread workgroups: 1, odd, one under and one over a multiple of 64.
pub const SIZES: [u64; 10] = [1, 2, 3, 5, 7, 31, 63, 64, 65, 130];

/// A random shape of `rank` dims drawn from [`SIZES`], with at most `max_numel` elements.
pub fn shape(rng: &mut Rng, rank: usize, max_numel: u64) -> Vec<u64> {
    loop {
        let s: Vec<u64> = (0..rank).map(|_| rng.pick(&SIZES)).collect();
        if s.iter().product::<u64>() <= max_numel {
            return s;
        }
    }
}

/// `Dim`s from constants.
pub fn dims(s: &[u64]) -> Vec<Dim> {
    s.iter().map(|&d| Dim::Const(d)).collect()
}

// ---- weights ----------------------------------------------------------------------------

/// Tensors by name, as stored bytes.
#[derive(Default)]
pub struct Weights(HashMap<String, Vec<u8>>);

impl WeightSource for Weights {
    fn tensor_bytes(&self, name: &str) -> Result<&[u8], String> {
        self.0.get(name).map(Vec::as_slice).ok_or_else(|| format!("no tensor {name}"))
    }
}

impl WeightBytes for Weights {
    fn bytes(&self, tensor: &str) -> Result<&[u8], String> {
        self.tensor_bytes(tensor)
    }
}

// ---- suites and cases -------------------------------------------------------------------

/// One decode step: `(token, pos)`.
pub type Step = (u32, u32);

/// The steps `0..n` at consecutive positions with random tokens below `vocab`.
pub fn steps(rng: &mut Rng, n: u32, vocab: u64) -> Vec<Step> {
    (0..n).map(|pos| (rng.range(0, vocab - 1) as u32, pos)).collect()
}

struct Registered {
    label: String,
    /// The row of the worst-NMSE table this case counts in.
    key: String,
    out: NodeId,
    limit: f64,
}

/// Many cases in one graph, run on one device.
pub struct Suite {
    label: String,
    b: GraphBuilder,
    w: Weights,
    cases: Vec<Registered>,
    inputs: HashMap<&'static str, NodeId>,
}

impl Suite {
    pub fn new(label: impl Into<String>, max_ctx: u64) -> Suite {
        let meta = GraphMeta { name: "ops".into(), arch: "test".into(), max_ctx, extra: Default::default() };
        Suite {
            label: label.into(),
            b: GraphBuilder::new(meta),
            w: Weights::default(),
            cases: Vec::new(),
            inputs: HashMap::new(),
        }
    }

    /// Start a case; its nodes are named `c<k>.<name>`.
    pub fn case(&mut self, label: impl Into<String>) -> Case<'_> {
        let prefix = format!("c{}.", self.cases.len());
        Case { suite: self, label: label.into(), prefix }
    }

    /// Run every case over `steps` and hold the GPU to the CPU, case by case; panics listing
    /// every case over its limit.
    pub fn check(self, steps: &[Step], worst: &mut Worst) {
        self.check_with(steps, worst, &GpuOptions::default());
    }

    /// [`Suite::check`] on a GPU opened with `opts`.
    pub fn check_with(self, steps: &[Step], worst: &mut Worst, opts: &GpuOptions) {
        let label = self.label.clone();
        if let Err(why) = self.run(steps, worst, opts) {
            panic!("{label}: {why}");
        }
    }

    /// For graphs the IR allows but a backend may not support yet: a refusal (an error, never a
    /// panic) is printed as a gap; if both backends run, they must agree.
    pub fn check_or_refused(self, steps: &[Step], worst: &mut Worst) {
        let label = self.label.clone();
        if let Err(why) = self.run(steps, worst, &GpuOptions::default()) {
            println!("  GAP {label}: {why}");
        }
    }

    /// `Err` when a backend refuses the graph; panics on a mismatch.
    fn run(mut self, steps: &[Step], worst: &mut Worst, opts: &GpuOptions) -> Result<(), String> {
        let label = self.label.clone();
        let first = self.cases.first().map(|c| c.out).unwrap_or_else(|| panic!("{label}: no cases"));
        self.b.output("logits", first);
        let graph = self.b.finish().unwrap_or_else(|e| panic!("{label}: verify: {e}"));
        // `OPS_CPU_KERNELS=naive` runs the CPU's definitions instead of its fast kernels, to tell
        // a GPU fault from a fault of the fast CPU kernels.
        let kernels = match std::env::var("OPS_CPU_KERNELS").as_deref() {
            Ok("naive") => Kernels::Naive,
            _ => Kernels::Fast,
        };
        let mut cpu = Interpreter::new(&graph, &self.w).map_err(|e| format!("cpu: {e}"))?.with_kernels(kernels);
        let taps = Capture::Nodes(self.cases.iter().map(|c| c.out).collect::<HashSet<_>>());
        if let Some(&(token, pos)) = steps.first() {
            cpu.step(token, pos, &taps).map_err(|e| format!("cpu: {e}"))?;
            cpu.reset();
        }
        let gpu = Gpu::open(opts).unwrap_or_else(|e| panic!("{label}: gpu: {e}"));
        let mut sched = Schedule::build(gpu, &graph, &self.w).map_err(|e| format!("gpu: {e}"))?;
        check_f16_path(&label, &graph, &sched, opts);
        let mut acc: Vec<Acc> = self.cases.iter().map(|_| Acc::default()).collect();
        for &(token, pos) in steps {
            let ctx = u64::from(pos) + 1;
            let c = cpu.step(token, pos, &taps).unwrap_or_else(|e| panic!("{label}: cpu step {pos}: {e}"));
            let g = sched.step_capture(token, pos).unwrap_or_else(|e| panic!("{label}: gpu step {pos}: {e}"));
            for (case, acc) in self.cases.iter().zip(&mut acc) {
                let want = c.captured.get(&case.out).unwrap_or_else(|| panic!("{}: cpu did not capture", case.label));
                let got = match g.values.get(&case.out) {
                    Some(v) => v.as_slice(),
                    // A view or a leaf has no buffer of its own; the graph's output does.
                    None if case.out == first => g.logits.get(..want.numel()).unwrap_or(&g.logits),
                    None => panic!("{}: the GPU did not capture the output", case.label),
                };
                assert_eq!(want.shape, presented(&graph, case.out, ctx), "{}: cpu shape at pos {pos}", case.label);
                assert_eq!(got.len(), want.numel(), "{}: gpu values at pos {pos}", case.label);
                acc.add(&case.label, pos, &want.data, got);
            }
            // The plain read-back of `logits` equals the captured value.
            if let (Some(v), false) =
                (g.values.get(&first), matches!(graph.nodes[first.index()].op, Op::CacheWrite { .. }))
            {
                let same = v.iter().zip(&g.logits).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same && g.logits.len() >= v.len(), "{label}: logits read-back differs from the captured value");
            }
        }
        let mut failures = Vec::new();
        for (case, acc) in self.cases.iter().zip(&acc) {
            let nmse = acc.nmse();
            println!("  {}: nmse {nmse:.2e}, max_abs {:.2e} over {} values", case.label, acc.max_abs, acc.elems);
            worst.add(&case.key, nmse, case.limit);
            if nmse > case.limit || acc.mismatch.is_some() {
                let why = acc.mismatch.clone().unwrap_or_default();
                failures.push(format!(
                    "{}: NMSE {nmse:.3e} over {:.0e} (max_abs {:.3e}) {why}",
                    case.label, case.limit, acc.max_abs
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{label}: {} of {} cases differ:\n{}",
            failures.len(),
            self.cases.len(),
            failures.join("\n")
        );
        Ok(())
    }
}

/// One case of a suite: builds its nodes with a name prefix, then registers its output.
pub struct Case<'a> {
    suite: &'a mut Suite,
    label: String,
    prefix: String,
}

impl Case<'_> {
    /// A weight of `dtype` quantized from `values` (the graph sees the stored values, so both
    /// backends start from the same numbers).
    pub fn weight(&mut self, name: &str, dtype: DType, shape: &[u64], values: &[f32]) -> NodeId {
        let n: u64 = shape.iter().product();
        let name = format!("{}{name}", self.prefix);
        assert_eq!(values.len() as u64, n, "{}: {name}", self.label);
        let size = dtype.bytes_for(n).unwrap_or_else(|| panic!("{}: {name}: partial block", self.label));
        let mut bytes = vec![0u8; size as usize];
        quant::quantize(dtype, values, &mut bytes).unwrap_or_else(|e| panic!("{}: {name}: {e}", self.label));
        self.suite.w.0.insert(name.clone(), bytes);
        let ty = TensorType::new(dtype, shape);
        let op = Op::Weight { tensor: name.clone() };
        self.suite.b.leaf(&name, op, ty).unwrap_or_else(|e| panic!("{}: {name}: {e}", self.label))
    }

    /// An f32 weight holding `values`: how a case feeds arbitrary f32 data to an op.
    pub fn data(&mut self, name: &str, shape: &[u64], values: &[f32]) -> NodeId {
        self.weight(name, DType::F32, shape, values)
    }

    /// The suite's token or position input (shared by its cases).
    pub fn input(&mut self, kind: InputKind) -> NodeId {
        let name = match kind {
            InputKind::Token => "token",
            InputKind::Position => "pos",
        };
        if let Some(&id) = self.suite.inputs.get(name) {
            return id;
        }
        let id = self
            .suite
            .b
            .leaf(name, Op::Input { kind }, TensorType::new(DType::I32, &[1]))
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", self.label));
        self.suite.inputs.insert(name, id);
        id
    }

    pub fn constant(&mut self, name: &str, value: f64) -> NodeId {
        self.leaf(name, Op::Const { value }, TensorType::new(DType::F32, &[]))
    }

    pub fn state(&mut self, name: &str, shape: &[u64]) -> NodeId {
        self.leaf(name, Op::State, TensorType::new(DType::F32, shape))
    }

    fn leaf(&mut self, name: &str, op: Op, ty: TensorType) -> NodeId {
        let name = format!("{}{name}", self.prefix);
        self.suite.b.leaf(&name, op, ty).unwrap_or_else(|e| panic!("{}: {name}: {e}", self.label))
    }

    pub fn push(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> NodeId {
        let name = format!("{}{name}", self.prefix);
        self.suite.b.push(&name, op, inputs).unwrap_or_else(|e| panic!("{}: {name}: {e}", self.label))
    }

    /// Register `out` as the case's result, counted under `key` with NMSE limit `limit`.
    pub fn done(self, out: NodeId, key: impl Into<String>, limit: f64) {
        self.suite.cases.push(Registered { label: self.label, key: key.into(), out, limit });
    }
}

/// Running error sums of one case.
#[derive(Default)]
struct Acc {
    err: f64,
    norm: f64,
    max_abs: f64,
    elems: usize,
    /// The first disagreement no NMSE can pass: non-finite values, or i32 bits.
    mismatch: Option<String>,
}

impl Acc {
    fn add(&mut self, label: &str, pos: u32, want: &Data, got: &[f32]) {
        self.elems += got.len();
        match want {
            Data::I32(v) => {
                for (i, (&c, &g)) in v.iter().zip(got).enumerate() {
                    if c as u32 != g.to_bits() && self.mismatch.is_none() {
                        self.mismatch = Some(format!("pos {pos}: element {i}: cpu {c}, gpu bits {:#x}", g.to_bits()));
                    }
                }
            }
            Data::F32(v) => {
                let (mut worst, mut wi) = (0.0f64, 0usize);
                for (i, (&c, &g)) in v.iter().zip(got).enumerate() {
                    if !c.is_finite() || !g.is_finite() {
                        let same = (c.is_nan() && g.is_nan()) || c == g;
                        if !same && self.mismatch.is_none() {
                            self.mismatch = Some(format!("pos {pos}: element {i}: cpu {c}, gpu {g}"));
                        }
                        continue;
                    }
                    let d = f64::from(c) - f64::from(g);
                    self.err += d * d;
                    self.norm += f64::from(c) * f64::from(c);
                    if d.abs() > worst {
                        (worst, wi) = (d.abs(), i);
                    }
                }
                self.max_abs = self.max_abs.max(worst);
                if worst > 0.0 && self.nmse() > 1e-6 {
                    println!("  {label}: pos {pos}: worst element {wi}: cpu {}, gpu {}", v[wi], got[wi]);
                }
            }
        }
    }

    fn nmse(&self) -> f64 {
        if self.norm > 0.0 {
            self.err / self.norm
        } else {
            self.err
        }
    }
}

/// The shape of `n`'s value as the CPU presents it at cache length `ctx`: a `cache_write`
/// node's is the rows in use of its cache.
fn presented(g: &Graph, n: NodeId, ctx: u64) -> Vec<usize> {
    let node = &g.nodes[n.index()];
    let mut s: Vec<usize> = node.ty.shape.iter().map(|d| d.eval(ctx) as usize).collect();
    if let Op::CacheWrite { axis } = node.op {
        s[axis as usize] = ctx as usize;
    }
    s
}

/// The schedule read F16 weights the way `opts` and the adapter say: as `f16` storage when the
/// adapter has `SHADER_F16` (asked of wgpu directly) and `no_f16` is off, else as u32 words.
fn check_f16_path(label: &str, graph: &Graph, sched: &Schedule, opts: &GpuOptions) {
    let gpu = sched.gpu();
    let want = !opts.no_f16 && adapter_has_shader_f16();
    assert_eq!(gpu.f16, want, "{label}: expected the f16 path to be {want} on {}", gpu.describe());
    let features = gpu.device.features().contains(wgpu::Features::SHADER_F16);
    assert!(!gpu.f16 || features, "{label}: the f16 path on a device without SHADER_F16");
    assert!(!opts.no_f16 || !features, "{label}: a device opened with no_f16 has SHADER_F16");
    let f16_weights = graph.nodes.iter().any(|n| matches!(n.op, Op::Weight { .. }) && n.ty.dtype == DType::F16);
    let f16_pipelines = sched.f16_pipelines();
    assert_eq!(f16_pipelines > 0, want && f16_weights, "{label}: {f16_pipelines} pipelines read f16 storage");
}

/// Whether the adapter `Gpu::open` picks has `SHADER_F16`, asked of wgpu directly.
pub fn adapter_has_shader_f16() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .is_ok_and(|a| a.features().contains(wgpu::Features::SHADER_F16))
    })
}

/// Whether a GPU is present: `false` (after a note) without one, unless `CI=true`, where that
/// fails the test. Asked once per process.
pub fn have_gpu(test: &str) -> bool {
    static ADAPTER: OnceLock<Result<String, String>> = OnceLock::new();
    let found =
        ADAPTER.get_or_init(|| Gpu::open(&GpuOptions::default()).map(|g| g.describe()).map_err(|e| e.to_string()));
    match found {
        Ok(name) => {
            println!("{test}: adapter {name}");
            true
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{test}: CI=true but no GPU: {e}"),
        Err(e) => {
            eprintln!("note: skipping {test}: no GPU adapter: {e}");
            false
        }
    }
}

/// The worst NMSE per row (an op, a dtype, a pattern), printed as a table at the end of a test.
#[derive(Default)]
pub struct Worst(Vec<(String, f64, f64)>);

impl Worst {
    fn add(&mut self, key: &str, nmse: f64, limit: f64) {
        match self.0.iter_mut().find(|(k, _, _)| k == key) {
            Some(e) => e.1 = e.1.max(nmse),
            None => self.0.push((key.to_string(), nmse, limit)),
        }
    }

    pub fn print(&self, test: &str) {
        for (key, nmse, limit) in &self.0 {
            println!("{test}: {key:<34} worst NMSE {nmse:.2e} (limit {limit:.0e})");
        }
    }
}
