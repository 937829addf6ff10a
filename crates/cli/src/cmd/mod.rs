//! One module per subcommand.
pub mod bench;
pub mod compile;
pub mod dot;
pub mod inspect;
pub mod run;
pub mod synth;

use anyhow::{bail, Result};

/// Optimization levels that exist today. Fusion (-O1, -O2) arrives with the fusion
/// compiler; until then asking for it is an error rather than a silent -O0.
pub fn check_opt_level(level: u8) -> Result<u8> {
    match level {
        0 => Ok(0),
        1 | 2 => bail!("-O{level} needs the fusion compiler, which this build does not have yet; use -O0"),
        _ => bail!("-O{level} is not a level (0, 1, 2)"),
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
