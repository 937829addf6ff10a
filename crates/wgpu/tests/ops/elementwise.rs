#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]
//! Elementwise ops (unary, cast, binary with broadcasting) and reductions.

use super::*;

#[test]
fn unary() {
    if !have_gpu("unary") {
        return;
    }
    let mut rng = rng("unary");
    let mut worst = Worst::default();
    let mut suite = Suite::new("unary", 8);
    // (op, input range, limit)
    let ops: [(Op, f32, f32, f64); 9] = [
        (Op::Neg, -10.0, 10.0, EXACT),
        (Op::Exp, -10.0, 10.0, TRANSCENDENTAL),
        (Op::Sigmoid, -20.0, 20.0, TRANSCENDENTAL),
        (Op::Sqrt, 0.0, 100.0, ROUNDED),
        (Op::Rsqrt, 1e-3, 100.0, TRANSCENDENTAL),
        (Op::Cos, -10.0, 10.0, TRANSCENDENTAL),
        (Op::Sin, -10.0, 10.0, TRANSCENDENTAL),
        // RoPE takes cos and sin of angles up to the context length.
        (Op::Cos, -5000.0, 5000.0, TRANSCENDENTAL),
        (Op::Sin, -5000.0, 5000.0, TRANSCENDENTAL),
    ];
    for (op, lo, hi, limit) in ops {
        let key = format!("{op} [{lo}, {hi})");
        for rank in 1..=4 {
            let s = shape(&mut rng, rank, 20_000);
            let mut c = suite.case(format!("{op}{s:?} in [{lo}, {hi})"));
            let x = c.data("x", &s, &rng.uniforms(numel(&s), lo, hi));
            let y = c.push("y", op.clone(), &[x]);
            c.done(y, &key, limit);
        }
        // A scalar constant operand.
        let mut c = suite.case(format!("{op}(const)"));
        let x = c.constant("x", f64::from(rng.uniform(lo.max(0.5), hi)));
        let y = c.push("y", op.clone(), &[x]);
        c.done(y, &key, limit);
    }
    // cos and sin of magnitudes up to 1e30 (the CPU reduces any argument exactly).
    for op in [Op::Cos, Op::Sin] {
        let s = [rng.pick(&SIZES), 65];
        let v: Vec<f32> = (0..numel(&s))
            .map(|_| {
                let x = 10f32.powf(rng.uniform(0.0, 30.0)) * rng.uniform(1.0, 10.0);
                signed(&mut rng, x)
            })
            .collect();
        let mut c = suite.case(format!("{op}{s:?} of magnitudes to 1e30"));
        let x = c.data("x", &s, &v);
        let y = c.push("y", op.clone(), &[x]);
        c.done(y, format!("{op} (to 1e30)"), TRANSCENDENTAL);
    }
    // Past 65535 workgroups of 64: the grid goes 2-D.
    let s = [65, 64_600];
    let mut c = suite.case(format!("neg{s:?} (2-D grid)"));
    let x = c.data("x", &s, &rng.normals(numel(&s)));
    let y = c.push("y", Op::Neg, &[x]);
    c.done(y, "neg (2-D grid)", EXACT);
    suite.check(&TWO, &mut worst);
    worst.print("unary");
}

#[test]
fn cast_from_every_dtype() {
    if !have_gpu("cast") {
        return;
    }
    let mut rng = rng("cast");
    let mut worst = Worst::default();
    for (opts, tag, dtypes) in f16_paths() {
        let mut suite = Suite::new(format!("cast{tag}"), 8);
        for &dtype in dtypes {
            let bl = dtype.block_len();
            for rank in 1..=3 {
                let mut s = shape(&mut rng, rank - 1, 200);
                let blocks = if bl == 1 { rng.pick(&SIZES) } else { rng.range(1, 3) };
                s.push(blocks * bl);
                let mut c = suite.case(format!("cast {dtype}{s:?}{tag}"));
                let w = c.weight("w", dtype, &s, &rng.normals(numel(&s)));
                let y = c.push("y", Op::Cast { to: DType::F32 }, &[w]);
                c.done(y, format!("cast {dtype}{tag}"), EXACT);
            }
        }
        suite.check_with(&TWO, &mut worst, &opts);
    }
    worst.print("cast");
}

