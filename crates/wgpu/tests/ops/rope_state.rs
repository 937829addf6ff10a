#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]
//! RoPE (rotate, angles), the KV cache (cache_write) and attention over it.

use super::*;

#[test]
fn rope_rotate() {
    if !have_gpu("rope_rotate") {
        return;
    }
    let mut rng = rng("rope_rotate");
    let mut worst = Worst::default();
    let mut suite = Suite::new("rope_rotate", 8);
    for mode in [RopeMode::Neox, RopeMode::Interleaved] {
        for rank in 1..=4 {
            for partial in [false, true] {
                let hd = 2 * rng.pick(&[1, 3, 32, 33, 64, 65]);
                let n_rot = if partial { 2 * rng.range(1, (hd / 2 - 1).max(1)) } else { hd };
                let mut s = shape(&mut rng, rank - 1, 2_000);
                s.push(hd);
                let mut c = suite.case(format!("rope_rotate {mode:?} n_rot {n_rot} of {s:?}"));
                let x = c.data("x", &s, &rng.normals(numel(&s)));
                let y = c.push("y", Op::RopeRotate { mode, n_rot: n_rot as u32 }, &[x]);
                c.done(y, format!("rope_rotate {mode:?}"), EXACT);
            }
        }
    }
    suite.check(&TWO, &mut worst);
    worst.print("rope_rotate");
}

/// Where `rope_angles` gets its frequency factors.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Factors {
    None,
    /// An f32 weight.
    Weight,
    /// A cast of an f32 weight (what the lowering does for non-f32 ones, here a no-op).
    CastF32,
    /// A cast of an f16 weight.
    CastF16,
    /// A computed value (twice a weight).
    Computed,
}

/// A `rope_angles` case with random parameters.
fn rope_angles_case(rng: &mut Rng, c: &mut Case<'_>, mode: RopeMode, factors: Factors) -> NodeId {
    let head_dim = rng.pick(&[2u32, 64, 80, 128, 130]);
    let n_rot = if rng.coin() { head_dim } else { 2 * rng.range(1, u64::from(head_dim) / 2) as u32 };
    let theta_base = rng.pick(&[10_000.0, 1_000_000.0, 500_000.0]);
    let freq_scale = rng.pick(&[1.0, 0.25, 0.125]);
    let pos = c.input(InputKind::Position);
    let mut inputs = vec![pos];
    let nf = u64::from(n_rot / 2);
    let f = rng.uniforms(nf as usize, 1.0, 40.0);
    match factors {
        Factors::None => {}
        Factors::Weight => inputs.push(c.data("freq_factors", &[nf], &f)),
        Factors::CastF32 | Factors::CastF16 => {
            let dtype = if factors == Factors::CastF32 { DType::F32 } else { DType::F16 };
            let w = c.weight("freq_factors", dtype, &[nf], &f);
            inputs.push(c.push("freq_factors.to_f32", Op::Cast { to: DType::F32 }, &[w]));
        }
        Factors::Computed => {
            let w = c.data("freq_factors", &[nf], &f);
            let two = c.constant("two", 2.0);
            inputs.push(c.push("freq_factors.x2", Op::Mul, &[w, two]));
        }
    }
    c.push("y", Op::RopeAngles { mode, n_rot, head_dim, theta_base, freq_scale }, &inputs)
}

#[test]
fn rope_angles() {
    if !have_gpu("rope_angles") {
        return;
    }
    let mut rng = rng("rope_angles");
    let mut worst = Worst::default();
    // Positions up to 2^31 − 1 (past 2^24, where f32 no longer holds every integer).
    let max_ctx = i32::MAX as u64;
    let mut positions: Vec<(u32, u32)> =
        [0u32, 1, 2, 63, 64, 1000, 4095, 32_767, 39_999].iter().map(|&p| (0, p)).collect();
    positions
        .extend((0..200).map(|k| (0, if k < 100 { rng.range(0, 40_000) } else { rng.range(0, max_ctx - 1) } as u32)));
    let mut suite = Suite::new("rope_angles", max_ctx);
    for mode in [RopeMode::Neox, RopeMode::Interleaved] {
        for factors in [Factors::None, Factors::Weight, Factors::CastF32] {
            for _ in 0..2 {
                let mut c = suite.case(format!("rope_angles {mode:?} factors {factors:?}"));
                let y = rope_angles_case(&mut rng, &mut c, mode, factors);
                c.done(y, format!("rope_angles factors {factors:?}"), EXACT);
            }
        }
    }
    // What the model does with them: cos and sin of the angles.
    for op in [Op::Cos, Op::Sin] {
        let mut c = suite.case(format!("{op}(rope_angles) neox 128"));
        let pos = c.input(InputKind::Position);
        let rope = Op::RopeAngles {
            mode: RopeMode::Neox,
            n_rot: 128,
            head_dim: 128,
            theta_base: 1_000_000.0,
            freq_scale: 1.0,
        };
        let a = c.push("angles", rope, &[pos]);
        let y = c.push("y", op.clone(), &[a]);
        c.done(y, format!("{op}(rope_angles)"), TRANSCENDENTAL);
    }
    suite.check(&positions, &mut worst);
    // The IR allows these; the GPU may refuse them (printed as a gap), but must not get them wrong.
    for factors in [Factors::CastF16, Factors::Computed] {
        let mut suite = Suite::new(format!("rope_angles factors {factors:?}"), max_ctx);
        let mut c = suite.case(format!("rope_angles factors {factors:?}"));
        let y = rope_angles_case(&mut rng, &mut c, RopeMode::Neox, factors);
        c.done(y, format!("rope_angles factors {factors:?}"), EXACT);
        suite.check_or_refused(&positions[..9], &mut worst);
    }
    worst.print("rope_angles");
}

