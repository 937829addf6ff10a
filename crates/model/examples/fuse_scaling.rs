//! Compile time against depth: lower synth Qwen2.5-7B Q4_K_M shapes with 1–112 layers and
//! time `fuse` at -O1 and -O2 (best of 5 each). Fusion saturates one e-graph per layer, so
//! the time should grow linearly with the layer count.
//!
//! ```text
//! cargo run --release -p apr-ir-model --example fuse_scaling
//! ```

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use apr_ir::fuse::{fuse, OptLevel};
use apr_ir_model::lower::{lower, Arch, LowerOptions};
use apr_ir_model::synth::{Preset, SynthQuant, SynthSpec};
use std::time::Instant;

fn main() {
    let spec = SynthSpec { arch: Arch::Qwen2, preset: Preset::Qwen25_7B, quant: SynthQuant::Q4KM, seed: 0 };
    let base = spec.table();
    println!(
        "{:>7} {:>7} {:>10} {:>10} {:>10} {:>10} {:>13}",
        "layers", "nodes", "-O1 ms", "-O2 ms", "-O1 disp", "-O2 disp", "-O2 µs/layer"
    );
    for layers in [1u32, 2, 4, 7, 14, 28, 56, 112] {
        let mut params = spec.params();
        params.n_layers = layers;
        // Layers past the preset's 28 reuse layer 0's tensor shapes.
        let mut table = base.clone();
        for l in 28..layers {
            for (name, e) in &base.tensors {
                if let Some(rest) = name.strip_prefix("blk.0.") {
                    table.insert(format!("blk.{l}.{rest}"), e.dtype.clone(), e.shape.clone());
                }
            }
        }
        let g = lower(&params, &table, &LowerOptions { name: "scaling".into(), max_ctx: None }).expect("lowering");
        let time = |level| {
            let mut best = f64::INFINITY;
            let mut n = 0;
            for _ in 0..5 {
                let t = Instant::now();
                let (groups, _) = fuse(&g, level).expect("fusion");
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
                n = groups.len();
            }
            (best, n)
        };
        let ((t1, n1), (t2, n2)) = (time(OptLevel::O1), time(OptLevel::O2));
        println!(
            "{layers:>7} {:>7} {t1:>10.1} {t2:>10.1} {n1:>10} {n2:>10} {:>13.0}",
            g.nodes.len(),
            t2 * 1e3 / f64::from(layers)
        );
    }
}
