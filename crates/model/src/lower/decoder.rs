//! The decoder block shared by qwen2, qwen3 and llama: RMSNorm → attention with rotary
//! embeddings and a KV cache → residual → RMSNorm → SwiGLU MLP → residual, then a final norm
//! and the LM head. Architectures differ only in parameters (biases are used where the file
//! has them; the rotary pairing follows the architecture and the weight layout; the LM head is
//! tied to the embedding when the file has no output matrix) and in one step: qwen3
//! RMS-normalizes each head of q and k (one gain vector of head size each) before rotary.

use super::{Arch, ArchParams, LowerError, Naming, TensorTable};
use apr_ir::{DType, Dim, Graph, GraphBuilder, GraphMeta, InputKind, NodeId, Op, TensorType};

/// Choices that are not properties of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerOptions {
    /// Model name for reports.
    pub name: String,
    /// KV-cache rows to allocate; the model's context length when `None`.
    pub max_ctx: Option<u64>,
}

/// Tensors of the model, by role.
#[derive(Debug, Clone, Copy)]
enum T {
    TokenEmbd,
    OutputNorm,
    Output,
    RopeFreqs,
    AttnNorm,
    Q,
    K,
    V,
    QNorm,
    KNorm,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
}

fn tensor_name(naming: Naming, t: T, layer: u32, bias: bool) -> String {
    let suffix = if bias { "bias" } else { "weight" };
    match naming {
        Naming::Gguf => {
            let part = match t {
                T::TokenEmbd => return format!("token_embd.{suffix}"),
                T::OutputNorm => return format!("output_norm.{suffix}"),
                T::Output => return format!("output.{suffix}"),
                T::RopeFreqs => return format!("rope_freqs.{suffix}"),
                T::AttnNorm => "attn_norm",
                T::Q => "attn_q",
                T::K => "attn_k",
                T::V => "attn_v",
                T::QNorm => "attn_q_norm",
                T::KNorm => "attn_k_norm",
                T::O => "attn_output",
                T::FfnNorm => "ffn_norm",
                T::Gate => "ffn_gate",
                T::Up => "ffn_up",
                T::Down => "ffn_down",
            };
            format!("blk.{layer}.{part}.{suffix}")
        }
        Naming::Hf => {
            let part = match t {
                T::TokenEmbd => return format!("model.embed_tokens.{suffix}"),
                T::OutputNorm => return format!("model.norm.{suffix}"),
                T::Output => return format!("lm_head.{suffix}"),
                T::RopeFreqs => return format!("model.rope_freqs.{suffix}"),
                T::AttnNorm => "input_layernorm",
                T::Q => "self_attn.q_proj",
                T::K => "self_attn.k_proj",
                T::V => "self_attn.v_proj",
                T::QNorm => "self_attn.q_norm",
                T::KNorm => "self_attn.k_norm",
                T::O => "self_attn.o_proj",
                T::FfnNorm => "post_attention_layernorm",
                T::Gate => "mlp.gate_proj",
                T::Up => "mlp.up_proj",
                T::Down => "mlp.down_proj",
            };
            format!("model.layers.{layer}.{part}.{suffix}")
        }
    }
}

struct Lowering<'a> {
    p: &'a ArchParams,
    tensors: &'a TensorTable,
    b: GraphBuilder,
}

/// Lower a model to the IR of one decode step.
pub fn lower(p: &ArchParams, tensors: &TensorTable, opts: &LowerOptions) -> Result<Graph, LowerError> {
    let max_ctx = opts.max_ctx.unwrap_or(p.context_length);
    if max_ctx == 0 || max_ctx > p.context_length {
        return Err(LowerError::Context { asked: max_ctx, model: p.context_length });
    }
    let mut extra = std::collections::BTreeMap::new();
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(p) {
        extra.extend(m);
    }
    let meta = GraphMeta { name: opts.name.clone(), arch: p.arch.name().into(), max_ctx, extra };
    let mut l = Lowering { p, tensors, b: GraphBuilder::new(meta) };
    l.model(max_ctx)?;
    Ok(l.b.finish()?)
}

