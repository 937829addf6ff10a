//! The tokenizer a model was trained with, rebuilt from the model's own files.
//!
//! Byte-level BPE (GPT-2 style, as Qwen2 and Llama 3 use) from either source, and SentencePiece
//! BPE (Llama 2, TinyLlama, Mistral) from GGUF:
//!
//! - a GGUF file's `tokenizer.ggml.*` metadata ([`Tokenizer::from_gguf`]): for `model`
//!   `"gpt2"`, `tokens`, `token_type` and `merges` give the vocabulary, and `pre` names the
//!   pre-tokenizer split (see [`SUPPORTED_GGUF_PRE`]; an unknown name is an error rather than a
//!   silent fall-back to GPT-2's regex, since a wrong split gives plausible but wrong ids); for
//!   `model` `"llama"`, `tokens`, `token_type` and `scores` (see `spm.rs`: merges by piece score
//!   with byte fallback, as the `sentencepiece` library and llama.cpp; tested id for id against
//!   `sentencepiece` on the corpus);
//! - a Hugging Face directory's `tokenizer.json` (+ `tokenizer_config.json` for bos/eos and
//!   `add_bos_token`, + `generation_config.json` for extra eos ids) ([`Tokenizer::from_hf_dir`]).
//!
//! Encoding runs the same pipeline as HF `tokenizers`: cut the text at added tokens (control
//! tokens only when `parse_special` is on; user-defined ones always), normalize the rest (NFC
//! for Qwen2), split it with the pre-tokenizer regex, map each piece's UTF-8 bytes to GPT-2's
//! byte characters and apply BPE merges by rank. The acceptance tests check it id for id against
//! HF `tokenizers` on a corpus (tests/fixtures/tokenizer/) for both sources.
//!
//! Where this differs from llama.cpp, it follows the model's `tokenizer.json`:
//! - a GGUF whose `tokenizer.ggml.pre` is `qwen2` is NFC-normalized before splitting, as Qwen2's
//!   `tokenizer.json` says; llama.cpp does not normalize, so for decomposed input (`e` + U+0301)
//!   llama.cpp gives other ids than the HF tokenizer the model was trained with;
//! - the split regexes keep the models' `(?i:'s|…)`; llama.cpp rewrites it as `'[sS]|…`, which
//!   differs for non-ASCII case folds such as `'ſ` (see `pretok.rs`).
//!
//! Decoding follows HF's `ByteLevel` decoder with `skip_special_tokens=False`: each token's
//! characters map back to bytes (a token with characters outside the byte table, such as a
//! special token with non-ASCII text, contributes its own UTF-8), the bytes are joined and
//! invalid UTF-8 becomes U+FFFD. [`StreamDecoder`] yields the same text piece by piece as soon
//! as complete UTF-8 is available. Unknown ids are skipped when decoding.

mod added;
mod bpe;
mod bytelevel;
mod gguf;
pub(crate) mod hf;
mod pretok;
mod spm;
mod stream;

pub use pretok::SUPPORTED_GGUF_PRE;
pub use stream::StreamDecoder;

use crate::gguf::GgufError;
use added::{AddedToken, AddedVocab, Segment};
use bpe::Bpe;
use pretok::PreTokenizer;
use spm::{HfSpm, Spm};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

/// What went wrong building a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key is missing or has the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "tokenizer.ggml.model is {model:?}; supported: \"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece BPE)"
    )]
    UnsupportedModel { model: String },
    #[error("tokenizer.ggml.pre {name:?} is not a known pre-tokenizer; supported: {supported}")]
    UnknownPre { name: String, supported: String },
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("the vocabulary has {count} tokens, more than u32 ids can address")]
    VocabTooLarge { count: usize },
    #[error("tokenizer.ggml.token_type has {types} entries but there are {tokens} tokens")]
    TypeCountMismatch { types: usize, tokens: usize },
    #[error("tokenizer.ggml.scores has {scores} entries but there are {tokens} tokens")]
    ScoreCountMismatch { scores: usize, tokens: usize },
    #[error("token {id} has type {ty}; known types are 0..=6")]
    BadTokenType { id: usize, ty: i32 },
    #[error("merge {rank} ({merge:?}): {reason}")]
    BadMerge { rank: usize, merge: String, reason: String },
    #[error("{what} = {id} is out of range for a vocabulary of {vocab} tokens")]
    IdOutOfRange { what: String, id: i64, vocab: usize },
    #[error("bad pre-tokenizer regex {pattern:?}: {message}")]
    Regex { pattern: String, message: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Json { path: PathBuf, message: String },
    #[error("{}: unsupported tokenizer: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("{0}")]
    Invalid(String),
}

