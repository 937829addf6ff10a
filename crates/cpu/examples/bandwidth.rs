//! This machine's memory read bandwidth: the number the matvec kernels are judged against.
//!
//! Sums a large array of u64 (default 2 GiB, far beyond any cache) with 1 and 2 threads (or
//! `--threads N`), each thread streaming one contiguous share, best of `--reps` passes, and
//! prints GB/s (10⁹ bytes per second). The sum is integer and wrapping, so the compiler
//! vectorizes it and the loop is limited by memory, not by arithmetic.
//!
//! ```text
//! cargo run --release -p apr-ir-cpu --example bandwidth [-- --gib 2 --reps 5 --threads 1,2]
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use rayon::prelude::*;
use std::time::Instant;

/// Eight independent accumulators: enough to keep the loads in flight.
fn sum(xs: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = xs.chunks_exact(8);
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &b| a.wrapping_add(b));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(v);
        }
    }
    acc.iter().fold(tail, |a, &b| a.wrapping_add(b))
}

/// `--name value` from the command line.
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Best read bandwidth of `reps` passes over `data` with `threads` threads, in GB/s.
fn measure(data: &[u64], threads: usize, reps: usize) -> Result<f64, rayon::ThreadPoolBuildError> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let share = data.len().div_ceil(threads);
    let mut best = f64::INFINITY;
    let mut check = 0u64;
    for _ in 0..reps {
        let t = Instant::now();
        let s = pool.install(|| data.par_chunks(share).map(sum).reduce(|| 0, u64::wrapping_add));
        best = best.min(t.elapsed().as_secs_f64());
        check = check.wrapping_add(s);
    }
    std::hint::black_box(check);
    Ok((data.len() * 8) as f64 / best / 1e9)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gib: f64 = arg("--gib").map_or(Ok(2.0), |s| s.parse())?;
    let reps: usize = arg("--reps").map_or(Ok(5), |s| s.parse())?;
    let threads: Vec<usize> =
        arg("--threads").unwrap_or_else(|| "1,2".into()).split(',').map(str::parse).collect::<Result<_, _>>()?;
    let n = (gib * (1u64 << 30) as f64 / 8.0) as usize;
    // Touch every page (in parallel, so first-touch spreads like the reads do).
    let mut data = vec![0u64; n];
    data.par_iter_mut().enumerate().for_each(|(i, v)| *v = i as u64);
    println!("array: {:.2} GiB, best of {reps}", (n * 8) as f64 / (1u64 << 30) as f64);
    for t in threads {
        println!("read bandwidth, {t} thread(s): {:.2} GB/s", measure(&data, t, reps)?);
    }
    Ok(())
}
