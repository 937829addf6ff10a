//! The CLI face of hostile input: truncated and patched GGUF files, unsupported tensor types
//! and architectures, missing or wrong paths, bad usage. Every failure is exit code 2 with
//! one `apr-ir: error:` line on stderr: never a panic (101), a signal or a hang. (Byte-level
//! parser tests live in crates/model/tests/gguf_hostile.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir_model::gguf::{write_gguf, GgmlType, GgufFile, Metadata, TensorSpec, Value};
use apr_ir_tests::{apr_ir, apr_ir_within, compile_to_json, error_message, fixture, par_map, TempDir};
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

/// Each run on hostile input must finish well within this.
const LIMIT: Duration = Duration::from_secs(5);

/// The fixture the byte-level cases start from.
fn base_path() -> std::path::PathBuf {
    fixture("models/llama-q4_k.gguf")
}

/// `apr-ir compile FILE` and `apr-ir inspect FILE` both refuse `path` in one line, in time;
/// returns the two messages.
#[track_caller]
fn both_refuse(path: &Path) -> [String; 2] {
    ["compile", "inspect"].map(|cmd| {
        let run = apr_ir_within([OsStr::new(cmd), path.as_os_str()], LIMIT);
        assert!(run.elapsed < LIMIT, "{run:#?}\ntook {:?}", run.elapsed);
        error_message(run.one_line_error()).to_string()
    })
}

/// A GGUF rebuilt with the library's writer from the file at `src`: metadata passed through
/// `edit_meta`, tensors through `edit_tensor` (which may replace a spec and its bytes).
fn rewrite(
    src: &Path,
    edit_meta: impl Fn(&mut Metadata),
    edit_tensor: impl Fn(&mut TensorSpec, &mut Vec<u8>),
) -> Vec<u8> {
    let file = GgufFile::open(src).unwrap();
    let mut meta = file.gguf().metadata().clone();
    edit_meta(&mut meta);
    let tensors: Vec<(TensorSpec, Vec<u8>)> = file
        .gguf()
        .tensors()
        .iter()
        .map(|t| {
            let mut spec = TensorSpec::new(t.name(), t.dims().to_vec(), t.ggml_type());
            let mut bytes = file.tensor_data(t).to_vec();
            edit_tensor(&mut spec, &mut bytes);
            (spec, bytes)
        })
        .collect();
    let pairs: Vec<(TensorSpec, &[u8])> = tensors.iter().map(|(s, b)| (s.clone(), b.as_slice())).collect();
    write_gguf(Vec::new(), &meta, &pairs).unwrap()
}

/// The fixture without its tokenizer metadata: the same model (it still lowers) with a
/// header small enough to cut at every byte.
fn compact_model() -> Vec<u8> {
    rewrite(
        &base_path(),
        |m| {
            let keep: Metadata = {
                let mut k = Metadata::new();
                for (key, v) in m.iter().filter(|(key, _)| !key.starts_with("tokenizer.")) {
                    k.push(key, v.clone()).unwrap();
                }
                k
            };
            *m = keep;
        },
        |_, _| {},
    )
}

/// Cut `bytes` at every point in `cuts`; both commands must refuse each prefix.
fn refuse_all_prefixes(tag: &str, bytes: &[u8], cuts: &[usize]) {
    let dir = TempDir::new(tag);
    par_map(cuts, |&n| {
        let path = dir.join(&format!("cut-{n}.gguf"));
        std::fs::write(&path, &bytes[..n]).unwrap();
        let _ = std::panic::catch_unwind(|| both_refuse(&path)).unwrap_or_else(|e| {
            eprintln!("{tag}: truncated at byte {n} of {}", bytes.len());
            std::panic::resume_unwind(e)
        });
        std::fs::remove_file(&path).unwrap();
    });
}

