//! Fusion on hand-built graphs (lowered models are tested in the workspace's tests crate).

use super::*;
use crate::{DType, GraphBuilder, GraphMeta, InputKind, TensorType};

fn meta() -> GraphMeta {
    GraphMeta { name: "t".into(), arch: "test".into(), max_ctx: 16, extra: Default::default() }
}

/// x → RMSNorm → matvec (+ bias), as a lowering writes it.
fn norm_matvec() -> (Graph, NodeId) {
    let mut b = GraphBuilder::new(meta());
    let tok = b.leaf("token", Op::Input { kind: InputKind::Token }, TensorType::new(DType::I32, &[1])).unwrap();
    let emb =
        b.leaf("token_embd.weight", Op::Weight { tensor: "e".into() }, TensorType::new(DType::F32, &[8, 32])).unwrap();
    let x = b.push("inp_embd", Op::Gather, &[emb, tok]).unwrap();
    let eps = b.leaf("eps", Op::Const { value: 1e-6 }, TensorType::new(DType::F32, &[])).unwrap();
    let w = b
        .leaf("blk.0.attn_norm.weight", Op::Weight { tensor: "n".into() }, TensorType::new(DType::F32, &[32]))
        .unwrap();
    let sq = b.push("blk.0.attn_norm.square", Op::Mul, &[x, x]).unwrap();
    let mean = b.push("blk.0.attn_norm.mean", Op::ReduceMean { axis: 1 }, &[sq]).unwrap();
    let add = b.push("blk.0.attn_norm.eps_add", Op::Add, &[mean, eps]).unwrap();
    let rs = b.push("blk.0.attn_norm.rsqrt", Op::Rsqrt, &[add]).unwrap();
    let nm = b.push("blk.0.attn_norm.normalize", Op::Mul, &[x, rs]).unwrap();
    let normed = b.push("blk.0.attn_norm", Op::Mul, &[nm, w]).unwrap();
    let wq = b
        .leaf("blk.0.attn_q.weight", Op::Weight { tensor: "q".into() }, TensorType::new(DType::Q8_0, &[16, 32]))
        .unwrap();
    let q = b.push("blk.0.attn_q", Op::MatMul { transpose_rhs: true }, &[normed, wq]).unwrap();
    let bq =
        b.leaf("blk.0.attn_q.bias", Op::Weight { tensor: "qb".into() }, TensorType::new(DType::F32, &[16])).unwrap();
    let out = b.push("blk.0.attn_q.bias_add", Op::Add, &[q, bq]).unwrap();
    b.output("out", out);
    (b.finish().unwrap(), normed)
}

#[test]
fn rms_norm_is_one_group_at_o1_and_matvec_takes_its_bias_at_o2() {
    let (g, normed) = norm_matvec();
    let (o0, _) = fuse(&g, OptLevel::O0).unwrap();
    assert_eq!(o0.len(), 9);
    let (o1, s1) = fuse(&g, OptLevel::O1).unwrap();
    // gather, rms_norm, matvec, bias add
    assert_eq!(o1.len(), 4, "{o1:#?}");
    let norm = o1.iter().find(|grp| matches!(grp.kernel, Kernel::RmsNorm { .. })).unwrap();
    assert_eq!(norm.covers.len(), 6);
    assert_eq!(norm.outputs, vec![normed]);
    assert_eq!(s1.kernels.get("rms_norm"), Some(&1));
    let (o2, _) = fuse(&g, OptLevel::O2).unwrap();
    assert_eq!(o2.len(), 3, "{o2:#?}");
    assert!(o2.iter().any(|grp| matches!(grp.kernel, Kernel::MatvecAdd { .. }) && grp.covers.len() == 2));
}

#[test]
fn an_inner_value_used_elsewhere_blocks_the_fusion() {
    let (g, _) = norm_matvec();
    // Expose the rsqrt as a second graph output: the norm cannot hide it.
    let mut g2 = g.clone();
    let rs = g2.find("blk.0.attn_norm.rsqrt").unwrap();
    g2.outputs.push(crate::Output { name: "rs".into(), node: rs });
    let (o1, s1) = fuse(&g2, OptLevel::O1).unwrap();
    assert!(o1.iter().all(|grp| grp.kernel.is_node()), "{o1:#?}");
    assert!(!s1.fallbacks.is_empty());
}
