//! `apr-ir inspect`: what is in each fixture, whether it lowers, and the `--tensors` and
//! `--metadata` listings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir_tests::{all_fixtures, apr_ir, file_params, file_tensors, fixture, par_map};
use std::ffi::OsStr;

/// The value column of the line labelled `key` (`architecture qwen2` → `qwen2`).
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).filter(|rest| rest.starts_with(' ')).map(str::trim))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{out}"))
}

#[test]
fn every_fixture_is_described_and_lowers() {
    par_map(&all_fixtures(), |fx| {
        let label = fx.label();
        let run = apr_ir([OsStr::new("inspect"), fx.path.as_os_str()]);
        let out = run.ok();
        assert_eq!(field(out, "architecture"), fx.arch, "{label}");
        let p = file_params(fx);
        assert!(field(out, "shape").starts_with(&format!("{} layers,", p.n_layers)), "{label}: {out}");
        assert!(field(out, "lowering").starts_with("ok ("), "{label}: {out}");
        assert!(field(out, "tokenizer").starts_with("byte-level BPE, "), "{label}: {out}");
        let format = field(out, "format");
        assert!(format.starts_with(if fx.hf { "hf-safetensors" } else { "gguf v3" }), "{label}: {format}");
        let tensors = file_tensors(fx);
        assert!(field(out, "tensors").starts_with(&format!("{} (", tensors.len())), "{label}: {out}");
        // Without the flags, no listings.
        assert!(!out.contains("\ntensors:") && !out.contains("\nmetadata:"), "{label}: {out}");
    });
}

#[test]
fn tensors_lists_every_tensor_of_the_file() {
    par_map(&all_fixtures(), |fx| {
        let run = apr_ir([OsStr::new("inspect"), fx.path.as_os_str(), OsStr::new("--tensors")]);
        let out = run.ok();
        let (_, listing) = out.split_once("\ntensors:\n").unwrap_or_else(|| panic!("{run:#?}\nno tensor listing"));
        let listed: Vec<&str> = listing.lines().map(|l| l.split_whitespace().next().unwrap_or("")).collect();
        let tensors = file_tensors(fx);
        assert_eq!(listed.len(), tensors.len(), "{}: {listing}", fx.label());
        for t in &tensors {
            let line = listing.lines().find(|l| l.split_whitespace().next() == Some(t.name.as_str()));
            let line = line.unwrap_or_else(|| panic!("{}: {} not listed", fx.label(), t.name));
            assert!(
                line.to_lowercase().contains(&t.type_name.to_lowercase()),
                "{}: {line} should show {}",
                fx.label(),
                t.type_name
            );
            assert!(line.contains(&format!("{:?}", t.shape)), "{}: {line} should show {:?}", fx.label(), t.shape);
        }
    });
}

#[test]
fn metadata_lists_the_keys() {
    for fx in all_fixtures() {
        let run = apr_ir([OsStr::new("inspect"), fx.path.as_os_str(), OsStr::new("--metadata")]);
        let out = run.ok();
        let (_, listing) = out.split_once("\nmetadata:\n").unwrap_or_else(|| panic!("{run:#?}\nno metadata listing"));
        let want = if fx.hf {
            format!("model_type = \"{}\"", fx.arch)
        } else {
            format!("general.architecture = \"{}\"", fx.arch)
        };
        assert!(listing.lines().any(|l| l.trim() == want), "{}: no line {want:?} in\n{listing}", fx.label());
        // Long arrays are summarized, not dumped.
        assert!(listing.lines().all(|l| l.len() < 200), "{}: a metadata line is too long", fx.label());
    }
}

#[test]
fn a_gguf_that_is_not_a_model_is_inspected_but_does_not_lower() {
    let path = fixture("gguf/sample.gguf");
    let run = apr_ir([OsStr::new("inspect"), path.as_os_str(), OsStr::new("--tensors"), OsStr::new("--metadata")]);
    let out = run.ok();
    assert!(field(out, "lowering").starts_with("not possible"), "{run:#?}");
    assert!(out.contains("general.architecture = \"llama\""), "{run:#?}");
    let run = apr_ir([OsStr::new("compile"), path.as_os_str()]);
    assert!(run.one_line_error().contains("token_embd.weight"), "{run:#?}");
}
