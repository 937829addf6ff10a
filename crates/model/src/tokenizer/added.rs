//! Added tokens (control and user-defined), found in the raw text before anything else.
//!
//! As in HF's `AddedVocabulary` and llama.cpp's `tokenizer_st_partition`, the text is first cut
//! at added tokens, and only the stretches between them are normalized, pre-tokenized and
//! BPE-encoded. Matching is leftmost-longest over all added tokens at once. Special (control)
//! tokens are honoured only when the caller asks to parse specials; otherwise a match of one is
//! left in the text, where BPE spells it out character by character (HF's
//! `encode_special_tokens`). User-defined (non-special) tokens always match.

use super::TokenizerError;
use aho_corasick::{AhoCorasick, MatchKind};

/// One added token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddedToken {
    pub(crate) id: u32,
    pub(crate) content: String,
    /// Control token: matched only when parsing specials.
    pub(crate) special: bool,
    /// Whitespace to the left of a match belongs to the match (HF `lstrip`).
    pub(crate) lstrip: bool,
    /// Whitespace to the right of a match belongs to the match (HF `rstrip`).
    pub(crate) rstrip: bool,
}

/// A stretch of input: plain text, or an added token's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Token(u32),
}

/// The added tokens and a matcher over them.
#[derive(Debug, Clone)]
pub(crate) struct AddedVocab {
    tokens: Vec<AddedToken>,
    matcher: Option<AhoCorasick>,
}

impl AddedVocab {
    /// Builds the matcher; tokens with empty content are never matched.
    pub(crate) fn new(tokens: Vec<AddedToken>) -> Result<AddedVocab, TokenizerError> {
        let tokens: Vec<AddedToken> = tokens.into_iter().filter(|t| !t.content.is_empty()).collect();
        let matcher = if tokens.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(tokens.iter().map(|t| t.content.as_str()))
                .map_err(|e| TokenizerError::Invalid(format!("cannot build the special-token matcher: {e}")))?;
            Some(ac)
        };
        Ok(AddedVocab { tokens, matcher })
    }

    /// The added tokens.
    pub(crate) fn tokens(&self) -> &[AddedToken] {
        &self.tokens
    }

    /// Cuts `text` at added tokens (control tokens only if `parse_special`).
    pub(crate) fn split<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Segment<'a>> {
        let mut out = Vec::new();
        let Some(matcher) = &self.matcher else {
            if !text.is_empty() {
                out.push(Segment::Text(text));
            }
            return out;
        };
        let mut last = 0;
        for m in matcher.find_iter(text) {
            let Some(tok) = self.tokens.get(m.pattern().as_usize()) else { continue };
            if tok.special && !parse_special {
                continue;
            }
            let (mut start, mut end) = (m.start(), m.end());
            if tok.lstrip {
                let before = text.get(last..start).unwrap_or("");
                start -= before.len() - before.trim_end().len();
            }
            if tok.rstrip {
                let after = text.get(end..).unwrap_or("");
                end += after.len() - after.trim_start().len();
            }
            if let Some(gap) = text.get(last..start).filter(|g| !g.is_empty()) {
                out.push(Segment::Text(gap));
            }
            out.push(Segment::Token(tok.id));
            last = end;
        }
        if let Some(rest) = text.get(last..).filter(|r| !r.is_empty()) {
            out.push(Segment::Text(rest));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(id: u32, content: &str, special: bool) -> AddedToken {
        AddedToken { id, content: content.into(), special, lstrip: false, rstrip: false }
    }

    #[test]
    fn leftmost_longest_and_parse_special() {
        let v = AddedVocab::new(vec![tok(1, "<|a|>", true), tok(2, "<|a|><|a|>", true), tok(3, "<u>", false)]).unwrap();
        use Segment::*;
        assert_eq!(v.split("x<|a|><|a|>y<u>", true), vec![Text("x"), Token(2), Text("y"), Token(3)]);
        assert_eq!(v.split("x<|a|>y<u>", false), vec![Text("x<|a|>y"), Token(3)]);
        assert_eq!(v.split("", true), vec![]);
    }

    #[test]
    fn lstrip_and_rstrip_take_whitespace() {
        let mut t = tok(7, "<m>", true);
        t.lstrip = true;
        t.rstrip = true;
        let v = AddedVocab::new(vec![t]).unwrap();
        assert_eq!(v.split("a  <m> \nb", true), vec![Segment::Text("a"), Segment::Token(7), Segment::Text("b")]);
    }
}
