//! SentencePiece BPE, as GGUF stores it (`tokenizer.ggml.model = "llama"`: Llama 2, TinyLlama,
//! Mistral and others): a vocabulary of pieces with scores and no merge list.
//!
//! Encoding a stretch of text (between added tokens) follows SentencePiece's BPE and
//! llama.cpp's `llm_tokenizer_spm`: prefix a space (`add_space_prefix`, SentencePiece's dummy
//! prefix; llama.cpp adds it at the start and after every special token, i.e. to every stretch),
//! write spaces as `▁` (U+2581), start from one symbol per character, and repeatedly merge the
//! adjacent pair whose concatenation is a vocabulary piece with the highest score (ties: the
//! leftmost pair). A symbol left that is not a piece (a character outside the vocabulary) is
//! spelled as its UTF-8 bytes with the byte pieces `<0x00>`…`<0xFF>` (byte fallback), else as
//! the unknown token. Only normal and user-defined pieces take part in merges (SentencePiece
//! never produces control, unused or byte pieces by merging).
//!
//! Decoding writes `▁` as a space and a byte piece as its byte; [`super::Tokenizer::decode`]
//! then drops the one leading space the prefix put there (as SentencePiece, HF's `Strip`
//! decoder and llama.cpp do), so `decode(encode(text)) == text`.

use super::bpe::Bpe;
use super::TokenKind;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// SentencePiece's whitespace mark.
pub(crate) const SPACE: char = '\u{2581}';

/// The SentencePiece model: what encoding needs beyond the vocabulary lookup.
#[derive(Debug, Clone)]
pub(crate) struct Spm {
    /// Merge priority of every piece (`tokenizer.ggml.scores`).
    scores: Vec<f32>,
    /// Which pieces merges may produce (normal and user-defined ones).
    mergeable: Vec<bool>,
    /// The byte piece for each byte value, where the vocabulary has it.
    bytes: Vec<Option<u32>>,
    unk: Option<u32>,
    add_space_prefix: bool,
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes of the merged text (a merge is stale once either side has changed).
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// The heap's top is the highest score, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One symbol of the text being merged: a byte range, linked to its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// The model over `tokens` (with `kinds` and `scores`, one each per token).
    pub(crate) fn new(
        tokens: &[String],
        kinds: &[TokenKind],
        scores: Vec<f32>,
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Spm {
        let mut bytes = vec![None; 256];
        for (id, (t, k)) in (0u32..).zip(tokens.iter().zip(kinds)) {
            if let (TokenKind::Byte, Some(b)) = (k, byte_piece(t)) {
                bytes[usize::from(b)].get_or_insert(id);
            }
        }
        let mergeable = kinds.iter().map(|k| matches!(k, TokenKind::Normal | TokenKind::UserDefined)).collect();
        Spm { scores, mergeable, bytes, unk, add_space_prefix }
    }

    /// Whether decoding drops one leading space (the one encoding prefixed).
    pub(crate) fn strips_leading_space(&self) -> bool {
        self.add_space_prefix
    }

    /// Appends the ids of one stretch of text (no added tokens in it).
    pub(crate) fn encode_into(&self, text: &str, lookup: &HashMap<String, u32>, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut s = String::with_capacity(text.len() + 3);
        if self.add_space_prefix {
            s.push(SPACE);
        }
        s.extend(text.chars().map(|c| if c == ' ' { SPACE } else { c }));

        let mut symbols: Vec<Symbol> = Vec::with_capacity(s.len());
        for (i, (start, c)) in s.char_indices().enumerate() {
            symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: Some(i + 1) });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }
        let piece = |sym: &Symbol| s.get(sym.start..sym.start + sym.len).unwrap_or("");
        let mut queue = BinaryHeap::new();
        let try_pair =
            |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
                let (Some(l), Some(r)) = (left, right) else { return };
                let (a, b) = (symbols[l], symbols[r]);
                let Some(text) = s.get(a.start..b.start + b.len) else { return };
                if let Some(&id) = lookup.get(text) {
                    if self.mergeable.get(id as usize) == Some(&true) {
                        let score = self.scores.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY);
                        queue.push(Bigram { score, left: l, right: r, len: text.len() });
                    }
                }
            };
        for i in 1..symbols.len() {
            try_pair(&mut queue, &symbols, Some(i - 1), Some(i));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len || l.next != Some(b.right) {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.left].next = r.next;
            symbols[b.right].len = 0;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            try_pair(&mut queue, &symbols, symbols[b.left].prev, Some(b.left));
            try_pair(&mut queue, &symbols, Some(b.left), symbols[b.left].next);
        }

        let mut at = if symbols.is_empty() { None } else { Some(0) };
        while let Some(i) = at {
            let sym = symbols[i];
            let text = piece(&sym);
            match lookup.get(text) {
                Some(&id) => out.push(id),
                None => {
                    for b in text.bytes() {
                        if let Some(id) = self.bytes[usize::from(b)].or(self.unk) {
                            out.push(id);
                        }
                    }
                }
            }
            at = sym.next;
        }
    }

    /// Appends the bytes piece `token` (of `kind`) stands for.
    pub(crate) fn token_bytes_into(token: &str, kind: TokenKind, out: &mut Vec<u8>) {
        if kind == TokenKind::Byte {
            if let Some(b) = byte_piece(token) {
                out.push(b);
                return;
            }
        }
        for c in token.chars() {
            if c == SPACE {
                out.push(b' ');
            } else {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// One step of an HF `tokenizer.json` normalizer that SentencePiece-style tokenizers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NormOp {
    /// `Prepend`: put this before non-empty text.
    Prepend(String),
    /// `Replace` with a `String` pattern: every occurrence of the first by the second.
    Replace(String, String),
}

/// When HF's `Metaspace` pre-tokenizer prepends its replacement character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrependScheme {
    Always,
    /// Only to the text at the start of the input.
    First,
    Never,
}

/// HF's `Metaspace` pre-tokenizer: spaces become `replacement`, which is prepended per
/// `prepend` unless the text already starts with it; with `split`, the text is cut before
/// every `replacement` (each piece then starts with one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metaspace {
    pub(crate) replacement: char,
    pub(crate) prepend: PrependScheme,
    pub(crate) split: bool,
}

