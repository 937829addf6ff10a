#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]
//! Matrix products: packed weights of every dtype (whole and split across bindings), f32 right
//! operands transposed or not, batched or shared.

use super::*;

#[test]
fn matmul_packed_weight_every_dtype() {
    if !have_gpu("matmul_packed") {
        return;
    }
    let mut rng = rng("matmul_packed");
    let mut worst = Worst::default();
    for (opts, tag, dtypes) in f16_paths() {
        let mut suite = Suite::new(format!("matmul_packed{tag}"), 8);
        for &dtype in dtypes {
            // (batch dims of x, M): decoding (M = 1), a few rows (the 4-row path and its tail),
            // batched x against the shared weight.
            let layouts: [(Vec<u64>, u64); 3] =
                [(vec![], 1), (vec![], rng.pick(&[2, 3, 5, 7])), (vec![rng.range(2, 3)], rng.pick(&[1, 2, 5]))];
            for (batch, m) in layouts {
                let k = inner_dim(&mut rng, dtype);
                let n = rng.pick(&SIZES);
                let mut xs = batch.clone();
                xs.extend([m, k]);
                let mut c = suite.case(format!("matmul x{xs:?} · {dtype}[{n}, {k}]ᵀ{tag}"));
                let x = c.data("x", &xs, &rng.normals(numel(&xs)));
                let w = c.weight("w", dtype, &[n, k], &rng.normals((n * k) as usize));
                let y = c.push("y", Op::MatMul { transpose_rhs: true }, &[x, w]);
                c.done(y, format!("matmul {dtype}{tag}"), MATMUL);
            }
        }
        suite.check_with(&TWO, &mut worst, &opts);
    }
    worst.print("matmul_packed");
}

/// Weights split by rows across bindings (a pretend binding limit of 4 KiB): one dispatch per
/// piece for matmul and gather.
#[test]
fn packed_weights_split_across_bindings() {
    if !have_gpu("split") {
        return;
    }
    let mut rng = rng("split");
    let mut worst = Worst::default();
    // The limit caps every buffer, activations too: they stay under it.
    let limit = 4096;
    let vocab = 7;
    // F16 rows of an odd K are 2 bytes past a multiple of 4: a piece is padded to whole words
    // (or vec2<f16> pairs on the f16 path).
    let cases = [
        (DType::F32, rng.pick(&[63, 65, 257])),
        (DType::F16, rng.pick(&[63, 65, 257])),
        (DType::Q8_0, 288),
        (DType::Q4K, 512),
        (DType::Q6K, 256),
    ];
    for (path_opts, tag, dtypes) in f16_paths() {
        let opts = GpuOptions { max_binding_override: Some(limit), ..path_opts };
        let mut suite = Suite::new(format!("split{tag}"), 8);
        for (dtype, k) in cases.into_iter().filter(|(d, _)| dtypes.contains(d)) {
            let rows = limit / dtype.bytes_for(k).unwrap_or(1);
            let n = (rows * rng.range(2, 3) + rng.range(1, rows - 1)).max(vocab);
            let mut c = suite.case(format!("matmul x[2, {k}] · {dtype}[{n}, {k}]ᵀ, {rows} rows a binding{tag}"));
            let x = c.data("x", &[2, k], &rng.normals(2 * k as usize));
            let w = c.weight("w", dtype, &[n, k], &rng.normals((n * k) as usize));
            let y = c.push("y", Op::MatMul { transpose_rhs: true }, &[x, w]);
            c.done(y, format!("matmul split {dtype}{tag}"), MATMUL);

            let mut c = suite.case(format!("gather {dtype}[{n}, {k}], {rows} rows a binding{tag}"));
            let t = c.weight("table", dtype, &[n, k], &rng.normals((n * k) as usize));
            let tok = c.input(InputKind::Token);
            let y = c.push("y", Op::Gather, &[t, tok]);
            c.done(y, format!("gather split {dtype}{tag}"), EXACT);

            // Two ids at once, falling into different pieces.
            let mut c =
                suite.case(format!("gather {dtype}[{n}, {k}] by argmax of [2, {n}], {rows} rows a binding{tag}"));
            let t = c.weight("table", dtype, &[n, k], &rng.normals((n * k) as usize));
            let x = c.data("x", &[2, n], &rng.normals(2 * n as usize));
            let am = c.push("am", Op::ArgMax { axis: 1 }, &[x]);
            let ids = c.push("ids", Op::Reshape { shape: dims(&[2]) }, &[am]);
            let y = c.push("y", Op::Gather, &[t, ids]);
            c.done(y, format!("gather split {dtype}{tag}"), EXACT);
        }
        let st = steps(&mut rng, 4, vocab);
        suite.check_with(&st, &mut worst, &opts);
    }
    worst.print("split");
}

