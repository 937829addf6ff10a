#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]
//! The kernels that read packed weights (`cast`, `gather`, `matvec` over `dequant.wgsl`), for
//! every dtype: naga validates each assembled source, and on a real adapter (Mesa's lavapipe in
//! CI) they are held to the CPU reference `apr_ir_model::quant`: cast and gather bit for bit,
//! matvec within a relative L2 error of 1e-5 of an f64 dot product of the dequantized weights.
//!
//! F16 weights run on both of their paths: `f16` storage on a device with `SHADER_F16` (where
//! the adapter has it; the tests fail if such an adapter does not give it) and u32 words on a
//! device opened with `no_f16`. Every other dtype runs on the default device.
//!
//! Shapes and data are random per run; the seed is printed (`PACKED_KERNELS_SEED=N` replays it).
//! Without an adapter the GPU tests print a skip note, or fail when `CI=true`.

#[path = "packed/harness.rs"]
mod harness;

use apr_ir::DType;
use apr_ir_model::quant;
use apr_ir_wgpu::kernels::{dequantizer, native_f16, source, source_for, Family};
use harness::{grid, Dispatch, Gpu, Rng};

/// Every dtype that holds reals (all but i32, which has no codec).
const DTYPES: [DType; 11] = DType::REALS;

/// Written into output buffers first, so an element the kernel failed to write shows (a NaN).
const POISON: u32 = 0xffff_ffff;

/// Workgroups per grid row: usually the hardware limit, now and then small to force 2-D grids.
fn max_x(rng: &mut Rng) -> u32 {
    if rng.range(0, 3) == 0 {
        rng.range(1, 4) as u32
    } else {
        65535
    }
}

fn seeded(test: &str) -> Rng {
    let seed = harness::seed();
    println!("{test}: seed {seed} (PACKED_KERNELS_SEED={seed} replays it)");
    Rng::new(seed)
}

/// `n` test values: normal, scaled per 256 elements by a base that cycles through 1, 100, 0.01,
/// 1e-6 (f16 subnormals, and k-quant super-block scales that are f16 subnormals) and 0 (an
/// all-zero block), and per 32 elements by a factor from 0.001 to 3 (sub-blocks of different
/// ranges); one in sixteen values is an exact zero.
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    const BASES: [f64; 5] = [1.0, 100.0, 0.01, 1e-6, 0.0];
    const FACTORS: [f64; 4] = [1.0, 0.1, 3.0, 0.001];
    let first = rng.range(0, BASES.len() - 1);
    (0..n)
        .map(|i| {
            let base = BASES[(first + i / 256) % BASES.len()];
            let factor = FACTORS[(i / 32 * 7 + first) % FACTORS.len()];
            if rng.range(0, 15) == 0 {
                0.0
            } else {
                (rng.normal() * base * factor) as f32
            }
        })
        .collect()
}

/// A row length for `dtype`: whole blocks, a few of them; any length for the plain types.
fn cols_for(rng: &mut Rng, dtype: DType) -> usize {
    match dtype.block_len() {
        1 => rng.range(1, 300),
        32 => 32 * rng.range(1, 12),
        _ => 256 * rng.range(1, 3),
    }
}

fn pack(dtype: DType, v: &[f32]) -> Vec<u8> {
    let mut bytes = vec![0; dtype.bytes_for(v.len() as u64).unwrap() as usize];
    quant::quantize(dtype, v, &mut bytes).unwrap();
    bytes
}

fn unpack(dtype: DType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut v = vec![0.0; n];
    quant::dequantize(dtype, bytes, &mut v).unwrap();
    v
}

fn row_bytes(dtype: DType, cols: usize) -> usize {
    dtype.bytes_for(cols as u64).unwrap() as usize
}

fn poisoned(gpu: &Gpu, n: usize) -> wgpu::Buffer {
    gpu.floats(&vec![f32::from_bits(POISON); n])
}

/// The first element whose bits differ, as a message.
fn first_bit_mismatch(got: &[f32], want: &[f32]) -> Option<String> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g.to_bits() != w.to_bits())
        .map(|(i, (g, w))| format!("element {i}: gpu {g:e} ({:#010x}), cpu {w:e} ({:#010x})", g.to_bits(), w.to_bits()))
}

