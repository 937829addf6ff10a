//! This machine's memory read bandwidth: the number the matvec kernels are judged against.
//!
//! Sums a large array of u64 (default 2 GiB, far beyond any cache) with 1 and 2 threads (or
//! `--threads N`), each thread streaming one contiguous share, best of `--reps` passes, and
//! prints GB/s (10⁹ bytes per second): `apr_ir_cpu::bandwidth`, which `apr-ir bench
//! --backend cpu` also runs.
//!
//! ```text
//! cargo run --release -p apr-ir-cpu --example bandwidth [-- --gib 2 --reps 5 --threads 1,2]
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use apr_ir_cpu::bandwidth::{array, measure};

/// `--name value` from the command line.
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gib: f64 = arg("--gib").map_or(Ok(2.0), |s| s.parse())?;
    let reps: usize = arg("--reps").map_or(Ok(5), |s| s.parse())?;
    let threads: Vec<usize> =
        arg("--threads").unwrap_or_else(|| "1,2".into()).split(',').map(str::parse).collect::<Result<_, _>>()?;
    let data = array((gib * (1u64 << 30) as f64) as usize).ok_or("not enough memory for the array")?;
    println!("array: {:.2} GiB, best of {reps}", (data.len() * 8) as f64 / (1u64 << 30) as f64);
    for t in threads {
        println!("read bandwidth, {t} thread(s): {:.2} GB/s", measure(&data, t, reps)?);
    }
    Ok(())
}
