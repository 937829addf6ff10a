//! A tokenizer from a Hugging Face directory: `tokenizer.json` (+ optional
//! `tokenizer_config.json` and `generation_config.json`).
//!
//! The subset of `tokenizer.json` that BPE models use is read: model `BPE` (no subword prefix or
//! suffix; `ignore_merges` honoured), and then either
//! - byte-level: normalizer `null` or `NFC` (alone or in a `Sequence`), pre-tokenizer `Split`
//!   (behavior `Isolated`, not inverted), `ByteLevel` (`add_prefix_space`, `use_regex`),
//!   `Digits` and `Sequence`s of these, and a `ByteLevel` decoder; or
//! - SentencePiece-style (`byte_fallback`: Llama 2, Mistral): normalizer `Prepend` / `Replace`
//!   (a `String` pattern) / `Sequence` or none, pre-tokenizer `Metaspace` or none, and a decoder
//!   of `Replace` (`▁` → space), `ByteFallback`, `Fuse`, `Strip` or a `Metaspace` decoder.
//!
//! Anything else is an error that names it, never a silent approximation.
//! Added tokens are matched on the raw text (HF matches `normalized: true` ones after
//! normalization; that differs only when NFC would change an added token's text).
//! `single_word` is not supported and is ignored with a warning.
//!
//! bos/eos come from `tokenizer_config.json` (`bos_token`, `eos_token`: a string or an
//! `{"content": …}` object), then from `generation_config.json` (`bos_token_id`,
//! `eos_token_id`: an id or a list of ids, all of which stop generation). `add_bos_token` comes
//! from `tokenizer_config.json`, else from whether the post-processor's `TemplateProcessing`
//! starts with a special token (as Llama 3's does).

use super::added::AddedToken;
use super::bpe::Bpe;
use super::pretok::{PreTokenizer, Stage, GPT2_PATTERN};
use super::spm::{byte_piece, HfSpm, Metaspace, NormOp, PrependScheme};
use super::{Model, Parts, TokenKind, Tokenizer, TokenizerError};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tokenizer file of an HF directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The tokenizer settings file of an HF directory (special tokens, chat template).
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// The generation settings file of an HF directory (extra eos ids).
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

impl Tokenizer {
    /// Builds the tokenizer from `dir/tokenizer.json` and, where present,
    /// `dir/tokenizer_config.json` and `dir/generation_config.json`.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let dir = dir.as_ref();
        let path = dir.join(TOKENIZER_FILE);
        let json = read_json(&path)?;
        let config = read_optional_json(&dir.join(TOKENIZER_CONFIG_FILE))?;
        let generation = read_optional_json(&dir.join(GENERATION_CONFIG_FILE))?;
        build(&path, &json, config.as_ref(), generation.as_ref())
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|e| TokenizerError::Json { path: path.to_owned(), message: e.to_string() })
}