impl Lowering<'_> {
    fn model(&mut self, max_ctx: u64) -> Result<(), LowerError> {
        let p = self.p;
        let token = self.b.leaf("token", Op::Input { kind: InputKind::Token }, TensorType::new(DType::I32, &[1]))?;
        let pos = self.b.leaf("pos", Op::Input { kind: InputKind::Position }, TensorType::new(DType::I32, &[1]))?;
        let embd_name = tensor_name(p.naming, T::TokenEmbd, 0, false);
        let embd = self.weight(&embd_name, &[p.vocab, p.n_embd], "the token embedding", true)?;
        let mut x = self.b.push("inp_embd", Op::Gather, &[embd, token])?;
        let eps = self.constant("rms_eps", p.rms_eps)?;
        let scale = self.constant("attn_scale", p.attn_scale)?;

        let freqs_name = tensor_name(p.naming, T::RopeFreqs, 0, false);
        let mut angle_args = vec![pos];
        if self.tensors.get(&freqs_name).is_some() {
            let f = self.weight(&freqs_name, &[u64::from(p.n_rot / 2)], "rope frequency factors", false)?;
            angle_args.push(self.as_f32(f)?);
        }
        let angles = self.b.push(
            "rope.angles",
            Op::RopeAngles {
                mode: p.rope_mode,
                n_rot: p.n_rot,
                head_dim: u32::try_from(p.head_dim).unwrap_or(u32::MAX),
                theta_base: p.rope_theta,
                freq_scale: p.rope_freq_scale,
            },
            &angle_args,
        )?;
        let rope = Rope {
            cos: self.b.push("rope.cos", Op::Cos, &[angles])?,
            sin: self.b.push("rope.sin", Op::Sin, &[angles])?,
        };

        for layer in 0..p.n_layers {
            x = self.block(layer, x, pos, eps, scale, rope, max_ctx)?;
        }

        let norm_w = self.norm_weight(T::OutputNorm, 0)?;
        let h = self.rms_norm("output_norm", x, norm_w, eps)?;
        let out_name = tensor_name(p.naming, T::Output, 0, false);
        let head = if self.tensors.get(&out_name).is_some() {
            self.weight(&out_name, &[p.vocab, p.n_embd], "the LM head", true)?
        } else {
            embd // tied embeddings
        };
        let logits = self.b.push("logits", Op::MatMul { transpose_rhs: true }, &[h, head])?;
        self.b.output("logits", logits);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &mut self,
        layer: u32,
        x: NodeId,
        pos: NodeId,
        eps: NodeId,
        scale: NodeId,
        rope: Rope,
        max_ctx: u64,
    ) -> Result<NodeId, LowerError> {
        let p = self.p;
        let pre = format!("blk.{layer}.");
        let (kv, group, hd) = (p.n_head_kv, p.group(), p.head_dim);

        let w = self.norm_weight(T::AttnNorm, layer)?;
        let h = self.rms_norm(&format!("{pre}attn_norm"), x, w, eps)?;
        let q = self.linear(layer, T::Q, &format!("{pre}attn_q"), h, p.n_head * hd, p.n_embd)?;
        let k = self.linear(layer, T::K, &format!("{pre}attn_k"), h, kv * hd, p.n_embd)?;
        let v = self.linear(layer, T::V, &format!("{pre}attn_v"), h, kv * hd, p.n_embd)?;
        let q = self.b.push(format!("{pre}attn_q.heads"), reshape(&[kv, group, hd]), &[q])?;
        let k = self.b.push(format!("{pre}attn_k.heads"), reshape(&[kv, 1, hd]), &[k])?;
        let v = self.b.push(format!("{pre}attn_v.heads"), reshape(&[kv, 1, hd]), &[v])?;
        let (q, k) = if p.arch == Arch::Qwen3 {
            let wq = self.head_norm_weight(T::QNorm, layer)?;
            let wk = self.head_norm_weight(T::KNorm, layer)?;
            (
                self.rms_norm(&format!("{pre}attn_q_norm"), q, wq, eps)?,
                self.rms_norm(&format!("{pre}attn_k_norm"), k, wk, eps)?,
            )
        } else {
            (q, k)
        };
        let q = self.rope(&format!("{pre}attn_q_rope"), q, rope)?;
        let k = self.rope(&format!("{pre}attn_k_rope"), k, rope)?;

        let k_all = self.cache(&format!("{pre}cache_k"), k, pos, max_ctx)?;
        let v_all = self.cache(&format!("{pre}cache_v"), v, pos, max_ctx)?;
        let scores = self.b.push(format!("{pre}attn.scores"), Op::MatMul { transpose_rhs: true }, &[q, k_all])?;
        let scaled = self.b.push(format!("{pre}attn.scaled"), Op::Mul, &[scores, scale])?;
        let probs = self.softmax(&format!("{pre}attn.softmax"), scaled, 2)?;
        let ctx = self.b.push(format!("{pre}attn.weighted"), Op::MatMul { transpose_rhs: false }, &[probs, v_all])?;
        let merged = self.b.push(format!("{pre}attn.merged"), reshape(&[1, p.n_head * hd]), &[ctx])?;
        let o = self.linear(layer, T::O, &format!("{pre}attn_output"), merged, p.n_embd, p.n_head * hd)?;
        let x = self.b.push(format!("{pre}attn_residual"), Op::Add, &[x, o])?;

        let w = self.norm_weight(T::FfnNorm, layer)?;
        let h = self.rms_norm(&format!("{pre}ffn_norm"), x, w, eps)?;
        let gate = self.linear(layer, T::Gate, &format!("{pre}ffn_gate"), h, p.n_ff, p.n_embd)?;
        let up = self.linear(layer, T::Up, &format!("{pre}ffn_up"), h, p.n_ff, p.n_embd)?;
        let sig = self.b.push(format!("{pre}ffn_gate.sigmoid"), Op::Sigmoid, &[gate])?;
        let silu = self.b.push(format!("{pre}ffn_gate.silu"), Op::Mul, &[gate, sig])?;
        let act = self.b.push(format!("{pre}ffn_swiglu"), Op::Mul, &[silu, up])?;
        let down = self.linear(layer, T::Down, &format!("{pre}ffn_down"), act, p.n_embd, p.n_ff)?;
        Ok(self.b.push(format!("{pre}ffn_residual"), Op::Add, &[x, down])?)
    }

    /// `x · rsqrt(mean(x²) + eps) · w` over the last axis, one node per step.
    fn rms_norm(&mut self, name: &str, x: NodeId, w: NodeId, eps: NodeId) -> Result<NodeId, LowerError> {
        let rank = self.b.ty(x).map_or(2, |t| t.shape.len());
        let axis = u32::try_from(rank.saturating_sub(1)).unwrap_or(u32::MAX);
        let sq = self.b.push(format!("{name}.square"), Op::Mul, &[x, x])?;
        let mean = self.b.push(format!("{name}.mean"), Op::ReduceMean { axis }, &[sq])?;
        let shifted = self.b.push(format!("{name}.eps_add"), Op::Add, &[mean, eps])?;
        let inv = self.b.push(format!("{name}.rsqrt"), Op::Rsqrt, &[shifted])?;
        let normed = self.b.push(format!("{name}.normalize"), Op::Mul, &[x, inv])?;
        Ok(self.b.push(name, Op::Mul, &[normed, w])?)
    }

    /// Numerically stable softmax along `axis`: `exp(x - max) / sum(exp(x - max))`.
    fn softmax(&mut self, name: &str, x: NodeId, axis: u32) -> Result<NodeId, LowerError> {
        let max = self.b.push(format!("{name}.max"), Op::ReduceMax { axis }, &[x])?;
        let sub = self.b.push(format!("{name}.sub"), Op::Sub, &[x, max])?;
        let exp = self.b.push(format!("{name}.exp"), Op::Exp, &[sub])?;
        let sum = self.b.push(format!("{name}.sum"), Op::ReduceSum { axis }, &[exp])?;
        Ok(self.b.push(name, Op::Div, &[exp, sum])?)
    }

    /// `x · cos + rotate_half(x) · sin`.
    fn rope(&mut self, name: &str, x: NodeId, r: Rope) -> Result<NodeId, LowerError> {
        let rot = self.b.push(
            format!("{name}.rotate"),
            Op::RopeRotate { mode: self.p.rope_mode, n_rot: self.p.n_rot },
            &[x],
        )?;
        let c = self.b.push(format!("{name}.cos_mul"), Op::Mul, &[x, r.cos])?;
        let s = self.b.push(format!("{name}.sin_mul"), Op::Mul, &[rot, r.sin])?;
        Ok(self.b.push(name, Op::Add, &[c, s])?)
    }

    /// Write this step's row into a cache and view the rows in use: `[kv, ctx, head_dim]`.
    fn cache(&mut self, name: &str, row: NodeId, pos: NodeId, max_ctx: u64) -> Result<NodeId, LowerError> {
        let p = self.p;
        let state = self.b.leaf(name, Op::State, TensorType::new(DType::F32, &[p.n_head_kv, max_ctx, p.head_dim]))?;
        let written = self.b.push(format!("{name}.write"), Op::CacheWrite { axis: 1 }, &[state, row, pos])?;
        Ok(self.b.push(format!("{name}.view"), Op::Slice { axis: 1, start: 0, len: Dim::CTX }, &[written])?)
    }

    /// `x · Wᵀ (+ b)`, with the bias used when the file has one.
    fn linear(&mut self, layer: u32, t: T, name: &str, x: NodeId, rows: u64, cols: u64) -> Result<NodeId, LowerError> {
        let wname = tensor_name(self.p.naming, t, layer, false);
        let w = self.weight(&wname, &[rows, cols], "a projection", true)?;
        let y = self.b.push(name, Op::MatMul { transpose_rhs: true }, &[x, w])?;
        let bname = tensor_name(self.p.naming, t, layer, true);
        if self.tensors.get(&bname).is_none() {
            return Ok(y);
        }
        let bias = self.weight(&bname, &[rows], "a bias", false)?;
        let bias = self.as_f32(bias)?;
        Ok(self.b.push(format!("{name}.bias_add"), Op::Add, &[y, bias])?)
    }

    fn norm_weight(&mut self, t: T, layer: u32) -> Result<NodeId, LowerError> {
        let name = tensor_name(self.p.naming, t, layer, false);
        let w = self.weight(&name, &[self.p.n_embd], "a norm weight", false)?;
        self.as_f32(w)
    }

    /// The gain of a per-head RMSNorm: one value per element of a head.
    fn head_norm_weight(&mut self, t: T, layer: u32) -> Result<NodeId, LowerError> {
        let name = tensor_name(self.p.naming, t, layer, false);
        let w = self.weight(&name, &[self.p.head_dim], "a per-head norm weight", false)?;
        self.as_f32(w)
    }

    /// A weight node for a file tensor, checked against the expected shape.
    fn weight(
        &mut self,
        name: &str,
        shape: &[u64],
        role: &'static str,
        quantized_ok: bool,
    ) -> Result<NodeId, LowerError> {
        let e = self.tensors.get(name).ok_or_else(|| LowerError::MissingTensor(name.to_string()))?;
        let dtype =
            e.dtype.clone().map_err(|type_name| LowerError::UnsupportedType { name: name.to_string(), type_name })?;
        if e.shape != shape {
            return Err(LowerError::Shape { name: name.to_string(), expected: shape.to_vec(), found: e.shape.clone() });
        }
        if dtype == DType::I32 || (dtype.is_quantized() && !quantized_ok) {
            return Err(LowerError::WrongType { name: name.to_string(), dtype, role });
        }
        Ok(self.b.leaf(name, Op::Weight { tensor: name.to_string() }, TensorType::new(dtype, shape))?)
    }

    /// Norm weights and biases are f32 in GGUF files but often bf16/f16 in HF checkpoints.
    fn as_f32(&mut self, w: NodeId) -> Result<NodeId, LowerError> {
        let Some(ty) = self.b.ty(w) else { return Ok(w) };
        if ty.dtype == DType::F32 {
            return Ok(w);
        }
        let name = format!("{}.to_f32", self.node_name(w));
        Ok(self.b.push(name, Op::Cast { to: DType::F32 }, &[w])?)
    }

    fn node_name(&self, id: NodeId) -> String {
        self.b.name(id).unwrap_or_default().to_string()
    }

    fn constant(&mut self, name: &str, value: f64) -> Result<NodeId, LowerError> {
        Ok(self.b.leaf(name, Op::Const { value }, TensorType::new(DType::F32, &[]))?)
    }
}

#[derive(Debug, Clone, Copy)]
struct Rope {
    cos: NodeId,
    sin: NodeId,
}

fn reshape(dims: &[u64]) -> Op {
    Op::Reshape { shape: dims.iter().map(|&d| Dim::Const(d)).collect() }
}
