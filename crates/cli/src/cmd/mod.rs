//! One module per subcommand.
pub mod bench;
pub mod check;
pub mod compile;
pub mod dot;
pub mod inspect;
pub mod run;
pub mod synth;

use anyhow::{bail, Result};

/// The optimization level `-O N` names.
pub fn opt_level(level: u8) -> Result<apr_ir::fuse::OptLevel> {
    match apr_ir::fuse::OptLevel::from_number(level) {
        Some(l) => Ok(l),
        None => bail!("-O{level} is not a level (0, 1, 2)"),
    }
}

/// Human-readable bytes.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