#[test]
fn truncation_at_every_header_byte_is_refused() {
    let bytes = compact_model();
    let dir = TempDir::new("compact");
    let whole = dir.join("compact.gguf");
    std::fs::write(&whole, &bytes).unwrap();
    // The untruncated file is a working model, so every failure below is the cut's doing.
    let (_, ir) = compile_to_json(&whole, &dir, "ir");
    assert!(ir.nodes.len() > 100);
    let data_offset = GgufFile::open(&whole).unwrap().gguf().data_offset() as usize;
    assert!(data_offset < 4096, "compact header is {data_offset} bytes");

    // Every byte of the header (magic, counts, metadata, tensor table, padding), and a handful
    // inside the data section.
    let mut cuts: Vec<usize> = (0..=data_offset).collect();
    let len = bytes.len();
    cuts.extend([data_offset + 1, data_offset + 31, data_offset + 4096, len / 2, len - 32, len - 1]);
    refuse_all_prefixes("trunc-compact", &bytes, &cuts);
}

#[test]
fn truncation_of_the_full_fixture_is_refused() {
    // With its tokenizer (string and integer arrays, a chat template) the header is about
    // 13 KB. The compact model above covers every byte of the other fields, so sample this
    // one: every 61st byte, and the bytes around the first tensor record.
    let bytes = std::fs::read(base_path()).unwrap();
    let gguf = GgufFile::open(base_path()).unwrap();
    let data_offset = gguf.gguf().data_offset() as usize;
    let first = gguf.gguf().tensors()[0].name().to_string();
    let table = dims_offset(&bytes, &first) - 12 - first.len();
    let mut cuts: Vec<usize> = (0..data_offset).step_by(61).collect();
    cuts.extend(table - 8..table + 8);
    cuts.extend([data_offset - 1, data_offset, data_offset + 100, bytes.len() / 2, bytes.len() - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    refuse_all_prefixes("trunc-full", &bytes, &cuts);
}

/// The file with `patch` applied at byte `at`.
fn patched(bytes: &[u8], at: usize, patch: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + patch.len()].copy_from_slice(patch);
    b
}

/// Byte offset of the dims of tensor `name` in the tensor table (after its name and n_dims).
fn dims_offset(bytes: &[u8], name: &str) -> usize {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(name.as_bytes());
    let at =
        bytes.windows(pat.len()).position(|w| w == pat.as_slice()).unwrap_or_else(|| panic!("no tensor record {name}"));
    at + pat.len() + 4
}

#[test]
fn patched_headers_are_refused_with_a_reason() {
    let bytes = std::fs::read(base_path()).unwrap();
    // The first metadata entry is general.architecture, a string.
    assert_eq!(&bytes[24..32], &20u64.to_le_bytes());
    assert_eq!(&bytes[32..52], b"general.architecture");
    assert_eq!(&bytes[52..56], &8u32.to_le_bytes());
    let dims = dims_offset(&bytes, "blk.0.attn_q.weight");
    assert_eq!(&bytes[dims - 4..dims], &2u32.to_le_bytes(), "n_dims");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad magic", patched(&bytes, 0, b"GGML"), "not a GGUF file"),
        ("version 1", patched(&bytes, 4, &1u32.to_le_bytes()), "version 1"),
        ("version 4", patched(&bytes, 4, &4u32.to_le_bytes()), "version 4"),
        ("2^62 tensors", patched(&bytes, 8, &(1u64 << 62).to_le_bytes()), "tensor count"),
        ("2^62 metadata entries", patched(&bytes, 16, &(1u64 << 62).to_le_bytes()), "metadata entry count"),
        ("2^60 key length", patched(&bytes, 24, &(1u64 << 60).to_le_bytes()), "string length 1152921504606846976"),
        ("2^60 string value length", patched(&bytes, 56, &(1u64 << 60).to_le_bytes()), "general.architecture"),
        ("unknown value type", patched(&bytes, 52, &99u32.to_le_bytes()), "general.architecture"),
        ("2^40 rows", patched(&bytes, dims + 8, &(1u64 << 40).to_le_bytes()), "blk.0.attn_q.weight"),
        ("u64::MAX columns", patched(&bytes, dims, &u64::MAX.to_le_bytes()), "blk.0.attn_q.weight"),
        ("1000 dims", patched(&bytes, dims - 4, &1000u32.to_le_bytes()), "blk.0.attn_q.weight"),
        ("unknown ggml type", patched(&bytes, dims + 16, &1000u32.to_le_bytes()), "blk.0.attn_q.weight"),
    ];
    let dir = TempDir::new("patched");
    par_map(&cases, |(what, b, needle)| {
        let path = dir.join(&format!("{}.gguf", what.replace([' ', ':'], "_")));
        std::fs::write(&path, b).unwrap();
        for msg in both_refuse(&path) {
            assert!(msg.contains(needle), "{what}: {msg:?} should mention {needle:?}");
        }
    });
}