pub(crate) fn read_optional_json(path: &Path) -> Result<Option<Value>, TokenizerError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A special-token setting: `"<s>"`, `{"content": "<s>", …}` or null.
pub(crate) fn token_text(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

fn build(
    path: &Path,
    json: &Value,
    config: Option<&Value>,
    generation: Option<&Value>,
) -> Result<Tokenizer, TokenizerError> {
    let unsupported = |what: String| TokenizerError::Unsupported { path: path.to_owned(), what };
    let bad = |message: String| TokenizerError::Json { path: path.to_owned(), message };

    let model = json.get("model").ok_or_else(|| bad("no \"model\"".into()))?;
    let ty = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
    if ty != "BPE" {
        return Err(unsupported(format!("model type {ty:?} (only byte-level BPE)")));
    }
    // SentencePiece-style (Llama 2, Mistral): characters, not bytes, with byte tokens for the rest.
    let byte_fallback = model.get("byte_fallback").and_then(Value::as_bool).unwrap_or(false);
    for k in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if model.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return Err(unsupported(format!("BPE {k}")));
        }
    }
    let vocab_json =
        model.get("vocab").and_then(Value::as_object).ok_or_else(|| bad("model.vocab is not an object".into()))?;
    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(vocab_json.len());
    for (tok, id) in vocab_json {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad(format!("vocab id of {tok:?} is not a u32")))?;
        vocab.insert(tok.clone(), id);
    }
    let merges_json =
        model.get("merges").and_then(Value::as_array).ok_or_else(|| bad("model.merges is not an array".into()))?;
    let mut merges: Vec<(&str, &str)> = Vec::with_capacity(merges_json.len());
    for (rank, m) in merges_json.iter().enumerate() {
        let pair = match m {
            Value::String(s) => s.split_once(' ').filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(' ')),
            Value::Array(a) => match a.as_slice() {
                [Value::String(l), Value::String(r)] => Some((l.as_str(), r.as_str())),
                _ => None,
            },
            _ => None,
        };
        merges.push(pair.ok_or_else(|| TokenizerError::BadMerge {
            rank,
            merge: m.to_string(),
            reason: "expected \"left right\" or [left, right]".into(),
        })?);
    }
    let ignore_merges = model.get("ignore_merges").and_then(Value::as_bool).unwrap_or(false);

    let mut added = Vec::new();
    for t in json.get("added_tokens").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        let flag = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(false);
        let id = t.get("id").and_then(Value::as_u64).and_then(|i| u32::try_from(i).ok());
        let content = t.get("content").and_then(Value::as_str);
        let (Some(id), Some(content)) = (id, content) else {
            return Err(bad(format!("added token without a u32 id and a content: {t}")));
        };
        if flag("single_word") {
            tracing::warn!("added token {content:?}: single_word is not supported and is ignored");
        }
        let (special, lstrip, rstrip) = (flag("special"), flag("lstrip"), flag("rstrip"));
        added.push(AddedToken { id, content: content.to_owned(), special, lstrip, rstrip });
    }

    // The text pipeline: byte-level (normalizer, regex splits, ByteLevel decoder) or
    // SentencePiece-style (normalizer steps, Metaspace, a decoder that maps `▁` back).
    enum Pipeline {
        ByteLevel(PreTokenizer),
        SentencePiece { normalizer: Vec<NormOp>, metaspace: Option<Metaspace>, strip_leading_space: bool },
    }
    let pipeline = if byte_fallback {
        let normalizer = sp_normalizer(json.get("normalizer")).map_err(unsupported)?;
        let metaspace = match json.get("pre_tokenizer").filter(|v| !v.is_null()) {
            None => None,
            Some(p) => Some(metaspace(p).map_err(unsupported)?),
        };
        let strip_leading_space = sp_decoder_strips(json.get("decoder")).map_err(unsupported)?;
        Pipeline::SentencePiece { normalizer, metaspace, strip_leading_space }
    } else {
        let nfc = normalizer_is_nfc(json.get("normalizer")).map_err(unsupported)?;
        let mut stages = Vec::new();
        let mut byte_level = false;
        if let Some(pre) = json.get("pre_tokenizer").filter(|v| !v.is_null()) {
            pre_stages(pre, &mut stages, &mut byte_level).map_err(|e| match e {
                PreError::Unsupported(what) => unsupported(what),
                PreError::Build(e) => e,
            })?;
        }
        if !byte_level {
            return Err(unsupported(
                "no ByteLevel pre-tokenizer (only byte-level BPE, or BPE with byte_fallback)".into(),
            ));
        }
        let decoder = json.get("decoder").and_then(|d| d.get("type")).and_then(Value::as_str);
        if decoder != Some("ByteLevel") {
            return Err(unsupported(format!("decoder {decoder:?} (only ByteLevel)")));
        }
        Pipeline::ByteLevel(PreTokenizer::new(nfc, stages))
    };

    // Id space: the vocabulary plus added tokens; gaps are unused slots.
    let n = vocab.values().chain(added.iter().map(|t| &t.id)).map(|&i| i as usize + 1).max().unwrap_or(0);
    let mut tokens = vec![String::new(); n];
    let mut kinds = vec![TokenKind::Unused; n];
    for (tok, &id) in &vocab {
        if let (Some(slot), Some(kind)) = (tokens.get_mut(id as usize), kinds.get_mut(id as usize)) {
            *slot = tok.clone();
            *kind = if byte_fallback && byte_piece(tok).is_some() { TokenKind::Byte } else { TokenKind::Normal };
        }
    }
    for t in &added {
        if let (Some(slot), Some(kind)) = (tokens.get_mut(t.id as usize), kinds.get_mut(t.id as usize)) {
            slot.clone_from(&t.content);
            *kind = if t.special { TokenKind::Control } else { TokenKind::UserDefined };
        }
    }
    let bpe = Bpe::new(vocab, merges, ignore_merges)?;

    let find = |name: &str| -> Option<u32> {
        let hit = added
            .iter()
            .find(|t| t.content == name)
            .map(|t| t.id)
            .or_else(|| tokens.iter().position(|t| t == name).and_then(|i| u32::try_from(i).ok()));
        if hit.is_none() {
            tracing::warn!("{}: special token {name:?} is not in the vocabulary", path.display());
        }
        hit
    };
    let template_bos = template_first_special(json.get("post_processor"));
    let gen_id =
        |k: &str| generation.and_then(|g| g.get(k)).and_then(Value::as_u64).and_then(|i| u32::try_from(i).ok());
    let bos = token_text(config.and_then(|c| c.get("bos_token")))
        .and_then(find)
        .or_else(|| template_bos.as_deref().and_then(find))
        .or_else(|| gen_id("bos_token_id"));
    let eos = token_text(config.and_then(|c| c.get("eos_token"))).and_then(find).or_else(|| gen_id("eos_token_id"));
    let add_bos = match config.and_then(|c| c.get("add_bos_token")).and_then(Value::as_bool) {
        Some(b) => b,
        None => template_bos.is_some(),
    };
    let extra_eos = match generation.and_then(|g| g.get("eos_token_id")) {
        Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_u64).filter_map(|i| u32::try_from(i).ok()).collect(),
        Some(v) => v.as_u64().and_then(|i| u32::try_from(i).ok()).into_iter().collect(),
        None => Vec::new(),
    };

    let model = match pipeline {
        Pipeline::ByteLevel(pre) => Model::ByteLevel { bpe, pre },
        Pipeline::SentencePiece { normalizer, metaspace, strip_leading_space } => {
            Model::HfSentencePiece(HfSpm { normalizer, metaspace, bpe: bpe.with_byte_fallback(), strip_leading_space })
        }
    };
    Tokenizer::assemble(Parts { tokens, kinds, model, added, bos, eos, eot: None, extra_eos, add_bos })
}

