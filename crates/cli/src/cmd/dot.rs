//! `apr-ir dot`: Graphviz DOT of the IR, whole or filtered.

use crate::load::Source;
use anyhow::{Context, Result};
use apr_ir::dot::{to_dot, Cluster, DotOptions};
use apr_ir::fuse::fuse;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// Optimization level whose dispatch groups are drawn as clusters.
    #[arg(short = 'O', default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    opt: u8,
    /// Only the nodes of this layer.
    #[arg(long)]
    layer: Option<u32>,
    /// Only the neighbourhood of this node (id like %12, or name).
    #[arg(long)]
    around: Option<String>,
    /// Neighbourhood radius for --around, in edges.
    #[arg(long, default_value_t = 2)]
    radius: u32,
    /// Draw this node (id or name) in red.
    #[arg(long)]
    highlight: Option<String>,
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let level = super::opt_level(args.opt)?;
    let g = args.source.load()?.graph;
    let (groups, _) = fuse(&g, level).context("fusing the graph")?;
    let find = |key: &str| {
        g.find(key).with_context(|| format!("no node {key:?} in the graph (give an id like %12 or a node name)"))
    };
    let around = match &args.around {
        Some(k) => Some((find(k)?, args.radius)),
        None => None,
    };
    let highlight = match &args.highlight {
        Some(k) => Some(find(k)?),
        None => None,
    };
    if let Some(layer) = args.layer {
        let n_layers = g.meta.extra.get("n_layers").and_then(|v| v.as_u64());
        if n_layers.is_some_and(|n| u64::from(layer) >= n) {
            anyhow::bail!("--layer {layer} is out of range: the model has {} layers", n_layers.unwrap_or(0));
        }
    }
    // Fused groups become clusters; single-node groups need no box.
    let clusters = groups
        .into_iter()
        .enumerate()
        .filter(|(_, grp)| grp.covers.len() > 1)
        .map(|(k, grp)| Cluster { label: format!("dispatch {k}: {}", grp.kernel.name()), nodes: grp.covers })
        .collect();
    let dot = to_dot(&g, &DotOptions { layer: args.layer, around, highlight, clusters });
    match &args.output {
        Some(path) => std::fs::write(path, dot).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{dot}"),
    }
    Ok(())
}
