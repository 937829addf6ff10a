//! The naming convention for nodes.
//!
//! Lowerings name per-layer nodes `blk.{layer}.{part}[.{step}]` (the GGUF tensor naming),
//! so the layer of a node can be read off its name. Names are stable: the same model and
//! options always give the same names, so reports, repro files and user scripts can refer
//! to nodes by name across compiles.

/// The layer a node belongs to, if its name follows `blk.{layer}.…`.
pub fn layer_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("blk.")?;
    let (num, _) = rest.split_once('.')?;
    num.parse().ok()
}

/// The name prefix of a layer's nodes.
pub fn layer_prefix(layer: u32) -> String {
    format!("blk.{layer}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_read_off_names() {
        assert_eq!(layer_of("blk.12.attn_q"), Some(12));
        assert_eq!(layer_of("blk.3.ffn_norm.mean"), Some(3));
        assert_eq!(layer_of("blk.x.attn_q"), None);
        assert_eq!(layer_of("output_norm.mean"), None);
        assert_eq!(layer_of("blk.7"), None);
    }
}
