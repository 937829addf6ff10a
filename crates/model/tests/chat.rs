//! Acceptance tests: the models' chat templates render what `transformers`' `apply_chat_template`
//! renders (tests/fixtures/tokenizer/{arch}.json "chat", tests/fixtures/models/{arch}.tokens.json
//! "chat"), and the rendered text encodes to HF's ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir_model::chat::{ChatError, ChatTemplate, Message};
use apr_ir_model::gguf::{GgufFile, Metadata};
use apr_ir_model::tokenizer::Tokenizer;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

const ARCHS: [&str; 2] = ["qwen2", "llama"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_json(rel: &str) -> Json {
    serde_json::from_str(&std::fs::read_to_string(root().join(rel)).unwrap()).unwrap()
}

fn gguf_meta(arch: &str) -> Metadata {
    let file = GgufFile::open(root().join(format!("tests/fixtures/models/{arch}-f32.gguf"))).unwrap();
    file.gguf().metadata().clone()
}

fn hf_dir(arch: &str) -> PathBuf {
    root().join(format!("tests/fixtures/hf/{arch}-tiny"))
}

/// Every chat case of both fixture files: (messages, add_generation_prompt, rendered, ids).
fn chat_cases(arch: &str) -> Vec<(Vec<Message>, bool, String, Vec<u32>)> {
    let mut docs: Vec<Json> =
        read_json(&format!("tests/fixtures/tokenizer/{arch}.json"))["chat"].as_array().unwrap().clone();
    docs.push(read_json(&format!("tests/fixtures/models/{arch}.tokens.json"))["chat"].clone());
    docs.iter()
        .map(|c| {
            let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
            let ids = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (messages, c["add_generation_prompt"].as_bool().unwrap(), c["rendered"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

fn check(arch: &str, template: &ChatTemplate, tokenizer: &Tokenizer, source: &str) {
    let cases = chat_cases(arch);
    assert!(cases.len() >= 5, "{arch}");
    for (messages, add_generation_prompt, rendered, ids) in cases {
        let got = template.render(&messages, add_generation_prompt).unwrap();
        assert_eq!(got, rendered, "{arch}/{source}: {messages:?} add_generation_prompt={add_generation_prompt}");
        assert_eq!(tokenizer.encode(&got, true), ids, "{arch}/{source}: {got:?}");
        assert_eq!(tokenizer.decode(&ids), rendered, "{arch}/{source}");
    }
}

#[test]
fn gguf_templates_render_like_transformers() {
    for arch in ARCHS {
        let meta = gguf_meta(arch);
        let template = ChatTemplate::from_gguf(&meta).unwrap().expect("fixture has a template");
        check(arch, &template, &Tokenizer::from_gguf(&meta).unwrap(), "gguf");
    }
}

#[test]
fn hf_dir_templates_render_like_transformers() {
    for arch in ARCHS {
        let template = ChatTemplate::from_hf_dir(hf_dir(arch)).unwrap().expect("fixture has a template");
        check(arch, &template, &Tokenizer::from_hf_dir(hf_dir(arch)).unwrap(), "hf");
    }
}

#[test]
fn bos_and_eos_texts_come_from_the_model() {
    let q = ChatTemplate::from_gguf(&gguf_meta("qwen2")).unwrap().unwrap();
    assert_eq!((q.bos_token(), q.eos_token()), ("<|endoftext|>", "<|im_end|>"));
    let qh = ChatTemplate::from_hf_dir(hf_dir("qwen2")).unwrap().unwrap();
    assert_eq!((qh.bos_token(), qh.eos_token()), ("", "<|im_end|>")); // bos_token: null
    let l = ChatTemplate::from_gguf(&gguf_meta("llama")).unwrap().unwrap();
    assert_eq!((l.bos_token(), l.eos_token()), ("<|begin_of_text|>", "<|eot_id|>"));
    assert_eq!(l.source(), ChatTemplate::from_hf_dir(hf_dir("llama")).unwrap().unwrap().source());
}

#[test]
fn no_template_is_none() {
    let meta: Metadata = gguf_meta("qwen2")
        .iter()
        .filter(|(k, _)| *k != "tokenizer.chat_template")
        .map(|(k, v)| (k, v.clone()))
        .collect();
    assert!(ChatTemplate::from_gguf(&meta).unwrap().is_none());
    let empty = std::env::temp_dir().join(format!("apr-ir-chat-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    assert!(ChatTemplate::from_hf_dir(&empty).unwrap().is_none());
    std::fs::write(
        empty.join("chat_template.jinja"),
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}",
    )
    .unwrap();
    let t = ChatTemplate::from_hf_dir(&empty).unwrap().unwrap();
    assert_eq!(t.render(&[Message::user("hi")], false).unwrap(), "[user]hi");
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn bad_templates_are_errors() {
    assert!(matches!(ChatTemplate::new("{% for %}", "", ""), Err(ChatError::Syntax(_))));
    assert!(matches!(ChatTemplate::new("{% generation %}x{% endgeneration %}", "", ""), Err(ChatError::Syntax(_))));
    let t = ChatTemplate::new(
        "{% if messages[0].role != 'system' %}{{ raise_exception('need a system turn') }}{% endif %}",
        "",
        "",
    )
    .unwrap();
    let err = t.render(&[Message::user("x")], false).unwrap_err();
    assert!(matches!(err, ChatError::Render(_)) && err.to_string().contains("need a system turn"), "{err}");
    assert_eq!(t.render(&[Message::system("s")], false).unwrap(), "");
}

/// Features HF templates lean on: trim_blocks/lstrip_blocks, loop controls, Python string
/// methods, namespace, `tools is none`, strftime_now.
#[test]
fn hf_template_idioms() {
    let source = "\
{%- set ns = namespace(n=0) %}
{%- for m in messages %}
    {%- if m.role == 'skip' %}{% continue %}{% endif %}
    {%- if loop.index > 3 %}{% break %}{% endif %}
    {%- set ns.n = ns.n + 1 %}
    <{{ m.role | upper }}>{{ m.content.strip() }}{% if m.content.startswith('Q') %}?{% endif %}
{% endfor %}
{{- ns.n }}|{{ tools is none }}|{{ 'a,b'.split(',') | join('+') }}|{{ strftime_now('%Y') | length }}
";
    let t = ChatTemplate::new(source, "<s>", "</s>").unwrap();
    let msgs = [
        Message::user("  Q1  "),
        Message::new("skip", "no"),
        Message::assistant("A1"),
        Message::user("x"),
        Message::user("y"),
    ];
    // What Jinja2 renders with transformers' settings (checked with transformers 5.24).
    assert_eq!(t.render(&msgs, false).unwrap(), "    <USER>Q1    <ASSISTANT>A12|True|a+b|4");
}

/// Qwen3's hybrid-thinking template (tests/fixtures/models/qwen3.tokens.json, written by
/// tools/fixtures/make_qwen3.py): `messages[::-1]`, `split('</think>')[-1]`, `rstrip`/`lstrip`
/// with arguments, `is string`, a namespace updated inside a loop, reasoning kept only after
/// the last user query, consecutive tool turns merged — from the GGUF's metadata and from the
/// HF directory, against transformers' rendering and ids.
#[test]
fn qwen3_thinking_template_renders_like_transformers() {
    let doc = read_json("tests/fixtures/models/qwen3.tokens.json");
    let cases = doc["chat"].as_array().unwrap();
    assert!(cases.len() >= 5);
    assert!(cases.iter().any(|c| c["rendered"].as_str().unwrap().contains("<think>\n17 + 25 = 42\n</think>\n\n42")));
    assert!(cases.iter().any(|c| c["kwargs"]["enable_thinking"] == false
        && c["rendered"].as_str().unwrap().ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n")));
    let file = GgufFile::open(root().join("tests/fixtures/models/qwen3-q8_0.gguf")).unwrap();
    let meta = file.gguf().metadata().clone();
    let dir = root().join("tests/fixtures/hf/qwen3-tiny");
    let sources = [
        ("gguf", ChatTemplate::from_gguf(&meta).unwrap().unwrap(), Tokenizer::from_gguf(&meta).unwrap()),
        ("hf", ChatTemplate::from_hf_dir(&dir).unwrap().unwrap(), Tokenizer::from_hf_dir(&dir).unwrap()),
    ];
    for (source, template, tokenizer) in &sources {
        for c in cases {
            let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
            let add = c["add_generation_prompt"].as_bool().unwrap();
            let want = c["rendered"].as_str().unwrap();
            // Template variables beyond the messages (`enable_thinking`), as transformers got them.
            let vars: Vec<(String, serde_json::Value)> = c["kwargs"]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            let got = template.render_with(&messages, add, &vars).unwrap();
            assert_eq!(got, want, "{source}: {messages:?} add_generation_prompt={add} {vars:?}");
            let ids: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            assert_eq!(tokenizer.encode(&got, true), ids, "{source}: {got:?}");
        }
    }
}
