//! Random small graphs for property tests: a list of random instructions is replayed through
//! the builder, and instructions whose operands do not type-check are skipped, so every
//! generated graph is valid by construction and covers every op.

use apr_ir::{DType, Dim, Graph, GraphBuilder, GraphMeta, InputKind, NodeId, Op, RopeMode, TensorType};
use proptest::prelude::*;

pub type Instr = (u8, u32, u32, u32, f64);

pub fn instrs() -> impl Strategy<Value = Vec<Instr>> {
    prop::collection::vec((0u8..32, any::<u32>(), any::<u32>(), any::<u32>(), -1.0e6f64..1.0e6), 1..60)
}

pub fn build(instrs: &[Instr]) -> Graph {
    let meta =
        GraphMeta { name: "random \"graph\"".into(), arch: "test".into(), max_ctx: 8, extra: Default::default() };
    let mut b = GraphBuilder::new(meta);
    let token = b.leaf("token", Op::Input { kind: InputKind::Token }, TensorType::new(DType::I32, &[1])).unwrap();
    let pos = b.leaf("pos", Op::Input { kind: InputKind::Position }, TensorType::new(DType::I32, &[1])).unwrap();
    let w = b.leaf("w.q8", Op::Weight { tensor: "w.q8".into() }, TensorType::new(DType::Q8_0, &[6, 32])).unwrap();
    let table = b.leaf("tbl", Op::Weight { tensor: "tbl".into() }, TensorType::new(DType::F16, &[10, 32])).unwrap();
    let x = b.push("x", Op::Gather, &[table, token]).unwrap();
    let cache = b.leaf("cache", Op::State, TensorType::new(DType::F32, &[2, 8, 16])).unwrap();
    let mut pool: Vec<NodeId> = vec![x];
    let mut cache_written = false;
    for (k, &(code, a, c, d, f)) in instrs.iter().enumerate() {
        let pick = |i: u32| pool[i as usize % pool.len()];
        let (i, j) = (pick(a), pick(c));
        let name = format!("n{k}.{code}");
        let op = match code {
            0 => Op::Neg,
            1 => Op::Exp,
            2 => Op::Sigmoid,
            3 => Op::Sqrt,
            4 => Op::Rsqrt,
            5 => Op::Cos,
            6 => Op::Sin,
            7 => Op::Add,
            8 => Op::Sub,
            9 => Op::Mul,
            10 => Op::Div,
            11 => Op::ReduceSum { axis: d % 3 },
            12 => Op::ReduceMean { axis: d % 3 },
            13 => Op::ReduceMax { axis: d % 3 },
            14 => Op::ArgMax { axis: d % 3 },
            15 => Op::MatMul { transpose_rhs: true },
            16 => Op::MatMul { transpose_rhs: d % 2 == 0 },
            17 => Op::Reshape { shape: vec![Dim::Const(2), Dim::Const(16)] },
            18 => Op::Reshape { shape: vec![Dim::Const(1), Dim::Const(2), Dim::Const(16)] },
            19 => Op::Slice { axis: d % 2, start: u64::from(d % 3), len: Dim::Const(1 + u64::from(a % 4)) },
            20 => Op::RopeRotate {
                mode: if d % 2 == 0 { RopeMode::Neox } else { RopeMode::Interleaved },
                n_rot: 2 * (1 + d % 8),
            },
            21 => Op::Cast { to: DType::F32 },
            22 => {
                let c = b.leaf(name, Op::Const { value: f }, TensorType::new(DType::F32, &[])).unwrap();
                pool.push(c);
                continue;
            }
            23 => {
                let op = Op::RopeAngles {
                    mode: if d % 2 == 0 { RopeMode::Neox } else { RopeMode::Interleaved },
                    n_rot: 2 * (1 + d % 8),
                    head_dim: 16 + d % 17,
                    theta_base: f.abs() + 1.0,
                    freq_scale: 1.0 / f64::from(1 + a % 4),
                };
                if let Ok(n) = b.push(name, op, &[pos]) {
                    pool.push(n);
                }
                continue;
            }
            24 if !cache_written => {
                let v = b.push(
                    format!("{name}.v"),
                    Op::Reshape { shape: vec![Dim::Const(2), Dim::Const(1), Dim::Const(16)] },
                    &[i],
                );
                if let Ok(v) = v {
                    let wr = b.push(format!("{name}.write"), Op::CacheWrite { axis: 1 }, &[cache, v, pos]).unwrap();
                    let view =
                        b.push(format!("{name}.view"), Op::Slice { axis: 1, start: 0, len: Dim::CTX }, &[wr]).unwrap();
                    pool.push(view);
                    cache_written = true;
                }
                continue;
            }
            25 => {
                if let Ok(n) = b.push(name, Op::MatMul { transpose_rhs: true }, &[i, w]) {
                    pool.push(n);
                }
                continue;
            }
            _ => Op::Mul,
        };
        let inputs: Vec<NodeId> = match op.arity().0 {
            1 => vec![i],
            _ => vec![i, j],
        };
        if let Ok(n) = b.push(name, op, &inputs) {
            if b.ty(n).is_some_and(|t| t.dtype == DType::F32) {
                pool.push(n);
            }
        }
    }
    let last = *pool.last().unwrap();
    b.output("out", last);
    b.finish().unwrap()
}
