//! Synthetic models: GGUF files with the real shapes of known models and random weights.
//!
//! A synthetic model exercises everything shape- and format-dependent (quantized layouts,
//! binding limits, memory, speed) without a download. The same [`SynthSpec`] yields the
//! tensor table alone, so `compile --arch --preset --quant` lowers a 7B model from shapes
//! without writing or reading a byte of weights. Weights are deterministic in the seed and
//! independent of thread count. Quantized mixes follow llama.cpp's choices
//! (`llama_tensor_get_type`), including its fallbacks for rows that are not whole K-blocks.

use crate::gguf::{GgufWriter, Metadata, TensorSpec, Value};
use crate::lower::{Arch, ArchParams, Naming, TensorTable};
use crate::{quant, ModelError};
use apr_ir::DType;
use rayon::prelude::*;
use std::io::Write;

/// Model shapes to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// A few MB; for tests.
    Tiny,
    /// Qwen2.5-0.5B: 24 layers, hidden 896, tied embeddings.
    Qwen25_0_5B,
    /// Qwen2.5-7B: 28 layers, hidden 3584, GQA 28/4, untied LM head.
    Qwen25_7B,
    /// Qwen3-0.6B: 28 layers, hidden 1024, GQA 16/8 with heads of 128 (wider than 1024/16),
    /// tied embeddings.
    Qwen3_0_6B,
}

impl Preset {
    pub const NAMES: [&'static str; 4] = ["tiny", "qwen2.5-0.5b", "qwen2.5-7b", "qwen3-0.6b"];

    pub fn from_name(s: &str) -> Option<Preset> {
        match s {
            "tiny" => Some(Preset::Tiny),
            "qwen2.5-0.5b" => Some(Preset::Qwen25_0_5B),
            "qwen2.5-7b" => Some(Preset::Qwen25_7B),
            "qwen3-0.6b" => Some(Preset::Qwen3_0_6B),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Qwen25_0_5B => "qwen2.5-0.5b",
            Preset::Qwen25_7B => "qwen2.5-7b",
            Preset::Qwen3_0_6B => "qwen3-0.6b",
        }
    }
}

/// Weight encodings, named as llama.cpp's file types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthQuant {
    F32,
    F16,
    Q8_0,
    /// Every matrix Q4_K (llama.cpp's Q4_K_S without its per-tensor exceptions).
    Q4K,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the LM head and for attn_v / ffn_down in
    /// the layers `use_more_bits` picks.
    Q4KM,
}

impl SynthQuant {
    pub const NAMES: [&'static str; 5] = ["f32", "f16", "q8_0", "q4_k", "q4_k_m"];

    pub fn from_name(s: &str) -> Option<SynthQuant> {
        match s {
            "f32" => Some(SynthQuant::F32),
            "f16" => Some(SynthQuant::F16),
            "q8_0" => Some(SynthQuant::Q8_0),
            "q4_k" => Some(SynthQuant::Q4K),
            "q4_k_m" => Some(SynthQuant::Q4KM),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SynthQuant::F32 => "f32",
            SynthQuant::F16 => "f16",
            SynthQuant::Q8_0 => "q8_0",
            SynthQuant::Q4K => "q4_k",
            SynthQuant::Q4KM => "q4_k_m",
        }
    }

    /// llama.cpp's `general.file_type` (`llama_ftype`).
    fn file_type(self) -> u32 {
        match self {
            SynthQuant::F32 => 0,
            SynthQuant::F16 => 1,
            SynthQuant::Q8_0 => 7,
            SynthQuant::Q4K => 14,
            SynthQuant::Q4KM => 15,
        }
    }
}

/// What to synthesize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthSpec {
    pub arch: Arch,
    pub preset: Preset,
    pub quant: SynthQuant,
    pub seed: u64,
}

/// How a tensor's random values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    /// Uniform with this standard deviation around 0.
    Matrix(f32),
    /// Around 1 (RMSNorm gains).
    Gain,
    /// Small offsets (biases).
    Bias,
}

/// One tensor of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthTensor {
    pub name: String,
    /// Row-major, outermost first.
    pub shape: Vec<u64>,
    pub dtype: DType,
    init: Init,
}