/// The steps of a SentencePiece-style normalizer: `Prepend`, `Replace` with a `String`
/// pattern, `Sequence`s of them, or none.
fn sp_normalizer(v: Option<&Value>) -> Result<Vec<NormOp>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match v.get("type").and_then(Value::as_str) {
        Some("Prepend") => Ok(vec![NormOp::Prepend(text("prepend").ok_or("Prepend without a string")?)]),
        Some("Replace") => {
            let from = v.get("pattern").and_then(|p| p.get("String")).and_then(Value::as_str);
            match (from, text("content")) {
                (Some(from), Some(to)) => Ok(vec![NormOp::Replace(from.to_owned(), to)]),
                _ => Err("normalizer Replace without a String pattern and content".into()),
            }
        }
        Some("Sequence") => {
            let mut ops = Vec::new();
            for n in v.get("normalizers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                ops.extend(sp_normalizer(Some(n))?);
            }
            Ok(ops)
        }
        other => Err(format!("normalizer {other:?} with byte_fallback BPE (only Prepend, Replace)")),
    }
}

/// A `Metaspace` pre-tokenizer (the only one SentencePiece-style tokenizers use).
fn metaspace(v: &Value) -> Result<Metaspace, String> {
    let ty = v.get("type").and_then(Value::as_str);
    if ty != Some("Metaspace") {
        return Err(format!("pre-tokenizer {ty:?} with byte_fallback BPE (only Metaspace)"));
    }
    let mut chars = v.get("replacement").and_then(Value::as_str).unwrap_or("\u{2581}").chars();
    let (Some(replacement), None) = (chars.next(), chars.next()) else {
        return Err("Metaspace replacement is not one character".into());
    };
    // Older files say `add_prefix_space` instead of `prepend_scheme`.
    let prepend = match v.get("prepend_scheme").and_then(Value::as_str) {
        Some("always") => PrependScheme::Always,
        Some("first") => PrependScheme::First,
        Some("never") => PrependScheme::Never,
        Some(other) => return Err(format!("Metaspace prepend_scheme {other:?}")),
        None if v.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(true) => PrependScheme::Always,
        None => PrependScheme::Never,
    };
    let split = v.get("split").and_then(Value::as_bool).unwrap_or(true);
    Ok(Metaspace { replacement, prepend, split })
}

