//! The BPE model: merge ranks over a vocabulary, applied to one pre-tokenized piece.
//!
//! A piece (already in byte-level characters) starts as one symbol per character. The adjacent
//! pair with the lowest merge rank is merged, the leftmost first among equal ranks, until no
//! adjacent pair has a merge. This is what HF `tokenizers` (`BPE::merge_word`) and llama.cpp
//! (`llm_tokenizer_bpe_session`) both do, with a heap of candidate pairs; stale candidates (a
//! side already merged away or changed) are skipped when popped. A character that is not in the
//! vocabulary is dropped, as HF does for a BPE model with no `unk_token` and no byte fallback;
//! with byte fallback (SentencePiece-style `tokenizer.json`) it becomes the byte tokens
//! `<0xAB>` of its UTF-8 bytes instead, as HF does (dropped if one of them is missing).
//!
//! With `ignore_merges` (Llama 3's tokenizer, and llama.cpp for `llama-bpe`), a piece that is
//! itself a vocabulary entry is emitted whole without merging.

use super::TokenizerError;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Merge ranks and the vocabulary that BPE looks symbols up in.
#[derive(Debug, Clone)]
pub(crate) struct Bpe {
    vocab: HashMap<String, u32>,
    /// (left id, right id) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    ignore_merges: bool,
    byte_fallback: bool,
}

const NONE: usize = usize::MAX;

#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: u32,
    prev: usize,
    next: usize,
    alive: bool,
}