/// What a vocabulary entry is (GGUF's `tokenizer.ggml.token_type`; for an HF tokenizer, regular
/// vocabulary entries are `Normal`, special added tokens `Control`, other added tokens
/// `UserDefined`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// 1 (and 0, "undefined"): an ordinary BPE token.
    Normal,
    /// 2: the unknown token; matched in text like a control token.
    Unknown,
    /// 3: a control token (`<|im_end|>`): matched in text only when parsing specials.
    Control,
    /// 4: a user-defined token: always matched in text as a whole.
    UserDefined,
    /// 5: an unused slot; never produced by encoding.
    Unused,
    /// 6: a byte token (`<0x0A>`; SentencePiece vocabularies).
    Byte,
}

impl TokenKind {
    /// The kind for a GGUF `token_type` value.
    pub fn from_gguf(ty: i32) -> Option<TokenKind> {
        Some(match ty {
            0 | 1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => return None,
        })
    }
}

/// Token texts that end a turn or a document, as llama.cpp's end-of-generation list; a control
/// or user-defined token with one of these texts is in [`Tokenizer::eos_ids`].
const END_OF_GENERATION: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
];

/// How the text between added tokens becomes ids.
pub(crate) enum Model {
    /// Byte-level BPE (GGUF `gpt2`, HF `ByteLevel`): pre-tokenizer split, then merges by rank.
    ByteLevel { bpe: Bpe, pre: PreTokenizer },
    /// SentencePiece BPE (GGUF `llama`): pieces merged by score, byte fallback.
    SentencePiece(Spm),
    /// SentencePiece-style HF `tokenizer.json` (BPE with `byte_fallback`): its normalizer and
    /// `Metaspace` pre-tokenizer, merges by rank, byte fallback.
    HfSentencePiece(HfSpm),
}

/// A BPE tokenizer (byte-level or SentencePiece). Cheap to share (`Send + Sync`); encoding does
/// not mutate it.
pub struct Tokenizer {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    lookup: HashMap<String, u32>,
    model: Model,
    added: AddedVocab,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    add_bos: bool,
    eos_ids: Vec<u32>,
}

/// What a source reader hands to [`Tokenizer::assemble`].
pub(crate) struct Parts {
    pub(crate) tokens: Vec<String>,
    pub(crate) kinds: Vec<TokenKind>,
    pub(crate) model: Model,
    pub(crate) added: Vec<AddedToken>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) eot: Option<u32>,
    /// More end-of-generation ids (GGUF `eom_token_id`, HF `generation_config.json`).
    pub(crate) extra_eos: Vec<u32>,
    pub(crate) add_bos: bool,
}

