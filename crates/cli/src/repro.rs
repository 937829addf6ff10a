//! `check --repro DIR` writes the culprit's dispatch as a minimized model; `check DIR` re-runs it.
//!
//! The directory holds `manifest.json` (level, position, token, fault, the verdict to expect),
//! `graph.json` (the dispatch's nodes; every value they read from outside is a weight leaf
//! `captured.<name>` holding the CPU's value at that position; model weights, constants,
//! inputs and cache state leaves are kept) and one raw little-endian file per tensor. Cache
//! state starts empty in the repro: what the dispatch writes at the position is what both
//! sides compare, so the verdict reproduces.

use anyhow::{bail, Context, Result};
use apr_ir::fuse::{fuse, OptLevel};
use apr_ir::{DType, Dim, Graph, GraphBuilder, NodeId, Op, TensorType};
use apr_ir_check::checker::Culprit;
use apr_ir_cpu::{Capture, Interpreter, WeightSource};
use apr_ir_model::Model;
use apr_ir_wgpu::{Fault, FaultKind, WeightBytes};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";

#[derive(Serialize, Deserialize)]
struct Manifest {
    /// What this directory is.
    kind: String,
    opt_level: u8,
    position: u32,
    token: u32,
    /// The injected fault, if the original run had one: node name and kind.
    fault: Option<(String, String)>,
    /// The culprit the original run named, and why.
    expect_node: String,
    expect_cause: String,
    /// Tensor name → file in this directory.
    tensors: BTreeMap<String, String>,
}

/// Tensors of the repro, by name.
struct Tensors(HashMap<String, Vec<u8>>);

impl WeightSource for Tensors {
    fn tensor_bytes(&self, name: &str) -> Result<&[u8], String> {
        self.0.get(name).map(Vec::as_slice).ok_or_else(|| format!("the repro has no tensor {name}"))
    }
}

