//! `apr-ir dot`: whole graphs that Graphviz renders, and the filters (`--layer`, `--around`,
//! `--highlight`), checked against the graph structure of `compile -o`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::names::layer_of;
use apr_ir_tests::{
    all_fixtures, apr_ir, compile_to_json, gguf_fixtures, graphviz_available, par_map, run_within, tool_or_skip,
    Fixture, TempDir, DEFAULT_TIMEOUT,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// A node statement of the DOT output.
#[derive(Debug, Clone)]
struct DotNode {
    id: u64,
    name: String,
    /// Drawn as a boundary node (an operand from outside the selection): dashed, grey text.
    boundary: bool,
    dashed: bool,
    red: bool,
}

/// The node statements and edges of a DOT file written by `apr-ir dot`.
#[derive(Debug)]
struct Dot {
    nodes: BTreeMap<u64, DotNode>,
    edges: BTreeSet<(u64, u64)>,
}

fn parse_dot(text: &str) -> Dot {
    assert!(text.starts_with("digraph "), "not a digraph: {}", &text[..text.len().min(80)]);
    assert!(text.trim_end().ends_with('}'), "unterminated digraph");
    let mut nodes = BTreeMap::new();
    let mut edges = BTreeSet::new();
    let id_of = |s: &str| s.trim().strip_prefix('n').and_then(|d| d.parse::<u64>().ok());
    for line in text.lines().map(str::trim) {
        if let Some((from, rest)) = line.split_once(" -> ") {
            let to = rest.split([' ', ';']).next().unwrap();
            edges.insert((
                id_of(from).unwrap_or_else(|| panic!("edge {line}")),
                id_of(to).unwrap_or_else(|| panic!("edge {line}")),
            ));
        } else if let Some((head, rest)) = line.split_once(" [label=\"") {
            let Some(id) = id_of(head) else { continue };
            // The label's first line is `%ID NAME`; DOT escapes the newline as `\n`.
            let first = rest.split("\\n").next().unwrap();
            let (pid, name) = first.split_once(' ').unwrap_or_else(|| panic!("label {line}"));
            assert_eq!(pid, format!("%{id}"), "{line}");
            // Attributes follow the label; the first one is `shape`.
            let attrs = rest.split_once("\", shape=").map(|(_, a)| a).unwrap_or_else(|| panic!("attrs of {line}"));
            let dashed = attrs.contains("dashed");
            let boundary = attrs.contains("fontcolor=\"#777777\"");
            let red = attrs.contains("fillcolor=\"#ff6666\"") && attrs.contains("color=\"#cc0000\"");
            let prev = nodes.insert(id, DotNode { id, name: name.to_string(), boundary, dashed, red });
            assert!(prev.is_none(), "node n{id} drawn twice");
        }
    }
    for (a, b) in &edges {
        assert!(nodes.contains_key(a) && nodes.contains_key(b), "edge n{a} -> n{b} has an undrawn end");
    }
    Dot { nodes, edges }
}

/// `apr-ir dot MODEL ARGS -o <dir>/<name>.dot`, checked to succeed; the DOT text.
fn dot(model: &Path, args: &[&str], dir: &TempDir, name: &str) -> String {
    let out = dir.join(&format!("{name}.dot"));
    let mut all: Vec<&OsStr> = vec![OsStr::new("dot"), model.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    all.extend([OsStr::new("-o"), out.as_os_str()]);
    let run = apr_ir(&all);
    assert!(run.ok().is_empty(), "{run:#?}\nwith -o nothing goes to stdout");
    std::fs::read_to_string(&out).unwrap()
}

fn render_svg(fx: &Fixture, dir: &TempDir, dot_text: &str) {
    let dot_path = dir.join("g.dot");
    std::fs::write(&dot_path, dot_text).unwrap();
    let svg = dir.join("g.svg");
    let mut cmd = Command::new("dot");
    cmd.arg("-Tsvg").arg(&dot_path).arg("-o").arg(&svg);
    let run = run_within(cmd, DEFAULT_TIMEOUT);
    assert_eq!(run.code, Some(0), "{}: Graphviz rejected the DOT: {run:#?}", fx.label());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg"), "{}: no <svg in Graphviz output", fx.label());
}

#[test]
fn every_fixture_draws_and_graphviz_renders_it() {
    let render =
        tool_or_skip("Graphviz `dot`", graphviz_available(), "apt-get install graphviz", "rendering DOT to SVG");
    par_map(&all_fixtures(), |fx| {
        let dir = TempDir::new(&format!("dot-{}", fx.label()));
        let text = dot(&fx.path, &[], &dir, "all");
        let d = parse_dot(&text);
        let (_, ir) = compile_to_json(&fx.path, &dir, "ir");
        assert_eq!(d.nodes.len(), ir.nodes.len(), "{}: the whole graph is drawn", fx.label());
        assert!(
            d.nodes.values().all(|n| !n.boundary && !n.red),
            "{}: no boundary or highlighted node without a filter",
            fx.label()
        );
        let edges: usize = ir.nodes.iter().map(|n| n.inputs.iter().collect::<BTreeSet<_>>().len()).sum();
        assert_eq!(d.edges.len(), edges, "{}: one edge per distinct operand", fx.label());
        if render {
            render_svg(fx, &dir, &text);
        }
    });
}

fn qwen2_fixture() -> Fixture {
    gguf_fixtures().into_iter().find(|f| f.label() == "qwen2-q4_k").unwrap()
}

#[test]
fn layer_filter_draws_one_layer_and_its_boundary() {
    let fx = qwen2_fixture();
    let dir = TempDir::new("dot-layer");
    let (_, ir) = compile_to_json(&fx.path, &dir, "ir");
    let d = parse_dot(&dot(&fx.path, &["--layer", "1"], &dir, "layer1"));
    let layer1: BTreeSet<u64> = ir.nodes.iter().filter(|n| layer_of(&n.name) == Some(1)).map(|n| n.id).collect();
    assert!(layer1.len() > 30, "{} layer-1 nodes", layer1.len());
    for n in d.nodes.values() {
        assert_eq!(n.name, ir.node(n.id).name, "label of n{}", n.id);
        if layer_of(&n.name) == Some(1) {
            assert!(!n.boundary, "{} is in layer 1 but drawn as a boundary node", n.name);
        } else {
            assert!(n.boundary && n.dashed, "{} is not in layer 1 and not a dashed boundary node", n.name);
            assert!(
                ir.users(n.id).iter().any(|u| layer1.contains(u)),
                "boundary node {} feeds no layer-1 node",
                n.name
            );
        }
    }
    let drawn_layer1: BTreeSet<u64> = d.nodes.values().filter(|n| !n.boundary).map(|n| n.id).collect();
    assert_eq!(drawn_layer1, layer1, "every layer-1 node, and only those, drawn solid");
    // The residual stream enters from layer 0.
    assert!(d.nodes.values().any(|n| n.boundary && layer_of(&n.name) == Some(0)), "no layer-0 boundary node");

    let run = apr_ir([OsStr::new("dot"), fx.path.as_os_str(), OsStr::new("--layer"), OsStr::new("2")]);
    assert!(run.one_line_error().contains("--layer 2"), "{run:#?}");
}

#[test]
fn around_draws_a_neighbourhood() {
    let fx = qwen2_fixture();
    let dir = TempDir::new("dot-around");
    let (_, ir) = compile_to_json(&fx.path, &dir, "ir");
    let center = ir.by_name("blk.0.attn.softmax");
    let mut near: BTreeSet<u64> = center.inputs.iter().copied().collect();
    near.extend(ir.users(center.id));
    near.insert(center.id);

    let d = parse_dot(&dot(&fx.path, &["--around", "blk.0.attn.softmax", "--radius", "1"], &dir, "around"));
    let solid: BTreeSet<u64> = d.nodes.values().filter(|n| !n.boundary).map(|n| n.id).collect();
    assert_eq!(solid, near, "the node and its direct neighbours");
    for n in d.nodes.values().filter(|n| n.boundary) {
        assert!(n.dashed, "{}", n.name);
        assert!(
            ir.users(n.id).iter().any(|u| near.contains(u)),
            "boundary node {} is not an operand of the neighbourhood",
            n.name
        );
    }
    assert!(d.nodes.len() < 12, "{} nodes drawn for radius 1", d.nodes.len());
    assert!(
        !d.nodes.values().any(|n| layer_of(&n.name) == Some(1) || n.name.starts_with("output")),
        "far nodes drawn: {:?}",
        d.nodes
    );

    // By id as well as by name; a wider radius draws more.
    let by_id =
        parse_dot(&dot(&fx.path, &["--around", &format!("%{}", center.id), "--radius", "1"], &dir, "around-id"));
    assert_eq!(by_id.nodes.keys().collect::<Vec<_>>(), d.nodes.keys().collect::<Vec<_>>());
    let wider = parse_dot(&dot(&fx.path, &["--around", "blk.0.attn.softmax", "--radius", "3"], &dir, "around3"));
    assert!(wider.nodes.len() > d.nodes.len());
}

#[test]
fn highlight_draws_one_node_red() {
    let fx = qwen2_fixture();
    let dir = TempDir::new("dot-highlight");
    for (args, want) in [
        (vec!["--highlight", "blk.1.ffn_swiglu"], "blk.1.ffn_swiglu"),
        (vec!["--layer", "0", "--highlight", "blk.0.attn_norm.rsqrt"], "blk.0.attn_norm.rsqrt"),
        (vec!["--highlight", "%3"], "inp_embd"),
    ] {
        let d = parse_dot(&dot(&fx.path, &args, &dir, "hl"));
        let red: Vec<&DotNode> = d.nodes.values().filter(|n| n.red).collect();
        assert_eq!(red.len(), 1, "{args:?}: exactly one red node, got {red:?}");
        assert_eq!(red[0].name, want, "{args:?}");
    }
}

#[test]
fn unknown_nodes_are_one_line_errors() {
    let fx = qwen2_fixture();
    for flag in ["--around", "--highlight"] {
        let run = apr_ir([OsStr::new("dot"), fx.path.as_os_str(), OsStr::new(flag), OsStr::new("blk.0.no_such_node")]);
        let line = run.one_line_error();
        assert!(line.contains("blk.0.no_such_node"), "{run:#?}");
        assert!(run.stdout.is_empty(), "{run:#?}\nnothing on stdout");
    }
    let run = apr_ir([OsStr::new("dot"), fx.path.as_os_str(), OsStr::new("--highlight"), OsStr::new("%99999")]);
    run.one_line_error();
}

/// `dot -O2` draws each fused dispatch as a cluster holding exactly the nodes it covers
/// (per `compile -O2 -o`), labelled with its kernel; -O0 draws none.
#[test]
fn fusion_groups_are_clusters() {
    let fx = qwen2_fixture();
    let dir = TempDir::new("dot-clusters");
    let (_, ir) = apr_ir_tests::compile_to_json_at(&fx.path, &dir, "o2", Some(2));
    let fused: Vec<BTreeSet<u64>> =
        ir.dispatches.iter().filter(|d| d.covers.len() > 1).map(|d| d.covers.iter().copied().collect()).collect();
    assert!(fused.len() >= 2 * 8, "qwen2 fixture at -O2: {} fused dispatches", fused.len());
    let text = dot(&fx.path, &["-O2"], &dir, "o2");
    let mut clusters: Vec<BTreeSet<u64>> = Vec::new();
    let mut current: Option<BTreeSet<u64>> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("subgraph cluster_") {
            current = Some(BTreeSet::new());
        } else if line == "}" {
            if let Some(c) = current.take() {
                clusters.push(c);
            }
        } else if let Some(c) = current.as_mut() {
            if let Some(id) =
                line.split([' ', '[', ';']).next().and_then(|h| h.strip_prefix('n')).and_then(|d| d.parse().ok())
            {
                c.insert(id);
            }
        }
    }
    assert_eq!(clusters, fused, "one cluster per fused dispatch, holding what it covers");
    for kind in ["attention", "rms_norm", "matvec_add", "rope_cache_write"] {
        assert!(text.contains(kind), "no {kind} cluster label");
    }
    parse_dot(&text);
    if graphviz_available() {
        render_svg(&fx, &dir, &text);
    }
    let plain = dot(&fx.path, &["-O0"], &dir, "o0");
    assert!(!plain.contains("subgraph cluster_"), "-O0 has no fused dispatch");
}