/// The (device, dtype) pairs a GPU test runs: the default device (F16 weights as `f16` storage
/// where the adapter has `SHADER_F16`) with every dtype, and a device opened with `no_f16` with
/// F16 again (u32 words). Fails when a device took the other path.
fn devices(test: &str) -> Option<Vec<(&'static Gpu, DType)>> {
    let (gpu, words) = (harness::gpu()?, harness::gpu_without_f16()?);
    let has = harness::adapter_has_shader_f16();
    let features = |g: &Gpu| g.device.features().contains(wgpu::Features::SHADER_F16);
    assert_eq!(gpu.f16, has, "{test}: the adapter's SHADER_F16 is {has}, but the device is {}", gpu.adapter);
    assert!(!gpu.f16 || features(gpu), "{test}: the f16 path on a device without SHADER_F16");
    assert!(!words.f16 && !features(words), "{test}: a device opened with no_f16 has SHADER_F16");
    if !has {
        println!("{test}: the adapter has no SHADER_F16: F16 runs on the u32 path only");
    }
    Some(DTYPES.iter().map(|&d| (gpu, d)).chain([(words, DType::F16)]).collect())
}

/// How `gpu` reads `dtype` weights, for case labels.
fn path(gpu: &Gpu, dtype: DType) -> &'static str {
    if native_f16(Family::Cast, Some(dtype), gpu.f16) {
        "f16 storage"
    } else {
        "u32 words"
    }
}

