//! A tokenizer from GGUF metadata (`tokenizer.ggml.*`), as llama.cpp's converter writes it.
//!
//! Keys read: `model` (`"gpt2"`: byte-level BPE; `"llama"`: SentencePiece BPE), `tokens`,
//! `token_type` (optional: all normal), for `gpt2` `merges` (`"left right"` strings) and `pre`
//! (optional: GPT-2's split), for `llama` `scores` (one per token) and `add_space_prefix`
//! (optional: true), and `bos_token_id`, `eos_token_id`, `eot_token_id`, `eom_token_id`,
//! `unknown_token_id` (optional; a negative id or `u32::MAX` means none), `add_bos_token`
//! (optional: false). A SentencePiece vocabulary without them gets llama.cpp's defaults: bos 1,
//! eos 2, the token typed unknown, and BOS added.
//!
//! Control (3) and unknown (2) tokens are matched in text when parsing specials, user-defined
//! (4) tokens always (llama.cpp's `tokenizer_st_partition`); the converter stores user-defined
//! tokens as plain text, so they match as written. BPE looks symbols up among all tokens; a text
//! that appears twice in `tokens` keeps its first id (with a warning).

use super::added::AddedToken;
use super::bpe::Bpe;
use super::pretok::PreTokenizer;
use super::spm::Spm;
use super::{Model, Parts, TokenKind, Tokenizer, TokenizerError};
use crate::gguf::Metadata;
use std::collections::HashMap;

const PREFIX: &str = "tokenizer.ggml.";

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata. Errors name the key or token at fault.
    pub fn from_gguf(meta: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let key = |k: &str| format!("{PREFIX}{k}");
        let model = meta.get_str(&key("model"))?;
        if model != "gpt2" && model != "llama" {
            return Err(TokenizerError::UnsupportedModel { model: model.to_owned() });
        }
        let tokens = meta.get_str_array(&key("tokens"))?;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::VocabTooLarge { count: n });
        }
        let kinds = match meta.get(&key("token_type")) {
            None => vec![TokenKind::Normal; n],
            Some(_) => {
                let types = meta.get_i32_array(&key("token_type"))?;
                if types.len() != n {
                    return Err(TokenizerError::TypeCountMismatch { types: types.len(), tokens: n });
                }
                types
                    .iter()
                    .enumerate()
                    .map(|(id, &ty)| TokenKind::from_gguf(ty).ok_or(TokenizerError::BadTokenType { id, ty }))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };

        let mut vocab: HashMap<String, u32> = HashMap::with_capacity(n);
        let mut duplicates = 0usize;
        for (id, t) in (0u32..).zip(tokens) {
            if vocab.contains_key(t) {
                duplicates += 1;
            } else {
                vocab.insert(t.clone(), id);
            }
        }
        if duplicates > 0 {
            tracing::warn!("{duplicates} GGUF tokens repeat an earlier token's text; the first id is used");
        }

        let unk = opt_id(meta, &key("unknown_token_id"), n)?;
        let model = if model == "llama" {
            let scores = meta.get_f32_array(&key("scores"))?;
            if scores.len() != n {
                return Err(TokenizerError::ScoreCountMismatch { scores: scores.len(), tokens: n });
            }
            let add_space_prefix = meta.opt_as::<bool>(&key("add_space_prefix"))?.unwrap_or(true);
            let unk = match meta.get(&key("unknown_token_id")) {
                None => kinds.iter().position(|k| *k == TokenKind::Unknown).map(|i| i as u32),
                Some(_) => unk,
            };
            Model::SentencePiece(Spm::new(tokens, &kinds, scores, unk, add_space_prefix))
        } else {
            let merge_lines = meta.get_str_array(&key("merges"))?;
            let mut merges = Vec::with_capacity(merge_lines.len());
            for (rank, line) in merge_lines.iter().enumerate() {
                merges.push(split_merge(line).ok_or_else(|| TokenizerError::BadMerge {
                    rank,
                    merge: line.clone(),
                    reason: "expected two tokens separated by one space".into(),
                })?);
            }
            let gguf_pre = PreTokenizer::for_gguf(meta.opt_str(&key("pre"))?)?;
            if meta.get(&key("pre")).is_none() {
                tracing::warn!("GGUF has no tokenizer.ggml.pre; using GPT-2's pre-tokenizer split");
            }
            let bpe = Bpe::new(vocab, merges, gguf_pre.ignore_merges)?;
            Model::ByteLevel { bpe, pre: gguf_pre.pre }
        };

        let added = (0u32..)
            .zip(tokens.iter().zip(&kinds))
            .filter_map(|(id, (content, kind))| {
                let special = match kind {
                    TokenKind::Control | TokenKind::Unknown => true,
                    TokenKind::UserDefined => false,
                    TokenKind::Normal | TokenKind::Unused | TokenKind::Byte => return None,
                };
                Some(AddedToken { id, content: content.clone(), special, lstrip: false, rstrip: false })
            })
            .collect();

        // SentencePiece files without the keys get llama.cpp's defaults: bos 1, eos 2, BOS added.
        let spm = matches!(model, Model::SentencePiece(_));
        let default_id = |id: u32| (spm && (id as usize) < n).then_some(id);
        let bos = match meta.get(&key("bos_token_id")) {
            None => default_id(1),
            Some(_) => opt_id(meta, &key("bos_token_id"), n)?,
        };
        let eos = match meta.get(&key("eos_token_id")) {
            None => default_id(2),
            Some(_) => opt_id(meta, &key("eos_token_id"), n)?,
        };
        let eot = opt_id(meta, &key("eot_token_id"), n)?;
        let eom = opt_id(meta, &key("eom_token_id"), n)?;
        let add_bos = meta.opt_as::<bool>(&key("add_bos_token"))?.unwrap_or(spm);

        Tokenizer::assemble(Parts {
            tokens: tokens.to_vec(),
            kinds,
            model,
            added,
            bos,
            eos,
            eot,
            extra_eos: eom.into_iter().collect(),
            add_bos,
        })
    }
}

/// `"left right"` → `("left", "right")`; the separator is the first space after the first
/// character (so a left side that is itself a space still works), as llama.cpp splits.
fn split_merge(line: &str) -> Option<(&str, &str)> {
    let first = line.chars().next()?.len_utf8();
    let at = first + line.get(first..)?.find(' ')?;
    let (left, right) = (line.get(..at)?, line.get(at + 1..)?);
    (!left.is_empty() && !right.is_empty()).then_some((left, right))
}

/// An optional token id: missing, negative or `u32::MAX` is `None`; `>= n` is an error.
fn opt_id(meta: &Metadata, key: &str, n: usize) -> Result<Option<u32>, TokenizerError> {
    match meta.opt_as::<i64>(key)? {
        None => Ok(None),
        Some(v) if v < 0 || v == i64::from(u32::MAX) => Ok(None),
        Some(v) => match u32::try_from(v) {
            Ok(id) if (id as usize) < n => Ok(Some(id)),
            _ => Err(TokenizerError::IdOutOfRange { what: key.to_owned(), id: v, vocab: n }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::split_merge;

    #[test]
    fn merges_split_at_the_first_inner_space() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(split_merge("  x"), Some((" ", "x")));
        assert_eq!(split_merge("ab"), None);
        assert_eq!(split_merge("a "), None);
        assert_eq!(split_merge(""), None);
    }
}
