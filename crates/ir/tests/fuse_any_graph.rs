//! Fusion accepts any verified graph: on random graphs covering every op it returns groups
//! that cover every compute node exactly once at every level, never an error or a panic, and
//! `simplify` returns a graph that verifies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use apr_ir::fuse::{fuse, simplify, OptLevel};
use apr_ir::group::check_coverage;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_level_covers_any_graph(instrs in common::instrs()) {
        let g = common::build(&instrs);
        for level in [OptLevel::O0, OptLevel::O1, OptLevel::O2] {
            let (groups, _) = fuse(&g, level).unwrap();
            check_coverage(&g, &groups).unwrap();
        }
        simplify(&g).unwrap().verify().unwrap();
    }
}