/// Report every dtype's failures together, with the seed's line above them.
fn finish(test: &str, failures: Vec<String>) {
    assert!(failures.is_empty(), "{test}: {} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_packed_kernel_validates_for_every_dtype() {
    let families: Vec<Family> = Family::ALL.into_iter().filter(|f| f.packed()).collect();
    assert_eq!(families, [Family::Matvec, Family::Gather, Family::Cast]);
    let mut failures = Vec::new();
    for family in families {
        for dtype in DType::ALL {
            // The u32 path with no capability at all, and the sources for a device with
            // SHADER_F16 with naga's SHADER_FLOAT16 (the capability wgpu grants with it).
            for shader_f16 in [false, true] {
                let native = native_f16(family, Some(dtype), shader_f16);
                let src = source_for(family, Some(dtype), shader_f16);
                let case = format!("{family:?} {dtype}{}", if native { " (f16 storage)" } else { "" });
                assert!(src.contains(dequantizer(dtype)), "{case}: DQ not replaced");
                let module = match naga::front::wgsl::parse_str(&src) {
                    Ok(m) => m,
                    Err(e) => {
                        failures.push(format!("{case}: parse: {}", e.emit_to_string(&src)));
                        continue;
                    }
                };
                let caps = if shader_f16 {
                    naga::valid::Capabilities::SHADER_FLOAT16
                } else {
                    naga::valid::Capabilities::empty()
                };
                let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
                if let Err(e) = validator.validate(&module) {
                    failures.push(format!("{case}: validate: {}", e.emit_to_string(&src)));
                }
                // The f16 variant really uses f16: without the capability naga refuses it.
                let mut without = naga::valid::Validator::new(
                    naga::valid::ValidationFlags::all(),
                    naga::valid::Capabilities::empty(),
                );
                if native && without.validate(&module).is_ok() {
                    failures.push(format!("{case}: validates without SHADER_FLOAT16"));
                }
            }
        }
    }
    finish("validate", failures);
}

#[test]
fn cast_equals_cpu_dequantize_bit_for_bit() {
    let Some(devices) = devices("cast") else { return };
    let mut rng = seeded("cast");
    let mut failures = Vec::new();
    for (gpu, dtype) in devices {
        let cols = cols_for(&mut rng, dtype);
        let rows = rng.range(1, 9);
        let n = rows * cols;
        let bytes = pack(dtype, &values(&mut rng, n));
        let want = unpack(dtype, &bytes, n);

        let kernel = gpu.kernel(&format!("cast {dtype}"), &source_for(Family::Cast, Some(dtype), gpu.f16), 4);
        let (step, prm, w) = (gpu.step(0), gpu.words(&[n as u32]), gpu.storage(&bytes));
        // 64 spare elements: threads past the count must not write.
        let out = poisoned(gpu, n + 64);
        let grid = grid((n as u32).div_ceil(64), max_x(&mut rng));
        gpu.run(&[Dispatch { kernel: &kernel, buffers: vec![&step, &prm, &w, &out], grid }]);
        let got = gpu.read_f32(&out, n + 64);

        let case = format!("{dtype} ({}) {rows}x{cols} grid {grid:?}", path(gpu, dtype));
        if let Some(m) = first_bit_mismatch(&got[..n], &want) {
            failures.push(format!("{case}: {m}"));
        }
        if got[n..].iter().any(|v| v.to_bits() != POISON) {
            failures.push(format!("{case}: wrote past the element count"));
        }
    }
    finish("cast", failures);
}

/// Every f16 bit pattern (zeros, subnormals, normals, infinities, NaNs), cast on each F16 path,
/// equals the CPU's conversion bit for bit; on the f16 path a NaN only has to stay a NaN (its
/// payload is the device's `f32(h)`), and how many payloads differ is printed.
#[test]
fn f16_every_bit_pattern_bit_for_bit() {
    let Some(devices) = devices("f16 patterns") else { return };
    let n = 1usize << 16;
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let want = unpack(DType::F16, &bytes, n);
    let mut failures = Vec::new();
    for (gpu, _) in devices.into_iter().filter(|&(_, d)| d == DType::F16) {
        let kernel = gpu.kernel("cast f16 patterns", &source_for(Family::Cast, Some(DType::F16), gpu.f16), 4);
        let (step, prm, w, out) = (gpu.step(0), gpu.words(&[n as u32]), gpu.storage(&bytes), poisoned(gpu, n));
        let grid = grid((n / 64) as u32, 65535);
        gpu.run(&[Dispatch { kernel: &kernel, buffers: vec![&step, &prm, &w, &out], grid }]);
        let got = gpu.read_f32(&out, n);
        let path = path(gpu, DType::F16);
        let mut payloads = 0;
        for (h, (g, c)) in got.iter().zip(&want).enumerate() {
            if g.to_bits() == c.to_bits() {
                continue;
            }
            if c.is_nan() && g.is_nan() && gpu.f16 {
                payloads += 1;
            } else if failures.len() < 20 {
                failures.push(format!(
                    "{path}: f16 {h:#06x}: gpu {g:e} ({:#010x}), cpu {c:e} ({:#010x})",
                    g.to_bits(),
                    c.to_bits()
                ));
            }
        }
        println!("f16 patterns: {} ({path}): {payloads} of 2046 NaN payloads differ from the CPU's", gpu.adapter);
    }
    finish("f16 patterns", failures);
}

#[test]
fn gather_equals_dequantized_rows_whole_and_split() {
    let Some(devices) = devices("gather") else { return };
    let mut rng = seeded("gather");
    let mut failures = Vec::new();
    for (gpu, dtype) in devices {
        let cols = cols_for(&mut rng, dtype);
        let rows = rng.range(2, 12);
        let bytes = pack(dtype, &values(&mut rng, rows * cols));
        let table = unpack(dtype, &bytes, rows * cols);
        // The first and the last row, then random ones (repeats allowed).
        let mut ids = vec![0_i32, rows as i32 - 1];
        for _ in 0..rng.range(1, 5) {
            ids.push(rng.range(0, rows - 1) as i32);
        }
        let n = ids.len() * cols;
        let want: Vec<f32> = ids.iter().flat_map(|&id| &table[id as usize * cols..][..cols]).copied().collect();

        let kernel = gpu.kernel(&format!("gather {dtype}"), &source_for(Family::Gather, Some(dtype), gpu.f16), 5);
        let step = gpu.step(0);
        let ids_buf = gpu.storage(&ids.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>());
        let grid = grid((n as u32).div_ceil(64), max_x(&mut rng));
        let prm = |row0: usize, piece_rows: usize| {
            gpu.words(&[ids.len() as u32, cols as u32, row0 as u32, piece_rows as u32])
        };
        let case = format!("{dtype} ({}) table {rows}x{cols} ids {ids:?} grid {grid:?}", path(gpu, dtype));

        // The whole table in one buffer.
        let (prm_all, w_all, out) = (prm(0, rows), gpu.storage(&bytes), poisoned(gpu, n));
        gpu.run(&[Dispatch { kernel: &kernel, buffers: vec![&step, &prm_all, &ids_buf, &w_all, &out], grid }]);
        if let Some(m) = first_bit_mismatch(&gpu.read_f32(&out, n), &want) {
            failures.push(format!("{case} whole: {m}"));
        }

        // Split at row p: the second piece alone writes exactly the output rows whose id ≥ p,
        // then the first piece fills in the rest.
        let p = rng.range(1, rows - 1);
        let split = p * row_bytes(dtype, cols);
        let (prm_a, w_a) = (prm(0, p), gpu.storage(&bytes[..split]));
        let (prm_b, w_b) = (prm(p, rows - p), gpu.storage(&bytes[split..]));
        let out = poisoned(gpu, n);
        gpu.run(&[Dispatch { kernel: &kernel, buffers: vec![&step, &prm_b, &ids_buf, &w_b, &out], grid }]);
        let partial: Vec<f32> = ids
            .iter()
            .zip(want.chunks_exact(cols))
            .flat_map(|(&id, row)| if id as usize >= p { row.to_vec() } else { vec![f32::from_bits(POISON); cols] })
            .collect();
        if let Some(m) = first_bit_mismatch(&gpu.read_f32(&out, n), &partial) {
            failures.push(format!("{case} split at {p}, second piece only: {m}"));
        }
        gpu.run(&[Dispatch { kernel: &kernel, buffers: vec![&step, &prm_a, &ids_buf, &w_a, &out], grid }]);
        if let Some(m) = first_bit_mismatch(&gpu.read_f32(&out, n), &want) {
            failures.push(format!("{case} split at {p}: {m}"));
        }
    }
    finish("gather", failures);
}

#[test]
fn matvec_matches_f64_reference_whole_and_split() {
    let Some(devices) = devices("matvec") else { return };
    let mut rng = seeded("matvec");
    let mut failures = Vec::new();
    for (gpu, dtype) in devices {
        let k = match dtype.block_len() {
            1 => rng.range(1, 600),
            32 => 32 * rng.range(1, 16),
            _ => 256 * rng.range(1, 3),
        };
        let n = 2 * rng.range(8, 20) + 1;
        let bytes = pack(dtype, &values(&mut rng, n * k));
        let wf = unpack(dtype, &bytes, n * k);
        let kernel = gpu.kernel(&format!("matvec {dtype}"), &source_for(Family::Matvec, Some(dtype), gpu.f16), 5);
        let step = gpu.step(0);
        let w_all = gpu.storage(&bytes);
        let p = rng.range(1, n - 1);
        let split = p * row_bytes(dtype, k);
        let (w_a, w_b) = (gpu.storage(&bytes[..split]), gpu.storage(&bytes[split..]));

        // M = 5 takes the rows of x in two groups of four.
        for m in [1, 3, 5] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let want: Vec<f64> = (0..m * n)
                .map(|t| {
                    let (row, col) = (t / n, t % n);
                    let xs = &x[row * k..][..k];
                    let ws = &wf[col * k..][..k];
                    xs.iter().zip(ws).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum()
                })
                .collect();
            let x_buf = gpu.floats(&x);
            let prm = |row0: usize, rows: usize| gpu.words(&[m as u32, k as u32, n as u32, row0 as u32, rows as u32]);
            let max_x = max_x(&mut rng);
            let case = format!("{dtype} ({}) M={m} N={n} K={k} max_x {max_x}", path(gpu, dtype));

            let (prm_all, out) = (prm(0, n), poisoned(gpu, m * n));
            let g = grid(n as u32, max_x);
            gpu.run(&[Dispatch { kernel: &kernel, buffers: vec![&step, &prm_all, &x_buf, &w_all, &out], grid: g }]);
            if let Some(why) = compare(&gpu.read_f32(&out, m * n), &want) {
                failures.push(format!("{case} whole: {why}"));
            }

            let (prm_a, prm_b, out) = (prm(0, p), prm(p, n - p), poisoned(gpu, m * n));
            gpu.run(&[
                Dispatch {
                    kernel: &kernel,
                    buffers: vec![&step, &prm_a, &x_buf, &w_a, &out],
                    grid: grid(p as u32, max_x),
                },
                Dispatch {
                    kernel: &kernel,
                    buffers: vec![&step, &prm_b, &x_buf, &w_b, &out],
                    grid: grid((n - p) as u32, max_x),
                },
            ]);
            if let Some(why) = compare(&gpu.read_f32(&out, m * n), &want) {
                failures.push(format!("{case} split at {p}: {why}"));
            }
        }
    }
    finish("matvec", failures);
}

