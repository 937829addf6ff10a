//! Decoding token by token, for printing tokens as they are generated.
//!
//! A byte-level token may end in the middle of a UTF-8 character (`æ` then `Ĺ¥` for 日), so
//! the decoder keeps the bytes of an incomplete character until the next token completes it.
//! Bytes that can never become valid UTF-8 become U+FFFD right away, and [`StreamDecoder::finish`]
//! turns a still-incomplete tail into U+FFFD. The concatenation of everything it yields equals
//! [`Tokenizer::decode`] of all the ids (both replace invalid sequences the way
//! `String::from_utf8_lossy` does, and both drop the leading space a SentencePiece tokenizer's
//! dummy prefix put before the first piece).

use super::Tokenizer;

/// Incremental decoder over one [`Tokenizer`].
#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    pending: Vec<u8>,
    skip_special: bool,
    /// No byte has come yet (the first may be a leading space to drop).
    at_start: bool,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder that yields special tokens' text too (as [`Tokenizer::decode`]).
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        StreamDecoder { tokenizer, pending: Vec::new(), skip_special: false, at_start: true }
    }

    /// Drops control and unknown tokens (as [`Tokenizer::decode_skip_special`]).
    pub fn skip_special(mut self, skip: bool) -> Self {
        self.skip_special = skip;
        self
    }

    /// Adds one token; returns the text that became complete, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        if self.skip_special && self.tokenizer.is_special(id) {
            return None;
        }
        self.tokenizer.token_bytes_into(id, &mut self.pending);
        if self.at_start && !self.pending.is_empty() {
            self.at_start = false;
            if self.tokenizer.strips_leading_space() && self.pending.first() == Some(&b' ') {
                self.pending.remove(0);
            }
        }
        self.take(false)
    }

    /// Ends the stream: returns what is left, an incomplete character as U+FFFD.
    pub fn finish(&mut self) -> Option<String> {
        self.take(true)
    }

    /// True when bytes of an incomplete character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn take(&mut self, at_end: bool) -> Option<String> {
        let mut out = String::new();
        let mut start = 0;
        while let Some(rest) = self.pending.get(start..).filter(|r| !r.is_empty()) {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(rest.get(..valid).unwrap_or_default()));
                    start += valid;
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += bad;
                        }
                        None if at_end => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = self.pending.len();
                        }
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..start.min(self.pending.len()));
        (!out.is_empty()).then_some(out)
    }
}
