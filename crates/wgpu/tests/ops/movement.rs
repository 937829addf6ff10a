#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]
//! Movement: reshape, slice (constant and ctx-long), gather.

use super::*;

#[test]
fn reshape() {
    if !have_gpu("reshape") {
        return;
    }
    let mut rng = rng("reshape");
    let mut worst = Worst::default();
    let mut suite = Suite::new("reshape", 8);
    for k in 0..3 {
        let (a, b, cc) = (rng.pick(&SIZES), rng.pick(&SIZES), rng.pick(&[1, 2, 3, 7, 31]));
        if k == 0 {
            // The graph's output is the reshape itself, a view of a weight (read back whole).
            let mut c = suite.case(format!("reshape [{a}, {}] → [{a}, {b}, {cc}]", b * cc));
            let x = c.data("x", &[a, b * cc], &rng.normals((a * b * cc) as usize));
            let y = c.push("y", Op::Reshape { shape: dims(&[a, b, cc]) }, &[x]);
            c.done(y, "reshape (view of a weight)", EXACT);
        }
        // A reshape of a computed value changes how the next op broadcasts.
        let mut c = suite.case(format!("neg [{a}, {}] → reshape [{a}, {b}, {cc}] + [{b}, 1]", b * cc));
        let x = c.data("x", &[a, b * cc], &rng.normals((a * b * cc) as usize));
        let bias = c.data("bias", &[b, 1], &rng.normals(b as usize));
        let n = c.push("n", Op::Neg, &[x]);
        let r = c.push("r", Op::Reshape { shape: dims(&[a, b, cc]) }, &[n]);
        let y = c.push("y", Op::Add, &[r, bias]);
        c.done(y, "reshape → add", ROUNDED);
        // And how a reduction sees its axes.
        let mut c = suite.case(format!("neg [{a}, {b}, {cc}] → reshape [{}, {cc}] → reduce_max(0)", a * b));
        let x = c.data("x", &[a, b, cc], &rng.normals((a * b * cc) as usize));
        let n = c.push("n", Op::Neg, &[x]);
        let r = c.push("r", Op::Reshape { shape: dims(&[a * b, cc]) }, &[n]);
        let y = c.push("y", Op::ReduceMax { axis: 0 }, &[r]);
        c.done(y, "reshape → reduce_max", EXACT);
    }
    suite.check(&TWO, &mut worst);
    worst.print("reshape");
}

#[test]
fn slice_constant_and_ctx() {
    if !have_gpu("slice") {
        return;
    }
    let mut rng = rng("slice");
    let mut worst = Worst::default();
    let max_ctx = 9;
    let mut suite = Suite::new("slice", max_ctx);
    // Constant slices along every axis of rank 1..4 values (weights and computed ones).
    for rank in 1..=4u32 {
        for axis in 0..rank {
            let mut s = shape(&mut rng, rank as usize, 20_000);
            s[axis as usize] = s[axis as usize].max(2) + rng.range(0, 3);
            let full = s[axis as usize];
            let start = rng.range(0, full - 1);
            let len = rng.range(1, full - start);
            let computed = rng.coin();
            let mut c =
                suite.case(format!("slice {}{s:?} axis {axis} [{start}, +{len})", if computed { "neg" } else { "" }));
            let mut x = c.data("x", &s, &rng.normals(numel(&s)));
            if computed {
                x = c.push("n", Op::Neg, &[x]);
            }
            let y = c.push("y", Op::Slice { axis, start, len: Dim::Const(len) }, &[x]);
            c.done(y, "slice const", EXACT);
        }
    }
    // ctx-long slices of a constant axis at least max_ctx long.
    for axis in 0..3u32 {
        let mut s = shape(&mut rng, 3, 5_000);
        s[axis as usize] = max_ctx + rng.range(0, 2);
        let mut c = suite.case(format!("slice {s:?} axis {axis} [0, +ctx)"));
        let x = c.data("x", &s, &rng.normals(numel(&s)));
        let y = c.push("y", Op::Slice { axis, start: 0, len: Dim::CTX }, &[x]);
        c.done(y, "slice ctx", EXACT);
    }
    // A constant slice of a ctx-shaped value (its input dims carry the ctx sentinel).
    let s = [3, max_ctx, 65];
    let mut c = suite.case(format!("slice axis 1 ctx, then axis 2 [5, +40) of {s:?}"));
    let x = c.data("x", &s, &rng.normals(numel(&s)));
    let v = c.push("view", Op::Slice { axis: 1, start: 0, len: Dim::CTX }, &[x]);
    let y = c.push("y", Op::Slice { axis: 2, start: 5, len: Dim::Const(40) }, &[v]);
    c.done(y, "slice of a ctx view", EXACT);
    // A slice of an i32 value (argmax indices travel as bit patterns).
    let s = [5, 7, 65];
    let mut c = suite.case(format!("slice of argmax(axis 2){s:?}"));
    let x = c.data("x", &s, &rng.normals(numel(&s)));
    let am = c.push("am", Op::ArgMax { axis: 2 }, &[x]);
    let y = c.push("y", Op::Slice { axis: 1, start: 2, len: Dim::Const(4) }, &[am]);
    c.done(y, "slice i32", EXACT);
    let st = steps(&mut rng, max_ctx as u32, 1);
    suite.check(&st, &mut worst);
    worst.print("slice");
}

#[test]
fn gather_from_every_dtype() {
    if !have_gpu("gather") {
        return;
    }
    let mut rng = rng("gather");
    let mut worst = Worst::default();
    // The token picks the row: tables have at least `vocab` rows.
    let vocab = 7;
    for (opts, tag, dtypes) in f16_paths() {
        let mut suite = Suite::new(format!("gather{tag}"), 8);
        for &dtype in dtypes {
            let rows = rng.pick(&[7, 65, 130]);
            let cols = inner_dim(&mut rng, dtype);
            let mut c = suite.case(format!("gather {dtype}[{rows}, {cols}] by token{tag}"));
            let t = c.weight("table", dtype, &[rows, cols], &rng.normals((rows * cols) as usize));
            let tok = c.input(InputKind::Token);
            let y = c.push("y", Op::Gather, &[t, tok]);
            c.done(y, format!("gather {dtype}{tag}"), EXACT);
            // Many ids at once: argmax rows → reshape to i32[n] → gather.
            let (n, rows) = (rng.pick(&[2, 5, 65]), rng.pick(&[1, 3, 31, 65]));
            let mut c = suite.case(format!("gather {dtype}[{rows}, {cols}] by argmax of [{n}, {rows}]{tag}"));
            let t = c.weight("table", dtype, &[rows, cols], &rng.normals((rows * cols) as usize));
            let x = c.data("x", &[n, rows], &rng.normals((n * rows) as usize));
            let am = c.push("am", Op::ArgMax { axis: 1 }, &[x]);
            let ids = c.push("ids", Op::Reshape { shape: dims(&[n]) }, &[am]);
            let y = c.push("y", Op::Gather, &[t, ids]);
            c.done(y, format!("gather {dtype}{tag}"), EXACT);
        }
        let st = steps(&mut rng, 4, vocab);
        suite.check_with(&st, &mut worst, &opts);
    }
    worst.print("gather");
}