impl WeightBytes for Tensors {
    fn bytes(&self, tensor: &str) -> Result<&[u8], String> {
        self.tensor_bytes(tensor)
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Write the repro of `culprit` (found at -O`level`, with `fault` injected) to `dir`.
pub fn write(
    dir: &Path,
    g: &Graph,
    model: &Model,
    level: OptLevel,
    fault: Option<Fault>,
    culprit: &Culprit,
    prompt: &[u32],
) -> Result<()> {
    // The CPU's values at the culprit's position: replay the stream the check used.
    let (groups, _) = fuse(g, level)?;
    let grp = groups.get(culprit.dispatch).context("culprit dispatch out of range")?;
    let mut interp = Interpreter::new(g, model)?;
    let logits = g.outputs.first().map(|o| o.node);
    let mut token = prompt.first().copied().unwrap_or(0);
    let mut values = HashMap::new();
    let mut at_token = token;
    for pos in 0..=culprit.position {
        let r = interp.step(token, pos, &Capture::All)?;
        at_token = token;
        token = match prompt.get(pos as usize + 1) {
            Some(&t) => t,
            None => logits
                .and_then(|l| r.captured.get(&l))
                .and_then(|t| t.as_f32())
                .map_or(0, |v| v.iter().enumerate().fold(0, |b, (i, &x)| if x > v[b] { i } else { b }) as u32),
        };
        values = r.captured;
    }
    let ctx = u64::from(culprit.position) + 1;
    let mut b = GraphBuilder::new(g.meta.clone());
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let mut tensors: HashMap<String, Vec<u8>> = HashMap::new();
    for &c in &grp.covers {
        let n = g.node(c).context("covered node")?;
        let mut inputs = Vec::new();
        for &i in &n.inputs {
            if let Some(&m) = map.get(&i) {
                inputs.push(m);
                continue;
            }
            let src = g.node(i).context("operand")?;
            let new = if src.op.is_leaf() {
                if let Op::Weight { tensor } = &src.op {
                    tensors.insert(tensor.clone(), model.tensor_bytes(tensor)?.to_vec());
                }
                b.leaf(src.name.clone(), src.op.clone(), src.ty.clone())?
            } else {
                // A value computed elsewhere: the CPU's value, as an f32 weight of its shape
                // at this position (views take their source's elements).
                let mut s = i;
                while !values.contains_key(&s) {
                    match g.node(s).map(|n| (&n.op, n.inputs.first())) {
                        Some((Op::Reshape { .. }, Some(&x))) => s = x,
                        _ => bail!("no CPU value for {} to put in the repro", src.name),
                    }
                }
                let v = values.get(&s).and_then(|t| t.as_f32()).context("captured value is not f32")?;
                let dims: Vec<u64> = src
                    .ty
                    .shape
                    .iter()
                    .map(|d| match d {
                        Dim::Const(n) => *n,
                        Dim::Sym(_) => ctx,
                    })
                    .collect();
                let name = format!("captured.{}", src.name);
                tensors.insert(name.clone(), f32_bytes(v));
                b.leaf(name.clone(), Op::Weight { tensor: name }, TensorType::new(DType::F32, &dims))?
            };
            map.insert(i, new);
            inputs.push(new);
        }
        let id = b.push(n.name.clone(), n.op.clone(), &inputs)?;
        map.insert(c, id);
    }
    for &o in &grp.outputs {
        if let (Some(&m), Some(n)) = (map.get(&o), g.node(o)) {
            b.output(n.name.clone(), m);
        }
    }
    let sub = b.finish().context("building the repro graph")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = BTreeMap::new();
    for (k, (name, bytes)) in tensors.iter().enumerate() {
        let file = format!("t{k}.bin");
        std::fs::write(dir.join(&file), bytes).with_context(|| format!("writing {}", dir.join(&file).display()))?;
        files.insert(name.clone(), file);
    }
    std::fs::write(dir.join("graph.json"), sub.to_json()).context("writing graph.json")?;
    let manifest = Manifest {
        kind: "apr-ir check repro".into(),
        opt_level: level.number(),
        position: culprit.position,
        token: at_token,
        fault: fault.and_then(|f| g.node(f.node).map(|n| (n.name.clone(), f.kind.name().to_string()))),
        expect_node: culprit.name.clone(),
        expect_cause: format!("{:?}", culprit.cause).to_lowercase(),
        tensors: files,
    };
    std::fs::write(dir.join(MANIFEST), serde_json::to_string_pretty(&manifest)?).context("writing the manifest")?;
    println!("repro: {} ({} nodes, {} tensors)", dir.display(), sub.nodes.len(), tensors.len());
    Ok(())
}

/// `apr-ir check DIR`: re-run a repro; `Ok(true)` when parity holds.
pub fn check_repro(
    dir: &Path,
    json: &Option<PathBuf>,
    html: &Option<PathBuf>,
    junit: &Option<PathBuf>,
) -> Result<bool> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).with_context(|| format!("reading {}", dir.display()))?;
    let m: Manifest = serde_json::from_str(&text).context("the repro manifest is not valid")?;
    let graph_text = std::fs::read_to_string(dir.join("graph.json")).context("reading graph.json")?;
    let g = Graph::from_json(&graph_text).context("the repro graph")?;
    let mut tensors = HashMap::new();
    for (name, file) in &m.tensors {
        if file.contains('/') || file.contains("..") {
            bail!("the repro manifest names a file outside its directory: {file}");
        }
        tensors.insert(name.clone(), std::fs::read(dir.join(file)).with_context(|| format!("reading {file}"))?);
    }
    let tensors = Tensors(tensors);
    let level = OptLevel::from_number(m.opt_level).context("the manifest's level")?;
    let fault = match &m.fault {
        Some((node, kind)) => {
            g.find(node).map(|id| FaultKind::parse(kind).map(|k| Fault { node: id, kind: k })).unwrap_or(None)
        }
        None => None,
    };
    println!("repro of {} ({}) at position {}, -O{}", m.expect_node, m.expect_cause, m.position, m.opt_level);
    let report = crate::cmd::check::run_check(&g, &tensors, &tensors, level, fault, &[m.token], m.position, 1)?;
    print!("{}", apr_ir_check::report::summary(&report));
    crate::cmd::check::write_reports(&g, &report, json, html, &None, junit)?;
    Ok(report.culprit.is_none())
}
