#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]
//! Op-level differential tests, CPU interpreter vs wgpu schedule, in the spirit of ggml's
//! `test-backend-ops`: every IR op gets tiny graphs whose leaves are f32 weights holding random
//! data (or packed weights quantized from it), inputs, constants and states, with the op under
//! test producing the case's output. A test gathers its cases into one graph (a suite, run on
//! one device); both backends run a few steps and the GPU is held to the CPU (the specification)
//! case by case, by NMSE = Σ(cpu − gpu)²/Σcpu² (see `ops/harness.rs`).
//!
//! Shapes are random per run from sizes that straddle the 64-thread workgroup (1, 3, 63, 64, 65,
//! 130, …); the seed is printed (`OPS_SEED=N` replays it). Without an adapter the tests print a
//! skip note, or fail when `CI=true`.
//!
//! Thresholds (NMSE) were chosen from measurement (lavapipe and an NVIDIA H200, worst seen below
//! 1e-12 everywhere but in the pure movement ops, which are exact) with a wide margin, and are
//! small enough that a wrong kernel fails by orders of magnitude: a swapped op code, an
//! off-by-one index, a lost broadcast or an unwritten element give NMSE ≳ 1e-4 (NaN for the
//! last: capture mode poisons buffers before each step).
//!
//! | tier | ops | limit | why |
//! |---|---|---|---|
//! | [`EXACT`] | neg, cast, reshape, slice, gather, rope_rotate, cache_write, rope_angles; argmax (bitwise) | 0 | nothing rounds: data movement and sign flips; dequantization is bit-exact by contract; rope angles are rounded from the exact product as the CPU rounds its f64 one |
//! | [`ROUNDED`] | add, sub, mul, div, sqrt | 1e-10 | IEEE ops (div and sqrt may be an ulp or two off on some devices) |
//! | [`TRANSCENDENTAL`] | exp, sigmoid, rsqrt, cos, sin | 1e-9 | device math libraries are a few ulp from correctly rounded |
//! | [`REDUCTION`] | reduce_sum, reduce_mean, reduce_max; the attention chain | 1e-9 | f32 sums in index order vs the CPU's f64 sums |
//! | [`MATMUL`] | matmul (packed and f32 rhs) | 1e-9 | f32 dot products in different orders; the dequantized weights are bit-exact |
//!
//! Packed-weight tests (cast, gather, matmul) run F16 weights on both of their paths: `f16`
//! storage on a device with `SHADER_F16` (where the adapter has it) and u32 words on a device
//! opened with `no_f16` ([`f16_paths`]); the harness fails a suite whose device took the other
//! path.
//!
//! Graphs the IR allows but a backend refuses (an error, never a panic) are printed as `GAP`
//! lines (`Suite::check_or_refused`); where both backends run them, they must agree.

#[path = "ops/harness.rs"]
mod harness;

#[path = "ops/elementwise.rs"]
mod elementwise;
#[path = "ops/matmul.rs"]
mod matmul;
#[path = "ops/movement.rs"]
mod movement;
#[path = "ops/rope_state.rs"]
mod rope_state;

use apr_ir::{DType, Dim, InputKind, NodeId, Op, RopeMode};
use apr_ir_wgpu::GpuOptions;
use harness::{dims, have_gpu, rng, shape, steps, Case, Rng, Suite, Worst, SIZES};

const EXACT: f64 = 0.0;
const ROUNDED: f64 = 1e-10;
const TRANSCENDENTAL: f64 = 1e-9;
const REDUCTION: f64 = 1e-9;
const MATMUL: f64 = 1e-9;

/// Two steps: enough to see that re-encoding a schedule gives the same result.
const TWO: [(u32, u32); 2] = [(0, 0), (0, 1)];

/// Every dtype that holds reals.
const DTYPES: [DType; 11] = DType::REALS;

/// The two ways a device reads F16 weights, each with the dtypes a packed-weight test runs on
/// it and a tag for labels: the default device (`f16` storage where the adapter has
/// `SHADER_F16`) for every dtype, then a device opened with `no_f16` for F16 again (u32 words).
/// The harness asserts that each suite's device took its path.
fn f16_paths() -> [(GpuOptions, &'static str, &'static [DType]); 2] {
    [
        (GpuOptions::default(), "", &DTYPES),
        (GpuOptions { no_f16: true, ..GpuOptions::default() }, " (no f16)", &[DType::F16]),
    ]
}

fn numel(s: &[u64]) -> usize {
    s.iter().product::<u64>() as usize
}

fn signed(rng: &mut Rng, x: f32) -> f32 {
    if rng.coin() {
        -x
    } else {
        x
    }
}

/// K for a dtype: whole blocks, and for plain types sizes around 64.
fn inner_dim(rng: &mut Rng, dtype: DType) -> u64 {
    match dtype.block_len() {
        1 => rng.pick(&[1, 3, 63, 64, 65, 130, 257]),
        32 => 32 * rng.pick(&[1, 2, 3, 5, 9]),
        _ => 256 * rng.range(1, 3),
    }
}