#[test]
fn matmul_f32_rhs() {
    if !have_gpu("matmul_f32") {
        return;
    }
    let mut rng = rng("matmul_f32");
    let mut worst = Worst::default();
    let mut suite = Suite::new("matmul_f32", 8);
    // (batch dims of x, the rhs is batched, transposed, the rhs is a weight rather than computed)
    let cases: [(&[u64], bool, bool, bool); 11] = [
        (&[], false, false, false),
        (&[], false, true, false),
        (&[3], true, true, false),
        (&[3], true, false, false),
        (&[2], false, true, false),
        (&[5], false, false, false),
        (&[2, 3], true, true, false),
        (&[3, 2], true, false, false),
        (&[2, 3], false, false, false),
        (&[3], true, true, true),
        (&[2, 2], true, true, true),
    ];
    for (batch, rhs_batched, transpose_rhs, rhs_weight) in cases {
        for long_k in [false, true] {
            // K past one workgroup's 64 threads at least once per pattern.
            let k = if long_k { rng.pick(&[65, 130]) } else { rng.pick(&SIZES) };
            let (m, n) = (rng.pick(&SIZES), rng.pick(&SIZES));
            let mut xs = batch.to_vec();
            xs.extend([m, k]);
            let mut bs = if rhs_batched { batch.to_vec() } else { vec![] };
            bs.extend(if transpose_rhs { [n, k] } else { [k, n] });
            let how = if rhs_weight { "weight" } else { "computed" };
            let mut c = suite.case(format!("matmul x{xs:?} · {how} {bs:?}{}", if transpose_rhs { "ᵀ" } else { "" }));
            let x = c.data("x", &xs, &rng.normals(numel(&xs)));
            let b = if rhs_weight {
                c.data("b", &bs, &rng.normals(numel(&bs)))
            } else {
                // A computed rhs: a reshape of a flat weight.
                let flat = c.data("b_flat", &[numel(&bs) as u64], &rng.normals(numel(&bs)));
                c.push("b", Op::Reshape { shape: dims(&bs) }, &[flat])
            };
            let y = c.push("y", Op::MatMul { transpose_rhs }, &[x, b]);
            let key = format!(
                "matmul f32 {} {}{}",
                if rhs_weight { "weight" } else { "computed" },
                if rhs_batched { "batched" } else { "shared" },
                if transpose_rhs { " ᵀ" } else { "" }
            );
            c.done(y, key, MATMUL);
        }
    }
    suite.check(&TWO, &mut worst);
    // The IR allows these; a backend may refuse them (printed as a gap), not get them wrong.
    let (m, k, n) = (rng.pick(&[1, 3]), rng.pick(&[3, 65]), rng.pick(&[5, 63]));
    let mut suite = Suite::new(format!("matmul x[{m}, {k}] · f32 weight [{k}, {n}] (not transposed)"), 8);
    let mut c = suite.case("matmul f32 weight, not transposed");
    let x = c.data("x", &[m, k], &rng.normals((m * k) as usize));
    let b = c.data("b", &[k, n], &rng.normals((k * n) as usize));
    let y = c.push("y", Op::MatMul { transpose_rhs: false }, &[x, b]);
    c.done(y, "matmul f32 weight (not transposed)", MATMUL);
    suite.check_or_refused(&TWO, &mut worst);
    for dtype in [DType::F16, DType::Q8_0] {
        let (bt, m, k, n) = (2, rng.pick(&[1, 3]), 64, rng.pick(&[5, 63]));
        let mut suite = Suite::new(format!("matmul x[{bt}, {m}, {k}] · {dtype} weight [{bt}, {n}, {k}]ᵀ (batched)"), 8);
        let mut c = suite.case(format!("matmul batched {dtype} weight"));
        let x = c.data("x", &[bt, m, k], &rng.normals((bt * m * k) as usize));
        let b = c.weight("b", dtype, &[bt, n, k], &rng.normals((bt * n * k) as usize));
        let y = c.push("y", Op::MatMul { transpose_rhs: true }, &[x, b]);
        c.done(y, format!("matmul batched {dtype} weight"), MATMUL);
        suite.check_or_refused(&TWO, &mut worst);
    }
    worst.print("matmul_f32");
}