/// Relative L2 error of `got` against `want`, with every value finite (no poison left).
fn compare(got: &[f32], want: &[f64]) -> Option<String> {
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        return Some(format!("element {i} is {} (not written?)", got[i]));
    }
    let err: f64 = got.iter().zip(want).map(|(&g, &w)| (f64::from(g) - w).powi(2)).sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    let rel = (err / norm.max(f64::MIN_POSITIVE)).sqrt();
    (rel >= 1e-5).then(|| format!("relative L2 error {rel:e} ≥ 1e-5"))
}

/// Throughput of the packed matvec at a decode shape (M = 1; by default Qwen2.5-7B's FFN,
/// N = 18944, K = 3584, or `PACKED_BENCH_NK=NxK`), for the GPU machine:
/// `cargo test --release --test packed_kernels -- --ignored --nocapture`. Each timing is one
/// pass of 20 dispatches after a quarter-second warm-up, over weight copies that together
/// exceed the L2 cache; the median of 5 is printed, in µs and weight GB/s, with the result
/// checked against an f64 reference. On a device with `SHADER_F16` the built-in F16 kernel reads
/// `f16` storage, and F16 is timed on the u32 path too. `PACKED_BENCH_KERNELS=DIR[:DIR…]` also times each
/// `DIR/{common,dequant,matvec}.wgsl` (variants under study; `DQ(` is replaced as
/// `kernels::source` does) in the same process, on the same card and clocks as the built-in one.
#[test]
#[ignore = "a benchmark, minutes on lavapipe"]
fn matvec_throughput() {
    let Some(gpu) = harness::gpu() else { return };
    let mut rng = seeded("matvec throughput");
    let shape = std::env::var("PACKED_BENCH_NK").unwrap_or_else(|_| "18944x3584".into());
    let (n, k) = shape.split_once('x').map(|(n, k)| (n.parse().unwrap(), k.parse().unwrap())).unwrap();
    let reps = 20;
    let xs: Vec<f32> = (0..k).map(|_| rng.normal() as f32).collect();
    let x = gpu.floats(&xs);
    let (step, out) = (gpu.step(0), poisoned(gpu, n));
    let prm = gpu.words(&[1, k as u32, n as u32, 0, n as u32]);
    let v = values(&mut rng, n * k);
    let variants: Vec<(String, String)> = std::env::var("PACKED_BENCH_KERNELS")
        .unwrap_or_default()
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| {
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
            (dir.to_string(), read("common.wgsl") + &read("dequant.wgsl") + &read("matvec.wgsl"))
        })
        .collect();
    for dtype in [DType::Q4K, DType::Q5K, DType::Q6K, DType::Q8_0, DType::Q4_0, DType::F16, DType::F32] {
        let bytes = pack(dtype, &v);
        let wf = unpack(dtype, &bytes, n * k);
        let want: Vec<f64> = wf
            .chunks_exact(k)
            .map(|row| row.iter().zip(&xs).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum())
            .collect();
        let copies = (256_usize << 20).div_ceil(bytes.len()).max(2);
        let ws: Vec<wgpu::Buffer> = (0..copies).map(|_| gpu.storage(&bytes)).collect();
        let mut sources = vec![("built-in".to_string(), source_for(Family::Matvec, Some(dtype), gpu.f16))];
        if native_f16(Family::Matvec, Some(dtype), gpu.f16) {
            // The u32 path too, on the same device and clocks.
            sources.push(("u32 words".to_string(), source(Family::Matvec, Some(dtype))));
        }
        for (dir, src) in &variants {
            sources.push((dir.clone(), src.replace("DQ(", &format!("{}(", dequantizer(dtype)))));
        }
        for (name, src) in &sources {
            let kernel = gpu.kernel(&format!("matvec {dtype}"), src, 5);
            let all: Vec<Dispatch> = (0..reps)
                .map(|r| Dispatch {
                    kernel: &kernel,
                    buffers: vec![&step, &prm, &x, &ws[r % copies], &out],
                    grid: grid(n as u32, 65535),
                })
                .collect();
            // Warm up for a quarter of a second: clocks ramp up, pipelines settle.
            let warm = std::time::Instant::now();
            while warm.elapsed().as_secs_f64() < 0.25 {
                gpu.run(&all);
            }
            let mut times: Vec<f64> = (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    gpu.run(&all);
                    t.elapsed().as_secs_f64() / reps as f64
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let secs = times[2];
            let check = compare(&gpu.read_f32(&out, n), &want).unwrap_or_else(|| "ok".into());
            println!(
                "matvec {dtype:>5} {n}x{k} {name:>10}: {:8.1} µs, {:7.1} GB/s of weights ({check})",
                secs * 1e6,
                bytes.len() as f64 / secs / 1e9
            );
        }
    }
}
