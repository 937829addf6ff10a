//! The graph builder of the fused-kernel tests: [`Suite`], one graph of many small cases
//! written the way the lowering writes each region, and the weights they read.

use super::*;

#[derive(Default)]
pub(crate) struct Weights(pub(crate) HashMap<String, Vec<u8>>);

impl WeightSource for Weights {
    fn tensor_bytes(&self, name: &str) -> Result<&[u8], String> {
        self.0.get(name).map(Vec::as_slice).ok_or_else(|| format!("no tensor {name}"))
    }
}

impl WeightBytes for Weights {
    fn bytes(&self, tensor: &str) -> Result<&[u8], String> {
        self.tensor_bytes(tensor)
    }
}

/// One graph of many cases, each in a layer of its own (`blk.N.`: fusion never crosses a
/// layer), each expecting a fused kernel at -O1 and/or -O2.
pub(crate) struct Suite {
    pub(crate) b: GraphBuilder,
    pub(crate) w: Weights,
    /// (label, output node, the kernel expected at -O1, at -O2)
    pub(crate) cases: Vec<(String, NodeId, &'static str, &'static str)>,
    pub(crate) token: NodeId,
    pub(crate) pos: NodeId,
    /// cos and sin of the rope angles, per (mode, n_rot, head_dim).
    pub(crate) rope: HashMap<(u32, u32, u32), (NodeId, NodeId)>,
    pub(crate) vocab: u64,
    pub(crate) serial: usize,
    pub(crate) max_ctx: u64,
}

impl Suite {
    pub(crate) fn new() -> Suite {
        Suite::with_ctx(MAX_CTX)
    }

    pub(crate) fn with_ctx(max_ctx: u64) -> Suite {
        let meta = GraphMeta { name: "fused".into(), arch: "test".into(), max_ctx, extra: Default::default() };
        let mut b = GraphBuilder::new(meta);
        let i32_1 = TensorType::new(DType::I32, &[1]);
        let token = b.leaf("token", Op::Input { kind: InputKind::Token }, i32_1.clone()).unwrap();
        let pos = b.leaf("pos", Op::Input { kind: InputKind::Position }, i32_1).unwrap();
        Suite {
            b,
            w: Weights::default(),
            cases: Vec::new(),
            token,
            pos,
            rope: HashMap::new(),
            vocab: 5,
            serial: 0,
            max_ctx,
        }
    }

    /// A fresh node name in the current case's layer.
    pub(crate) fn name(&mut self, name: &str) -> String {
        self.serial += 1;
        format!("blk.{}.{name}.{}", self.cases.len(), self.serial)
    }

    pub(crate) fn weight(&mut self, name: &str, dtype: DType, shape: &[u64], values: &[f32]) -> NodeId {
        let name = self.name(name);
        let mut bytes = vec![0u8; dtype.bytes_for(values.len() as u64).unwrap() as usize];
        quant::quantize(dtype, values, &mut bytes).unwrap();
        self.w.0.insert(name.clone(), bytes);
        self.b.leaf(&name, Op::Weight { tensor: name.clone() }, TensorType::new(dtype, shape)).unwrap()
    }

    pub(crate) fn data(&mut self, rng: &mut Rng, name: &str, shape: &[u64]) -> NodeId {
        let n = shape.iter().product();
        self.weight(name, DType::F32, shape, &rng.normals(n))
    }

    /// A value that changes with the token: a row of an f32 table, reshaped to `shape`.
    pub(crate) fn per_token(&mut self, rng: &mut Rng, name: &str, shape: &[u64]) -> NodeId {
        let n: u64 = shape.iter().product();
        let table = self.data(rng, &format!("{name}.table"), &[self.vocab, n]);
        let row = self.push(&format!("{name}.row"), Op::Gather, &[table, self.token]);
        self.push(name, Op::Reshape { shape: shape.iter().map(|&d| Dim::Const(d)).collect() }, &[row])
    }

    pub(crate) fn constant(&mut self, name: &str, value: f64) -> NodeId {
        let name = self.name(name);
        self.b.leaf(name, Op::Const { value }, TensorType::new(DType::F32, &[])).unwrap()
    }