#[test]
fn a_tensor_type_apr_ir_cannot_lower_is_named() {
    // blk.0.attn_q.weight declared IQ2_XXS, with the byte count that type needs.
    let bytes = rewrite(
        &fixture("models/qwen2-q4_k.gguf"),
        |_| {},
        |spec, data| {
            if spec.name == "blk.0.attn_q.weight" {
                let elems: u64 = spec.dims.iter().product();
                spec.ggml_type = GgmlType::IQ2_XXS;
                *data = vec![0u8; (elems / GgmlType::IQ2_XXS.block_len() * GgmlType::IQ2_XXS.type_size()) as usize];
            }
        },
    );
    let dir = TempDir::new("iq2");
    let path = dir.join("iq2.gguf");
    std::fs::write(&path, bytes).unwrap();

    let run = apr_ir_within([OsStr::new("compile"), path.as_os_str()], LIMIT);
    let msg = run.one_line_error();
    assert!(
        msg.contains("blk.0.attn_q.weight") && msg.contains("IQ2_XXS"),
        "{run:#?}\nshould name the tensor and its type"
    );

    let run = apr_ir_within([OsStr::new("inspect"), path.as_os_str(), OsStr::new("--tensors")], LIMIT);
    let out = run.ok();
    assert!(
        out.lines().any(|l| l.starts_with("lowering") && l.contains("not possible") && l.contains("IQ2_XXS")),
        "{run:#?}"
    );
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("blk.0.attn_q.weight") && l.contains("iq2_xxs")),
        "{run:#?}"
    );
}

#[test]
fn an_unsupported_architecture_is_named() {
    let bytes = rewrite(
        &fixture("models/qwen2-q8_0.gguf"),
        |m| {
            m.set("general.architecture", Value::String("qwen3".into()));
        },
        |_, _| {},
    );
    let dir = TempDir::new("qwen3");
    let path = dir.join("qwen3.gguf");
    std::fs::write(&path, bytes).unwrap();
    let run = apr_ir_within([OsStr::new("compile"), path.as_os_str()], LIMIT);
    assert!(run.one_line_error().contains("qwen3"), "{run:#?}");
    let run = apr_ir_within([OsStr::new("inspect"), path.as_os_str()], LIMIT);
    assert!(
        run.ok().lines().any(|l| l.starts_with("lowering") && l.contains("not possible") && l.contains("qwen3")),
        "{run:#?}"
    );
}