/// How the two operands of a binary op are shaped against the output shape.
#[derive(Debug, Clone, Copy)]
enum Bcast {
    Same,
    ScalarConstRhs,
    ScalarConstLhs,
    /// Random dims of the right operand are 1.
    OnesRhs,
    OnesLhs,
    /// Complementary dims are 1 on each side (an outer product).
    OnesBoth,
    /// The right operand has fewer dims (and maybe 1s).
    LowRankRhs,
    LowRankLhs,
    /// A one-element tensor (not a constant) on the right.
    OneElementRhs,
}

const BCASTS: [Bcast; 9] = [
    Bcast::Same,
    Bcast::ScalarConstRhs,
    Bcast::ScalarConstLhs,
    Bcast::OnesRhs,
    Bcast::OnesLhs,
    Bcast::OnesBoth,
    Bcast::LowRankRhs,
    Bcast::LowRankLhs,
    Bcast::OneElementRhs,
];

/// `out` with some dims (at least one) set to 1; `mask` picks them when given.
fn with_ones(rng: &mut Rng, out: &[u64], mask: Option<&[bool]>) -> Vec<u64> {
    let pick: Vec<bool> = match mask {
        Some(m) => m.to_vec(),
        None => {
            let mut m: Vec<bool> = out.iter().map(|_| rng.coin()).collect();
            let k = rng.range(0, out.len() as u64 - 1) as usize;
            m[k] = true;
            m
        }
    };
    out.iter().zip(pick).map(|(&d, one)| if one { 1 } else { d }).collect()
}

/// A trailing part of `out` (at least one leading dim dropped), maybe with 1s.
fn low_rank(rng: &mut Rng, out: &[u64]) -> Vec<u64> {
    let drop = rng.range(1, out.len() as u64 - 1) as usize;
    let s = out[drop..].to_vec();
    if rng.coin() {
        with_ones(rng, &s, None)
    } else {
        s
    }
}

/// A nonzero divisor: ±[0.5, 2).
fn divisor(rng: &mut Rng) -> f32 {
    let v = rng.uniform(0.5, 2.0);
    signed(rng, v)
}

#[test]
fn binary_broadcasting() {
    if !have_gpu("binary") {
        return;
    }
    let mut rng = rng("binary");
    let mut worst = Worst::default();
    let mut suite = Suite::new("binary", 8);
    for op in [Op::Add, Op::Sub, Op::Mul, Op::Div] {
        for pattern in BCASTS {
            let rank = rng.range(1, 4) as usize;
            let rank = if matches!(pattern, Bcast::LowRankLhs | Bcast::LowRankRhs | Bcast::OnesBoth) {
                rank.max(2)
            } else {
                rank
            };
            let out = shape(&mut rng, rank, 20_000);
            let (sa, sb): (Option<Vec<u64>>, Option<Vec<u64>>) = match pattern {
                Bcast::Same => (Some(out.clone()), Some(out.clone())),
                Bcast::ScalarConstRhs => (Some(out.clone()), None),
                Bcast::ScalarConstLhs => (None, Some(out.clone())),
                Bcast::OnesRhs => (Some(out.clone()), Some(with_ones(&mut rng, &out, None))),
                Bcast::OnesLhs => (Some(with_ones(&mut rng, &out, None)), Some(out.clone())),
                Bcast::OnesBoth => {
                    let mut m: Vec<bool> = out.iter().map(|_| rng.coin()).collect();
                    m[0] = true;
                    m[rank - 1] = false;
                    let inv: Vec<bool> = m.iter().map(|b| !b).collect();
                    (Some(with_ones(&mut rng, &out, Some(&m))), Some(with_ones(&mut rng, &out, Some(&inv))))
                }
                Bcast::LowRankRhs => (Some(out.clone()), Some(low_rank(&mut rng, &out))),
                Bcast::LowRankLhs => (Some(low_rank(&mut rng, &out)), Some(out.clone())),
                Bcast::OneElementRhs => (Some(out.clone()), Some(vec![1])),
            };
            let mut c = suite.case(format!("{op} {pattern:?} {sa:?} {sb:?}"));
            let a = match &sa {
                Some(s) => {
                    let v: Vec<f32> = (0..numel(s)).map(|_| 3.0 * rng.normal()).collect();
                    c.data("a", s, &v)
                }
                None => c.constant("a", f64::from(3.0 * rng.normal())),
            };
            let b = match &sb {
                Some(s) => {
                    let v: Vec<f32> = (0..numel(s))
                        .map(|_| if op == Op::Div { divisor(&mut rng) } else { 3.0 * rng.normal() })
                        .collect();
                    c.data("b", s, &v)
                }
                None => c.constant("b", f64::from(divisor(&mut rng))),
            };
            let y = c.push("y", op.clone(), &[a, b]);
            c.done(y, format!("{op}"), ROUNDED);
        }
    }
    // Broadcasting on a 2-D grid (> 65535 workgroups).
    let s = [65, 64_600];
    let mut c = suite.case(format!("add{s:?} + [1, {}] (2-D grid)", s[1]));
    let a = c.data("a", &s, &rng.normals(numel(&s)));
    let b = c.data("b", &[1, s[1]], &rng.normals(s[1] as usize));
    let y = c.push("y", Op::Add, &[a, b]);
    c.done(y, "add (2-D grid)", ROUNDED);
    suite.check(&TWO, &mut worst);
    worst.print("binary");
}