    pub(crate) fn push(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> NodeId {
        let name = self.name(name);
        self.b.push(&name, op, inputs).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// cos and sin of this step's rope angles (outside every layer, as the lowering has them).
    pub(crate) fn rope_tables(&mut self, mode: RopeMode, n_rot: u32, head_dim: u32) -> (NodeId, NodeId) {
        let key = (u32::from(mode == RopeMode::Interleaved), n_rot, head_dim);
        if let Some(&t) = self.rope.get(&key) {
            return t;
        }
        let tag = format!("rope.{}.{n_rot}.{head_dim}", key.0);
        let op = Op::RopeAngles { mode, n_rot, head_dim, theta_base: 10000.0, freq_scale: 1.0 };
        let angles = self.b.push(format!("{tag}.angles"), op, &[self.pos]).unwrap_or_else(|e| panic!("{tag}: {e}"));
        let cos = self.b.push(format!("{tag}.cos"), Op::Cos, &[angles]).unwrap();
        let sin = self.b.push(format!("{tag}.sin"), Op::Sin, &[angles]).unwrap();
        self.rope.insert(key, (cos, sin));
        (cos, sin)
    }

    pub(crate) fn done(&mut self, label: String, out: NodeId, o1: &'static str, o2: &'static str) {
        self.b.output(format!("case{}", self.cases.len()), out);
        self.cases.push((label, out, o1, o2));
    }

    // ---- the regions, as crates/model/src/lower/decoder.rs writes them ----

    pub(crate) fn rms_norm(&mut self, x: NodeId, w: NodeId, eps: NodeId) -> NodeId {
        let sq = self.push("norm.square", Op::Mul, &[x, x]);
        let rank = self.b.ty(x).unwrap().shape.len() as u32;
        let mean = self.push("norm.mean", Op::ReduceMean { axis: rank - 1 }, &[sq]);
        let shifted = self.push("norm.eps_add", Op::Add, &[mean, eps]);
        let inv = self.push("norm.rsqrt", Op::Rsqrt, &[shifted]);
        let normed = self.push("norm.normalize", Op::Mul, &[x, inv]);
        self.push("norm", Op::Mul, &[normed, w])
    }

    pub(crate) fn softmax(&mut self, x: NodeId) -> NodeId {
        let axis = self.b.ty(x).unwrap().shape.len() as u32 - 1;
        let max = self.push("softmax.max", Op::ReduceMax { axis }, &[x]);
        let sub = self.push("softmax.sub", Op::Sub, &[x, max]);
        let exp = self.push("softmax.exp", Op::Exp, &[sub]);
        let sum = self.push("softmax.sum", Op::ReduceSum { axis }, &[exp]);
        self.push("softmax", Op::Div, &[exp, sum])
    }

    pub(crate) fn rope(&mut self, x: NodeId, mode: RopeMode, n_rot: u32) -> NodeId {
        let hd = self.b.ty(x).unwrap().shape.last().and_then(|d| d.as_const()).unwrap() as u32;
        let (cos, sin) = self.rope_tables(mode, n_rot, hd);
        let rot = self.push("rope.rotate", Op::RopeRotate { mode, n_rot }, &[x]);
        let c = self.push("rope.cos_mul", Op::Mul, &[x, cos]);
        let s = self.push("rope.sin_mul", Op::Mul, &[rot, sin]);
        self.push("rope", Op::Add, &[c, s])
    }

    pub(crate) fn swiglu(&mut self, gate: NodeId, up: NodeId) -> NodeId {
        let sig = self.push("ffn_gate.sigmoid", Op::Sigmoid, &[gate]);
        let silu = self.push("ffn_gate.silu", Op::Mul, &[gate, sig]);
        self.push("ffn_swiglu", Op::Mul, &[silu, up])
    }

    pub(crate) fn matvec(&mut self, x: NodeId, w: NodeId) -> NodeId {
        self.push("proj", Op::MatMul { transpose_rhs: true }, &[x, w])
    }

    /// Write `row` ([Hkv, 1, D]) into a fresh cache at `pos`; the view of its rows in use.
    pub(crate) fn cache(&mut self, name: &str, row: NodeId, hkv: u64, d: u64) -> (NodeId, NodeId) {
        let state = {
            let name = self.name(name);
            self.b.leaf(name, Op::State, TensorType::new(DType::F32, &[hkv, self.max_ctx, d])).unwrap()
        };
        let written = self.push(&format!("{name}.write"), Op::CacheWrite { axis: 1 }, &[state, row, self.pos]);
        let view = self.push(&format!("{name}.view"), Op::Slice { axis: 1, start: 0, len: Dim::CTX }, &[written]);
        (written, view)
    }
}

/// Every suite's compiled context: room for more than one 256-position attention tile.
pub(crate) const MAX_CTX: u64 = 300;
