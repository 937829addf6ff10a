#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! `verify` rejects each kind of broken graph with an error that names the problem.

use apr_ir::{DType, Dim, Graph, GraphBuilder, GraphMeta, InputKind, NodeId, Op, TensorType};

fn base() -> Graph {
    let meta = GraphMeta { name: "t".into(), arch: "test".into(), max_ctx: 4, extra: Default::default() };
    let mut b = GraphBuilder::new(meta);
    let tok = b.leaf("token", Op::Input { kind: InputKind::Token }, TensorType::new(DType::I32, &[1])).unwrap();
    let pos = b.leaf("pos", Op::Input { kind: InputKind::Position }, TensorType::new(DType::I32, &[1])).unwrap();
    let tbl = b.leaf("tbl", Op::Weight { tensor: "tbl".into() }, TensorType::new(DType::F32, &[5, 8])).unwrap();
    let x = b.push("x", Op::Gather, &[tbl, tok]).unwrap();
    let y = b.push("y", Op::Mul, &[x, x]).unwrap();
    let cache = b.leaf("cache", Op::State, TensorType::new(DType::F32, &[4, 8])).unwrap();
    let w = b.push("w", Op::CacheWrite { axis: 0 }, &[cache, y, pos]).unwrap();
    let v = b.push("v", Op::Slice { axis: 0, start: 0, len: Dim::CTX }, &[w]).unwrap();
    b.output("out", v);
    b.finish().unwrap()
}

fn expect_err(g: &Graph, needle: &str) {
    let err = g.verify().expect_err("graph should not verify").to_string();
    assert!(err.contains(needle), "error {err:?} does not mention {needle:?}");
    // The same graph must not sneak through the text or JSON readers either.
    assert!(Graph::from_json(&serde_json::to_string(g).unwrap()).is_err());
}

#[test]
fn base_graph_verifies() {
    base().verify().unwrap();
}

#[test]
fn rejects_wrong_declared_type() {
    let mut g = base();
    g.nodes[4].ty = TensorType::new(DType::F32, &[1, 9]);
    expect_err(&g, "declared type f32[1,9]");
}

#[test]
fn rejects_forward_reference() {
    let mut g = base();
    g.nodes[4].inputs = vec![NodeId(5), NodeId(3)];
    expect_err(&g, "is not an earlier node");
}

#[test]
fn rejects_duplicate_names() {
    let mut g = base();
    g.nodes[4].name = "x".into();
    expect_err(&g, "is used by node %3");
}

#[test]
fn rejects_wrong_arity() {
    let mut g = base();
    g.nodes[4].inputs = vec![NodeId(3)];
    expect_err(&g, "takes 2..=2 operands");
}

#[test]
fn rejects_cache_shorter_than_max_ctx() {
    let mut g = base();
    g.meta.max_ctx = 5;
    expect_err(&g, "shorter than max_ctx");
}

#[test]
fn rejects_write_to_non_state() {
    let mut g = base();
    g.nodes[5].op = Op::Weight { tensor: "cache".into() };
    expect_err(&g, "not a state");
}

#[test]
fn rejects_partial_quant_blocks_and_bad_consts() {
    let mut g = base();
    g.nodes[2].ty = TensorType::new(DType::Q8_0, &[5, 8]);
    expect_err(&g, "not whole q8_0 blocks");
    let mut g = base();
    g.nodes[0].op = Op::Const { value: f64::INFINITY };
    expect_err(&g, "not finite");
}

#[test]
fn rejects_dangling_output() {
    let mut g = base();
    g.outputs[0].node = NodeId(99);
    expect_err(&g, "missing node %99");
}

#[test]
fn text_parse_errors_name_the_line() {
    let text = base().to_text().replace("= mul(", "= mull(");
    let err = Graph::from_text(&text).unwrap_err().to_string();
    assert!(err.contains("line 6") && err.contains("mull"), "{err}");
    let err = Graph::from_text("%0 = input{kind=\"token\"}() : i32[1] \"t\"").unwrap_err().to_string();
    assert!(err.contains("missing `graph` header"), "{err}");
}

#[test]
fn find_accepts_ids_and_names() {
    let g = base();
    assert_eq!(g.find("%4"), Some(NodeId(4)));
    assert_eq!(g.find("y"), Some(NodeId(4)));
    assert_eq!(g.find("nope"), None);
}
