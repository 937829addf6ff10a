//! Acceptance tests: the tokenizer, built from the GGUF fixtures and from the HF directories,
//! encodes and decodes exactly as HF `tokenizers` does on the corpus in
//! tests/fixtures/tokenizer/{arch}.json (written by tools/fixtures/make_tokenizer_corpus.py),
//! and bad metadata gives errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir_model::gguf::{GgufError, GgufFile, Metadata, Value};
use apr_ir_model::tokenizer::{StreamDecoder, TokenKind, Tokenizer, TokenizerError};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

const ARCHS: [&str; 2] = ["qwen2", "llama"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_json(rel: &str) -> Json {
    let path = root().join(rel);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn gguf_meta(arch: &str) -> Metadata {
    let file = GgufFile::open(root().join(format!("tests/fixtures/models/{arch}-f32.gguf"))).unwrap();
    file.gguf().metadata().clone()
}

fn from_gguf(arch: &str) -> Tokenizer {
    Tokenizer::from_gguf(&gguf_meta(arch)).unwrap()
}

fn from_hf(arch: &str) -> Tokenizer {
    Tokenizer::from_hf_dir(root().join(format!("tests/fixtures/hf/{arch}-tiny"))).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn stream_decode(tok: &Tokenizer, ids: &[u32]) -> (String, bool) {
    let mut dec = StreamDecoder::new(tok);
    let mut out = String::new();
    let mut mid_stream_replacement = false;
    for &id in ids {
        if let Some(s) = dec.push(id) {
            mid_stream_replacement |= s.contains('\u{FFFD}');
            out.push_str(&s);
        }
    }
    if let Some(s) = dec.finish() {
        out.push_str(&s);
    }
    (out, mid_stream_replacement)
}

/// Runs every corpus case through `tok`; returns one line per disagreement.
fn corpus_failures(arch: &str, tok: &Tokenizer, source: &str) -> (usize, Vec<String>) {
    let corpus = read_json(&format!("tests/fixtures/tokenizer/{arch}.json"));
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() >= 60, "{arch}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let want_plain = ids(&case["ids_plain"]);
        let decoded = case["decoded"].as_str().unwrap();
        let got = tok.encode(text, true);
        if got != want {
            failures.push(format!("{arch}/{source} encode {text:?}: got {got:?}, HF {want:?}"));
        }
        let got_plain = tok.encode(text, false);
        if got_plain != want_plain {
            failures.push(format!(
                "{arch}/{source} encode (specials as text) {text:?}: got {got_plain:?}, HF {want_plain:?}"
            ));
        }
        let dec = tok.decode(&want);
        if dec != decoded {
            failures.push(format!("{arch}/{source} decode {want:?}: got {dec:?}, HF {decoded:?}"));
        }
        if decoded == text && tok.decode(&got) != text {
            failures.push(format!("{arch}/{source} round trip {text:?}: got {:?}", tok.decode(&got)));
        }
        let (streamed, _) = stream_decode(tok, &want);
        if streamed != decoded {
            failures.push(format!("{arch}/{source} stream decode {text:?}: got {streamed:?}, HF {decoded:?}"));
        }
    }
    (cases.len(), failures)
}

fn assert_corpus(arch: &str, tok: &Tokenizer, source: &str) {
    let (n, failures) = corpus_failures(arch, tok, source);
    assert!(
        failures.is_empty(),
        "{} of {n} cases disagree with HF tokenizers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn qwen2_from_gguf_matches_hf_tokenizers() {
    assert_corpus("qwen2", &from_gguf("qwen2"), "gguf");
}

#[test]
fn qwen2_from_hf_dir_matches_hf_tokenizers() {
    assert_corpus("qwen2", &from_hf("qwen2"), "hf");
}

#[test]
fn llama_from_gguf_matches_hf_tokenizers() {
    assert_corpus("llama", &from_gguf("llama"), "gguf");
}

#[test]
fn llama_from_hf_dir_matches_hf_tokenizers() {
    assert_corpus("llama", &from_hf("llama"), "hf");
}

/// Holds `tok` to a reference (`who`) on one text: its ids for `text` (specials parsed), and
/// its text for the reference's ids, at once and streamed. Returns the ids `tok` made.
fn compare(
    tok: &Tokenizer,
    who: &str,
    text: &str,
    want: &[u32],
    decoded: &str,
    failures: &mut Vec<String>,
) -> Vec<u32> {
    let got = tok.encode(text, true);
    if got != want {
        failures.push(format!("encode {text:?}: got {got:?}, {who} {want:?}"));
    }
    if tok.decode(want) != decoded {
        failures.push(format!("decode {want:?}: got {:?}, {who} {decoded:?}", tok.decode(want)));
    }
    let (streamed, _) = stream_decode(tok, want);
    if streamed != decoded {
        failures.push(format!("stream decode {want:?}: got {streamed:?}, {who} {decoded:?}"));
    }
    got
}

/// The SentencePiece fixture (tests/fixtures/tokenizer/spm.*, tools/fixtures/make_spm_tokenizer.py):
/// a Llama-2-style vocabulary trained by the `sentencepiece` library, as a tokenizer-only GGUF.
fn spm() -> Tokenizer {
    let file = GgufFile::open(root().join("tests/fixtures/tokenizer/spm.gguf")).unwrap();
    Tokenizer::from_gguf(file.gguf().metadata()).unwrap()
}

/// Encoding and decoding agree with the `sentencepiece` library itself on the whole corpus
/// (what llama.cpp's SPM tokenizer follows), and with HF `tokenizers` (transformers'
/// LlamaTokenizer) wherever the text does not start with whitespace (HF's legacy Llama
/// tokenizer drops a leading space there; SentencePiece keeps it: see the fixture script).
#[test]
fn sentencepiece_from_gguf_matches_sentencepiece_and_hf() {
    let tok = spm();
    let corpus = read_json("tests/fixtures/tokenizer/spm.json");
    assert_eq!(tok.vocab_size() as u64, corpus["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.merge_count(), 0);
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let (mut failures, mut held_to_hf, mut bytes_used) = (Vec::new(), 0, false);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let (want, want_hf) = (ids(&case["ids"]), ids(&case["ids_hf"]));
        let (decoded, decoded_hf) = (case["decoded"].as_str().unwrap(), case["decoded_hf"].as_str().unwrap());
        let got = compare(&tok, "sentencepiece", text, &want, decoded, &mut failures);
        bytes_used |= got.iter().any(|&id| tok.token_kind(id) == Some(TokenKind::Byte));
        if !text.starts_with(char::is_whitespace) {
            held_to_hf += 1;
            compare(&tok, "HF", text, &want_hf, decoded_hf, &mut failures);
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
    assert!(held_to_hf >= 50, "only {held_to_hf} cases compared with HF");
    assert!(bytes_used, "no case exercised byte fallback");
    // Control tokens in text: parsed as llama.cpp does (each stretch between them encoded
    // with its own dummy prefix); HF agrees where no stretch starts with whitespace.
    for case in corpus["special"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, true);
        assert_eq!(got, ids(&case["ids"]), "{text:?}");
        if !text.starts_with(char::is_whitespace) {
            assert_eq!(got, ids(&case["ids_hf"]), "{text:?} (HF)");
            assert_eq!(tok.decode(&got), case["decoded_hf"].as_str().unwrap(), "{text:?} (HF decode)");
        }
        // Without parsing specials, `<s>` is spelled out as text.
        assert!(!tok.encode(text, false).iter().any(|&id| tok.is_control(id)), "{text:?}");
    }
    assert_eq!((tok.bos(), tok.eos(), tok.add_bos()), (Some(1), Some(2), true));
    assert!(tok.is_eos(2) && tok.is_special(0) && tok.is_control(1));
    // Without the special-token keys, llama.cpp's SentencePiece defaults apply.
    let file = GgufFile::open(root().join("tests/fixtures/tokenizer/spm.gguf")).unwrap();
    let bare: Metadata = file
        .gguf()
        .metadata()
        .iter()
        .filter(|(k, _)| !k.ends_with("_token_id") && !k.ends_with("add_bos_token"))
        .map(|(k, v)| (k, v.clone()))
        .collect();
    let tok = Tokenizer::from_gguf(&bare).unwrap();
    assert_eq!((tok.bos(), tok.eos(), tok.add_bos()), (Some(1), Some(2), true));
    assert_eq!(tok.encode("Hello world", true), ids(&corpus["cases"][1]["ids"]));
}

/// The cases that came with the model fixtures (tests/fixtures/models/{arch}.tokens.json).
#[test]
fn model_fixture_token_cases() {
    for arch in ARCHS {
        let doc = read_json(&format!("tests/fixtures/models/{arch}.tokens.json"));
        for tok in [from_gguf(arch), from_hf(arch)] {
            assert_eq!(tok.encode(doc["text"].as_str().unwrap(), true), ids(&doc["ids"]), "{arch}");
            for case in doc["tokenizer_cases"].as_array().unwrap() {
                let text = case["text"].as_str().unwrap();
                let want = ids(&case["ids"]);
                assert_eq!(tok.encode(text, true), want, "{arch}: {text:?}");
                let tokens: Vec<&str> = want.iter().map(|&id| tok.token_str(id).unwrap()).collect();
                let want_tokens: Vec<&str> =
                    case["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
                assert_eq!(tokens, want_tokens, "{arch}: {text:?}");
                // ids_with_specials = BOS (when the model adds one) + ids.
                let with_bos: Vec<u32> = tok.bos().filter(|_| tok.add_bos()).into_iter().chain(want).collect();
                assert_eq!(with_bos, ids(&case["ids_with_specials"]), "{arch}: {text:?}");
            }
        }
    }
}

#[test]
fn gguf_and_hf_dir_agree_on_the_vocabulary() {
    for arch in ARCHS {
        let (g, h) = (from_gguf(arch), from_hf(arch));
        assert_eq!(g.vocab_size(), 512, "{arch}");
        assert_eq!(g.vocab_size(), h.vocab_size(), "{arch}");
        assert_eq!(g.merge_count(), h.merge_count(), "{arch}");
        for id in 0..g.vocab_size() as u32 {
            assert_eq!(g.token_str(id), h.token_str(id), "{arch} id {id}");
            assert_eq!(g.token_kind(id), h.token_kind(id), "{arch} id {id}");
            assert_eq!(g.token_id(g.token_str(id).unwrap()), Some(id), "{arch} id {id}");
        }
        assert_eq!(g.token_str(512), None);
        assert_eq!(g.token_kind(512), None);
    }
}

#[test]
fn special_token_ids() {
    let q = from_gguf("qwen2");
    assert_eq!((q.bos(), q.eos(), q.eot(), q.add_bos()), (Some(509), Some(511), None, false));
    assert_eq!(q.eos_ids(), vec![509, 511]); // <|endoftext|>, <|im_end|>
    assert!(q.is_control(510) && q.is_control(511) && !q.is_control(0));
    assert_eq!(q.token_kind(510), Some(TokenKind::Control));
    assert_eq!(q.token_id("<|im_start|>"), Some(510));
    let qh = from_hf("qwen2");
    assert_eq!((qh.bos(), qh.eos(), qh.add_bos()), (None, Some(511), false)); // tokenizer_config: bos_token null
    assert_eq!(qh.eos_ids(), vec![509, 511]);

    for l in [from_gguf("llama"), from_hf("llama")] {
        assert_eq!((l.bos(), l.eos(), l.add_bos()), (Some(507), Some(509), true));
        assert_eq!(l.eos_ids(), vec![508, 509]); // <|end_of_text|>, <|eot_id|>
        assert!(l.is_eos(509) && !l.is_eos(507));
        assert_eq!(l.decode_skip_special(&[507, 389, 494, 509]), "Hello world");
    }
}

#[test]
fn stream_decoder_waits_for_complete_characters() {
    let tok = from_gguf("qwen2");
    let text = "日本語 🚀 café";
    let ids = tok.encode(text, true);
    let mut dec = StreamDecoder::new(&tok);
    let mut pieces = Vec::new();
    for &id in &ids {
        if let Some(s) = dec.push(id) {
            pieces.push(s);
        }
    }
    assert!(!dec.has_pending());
    assert_eq!(dec.finish(), None);
    assert!(pieces.len() > 3, "{pieces:?}");
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(pieces.concat(), text);

    // An incomplete character at the end becomes one U+FFFD, as in decode().
    let cut = &ids[..ids.iter().position(|&id| tok.decode(&[id]).contains('\u{FFFD}')).unwrap() + 1];
    let (streamed, _) = stream_decode(&tok, cut);
    assert_eq!(streamed, tok.decode(cut));
    assert!(streamed.ends_with('\u{FFFD}'));

    // A byte that can never start UTF-8 ('ÿ' stands for 0xFF) is replaced at once.
    let ff = tok.token_id("ÿ").unwrap();
    let mut dec = StreamDecoder::new(&tok);
    assert_eq!(dec.push(ff).as_deref(), Some("\u{FFFD}"));
    let mut dec = StreamDecoder::new(&tok).skip_special(true);
    assert_eq!(dec.push(511), None);
}

#[test]
fn unknown_ids_are_skipped_when_decoding() {
    let tok = from_gguf("llama");
    assert_eq!(tok.decode(&[389, 100_000, 494]), "Hello world");
}

fn err_of(meta: &Metadata) -> TokenizerError {
    match Tokenizer::from_gguf(meta) {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_metadata_is_an_error_not_a_panic() {
    let base = gguf_meta("qwen2");

    let mut m = base.clone();
    m.set("tokenizer.ggml.model", "bert");
    assert!(matches!(err_of(&m), TokenizerError::UnsupportedModel { .. }), "{}", err_of(&m));

    // SentencePiece needs a score per token.
    let mut m = base.clone();
    m.set("tokenizer.ggml.model", "llama");
    let e = err_of(&m);
    assert!(matches!(e, TokenizerError::Gguf(GgufError::MissingKey { .. })), "{e}");
    assert!(e.to_string().contains("tokenizer.ggml.scores"), "{e}");
    m.set("tokenizer.ggml.scores", Value::from(vec![0.0f32; 3]));
    assert!(matches!(err_of(&m), TokenizerError::ScoreCountMismatch { scores: 3, tokens: 512 }), "{}", err_of(&m));
    m.set("tokenizer.ggml.scores", Value::from(vec![0.0f32; 512]));
    assert!(Tokenizer::from_gguf(&m).is_ok());

    let m: Metadata = base.iter().filter(|(k, _)| *k != "tokenizer.ggml.tokens").map(|(k, v)| (k, v.clone())).collect();
    let e = err_of(&m);
    assert!(matches!(e, TokenizerError::Gguf(GgufError::MissingKey { .. })), "{e}");
    assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");

    let m: Metadata = base.iter().filter(|(k, _)| *k != "tokenizer.ggml.merges").map(|(k, v)| (k, v.clone())).collect();
    assert!(err_of(&m).to_string().contains("tokenizer.ggml.merges"));

    let mut m = base.clone();
    m.set("tokenizer.ggml.tokens", Value::from(Vec::<&str>::new()));
    assert!(matches!(err_of(&m), TokenizerError::EmptyVocab));

    let mut m = base.clone();
    m.set("tokenizer.ggml.token_type", Value::from(vec![1i32; 10]));
    assert!(matches!(err_of(&m), TokenizerError::TypeCountMismatch { types: 10, tokens: 512 }), "{}", err_of(&m));

    let mut m = base.clone();
    let mut types = vec![1i32; 512];
    types[7] = 9;
    m.set("tokenizer.ggml.token_type", Value::from(types));
    assert!(matches!(err_of(&m), TokenizerError::BadTokenType { id: 7, ty: 9 }), "{}", err_of(&m));

    let mut m = base.clone();
    m.set("tokenizer.ggml.token_type", Value::from("not an array"));
    assert!(matches!(err_of(&m), TokenizerError::Gguf(GgufError::WrongType { .. })), "{}", err_of(&m));

    for (merge, needle) in
        [("Ġ zz_unknown", "\"zz_unknown\" is not in the vocabulary"), ("nomerge", "two tokens"), ("h h", "\"hh\"")]
    {
        let mut m = base.clone();
        m.set("tokenizer.ggml.merges", Value::from(vec!["h e", merge]));
        let e = err_of(&m);
        assert!(matches!(e, TokenizerError::BadMerge { rank: 1, .. }), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }

    for key in ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
        let mut m = base.clone();
        m.set(key, Value::from(512u32));
        let e = err_of(&m);
        assert!(matches!(e, TokenizerError::IdOutOfRange { id: 512, vocab: 512, .. }), "{e}");
        assert!(e.to_string().contains(key), "{e}");
    }
    let mut m = base.clone();
    m.set("tokenizer.ggml.eos_token_id", Value::from(-1i32));
    assert_eq!(Tokenizer::from_gguf(&m).unwrap().eos(), None);

    let mut m = base.clone();
    m.set("tokenizer.ggml.pre", "tekken");
    let e = err_of(&m);
    assert!(matches!(e, TokenizerError::UnknownPre { .. }), "{e}");
    assert!(e.to_string().contains("qwen2") && e.to_string().contains("llama-bpe"), "{e}");

    // Without `pre`, GPT-2's split: "):\n" is two pieces, so the qwen2 token "):Ċ" is not used.
    let m: Metadata = base.iter().filter(|(k, _)| *k != "tokenizer.ggml.pre").map(|(k, v)| (k, v.clone())).collect();
    let gpt2 = Tokenizer::from_gguf(&m).unwrap();
    let qwen2 = Tokenizer::from_gguf(&base).unwrap();
    assert_eq!(qwen2.encode("):\n", true), vec![qwen2.token_id("):Ċ").unwrap()]);
    assert_eq!(gpt2.decode(&gpt2.encode("):\n", true)), "):\n");
    assert_ne!(gpt2.encode("):\n", true), qwen2.encode("):\n", true));
    // Without token_type, every token is normal: control tokens are then plain text.
    let m: Metadata =
        base.iter().filter(|(k, _)| *k != "tokenizer.ggml.token_type").map(|(k, v)| (k, v.clone())).collect();
    let plain = Tokenizer::from_gguf(&m).unwrap();
    assert!(!plain.is_control(510));
    assert_ne!(plain.encode("<|im_start|>", true), vec![510]);
}

#[test]
fn bad_hf_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("apr-ir-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = Tokenizer::from_hf_dir(&dir).unwrap_err();
    assert!(matches!(e, TokenizerError::Io { .. }), "{e}");

    let good = read_json("tests/fixtures/hf/qwen2-tiny/tokenizer.json");
    let write = |j: &Json| std::fs::write(dir.join("tokenizer.json"), j.to_string()).unwrap();
    let mut j = good.clone();
    j["model"]["type"] = "Unigram".into();
    write(&j);
    assert!(matches!(Tokenizer::from_hf_dir(&dir).unwrap_err(), TokenizerError::Unsupported { .. }));
    let mut j = good.clone();
    j["normalizer"] = serde_json::json!({"type": "NFKC"});
    write(&j);
    assert!(Tokenizer::from_hf_dir(&dir).unwrap_err().to_string().contains("NFKC"));
    let mut j = good.clone();
    j["model"]["merges"] = serde_json::json!(["h e", "q zz"]);
    write(&j);
    assert!(matches!(Tokenizer::from_hf_dir(&dir).unwrap_err(), TokenizerError::BadMerge { rank: 1, .. }));
    let mut j = good;
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed".into();
    write(&j);
    assert!(matches!(Tokenizer::from_hf_dir(&dir).unwrap_err(), TokenizerError::Regex { .. }));
    std::fs::write(dir.join("tokenizer.json"), "{not json").unwrap();
    assert!(matches!(Tokenizer::from_hf_dir(&dir).unwrap_err(), TokenizerError::Json { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokenizer_and_template_are_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Tokenizer>();
    send_sync::<apr_ir_model::chat::ChatTemplate>();
}

/// SentencePiece-style HF directories (BPE with `byte_fallback`): the layout transformers
/// saves (a `Metaspace` pre-tokenizer) and the one most Llama 2 checkpoints ship (`Prepend` +
/// `Replace` normalizer), each held id for id to HF `tokenizers` over that same file on the
/// whole corpus and the special-token cases; the older layout also equals `sentencepiece`.
#[test]
fn sentencepiece_hf_dirs_match_hf_tokenizers() {
    let corpus = read_json("tests/fixtures/tokenizer/spm.json");
    let gguf = spm();
    for (dir, suffix) in [("spm-hf", ""), ("spm-hf-legacy", "_legacy")] {
        let tok = Tokenizer::from_hf_dir(root().join("tests/fixtures/tokenizer").join(dir)).unwrap();
        assert_eq!(tok.vocab_size(), gguf.vocab_size(), "{dir}");
        assert!(tok.merge_count() > 0, "{dir}");
        let mut failures = Vec::new();
        let all = corpus["cases"].as_array().unwrap().iter().chain(corpus["special"].as_array().unwrap());
        for case in all {
            let text = case["text"].as_str().unwrap();
            let want = ids(&case[format!("ids_hf{suffix}").as_str()]);
            let decoded = case[format!("decoded_hf{suffix}").as_str()].as_str().unwrap();
            let got = compare(&tok, &format!("HF ({dir})"), text, &want, decoded, &mut failures);
            if suffix == "_legacy" {
                let sp = ids(case.get("ids").unwrap());
                if got != sp {
                    failures.push(format!("{dir} encode {text:?}: got {got:?}, sentencepiece {sp:?}"));
                }
            }
        }
        assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
        assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)), "{dir}");
    }
}

/// The SentencePiece fixture's tokenizer from the GGUF and from the older HF layout, built once.
static SPM_PAIR: std::sync::LazyLock<(Tokenizer, Tokenizer)> = std::sync::LazyLock::new(|| {
    (spm(), Tokenizer::from_hf_dir(root().join("tests/fixtures/tokenizer/spm-hf-legacy")).unwrap())
});

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// SentencePiece encoding is lossless (byte fallback covers every character): decoding the
    /// ids of any text gives the text back, from the GGUF vocabulary and from the older HF
    /// layout, whole and streamed; both give the same ids. (`▁` itself is left out: SentencePiece
    /// reads it as a space, so it cannot come back.)
    #[test]
    fn sentencepiece_round_trips_any_text(text in "[^\u{2581}]{0,40}", spaces in "[ \t\n]{0,3}") {
        let text = format!("{spaces}{text}{spaces}");
        let (gguf, hf) = &*SPM_PAIR;
        let ids = gguf.encode(&text, false);
        proptest::prop_assert_eq!(&gguf.decode(&ids), &text);
        proptest::prop_assert_eq!(&stream_decode(gguf, &ids).0, &text);
        proptest::prop_assert_eq!(&hf.encode(&text, false), &ids);
    }
}

/// GGUF pre-tokenizer names beyond the fixtures' own (tests/fixtures/tokenizer/pre-variants.json,
/// tools/fixtures/make_pre_variants.py): the llama fixture's vocabulary with
/// `tokenizer.ggml.pre` set to each name encodes as HF `tokenizers` does with the pre-tokenizer
/// the models using that name ship (SmolLM: digits one by one, then GPT-2's split).
#[test]
fn other_gguf_pre_names_match_hf_tokenizers() {
    let corpus = read_json("tests/fixtures/tokenizer/pre-variants.json");
    let variants = corpus["variants"].as_object().unwrap();
    assert!(variants.contains_key("smollm"));
    for (name, variant) in variants {
        let mut meta = gguf_meta("llama");
        meta.set("tokenizer.ggml.pre", name.as_str());
        let tok = Tokenizer::from_gguf(&meta).unwrap();
        let mut failures = Vec::new();
        let cases = variant["cases"].as_array().unwrap();
        for case in cases {
            let text = case["text"].as_str().unwrap();
            compare(
                &tok,
                &format!("HF ({name})"),
                text,
                &ids(&case["ids"]),
                case["decoded"].as_str().unwrap(),
                &mut failures,
            );
        }
        assert!(
            failures.is_empty(),
            "{name}: {} of {} disagree:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}