impl Bpe {
    /// Builds the merge table. Each merge is `(left, right)` in rank order; both sides and their
    /// concatenation must be in `vocab`. A repeated merge keeps its first (lowest) rank, as
    /// llama.cpp does.
    pub(crate) fn new<'a>(
        vocab: HashMap<String, u32>,
        merges: impl IntoIterator<Item = (&'a str, &'a str)>,
        ignore_merges: bool,
    ) -> Result<Bpe, TokenizerError> {
        let mut table = HashMap::new();
        for (rank, (left, right)) in merges.into_iter().enumerate() {
            let bad = |reason: String| TokenizerError::BadMerge { rank, merge: format!("{left} {right}"), reason };
            let rank32 = u32::try_from(rank).map_err(|_| bad("more merges than u32 ranks".into()))?;
            let l = *vocab.get(left).ok_or_else(|| bad(format!("{left:?} is not in the vocabulary")))?;
            let r = *vocab.get(right).ok_or_else(|| bad(format!("{right:?} is not in the vocabulary")))?;
            let joined = format!("{left}{right}");
            let m = *vocab
                .get(&joined)
                .ok_or_else(|| bad(format!("the merged token {joined:?} is not in the vocabulary")))?;
            table.entry((l, r)).or_insert((rank32, m));
        }
        Ok(Bpe { vocab, merges: table, ignore_merges, byte_fallback: false })
    }

    /// Characters outside the vocabulary become byte tokens (HF `byte_fallback`).
    pub(crate) fn with_byte_fallback(mut self) -> Bpe {
        self.byte_fallback = true;
        self
    }

    /// Number of merges.
    pub(crate) fn merge_count(&self) -> usize {
        self.merges.len()
    }

    /// Appends the ids of one byte-level piece to `out`.
    pub(crate) fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        if piece.is_empty() {
            return;
        }
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(piece) {
                out.push(id);
                return;
            }
        }
        let mut syms: Vec<Symbol> = Vec::with_capacity(piece.chars().count());
        let mut buf = [0u8; 4];
        let mut push = |id: u32| {
            let i = syms.len();
            if let Some(last) = syms.last_mut() {
                last.next = i;
            }
            syms.push(Symbol { id, prev: if i == 0 { NONE } else { i - 1 }, next: NONE, alive: true });
        };
        for c in piece.chars() {
            let text = &*c.encode_utf8(&mut buf);
            if let Some(&id) = self.vocab.get(text) {
                push(id);
            } else if self.byte_fallback {
                let ids: Option<Vec<u32>> =
                    text.bytes().map(|b| self.vocab.get(&format!("<0x{b:02X}>")).copied()).collect();
                ids.into_iter().flatten().for_each(&mut push);
            }
        }
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = BinaryHeap::new();
        for i in 1..syms.len() {
            self.push_pair(&syms, i - 1, &mut heap);
        }
        while let Some(Reverse((rank, left))) = heap.pop() {
            let Some(&sym) = syms.get(left) else { continue };
            if !sym.alive || sym.next == NONE {
                continue;
            }
            let right = sym.next;
            let Some(&rsym) = syms.get(right) else { continue };
            // Valid only if this exact pair still has this rank (ranks are unique per pair).
            let Some(&(r, merged)) = self.merges.get(&(sym.id, rsym.id)) else { continue };
            if r != rank {
                continue;
            }
            if let Some(s) = syms.get_mut(left) {
                s.id = merged;
                s.next = rsym.next;
            }
            if let Some(s) = syms.get_mut(right) {
                s.alive = false;
            }
            if let Some(s) = syms.get_mut(rsym.next) {
                s.prev = left;
            }
            if sym.prev != NONE {
                self.push_pair(&syms, sym.prev, &mut heap);
            }
            self.push_pair(&syms, left, &mut heap);
        }
        out.extend(syms.iter().filter(|s| s.alive).map(|s| s.id));
    }

    /// Queues the pair starting at `left` if it has a merge.
    fn push_pair(&self, syms: &[Symbol], left: usize, heap: &mut BinaryHeap<Reverse<(u32, usize)>>) {
        let Some(l) = syms.get(left) else { return };
        let Some(r) = syms.get(l.next) else { return };
        if let Some(&(rank, _)) = self.merges.get(&(l.id, r.id)) {
            heap.push(Reverse((rank, left)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpe(tokens: &[&str], merges: &[(&'static str, &'static str)], ignore: bool) -> Bpe {
        let vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        Bpe::new(vocab, merges.iter().copied(), ignore).unwrap()
    }

    fn enc(b: &Bpe, s: &str) -> Vec<u32> {
        let mut out = Vec::new();
        b.encode_piece(s, &mut out);
        out
    }

    #[test]
    fn lowest_rank_first_leftmost_on_ties() {
        // a=0 b=1 ab=2 aa=3 aaa=4
        let b = bpe(&["a", "b", "ab", "aa", "aaa"], &[("a", "a"), ("a", "b"), ("aa", "a")], false);
        assert_eq!(enc(&b, "aaab"), vec![3, 2]); // (aa)ab → (aa)(ab): rank 1 beats rank 2
        assert_eq!(enc(&b, "aab"), vec![3, 1]);
        assert_eq!(enc(&b, "ab"), vec![2]);
        assert_eq!(enc(&b, "aaaa"), vec![3, 3]);
        assert_eq!(enc(&b, "xa"), vec![0]); // unknown characters are dropped
    }

    #[test]
    fn ignore_merges_takes_whole_vocab_entries() {
        let b = bpe(&["a", "b", "c", "bc", "abc"], &[("b", "c")], true);
        assert_eq!(enc(&b, "abc"), vec![4]);
        let b = bpe(&["a", "b", "c", "bc", "abc"], &[("b", "c")], false);
        assert_eq!(enc(&b, "abc"), vec![0, 3]);
    }

    #[test]
    fn byte_fallback_spells_unknown_characters_in_byte_tokens() {
        // é = C3 A9; ü = C3 BC has no <0xBC>: dropped whole, as HF does.
        let b = bpe(&["a", "<0xC3>", "<0xA9>"], &[], false).with_byte_fallback();
        assert_eq!(enc(&b, "aéü"), vec![0, 1, 2]);
        let b = bpe(&["a", "<0xC3>", "<0xA9>"], &[], false);
        assert_eq!(enc(&b, "aé"), vec![0]);
    }

    #[test]
    fn merges_must_reference_the_vocabulary() {
        let vocab: HashMap<String, u32> = [("a".to_string(), 0)].into_iter().collect();
        let err = Bpe::new(vocab.clone(), [("a", "z")], false).unwrap_err().to_string();
        assert!(err.contains("\"z\" is not in the vocabulary"), "{err}");
        let err = Bpe::new(vocab, [("a", "a")], false).unwrap_err().to_string();
        assert!(err.contains("merged token \"aa\""), "{err}");
    }
}