/// Whether a SentencePiece-style decoder drops one leading space: a `Sequence` of `Replace`
/// (`▁` → space), `ByteFallback`, `Fuse` and `Strip` (of spaces, from the start: dropped when
/// it strips one or more), or a `Metaspace` decoder (dropped unless it never prepends).
fn sp_decoder_strips(v: Option<&Value>) -> Result<bool, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Err("no decoder with byte_fallback BPE".into()) };
    match v.get("type").and_then(Value::as_str) {
        Some("Sequence") => {
            let mut strip = false;
            for d in v.get("decoders").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                strip |= sp_decoder_strips(Some(d))?;
            }
            Ok(strip)
        }
        Some("Replace") => {
            let from = v.get("pattern").and_then(|p| p.get("String")).and_then(Value::as_str);
            let to = v.get("content").and_then(Value::as_str);
            match (from, to) {
                (Some("\u{2581}"), Some(" ")) => Ok(false),
                _ => Err(format!("decoder Replace {from:?} → {to:?} (only ▁ → space)")),
            }
        }
        Some("ByteFallback" | "Fuse") => Ok(false),
        Some("Strip") => {
            let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
            if v.get("content").and_then(Value::as_str) != Some(" ") || n("stop") != 0 || n("start") > 1 {
                return Err(format!("decoder {v} (only Strip of one leading space)"));
            }
            Ok(n("start") == 1)
        }
        Some("Metaspace") => Ok(metaspace(v)?.prepend != PrependScheme::Never),
        other => Err(format!("decoder {other:?} with byte_fallback BPE")),
    }
}

/// Whether the normalizer is NFC (true) or absent (false); anything else is unsupported.
fn normalizer_is_nfc(v: Option<&Value>) -> Result<bool, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(false) };
    match v.get("type").and_then(Value::as_str) {
        Some("NFC") => Ok(true),
        Some("Sequence") => {
            let mut nfc = false;
            for n in v.get("normalizers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                nfc |= normalizer_is_nfc(Some(n))?;
            }
            Ok(nfc)
        }
        other => Err(format!("normalizer {other:?} (only NFC)")),
    }
}

enum PreError {
    Unsupported(String),
    Build(TokenizerError),
}

/// Appends the stages of an HF pre-tokenizer; notes whether a ByteLevel stage was seen.
fn pre_stages(v: &Value, stages: &mut Vec<Stage>, byte_level: &mut bool) -> Result<(), PreError> {
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
    let flag = |k: &str, default: bool| v.get(k).and_then(Value::as_bool).unwrap_or(default);
    let split = |p: &str| Stage::split(p).map_err(PreError::Build);
    match ty {
        "Sequence" => {
            for p in v.get("pretokenizers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                pre_stages(p, stages, byte_level)?;
            }
        }
        "ByteLevel" => {
            *byte_level = true;
            if flag("add_prefix_space", true) {
                stages.push(Stage::PrefixSpace);
            }
            if flag("use_regex", true) {
                stages.push(split(GPT2_PATTERN)?);
            }
        }
        "Split" => {
            let behavior = v.get("behavior").and_then(Value::as_str).unwrap_or("");
            if behavior != "Isolated" || flag("invert", false) {
                return Err(PreError::Unsupported(format!(
                    "Split with behavior {behavior:?} (only Isolated, not inverted)"
                )));
            }
            let pattern = v.get("pattern");
            if let Some(re) = pattern.and_then(|p| p.get("Regex")).and_then(Value::as_str) {
                stages.push(split(re)?);
            } else if let Some(lit) = pattern.and_then(|p| p.get("String")).and_then(Value::as_str) {
                stages.push(split(&fancy_regex::escape(lit))?);
            } else {
                return Err(PreError::Unsupported("Split without a Regex or String pattern".into()));
            }
        }
        "Digits" => stages.push(split(if flag("individual_digits", false) { r"\p{N}" } else { r"\p{N}+" })?),
        other => return Err(PreError::Unsupported(format!("pre-tokenizer {other:?}"))),
    }
    Ok(())
}

/// The special token a `TemplateProcessing` post-processor puts first for a single sequence.
fn template_first_special(v: Option<&Value>) -> Option<String> {
    let v = v?;
    match v.get("type").and_then(Value::as_str)? {
        "Sequence" => v.get("processors")?.as_array()?.iter().find_map(|p| template_first_special(Some(p))),
        "TemplateProcessing" => {
            let first = v.get("single")?.as_array()?.first()?;
            let name = first.get("SpecialToken")?.get("id")?.as_str()?;
            let tokens = v.get("special_tokens")?.get(name)?.get("tokens")?.as_array()?;
            tokens.first()?.as_str().map(str::to_owned)
        }
        _ => None,
    }
}

/// Used by the chat module: `dir/tokenizer_config.json`, if present.
pub(crate) fn config_path(dir: &Path) -> PathBuf {
    dir.join(TOKENIZER_CONFIG_FILE)
}