/// A SentencePiece-style HF `tokenizer.json` (BPE with `byte_fallback`, as Llama 2 and
/// Mistral checkpoints ship): its normalizer steps and `Metaspace` pre-tokenizer spelled out,
/// then BPE by merge rank over characters with byte fallback ([`Bpe`]). Decoding is the same
/// as [`Spm`]'s (`▁` → space, byte tokens → bytes), with one leading space dropped when the
/// decoder says so (`Strip`, or a `Metaspace` decoder that prepends).
#[derive(Debug, Clone)]
pub(crate) struct HfSpm {
    pub(crate) normalizer: Vec<NormOp>,
    pub(crate) metaspace: Option<Metaspace>,
    pub(crate) bpe: Bpe,
    pub(crate) strip_leading_space: bool,
}

impl HfSpm {
    /// Appends the ids of one stretch of text; `at_start`: it begins the input.
    pub(crate) fn encode_into(&self, text: &str, at_start: bool, out: &mut Vec<u32>) {
        let mut s = text.to_owned();
        for op in &self.normalizer {
            match op {
                NormOp::Prepend(p) if !s.is_empty() => s.insert_str(0, p),
                NormOp::Prepend(_) => {}
                NormOp::Replace(from, to) if !from.is_empty() => s = s.replace(from.as_str(), to),
                NormOp::Replace(..) => {}
            }
        }
        let Some(m) = &self.metaspace else {
            self.bpe.encode_piece(&s, out);
            return;
        };
        let mut s: String = s.chars().map(|c| if c == ' ' { m.replacement } else { c }).collect();
        let prepend = match m.prepend {
            PrependScheme::Always => true,
            PrependScheme::First => at_start,
            PrependScheme::Never => false,
        };
        if prepend && !s.is_empty() && !s.starts_with(m.replacement) {
            s.insert(0, m.replacement);
        }
        if !m.split {
            self.bpe.encode_piece(&s, out);
            return;
        }
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if c == m.replacement && i > start {
                self.bpe.encode_piece(&s[start..i], out);
                start = i;
            }
        }
        self.bpe.encode_piece(&s[start..], out);
    }
}

/// The byte of a byte piece `<0xAB>`.
pub(crate) fn byte_piece(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pieces: &[(&str, f32)]) -> (Spm, HashMap<String, u32>) {
        let mut tokens: Vec<String> = vec!["<unk>".into()];
        let mut kinds = vec![TokenKind::Unknown];
        let mut scores = vec![0.0];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            kinds.push(TokenKind::Byte);
            scores.push(0.0);
        }
        for (p, s) in pieces {
            tokens.push((*p).into());
            kinds.push(TokenKind::Normal);
            scores.push(*s);
        }
        let lookup = (0u32..).zip(&tokens).map(|(i, t)| (t.clone(), i)).collect();
        (Spm::new(&tokens, &kinds, scores, Some(0), true), lookup)
    }

    fn encode(m: &(Spm, HashMap<String, u32>), text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        m.0.encode_into(text, &m.1, &mut out);
        out
    }

    #[test]
    fn the_highest_scoring_pair_merges_first() {
        // ▁ab: "▁a" (score -1) beats "ab" (-2), so "▁a" + "b", never "▁" + "ab".
        let m = model(&[("▁", -5.0), ("a", -5.0), ("b", -5.0), ("▁a", -1.0), ("ab", -2.0)]);
        assert_eq!(encode(&m, "ab"), vec![256 + 4, 256 + 3]);
        let m = model(&[("▁", -5.0), ("a", -5.0), ("b", -5.0), ("▁a", -3.0), ("ab", -2.0)]);
        assert_eq!(encode(&m, "ab"), vec![256 + 1, 256 + 5]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let m = model(&[("▁", -5.0), ("a", -5.0)]);
        // é is 0xC3 0xA9: two byte pieces (ids 1 + byte).
        assert_eq!(encode(&m, "aé"), vec![256 + 1, 256 + 2, 1 + 0xC3, 1 + 0xA9]);
        assert_eq!(encode(&m, ""), Vec::<u32>::new());
    }

    #[test]
    fn pieces_decode_to_their_bytes() {
        let mut out = Vec::new();
        Spm::token_bytes_into("▁hello▁", TokenKind::Normal, &mut out);
        Spm::token_bytes_into("<0x0A>", TokenKind::Byte, &mut out);
        Spm::token_bytes_into("<0x0A>", TokenKind::Normal, &mut out);
        assert_eq!(out, b" hello \n<0x0A>");
        assert_eq!(byte_piece("<0xff>"), Some(0xFF));
        assert_eq!(byte_piece("<0x1>"), None);
    }
}