impl Tokenizer {
    /// Checks ids and builds the lookup tables.
    pub(crate) fn assemble(parts: Parts) -> Result<Tokenizer, TokenizerError> {
        let Parts { tokens, kinds, model, added, bos, eos, eot, extra_eos, add_bos } = parts;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::VocabTooLarge { count: n });
        }
        if kinds.len() != n {
            return Err(TokenizerError::TypeCountMismatch { types: kinds.len(), tokens: n });
        }
        let check = |what: &str, id: u32| {
            if (id as usize) < n {
                Ok(id)
            } else {
                Err(TokenizerError::IdOutOfRange { what: what.to_owned(), id: i64::from(id), vocab: n })
            }
        };
        for (what, id) in [("bos", bos), ("eos", eos), ("eot", eot)] {
            if let Some(id) = id {
                check(what, id)?;
            }
        }
        for &id in &extra_eos {
            check("eos", id)?;
        }
        for t in &added {
            check(&format!("added token {:?}", t.content), t.id)?;
        }

        let mut lookup: HashMap<String, u32> = HashMap::with_capacity(n);
        for t in &added {
            lookup.entry(t.content.clone()).or_insert(t.id);
        }
        for (i, t) in (0u32..).zip(&tokens) {
            lookup.entry(t.clone()).or_insert(i);
        }

        let mut eos_ids: Vec<u32> = [eos, eot].into_iter().flatten().chain(extra_eos).collect();
        for name in END_OF_GENERATION {
            if let Some(&id) = lookup.get(*name) {
                if matches!(kinds.get(id as usize), Some(TokenKind::Control | TokenKind::UserDefined)) {
                    eos_ids.push(id);
                }
            }
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();

        let added = AddedVocab::new(added)?;
        Ok(Tokenizer { tokens, kinds, lookup, model, added, bos, eos, eot, add_bos, eos_ids })
    }

    /// Token ids for `text`. No BOS is added (see [`Tokenizer::add_bos`]). With `parse_special`
    /// the text of a control token (`<|im_start|>`) becomes that token; without it, it is
    /// spelled out as ordinary text (use that for untrusted input).
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut pieces = Vec::new();
        for (i, seg) in self.added.split(text, parse_special).into_iter().enumerate() {
            match seg {
                Segment::Token(id) => out.push(id),
                Segment::Text(t) => match &self.model {
                    Model::ByteLevel { bpe, pre } => {
                        pieces.clear();
                        pre.pieces_into(t, &mut pieces);
                        for p in &pieces {
                            bpe.encode_piece(p, &mut out);
                        }
                    }
                    Model::SentencePiece(spm) => spm.encode_into(t, &self.lookup, &mut out),
                    Model::HfSentencePiece(spm) => spm.encode_into(t, i == 0, &mut out),
                },
            }
        }
        out
    }

    /// The text of `ids` (specials included, as HF's `decode(ids, skip_special_tokens=False)`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.token_bytes_into(id, &mut bytes);
        }
        if self.strips_leading_space() && bytes.first() == Some(&b' ') {
            bytes.remove(0);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The text of `ids` without control and unknown tokens (HF `skip_special_tokens=True`).
    pub fn decode_skip_special(&self, ids: &[u32]) -> String {
        let kept: Vec<u32> = ids.iter().copied().filter(|&id| !self.is_special(id)).collect();
        self.decode(&kept)
    }

    /// Appends the bytes token `id` stands for; nothing for an unknown id.
    pub(crate) fn token_bytes_into(&self, id: u32, out: &mut Vec<u8>) {
        if let (Some(t), Some(&kind)) = (self.tokens.get(id as usize), self.kinds.get(id as usize)) {
            match self.model {
                Model::ByteLevel { .. } => bytelevel::token_bytes_into(t, out),
                Model::SentencePiece(_) | Model::HfSentencePiece(_) => Spm::token_bytes_into(t, kind, out),
            }
        }
    }

    /// Whether decoded text drops one leading space (SentencePiece's dummy prefix).
    pub(crate) fn strips_leading_space(&self) -> bool {
        match &self.model {
            Model::ByteLevel { .. } => false,
            Model::SentencePiece(spm) => spm.strips_leading_space(),
            Model::HfSentencePiece(spm) => spm.strip_leading_space,
        }
    }

    /// The vocabulary entry of `id`, as stored (byte-level characters: `Ġworld`; SentencePiece
    /// pieces: `▁world`).
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary entry or added token written exactly as stored.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.lookup.get(token).copied()
    }

    /// What kind of token `id` is.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Number of vocabulary entries (ids are `0..vocab_size()`).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Which kind of tokenizer this is, in words (`inspect` prints it).
    pub fn family(&self) -> &'static str {
        match &self.model {
            Model::ByteLevel { .. } => "byte-level BPE",
            Model::SentencePiece(_) => "SentencePiece BPE",
            Model::HfSentencePiece(_) => "SentencePiece-style BPE (byte fallback)",
        }
    }

    /// Number of BPE merges (0 for SentencePiece, which merges by piece score).
    pub fn merge_count(&self) -> usize {
        match &self.model {
            Model::ByteLevel { bpe, .. } | Model::HfSentencePiece(HfSpm { bpe, .. }) => bpe.merge_count(),
            Model::SentencePiece(_) => 0,
        }
    }

    /// True for a control token.
    pub fn is_control(&self, id: u32) -> bool {
        self.token_kind(id) == Some(TokenKind::Control)
    }

    /// True for the tokens `decode_skip_special` drops: control and unknown tokens.
    pub fn is_special(&self, id: u32) -> bool {
        matches!(self.token_kind(id), Some(TokenKind::Control | TokenKind::Unknown))
    }

    /// The beginning-of-sequence token, if the model names one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Whether a prompt should start with [`Tokenizer::bos`] (GGUF `add_bos_token`, default
    /// false; HF `add_bos_token`, else whether the post-processor template starts with a special
    /// token). A chat template usually writes the BOS text itself; then do not add another.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// The end-of-sequence token the model names (GGUF `eos_token_id`, HF `eos_token`).
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token, if the model names one (GGUF `eot_token_id`).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// Every id that should stop generation, sorted: eos, eot, GGUF `eom_token_id`, the ids in
    /// HF `generation_config.json`'s `eos_token_id`, and any control or user-defined token whose
    /// text is a known end-of-turn marker (`<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`,
    /// `<|end_of_text|>`, `<|eom_id|>`, `<|end|>`, `<end_of_turn>`, …), as llama.cpp does.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_ids.clone()
    }

    /// True if `id` is in [`Tokenizer::eos_ids`].
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.binary_search(&id).is_ok()
    }
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.merge_count())
            .field("added_tokens", &self.added.tokens().len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eot", &self.eot)
            .field("add_bos", &self.add_bos)
            .field("eos_ids", &self.eos_ids)
            .finish_non_exhaustive()
    }
}
