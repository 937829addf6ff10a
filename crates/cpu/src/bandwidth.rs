//! This machine's memory read bandwidth: the roofline CPU decode is judged against (a decode
//! step reads every weight matrix once, so weight bytes per token over seconds per token is
//! the bandwidth it achieves).
//!
//! A large array of u64 (far beyond any cache) is summed by each of `threads` threads over one
//! contiguous share, best of several passes. The sum is integer and wrapping with eight
//! independent accumulators, so it vectorizes and the loop is limited by memory, not by
//! arithmetic.

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

/// An array to measure with: `bytes` rounded down to whole u64, every page touched (in
/// parallel, so first touch spreads like the reads do). `None` if the memory is not there.
pub fn array(bytes: usize) -> Option<Vec<u64>> {
    let n = bytes / 8;
    let mut data = Vec::new();
    data.try_reserve_exact(n).ok()?;
    data.resize(n, 0);
    data.par_iter_mut().enumerate().for_each(|(i, v)| *v = i as u64);
    Some(data)
}

/// Best read bandwidth of `reps` passes over `data` with `threads` threads, in GB/s (10⁹ bytes
/// per second).
pub fn measure(data: &[u64], threads: usize, reps: usize) -> Result<f64, rayon::ThreadPoolBuildError> {
    let threads = threads.max(1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let share = data.len().div_ceil(threads).max(1);
    let mut best = f64::INFINITY;
    let mut check = 0u64;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let s = pool.install(|| data.par_chunks(share).map(sum).reduce(|| 0, u64::wrapping_add));
        best = best.min(t.elapsed().as_secs_f64());
        check = check.wrapping_add(s);
    }
    std::hint::black_box(check);
    Ok((data.len() * 8) as f64 / best / 1e9)
}
