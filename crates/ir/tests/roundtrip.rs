#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! JSON and text forms round-trip exactly, on random graphs.

mod common;

use apr_ir::Graph;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_round_trips(instrs in common::instrs()) {
        let g = common::build(&instrs);
        let back = Graph::from_json(&g.to_json()).unwrap();
        prop_assert_eq!(&back, &g);
    }

    #[test]
    fn text_round_trips(instrs in common::instrs()) {
        let g = common::build(&instrs);
        let text = g.to_text();
        let back = Graph::from_text(&text).unwrap();
        prop_assert_eq!(&back, &g);
        prop_assert_eq!(back.to_text(), text);
    }

    #[test]
    fn dot_mentions_every_node(instrs in common::instrs()) {
        let g = common::build(&instrs);
        let dot = apr_ir::dot::to_dot(&g, &Default::default());
        for n in &g.nodes {
            let needle = format!("n{} [", n.id.0);
            prop_assert!(dot.contains(&needle));
        }
    }
}

#[test]
fn generator_covers_every_op_class() {
    use std::collections::BTreeSet;
    let mut seen = BTreeSet::new();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..200 {
        let instrs = common::instrs().new_tree(&mut runner).unwrap().current();
        for n in common::build(&instrs).nodes {
            seen.insert(n.op.name());
        }
    }
    for op in [
        "input",
        "weight",
        "const",
        "state",
        "neg",
        "exp",
        "sigmoid",
        "sqrt",
        "rsqrt",
        "cos",
        "sin",
        "cast",
        "add",
        "sub",
        "mul",
        "div",
        "reduce_sum",
        "reduce_mean",
        "reduce_max",
        "argmax",
        "matmul",
        "reshape",
        "slice",
        "gather",
        "rope_rotate",
        "rope_angles",
        "cache_write",
    ] {
        assert!(seen.contains(op), "random graphs never contain {op}");
    }
}
