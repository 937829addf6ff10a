//! Normalization and pre-tokenization: text between special tokens → byte-level pieces.
//!
//! A pre-tokenizer is a list of stages run in order over a list of pieces, as HF `tokenizers`
//! runs a `Sequence` of pre-tokenizers: a regex split (behavior `Isolated`: each match is a
//! piece, and so is each stretch between matches) or ByteLevel's prefix space. At the end every
//! piece is mapped to byte-level characters and handed to BPE separately.
//!
//! GGUF files do not store the regex; `tokenizer.ggml.pre` names it and the reader (llama.cpp,
//! and this module) carries a table. The patterns here are the ones in the models' own
//! `tokenizer.json`, which llama.cpp keeps as a comment above its rewritten form: llama.cpp's
//! engine has no inline flags, so it spells `(?i:'s|…)` as `'[sS]|…`. The two differ only where
//! Unicode case folding reaches beyond ASCII: HF (Oniguruma) and `fancy-regex` both let `'ſ`
//! (U+017F, long s) match `(?i:'s)`, llama.cpp's form does not. We follow the model's tokenizer.

use super::{bytelevel, TokenizerError};
use fancy_regex::Regex;
use std::borrow::Cow;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// GPT-2's split, used by HF's `ByteLevel` pre-tokenizer when `use_regex` is on.
pub(crate) const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Qwen2's split (llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`): digits one at a time.
pub(crate) const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`): digits in runs of up to three.
pub(crate) const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek V3's split (llama.cpp `LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM`; DeepSeek-R1-Distill-Qwen
/// ships it in a Qwen2-architecture model): digit runs of up to three, CJK and kana runs, then a
/// GPT-4-like split that keeps combining marks with letters.
pub(crate) const DEEPSEEK3_PATTERNS: [&str; 3] = [
    r"\p{N}{1,3}",
    "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];

/// The `tokenizer.ggml.pre` values this reader knows, for error messages.
pub const SUPPORTED_GGUF_PRE: &[&str] = &[
    "qwen2",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "falcon3",
    "smollm",
    "deepseek-r1-qwen",
    "deepseek-v3",
    "gpt2",
    "gpt-2",
    "default",
];

/// One step of a pre-tokenizer.
#[derive(Debug, Clone)]
pub(crate) enum Stage {
    /// Split each piece on the regex's matches, keeping matches and gaps as pieces.
    Split(Box<Regex>),
    /// Prepend a space to each piece that does not start with one (`ByteLevel.add_prefix_space`).
    PrefixSpace,
}

impl Stage {
    /// A `Split` stage from a pattern.
    pub(crate) fn split(pattern: &str) -> Result<Stage, TokenizerError> {
        let re = Regex::new(pattern)
            .map_err(|e| TokenizerError::Regex { pattern: pattern.to_owned(), message: e.to_string() })?;
        Ok(Stage::Split(Box::new(re)))
    }
}

/// Normalizer plus pre-tokenizer stages.
#[derive(Debug, Clone)]
pub(crate) struct PreTokenizer {
    nfc: bool,
    stages: Vec<Stage>,
}

/// What a `tokenizer.ggml.pre` name stands for.
#[derive(Debug, Clone)]
pub(crate) struct GgufPre {
    pub(crate) pre: PreTokenizer,
    pub(crate) ignore_merges: bool,
}

impl PreTokenizer {
    pub(crate) fn new(nfc: bool, stages: Vec<Stage>) -> PreTokenizer {
        PreTokenizer { nfc, stages }
    }

    /// The pre-tokenizer for a GGUF `tokenizer.ggml.pre` value (missing: GPT-2's, as llama.cpp
    /// falls back to its default). Qwen2 also normalizes to NFC, as Qwen2's `tokenizer.json`
    /// does (llama.cpp does not; see the module docs of [`super`]). Llama 3 ignores merges for
    /// pieces that are whole vocabulary entries, as its `tokenizer.json` and llama.cpp do.
    /// SmolLM splits digits one by one before GPT-2's split (its `tokenizer.json`: `Digits`
    /// with `individual_digits`, then `ByteLevel` with the regex; llama.cpp's `smollm`);
    /// DeepSeek's names take [`DEEPSEEK3_PATTERNS`].
    pub(crate) fn for_gguf(name: Option<&str>) -> Result<GgufPre, TokenizerError> {
        let (patterns, nfc, ignore_merges): (&[&str], bool, bool) = match name {
            Some("qwen2") => (&[QWEN2_PATTERN], true, false),
            Some("llama-bpe" | "llama3" | "llama-v3" | "falcon3") => (&[LLAMA3_PATTERN], false, true),
            Some("smollm") => (&[r"\p{N}", GPT2_PATTERN], false, false),
            Some("deepseek-r1-qwen" | "deepseek-v3") => (&DEEPSEEK3_PATTERNS, false, false),
            Some("gpt2" | "gpt-2" | "default") | None => (&[GPT2_PATTERN], false, false),
            Some(other) => {
                return Err(TokenizerError::UnknownPre {
                    name: other.to_owned(),
                    supported: SUPPORTED_GGUF_PRE.join(", "),
                })
            }
        };
        let stages = patterns.iter().map(|p| Stage::split(p)).collect::<Result<_, _>>()?;
        Ok(GgufPre { pre: PreTokenizer::new(nfc, stages), ignore_merges })
    }

    /// Normalizes `text` and splits it into byte-level pieces, appended to `out`.
    pub(crate) fn pieces_into(&self, text: &str, out: &mut Vec<String>) {
        if text.is_empty() {
            return;
        }
        let normalized: Cow<'_, str> = if self.nfc && is_nfc_quick(text.chars()) != IsNormalized::Yes {
            Cow::Owned(text.nfc().collect())
        } else {
            Cow::Borrowed(text)
        };
        let mut parts: Vec<String> = vec![normalized.into_owned()];
        for stage in &self.stages {
            match stage {
                Stage::Split(re) => {
                    let mut next = Vec::with_capacity(parts.len() * 4);
                    for p in &parts {
                        split_isolated(re, p, &mut next);
                    }
                    parts = next;
                }
                Stage::PrefixSpace => {
                    for p in parts.iter_mut().filter(|p| !p.starts_with(' ')) {
                        p.insert(0, ' ');
                    }
                }
            }
        }
        out.extend(parts.iter().filter(|p| !p.is_empty()).map(|p| {
            let mut s = String::with_capacity(p.len() * 2);
            bytelevel::encode_into(p, &mut s);
            s
        }));
    }
}

/// Splits `text` on `re` with HF's `Isolated` behavior: matches and the gaps between them are
/// pieces, in order; empty matches are skipped. A regex engine error (only its backtracking
/// limit, on pathological input) leaves the rest of the text as one piece, with a warning.
fn split_isolated(re: &Regex, text: &str, out: &mut Vec<String>) {
    let mut last = 0;
    for m in re.find_iter(text) {
        match m {
            Ok(m) => {
                if m.start() == m.end() {
                    continue;
                }
                if let Some(gap) = text.get(last..m.start()).filter(|g| !g.is_empty()) {
                    out.push(gap.to_owned());
                }
                out.push(m.as_str().to_owned());
                last = m.end();
            }
            Err(e) => {
                tracing::warn!("pre-tokenizer regex failed ({e}); the rest of the text is one piece");
                break;
            }
        }
    }
    if let Some(rest) = text.get(last..).filter(|r| !r.is_empty()) {
        out.push(rest.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pattern: &str, text: &str) -> Vec<String> {
        let pre = PreTokenizer::new(false, vec![Stage::split(pattern).unwrap()]);
        let mut out = Vec::new();
        pre.pieces_into(text, &mut out);
        out
    }

    #[test]
    fn qwen2_and_llama3_differ_in_digit_runs() {
        assert_eq!(split(QWEN2_PATTERN, "a 1234"), ["a", "Ġ", "1", "2", "3", "4"]);
        assert_eq!(split(LLAMA3_PATTERN, "a 1234"), ["a", "Ġ", "123", "4"]);
    }

    #[test]
    fn whitespace_before_a_word_leaves_one_space_for_it() {
        assert_eq!(split(QWEN2_PATTERN, "x   y  "), ["x", "ĠĠ", "Ġy", "ĠĠ"]);
        // As HF's ByteLevel: `\s+(?!\S)` backs off one newline, which then stands alone.
        assert_eq!(split(GPT2_PATTERN, "it's\n\nok"), ["it", "'s", "Ċ", "Ċ", "ok"]);
    }

    /// The splits of GGUF names beyond the fixtures' own equal HF's pre-tokenizers for the
    /// models that use them, piece for piece (tests/fixtures/tokenizer/pre-variants.json).
    #[test]
    fn gguf_pre_names_split_as_hf_pre_tokenizers() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer/pre-variants.json");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let variants = json["variants"].as_object().unwrap();
        assert!(variants.len() >= 2);
        for (name, v) in variants {
            let pre = PreTokenizer::for_gguf(Some(name)).unwrap().pre;
            for case in v["cases"].as_array().unwrap() {
                let text = case["text"].as_str().unwrap();
                let want: Vec<&str> = case["pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
                let mut got = Vec::new();
                pre.pieces_into(text, &mut got);
                assert_eq!(got, want, "{name}: {text:?}");
            }
        }
    }

    #[test]
    fn unknown_gguf_pre_names_the_supported_ones() {
        let err = PreTokenizer::for_gguf(Some("tekken")).unwrap_err().to_string();
        assert!(err.contains("tekken") && err.contains("qwen2") && err.contains("llama-bpe"), "{err}");
    }
}