// ---- reductions -------------------------------------------------------------------------

fn reduce_op(kind: usize, axis: u32) -> Op {
    match kind {
        0 => Op::ReduceSum { axis },
        1 => Op::ReduceMean { axis },
        _ => Op::ReduceMax { axis },
    }
}

#[test]
fn reductions_over_every_axis() {
    if !have_gpu("reduce") {
        return;
    }
    let mut rng = rng("reduce");
    let mut worst = Worst::default();
    let mut suite = Suite::new("reduce", 8);
    for kind in 0..3 {
        for rank in 1..=4u32 {
            for axis in 0..rank {
                let s = shape(&mut rng, rank as usize, 20_000);
                let op = reduce_op(kind, axis);
                let mut c = suite.case(format!("{op}(axis {axis}){s:?}"));
                let x = c.data("x", &s, &rng.normals(numel(&s)));
                let y = c.push("y", op.clone(), &[x]);
                c.done(y, op.name(), REDUCTION);
            }
        }
        // A long axis: f32 sums drift from the CPU's f64 ones.
        let s = [3, 20_001];
        let op = reduce_op(kind, 1);
        let mut c = suite.case(format!("{op}(axis 1){s:?}"));
        let v: Vec<f32> = (0..numel(&s)).map(|_| 1.0 + rng.normal()).collect();
        let x = c.data("x", &s, &v);
        let y = c.push("y", op.clone(), &[x]);
        c.done(y, op.name(), REDUCTION);
    }
    suite.check(&TWO, &mut worst);
    worst.print("reduce");
}

#[test]
fn argmax_over_every_axis() {
    if !have_gpu("argmax") {
        return;
    }
    let mut rng = rng("argmax");
    let mut worst = Worst::default();
    let mut suite = Suite::new("argmax", 8);
    for rank in 1..=4u32 {
        for axis in 0..rank {
            for ties in [false, true] {
                let s = shape(&mut rng, rank as usize, 20_000);
                let mut c = suite.case(format!("argmax(axis {axis}){s:?}{}", if ties { " with ties" } else { "" }));
                // With ties, values are small integers, so the first maximum must win.
                let v: Vec<f32> =
                    (0..numel(&s)).map(|_| if ties { rng.range(0, 3) as f32 - 3.0 } else { rng.normal() }).collect();
                let x = c.data("x", &s, &v);
                let y = c.push("y", Op::ArgMax { axis }, &[x]);
                c.done(y, "argmax", EXACT);
            }
        }
    }
    suite.check(&TWO, &mut worst);
    worst.print("argmax");
}