// ---- state ----------------------------------------------------------------------------------

/// A cache of `shape` written with a gathered row per step: the value is row `token` of a
/// table, reshaped to the value's shape. Its nodes are named `<tag>.…`; returns the write node.
fn cache_write_case(rng: &mut Rng, c: &mut Case<'_>, tag: &str, shape: &[u64], axis: usize, vocab: u64) -> NodeId {
    let mut vs = shape.to_vec();
    vs[axis] = 1;
    let row = numel(&vs) as u64;
    let table = c.data(&format!("{tag}.table"), &[vocab, row], &rng.normals((vocab * row) as usize));
    let tok = c.input(InputKind::Token);
    let pos = c.input(InputKind::Position);
    let g = c.push(&format!("{tag}.row"), Op::Gather, &[table, tok]);
    let value = c.push(&format!("{tag}.value"), Op::Reshape { shape: dims(&vs) }, &[g]);
    let state = c.state(tag, shape);
    c.push(&format!("{tag}.write"), Op::CacheWrite { axis: axis as u32 }, &[state, value, pos])
}

#[test]
fn cache_write() {
    if !have_gpu("cache_write") {
        return;
    }
    let mut rng = rng("cache_write");
    let mut worst = Worst::default();
    let (max_ctx, vocab) = (9, 5);
    let mut suite = Suite::new("cache_write", max_ctx);
    // Every axis of ranks 1..4; the ctx-long view of the written cache is the output.
    for rank in 1..=4usize {
        for axis in 0..rank {
            let mut s = shape(&mut rng, rank, 3_000);
            s[axis] = max_ctx;
            let mut c = suite.case(format!("cache_write {s:?} axis {axis} → ctx view"));
            let w = cache_write_case(&mut rng, &mut c, "cache", &s, axis, vocab);
            let y = c.push("view", Op::Slice { axis: axis as u32, start: 0, len: Dim::CTX }, &[w]);
            c.done(y, "cache_write → slice ctx", EXACT);
        }
    }
    // The write node itself as the output (its value is the rows in use of the cache).
    let s = [2, max_ctx, 65];
    let mut c = suite.case(format!("cache_write {s:?} axis 1"));
    let w = cache_write_case(&mut rng, &mut c, "cache", &s, 1, vocab);
    c.done(w, "cache_write", EXACT);
    // The state read before its write: the rows of earlier steps (and a zero row for this one).
    let s = [2, max_ctx, 65];
    let mut c = suite.case(format!("slice ctx of cache {s:?} axis 1 before its write"));
    let table = c.data("table", &[vocab, 130], &rng.normals(vocab as usize * 130));
    let tok = c.input(InputKind::Token);
    let pos = c.input(InputKind::Position);
    let state = c.state("cache", &s);
    let before = c.push("before", Op::Slice { axis: 1, start: 0, len: Dim::CTX }, &[state]);
    let g = c.push("row", Op::Gather, &[table, tok]);
    let value = c.push("value", Op::Reshape { shape: dims(&[2, 1, 65]) }, &[g]);
    c.push("write", Op::CacheWrite { axis: 1 }, &[state, value, pos]);
    c.done(before, "slice ctx of a state before its write", EXACT);
    let st = steps(&mut rng, max_ctx as u32, vocab);
    suite.check(&st, &mut worst);
    worst.print("cache_write");
}

/// Attention over a growing KV cache, past 64 rows: the f32 products with ctx as N and as K,
/// a softmax over the ctx axis.
#[test]
fn attention_over_ctx() {
    if !have_gpu("attention") {
        return;
    }
    let mut rng = rng("attention");
    let mut worst = Worst::default();
    let (max_ctx, vocab) = (70, 9);
    let mut suite = Suite::new("attention", max_ctx);
    for _ in 0..2 {
        let (h, d) = (rng.pick(&[1, 2, 3]), rng.pick(&[3, 64, 65]));
        let mut c = suite.case(format!("attention heads {h} dim {d}"));
        let mut cache = |c: &mut Case<'_>, name: &str| {
            let w = cache_write_case(&mut rng, c, name, &[h, max_ctx, d], 1, vocab);
            c.push(&format!("{name}.view"), Op::Slice { axis: 1, start: 0, len: Dim::CTX }, &[w])
        };
        let k = cache(&mut c, "k");
        let v = cache(&mut c, "v");
        let q = c.data("q", &[h, 1, d], &rng.normals((h * d) as usize));
        let scale = c.constant("scale", 1.0 / (d as f64).sqrt());
        let scores = c.push("scores", Op::MatMul { transpose_rhs: true }, &[q, k]);
        let scaled = c.push("scaled", Op::Mul, &[scores, scale]);
        let max = c.push("max", Op::ReduceMax { axis: 2 }, &[scaled]);
        let shifted = c.push("shifted", Op::Sub, &[scaled, max]);
        let e = c.push("exp", Op::Exp, &[shifted]);
        let sum = c.push("sum", Op::ReduceSum { axis: 2 }, &[e]);
        let p = c.push("p", Op::Div, &[e, sum]);
        let y = c.push("y", Op::MatMul { transpose_rhs: false }, &[p, v]);
        c.done(y, "attention", REDUCTION);
    }
    let st = steps(&mut rng, max_ctx as u32, vocab);
    suite.check(&st, &mut worst);
    worst.print("attention");
}