#[test]
fn wrong_paths_are_one_line_errors() {
    let dir = TempDir::new("paths");
    let missing = dir.join("no-such-model.gguf");
    let empty_dir = dir.join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let not_ir = dir.join("not-ir.json");
    std::fs::write(&not_ir, br#"{"hello": "world", "nodes": 3}"#).unwrap();
    // A real IR whose first compute node reads a later node: valid JSON, invalid IR.
    let (ir_path, ir) = compile_to_json(&fixture("models/qwen2-q8_0.gguf"), &dir, "ir");
    let mut doc = ir.raw.clone();
    let k = ir.nodes.iter().position(|n| !n.inputs.is_empty()).unwrap();
    doc["nodes"][k]["inputs"][0] = serde_json::json!(ir.nodes.len() - 1);
    let bad_ir = dir.join("bad-ir.json");
    std::fs::write(&bad_ir, serde_json::to_string(&doc).unwrap()).unwrap();
    assert!(ir_path.is_file());

    for (path, needle) in [
        (&missing, "does not exist"),
        (&empty_dir, "config.json"),
        (&empty, "empty.gguf"),
        (&not_ir, "not-ir.json"),
        (&bad_ir, "bad-ir.json"),
    ] {
        for cmd in ["compile", "dot"] {
            let run = apr_ir_within([OsStr::new(cmd), path.as_os_str()], LIMIT);
            assert!(run.one_line_error().contains(needle), "{run:#?}\nshould mention {needle:?}");
        }
        if path != &bad_ir {
            let run = apr_ir_within([OsStr::new("inspect"), path.as_os_str()], LIMIT);
            run.one_line_error();
        }
    }
}

#[test]
fn unwritable_outputs_are_one_line_errors() {
    let dir = TempDir::new("unwritable");
    let nowhere = dir.join("no-such-dir");
    let model = fixture("models/qwen2-q8_0.gguf");
    let m = model.to_str().unwrap();
    for (args, file) in [
        (vec!["compile", m, "-o"], "x.json"),
        (vec!["dot", m, "-o"], "x.dot"),
        (vec!["synth", "--arch", "llama", "--preset", "tiny", "--quant", "f16", "-o"], "x.gguf"),
    ] {
        let out = nowhere.join(file);
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.push(out.as_os_str());
        let run = apr_ir_within(&all, LIMIT);
        assert!(run.one_line_error().contains("no-such-dir"), "{run:#?}\nshould name the path");
    }
    assert!(!nowhere.exists());
}

#[test]
fn bad_usage_exits_2() {
    let model = fixture("models/qwen2-q8_0.gguf");
    let m = model.to_str().unwrap();
    for args in [
        vec!["compile", m, "--no-such-flag"],
        vec!["no-such-command"],
        vec![],
        vec!["synth", "--arch", "qwen2", "--preset", "tiny", "--quant", "q4_k"],
        vec!["compile", m, "-O", "7"],
        vec!["dot", m, "--layer", "minus-one"],
    ] {
        let run = apr_ir_within(&args, LIMIT);
        assert_eq!(run.code, Some(2), "{run:#?}");
        assert!(run.stderr.contains("error:") || run.stderr.contains("Usage:"), "{run:#?}\nclap explains the usage");
        assert!(run.stdout.is_empty(), "{run:#?}");
    }
    // Values clap accepts but apr-ir refuses: one line each.
    let dir = TempDir::new("usage");
    let out = dir.join("x.gguf");
    let o = out.to_str().unwrap();
    for (args, needle) in [
        (vec!["synth", "--arch", "gemma2", "--preset", "tiny", "--quant", "q4_k", "-o", o], "gemma2"),
        (vec!["synth", "--arch", "qwen2", "--preset", "huge", "--quant", "q4_k", "-o", o], "huge"),
        (vec!["synth", "--arch", "qwen2", "--preset", "tiny", "--quant", "q3_k", "-o", o], "q3_k"),
        (vec!["compile", m, "--arch", "qwen2", "--preset", "tiny"], "either"),
    ] {
        let run = apr_ir_within(&args, LIMIT);
        assert!(run.one_line_error().contains(needle), "{run:#?}\nshould mention {needle:?}");
    }
    assert!(!out.exists(), "a refused synth must not leave a file");
    let run = apr_ir(["--help"]);
    assert!(run.ok().contains("compile"), "{run:#?}");
}