impl SynthSpec {
    /// The model's hyper-parameters.
    pub fn params(&self) -> ArchParams {
        let (n_embd, n_layers, n_head, n_head_kv, head_dim, n_ff, vocab, ctx) = match self.preset {
            Preset::Tiny => (256, 2, 4, 2, 64, 512, 1024, 2048),
            Preset::Qwen25_0_5B => (896, 24, 14, 2, 64, 4864, 151_936, 32_768),
            Preset::Qwen25_7B => (3584, 28, 28, 4, 128, 18_944, 152_064, 32_768),
            Preset::Qwen3_0_6B => (1024, 28, 16, 8, 128, 3072, 151_936, 40_960),
        };
        let (rms_eps, rope_theta) = match self.arch {
            Arch::Qwen2 | Arch::Qwen3 => (1e-6, 1e6),
            Arch::Llama => (1e-5, 5e5),
        };
        let rope_mode = self.arch.gguf_rope_mode();
        ArchParams {
            arch: self.arch,
            naming: Naming::Gguf,
            n_layers,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot: head_dim as u32,
            rope_theta,
            rope_freq_scale: 1.0,
            rope_mode,
            rms_eps: f64::from(rms_eps as f32),
            vocab,
            context_length: ctx,
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
        }
    }

    fn tied(&self) -> bool {
        matches!(self.preset, Preset::Qwen25_0_5B | Preset::Qwen3_0_6B)
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> Vec<SynthTensor> {
        let p = self.params();
        let n_layers = p.n_layers;
        let std = 0.02f32;
        let mut out = Vec::new();
        let mut push = |name: String, shape: Vec<u64>, init: Init, dtype: DType| {
            out.push(SynthTensor { name, shape, dtype, init })
        };
        let tied = self.tied();
        let embd_type = if tied && self.quant == SynthQuant::Q4KM { DType::Q6K } else { self.matrix_type(None) };
        push("token_embd.weight".into(), vec![p.vocab, p.n_embd], Init::Matrix(std), fallback(embd_type, p.n_embd));
        let (q_rows, kv_rows) = (p.n_head * p.head_dim, p.n_head_kv * p.head_dim);
        for l in 0..n_layers {
            let b = |part: &str| format!("blk.{l}.{part}");
            let more_bits = use_more_bits(l, n_layers);
            push(b("attn_norm.weight"), vec![p.n_embd], Init::Gain, DType::F32);
            for (part, rows) in [("attn_q", q_rows), ("attn_k", kv_rows), ("attn_v", kv_rows)] {
                let t = if part == "attn_v" { self.matrix_type(Some(more_bits)) } else { self.matrix_type(None) };
                push(b(&format!("{part}.weight")), vec![rows, p.n_embd], Init::Matrix(std), fallback(t, p.n_embd));
                if self.arch == Arch::Qwen2 {
                    push(b(&format!("{part}.bias")), vec![rows], Init::Bias, DType::F32);
                }
            }
            if self.arch == Arch::Qwen3 {
                push(b("attn_q_norm.weight"), vec![p.head_dim], Init::Gain, DType::F32);
                push(b("attn_k_norm.weight"), vec![p.head_dim], Init::Gain, DType::F32);
            }
            push(
                b("attn_output.weight"),
                vec![p.n_embd, q_rows],
                Init::Matrix(std),
                fallback(self.matrix_type(None), q_rows),
            );
            push(b("ffn_norm.weight"), vec![p.n_embd], Init::Gain, DType::F32);
            for part in ["ffn_gate", "ffn_up"] {
                push(
                    b(&format!("{part}.weight")),
                    vec![p.n_ff, p.n_embd],
                    Init::Matrix(std),
                    fallback(self.matrix_type(None), p.n_embd),
                );
            }
            let down = fallback(self.matrix_type(Some(more_bits)), p.n_ff);
            push(b("ffn_down.weight"), vec![p.n_embd, p.n_ff], Init::Matrix(std), down);
        }
        push("output_norm.weight".into(), vec![p.n_embd], Init::Gain, DType::F32);
        if !tied {
            let t = if self.quant == SynthQuant::Q4KM { DType::Q6K } else { self.matrix_type(None) };
            push("output.weight".into(), vec![p.vocab, p.n_embd], Init::Matrix(std), fallback(t, p.n_embd));
        }
        out
    }

    /// The type of a matrix; `more_bits` is `Some` for the tensors Q4_K_M upgrades.
    fn matrix_type(&self, more_bits: Option<bool>) -> DType {
        match self.quant {
            SynthQuant::F32 => DType::F32,
            SynthQuant::F16 => DType::F16,
            SynthQuant::Q8_0 => DType::Q8_0,
            SynthQuant::Q4K => DType::Q4K,
            SynthQuant::Q4KM if more_bits == Some(true) => DType::Q6K,
            SynthQuant::Q4KM => DType::Q4K,
        }
    }

    /// The tensor table the lowering needs: no weights are generated.
    pub fn table(&self) -> TensorTable {
        let mut t = TensorTable::default();
        for s in self.tensors() {
            t.insert(s.name, Ok(s.dtype), s.shape);
        }
        t
    }

    /// Model name used in metadata and reports.
    pub fn model_name(&self) -> String {
        format!("synth-{}-{}-{}", self.arch.name(), self.preset.name(), self.quant.name())
    }

    /// GGUF metadata in llama.cpp's conventions, with a byte-level tokenizer vocabulary.
    pub fn metadata(&self) -> Result<Metadata, ModelError> {
        let p = self.params();
        let a = self.arch.name();
        let mut m = Metadata::new();
        let u32_of = |v: u64| u32::try_from(v).map_err(|_| ModelError::Invalid(format!("{v} does not fit u32")));
        m.push("general.architecture", a)?;
        m.push("general.name", self.model_name().as_str())?;
        m.push("general.file_type", self.quant.file_type())?;
        if self.quant != SynthQuant::F32 && self.quant != SynthQuant::F16 {
            m.push("general.quantization_version", 2u32)?;
        }
        m.push(format!("{a}.context_length"), u32_of(p.context_length)?)?;
        m.push(format!("{a}.embedding_length"), u32_of(p.n_embd)?)?;
        m.push(format!("{a}.block_count"), p.n_layers)?;
        m.push(format!("{a}.feed_forward_length"), u32_of(p.n_ff)?)?;
        m.push(format!("{a}.attention.head_count"), u32_of(p.n_head)?)?;
        m.push(format!("{a}.attention.head_count_kv"), u32_of(p.n_head_kv)?)?;
        m.push(format!("{a}.rope.dimension_count"), p.n_rot)?;
        if p.head_dim * p.n_head != p.n_embd {
            m.push(format!("{a}.attention.key_length"), u32_of(p.head_dim)?)?;
            m.push(format!("{a}.attention.value_length"), u32_of(p.head_dim)?)?;
        }
        m.push(format!("{a}.rope.freq_base"), p.rope_theta as f32)?;
        m.push(format!("{a}.attention.layer_norm_rms_epsilon"), p.rms_eps as f32)?;
        let (tokens, types) = byte_vocab(p.vocab);
        let eos = (tokens.len() - 1) as u32;
        m.push("tokenizer.ggml.model", "gpt2")?;
        m.push("tokenizer.ggml.pre", if self.arch == Arch::Llama { "llama-bpe" } else { "qwen2" })?;
        m.push("tokenizer.ggml.tokens", Value::Array(tokens.into()))?;
        m.push("tokenizer.ggml.token_type", Value::Array(types.into()))?;
        m.push("tokenizer.ggml.merges", Value::Array(Vec::<String>::new().into()))?;
        m.push("tokenizer.ggml.bos_token_id", eos)?;
        m.push("tokenizer.ggml.eos_token_id", eos)?;
        Ok(m)
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors().iter().map(|t| t.dtype.bytes_for(t.shape.iter().product()).unwrap_or(0)).sum()
    }

    /// Write the GGUF file, calling `progress(bytes_written)` as tensors are produced.
    pub fn write<W: Write>(&self, out: W, progress: &dyn Fn(u64)) -> Result<W, ModelError> {
        let tensors = self.tensors();
        let specs = tensors
            .iter()
            .map(|t| TensorSpec::new(t.name.clone(), t.shape.iter().rev().copied().collect(), t.dtype))
            .collect();
        let mut w = GgufWriter::new(out, &self.metadata()?, specs)?;
        let mut written = 0u64;
        for (index, t) in tensors.iter().enumerate() {
            let cols = t.shape.last().copied().unwrap_or(1) as usize;
            let rows: usize = t.shape.iter().rev().skip(1).product::<u64>() as usize;
            let row_bytes = t.dtype.bytes_for(cols as u64).unwrap_or(0) as usize;
            // Chunks of about 4M elements, generated and encoded in parallel.
            let rows_per_chunk = (4 << 20) / cols.max(1) + 1;
            let mut start = 0usize;
            while start < rows {
                let n = rows_per_chunk.min(rows - start);
                let mut bytes = vec![0u8; n * row_bytes];
                bytes.par_chunks_mut(row_bytes.max(1)).enumerate().try_for_each(|(r, dst)| {
                    let mut rng = SplitMix::new(
                        self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((start + r) as u64) << 20,
                    );
                    let row: Vec<f32> = (0..cols).map(|_| t.init.sample(&mut rng)).collect();
                    quant::quantize(t.dtype, &row, dst)
                })?;
                w.write_tensor_chunk(&t.name, &bytes)?;
                written += bytes.len() as u64;
                progress(written);
                start += n;
            }
        }
        Ok(w.finish()?)
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third
/// layer in between, get more bits in Q4_K_M.
fn use_more_bits(layer: u32, n_layers: u32) -> bool {
    let (i, n) = (i64::from(layer), i64::from(n_layers));
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// llama.cpp's fallback for rows that are not whole blocks of the chosen type.
fn fallback(dtype: DType, row: u64) -> DType {
    if row.is_multiple_of(dtype.block_len()) {
        return dtype;
    }
    let t = match dtype {
        DType::Q4K => DType::Q5_0,
        DType::Q5K => DType::Q5_1,
        DType::Q6K => DType::Q8_0,
        other => other,
    };
    if row.is_multiple_of(t.block_len()) {
        t
    } else {
        DType::F16
    }
}

/// A byte-level BPE vocabulary without merges: the 256 GPT-2 byte symbols, filler tokens,
/// and a final `<|endoftext|>` control token.
fn byte_vocab(vocab: u64) -> (Vec<String>, Vec<i32>) {
    let n = vocab.max(257) as usize;
    let mut tokens: Vec<String> = (0u8..=255).map(|b| byte_symbol(b).to_string()).collect();
    let mut types = vec![1i32; 256];
    while tokens.len() < n - 1 {
        tokens.push(format!("<|unused_{}|>", tokens.len()));
        types.push(5); // unused
    }
    tokens.push("<|endoftext|>".into());
    types.push(3); // control
    (tokens, types)
}

/// GPT-2's printable stand-in for a byte (`bytes_to_unicode`).
fn byte_symbol(b: u8) -> char {
    let printable = |c: u8| (b'!'..=b'~').contains(&c) || (0xA1..=0xAC).contains(&c) || (0xAE..=0xFF).contains(&c);
    if printable(b) {
        return char::from(b);
    }
    let shifted = (0u8..b).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(256 + shifted).unwrap_or('?')
}

impl Init {
    fn sample(self, rng: &mut SplitMix) -> f32 {
        let u = rng.uniform(); // [-1, 1)
        match self {
            Init::Matrix(std) => u * std * 3f32.sqrt(),
            Init::Gain => 1.0 + 0.1 * u,
            Init::Bias => 0.05 * u,
        }
    }
}

/// SplitMix64: tiny, fast, and good enough for weights nobody reads.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_matches_llama_cpp_for_28_layers() {
        let picked: Vec<u32> = (0..28).filter(|&l| use_more_bits(l, 28)).collect();
        // n/8 = 3, 7n/8 = 24: layers 0-2, 24-27, and 3 + 3k + 2.
        assert_eq!(picked, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]);
    }

    #[test]
    fn byte_symbols_are_gpt2s() {
        assert_eq!(byte_symbol(b'a'), 'a');
        assert_eq!(byte_symbol(b' '), 'Ġ');
        assert_eq!(byte_symbol(b'\n'), 'Ċ');
        let all: std::collections::HashSet<char> = (0u8..=255).map(byte_symbol).collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn fallbacks_follow_row_length() {
        assert_eq!(fallback(DType::Q4K, 896), DType::Q5_0);
        assert_eq!(fallback(DType::Q6K, 896), DType::Q8_0);
        assert_eq!(fallback(DType::Q4K, 4864), DType::Q4K);
    }
}
