//! safetensors files and Hugging Face model directories: valid, sharded and hostile.

// Helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use apr_ir::DType;
use apr_ir_model::safetensors::{HfDir, SafeDType, SafeTensors, SafeTensorsError, SafeTensorsFile};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// A test-only writer: entries packed in order, header JSON built by hand so hostile
/// variants can be spelled out exactly.
fn st_file(entries: &[(&str, &str, &[u64], &[u8])], metadata: Option<&str>) -> Vec<u8> {
    let mut fields = Vec::new();
    if let Some(m) = metadata {
        fields.push(format!("\"__metadata__\":{m}"));
    }
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in entries {
        let begin = data.len();
        data.extend_from_slice(bytes);
        fields.push(format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{begin},{}]}}",
            data.len()
        ));
    }
    raw(&format!("{{{}}}", fields.join(",")), &data)
}

/// Header length, header, data.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[track_caller]
fn rejects(bytes: &[u8], needle: &str) {
    match SafeTensors::parse(bytes) {
        Ok(_) => panic!("parsed, but expected an error containing {needle:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "error {msg:?} should contain {needle:?}");
        }
    }
}

#[test]
fn parses_and_views_every_supported_dtype() {
    let w = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let h = [0x00, 0x3c, 0x00, 0x40]; // f16 1.0, 2.0
    let b = [0x80, 0x3f, 0x00, 0x40, 0x40, 0x40]; // bf16 1.0, 2.0, 3.0
    let i = 7i32.to_le_bytes();
    let file = st_file(
        &[
            ("model.w", "F32", &[2, 3], &w),
            ("h", "F16", &[2], &h),
            ("b", "BF16", &[1, 3], &b),
            ("i", "I32", &[], &i),
            ("empty", "F32", &[0, 4], &[]),
        ],
        Some(r#"{"format":"pt","note":"ünï"}"#),
    );
    let st = SafeTensors::parse(&file).unwrap();
    assert_eq!(st.metadata(), [("format".into(), "pt".into()), ("note".into(), "ünï".into())]);
    let names: Vec<&str> = st.tensors().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["model.w", "h", "b", "i", "empty"], "header order is kept");
    let v = st.view(&file, "model.w").unwrap();
    assert_eq!((v.dtype, v.shape.as_slice(), v.bytes), (DType::F32, &[2u64, 3][..], w.as_slice()));
    assert_eq!(st.view(&file, "h").unwrap().bytes, &h);
    let v = st.view(&file, "b").unwrap();
    assert_eq!((v.dtype, v.shape.as_slice()), (DType::BF16, &[1u64, 3][..]));
    let v = st.view(&file, "i").unwrap();
    assert_eq!((v.dtype, v.shape.len(), v.bytes), (DType::I32, 0, &i[..]));
    assert_eq!(st.tensor("i").unwrap().n_elements(), 1);
    let v = st.view(&file, "empty").unwrap();
    assert_eq!((v.shape.as_slice(), v.bytes.len()), (&[0u64, 4][..], 0));
    let e = st.view(&file, "missing").unwrap_err().to_string();
    assert_eq!(e, "no tensor named missing");
    assert_eq!(st.data_offset() + st.data_len(), file.len() as u64);
}

#[test]
fn unsupported_dtypes_parse_but_fail_when_requested() {
    let file = st_file(
        &[
            ("ids", "I64", &[2], &[0; 16]),
            ("fp8", "F8_E4M3", &[3], &[0; 3]),
            ("f4", "F4", &[4], &[0; 2]),
            ("mystery", "Q7_WEIRD", &[5], &[0; 9]),
            ("ok", "F32", &[1], &[0; 4]),
        ],
        None,
    );
    let st = SafeTensors::parse(&file).unwrap();
    assert_eq!(st.tensors().len(), 5);
    assert_eq!(st.tensor("ids").unwrap().safe_dtype(), &SafeDType::I64);
    assert_eq!(st.tensor("mystery").unwrap().safe_dtype(), &SafeDType::Unknown("Q7_WEIRD".into()));
    for (name, dtype) in [("ids", "I64"), ("fp8", "F8_E4M3"), ("f4", "F4"), ("mystery", "Q7_WEIRD")] {
        let e = st.view(&file, name).unwrap_err();
        assert!(matches!(e, SafeTensorsError::UnsupportedDType { .. }));
        assert_eq!(e.to_string(), format!("tensor {name} has dtype {dtype}, which apr-ir does not support"));
    }
    assert!(st.view(&file, "ok").is_ok());
    // Sizes of known dtypes are still checked, sub-byte ones included.
    rejects(&st_file(&[("ids", "I64", &[2], &[0; 15])], None), "I64 [2] needs 16 bytes but data_offsets span 15");
    rejects(&st_file(&[("f4", "F4", &[3], &[0; 2])], None), "tensor f4: F4 [3] does not fill a whole number of bytes");
}

#[test]
fn hostile_headers() {
    let data = [0u8; 16];
    rejects(b"", "file is 0 bytes");
    rejects(&[1, 0, 0], "file is 3 bytes");
    rejects(&100u64.to_le_bytes(), "header length 100 runs past the end of the file (0 bytes follow");
    rejects(&raw("{}", &[])[..9], "header length 2 runs past the end of the file (1 bytes follow");
    rejects(&u64::MAX.to_le_bytes(), "header length 18446744073709551615 exceeds the limit of 104857600 bytes");
    let mut big = (200u64 << 20).to_le_bytes().to_vec();
    big.extend_from_slice(b"{}");
    rejects(&big, "exceeds the limit");
    rejects(&raw("{\"a\":", &[]), "bad JSON header");
    rejects(&raw("[1,2]", &[]), "bad JSON header");
    rejects(&raw("{}\u{0}", &[]), "bad JSON header");
    rejects(&raw("\u{feff}{}", &[]), "bad JSON header");
    rejects(&raw(r#"{"w":{"dtype":"F32","shape":[1]}}"#, &data), "tensor w: missing field `data_offsets`");
    rejects(&raw(r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, &data), "tensor w:");
    rejects(&raw(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#, &data), "tensor w:");
    rejects(&raw(r#"{"__metadata__":{"n":1}}"#, &data), "__metadata__ value of n is 1, not a string");
    let entry = |name: &str, dtype: &str, shape: &str, b: u64, e: u64| {
        format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{b},{e}]}}"#)
    };
    let one = |s: String| raw(&format!("{{{s}}}"), &data);
    rejects(
        &one(entry("w", "F32", "[4]", 0, 17)),
        "tensor w: data_offsets [0, 17] are out of range (the data section holds 16 bytes)",
    );
    rejects(&one(entry("w", "F32", "[4]", 8, 4)), "data_offsets [8, 4] are out of range");
    rejects(&one(entry("w", "F32", "[1]", u64::MAX - 3, u64::MAX)), "out of range");
    rejects(
        &one(entry("w", "F32", "[3]", 0, 16)),
        "tensor w: data size mismatch: F32 [3] needs 12 bytes but data_offsets span 16",
    );
    rejects(&one(entry("w", "F16", "[4294967296,4294967296]", 0, 16)), "tensor w: element count of shape");
    rejects(&one(entry("w", "F64", "[4611686018427387904]", 0, 16)), "overflows");
    let two = |a: String, b: String| raw(&format!("{{{a},{b}}}"), &data);
    rejects(&two(entry("a", "F32", "[3]", 0, 12), entry("b", "F32", "[2]", 8, 16)), "tensors a and b overlap");
    rejects(&two(entry("a", "F32", "[4]", 0, 16), entry("b", "F32", "[1]", 4, 8)), "tensors a and b overlap");
    rejects(&two(entry("a", "F32", "[1]", 0, 4), entry("a", "F32", "[1]", 4, 8)), "duplicate tensor name a");
    // Zero-size tensors share offsets with anything; a gap is allowed.
    let ok = two(entry("a", "F32", "[0]", 4, 4), entry("b", "F32", "[2]", 0, 8));
    assert!(SafeTensors::parse(&ok).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut file = st_file(&[("a", "F32", &[2], &[0; 8]), ("b", "BF16", &[2, 2], &[1; 8])], Some(r#"{"k":"v"}"#));
        for (at, byte) in &edits {
            let i = at.index(file.len());
            file[i] = *byte;
        }
        file.truncate(cut.index(file.len() + 1));
        let _ = SafeTensors::parse(&file);
    }
}

/// A fresh, empty directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("safetensors").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

const CONFIG: &str = r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":8,"rms_norm_eps":1e-6}"#;

#[test]
fn hf_dir_with_one_file() {
    let dir = temp_dir("single");
    write(&dir, "config.json", CONFIG.as_bytes());
    let w = f32_bytes(&[1.0, 2.0]);
    write(&dir, "model.safetensors", &st_file(&[("w", "F32", &[1, 2], &w), ("ids", "I64", &[1], &[0; 8])], None));
    write(&dir, "notes.txt", b"not a shard");
    let hf = HfDir::open(&dir).unwrap();
    assert_eq!(hf.config()["hidden_size"], 8);
    assert_eq!(hf.config()["architectures"][0], "Qwen2ForCausalLM");
    assert_eq!(hf.tensor_names().collect::<Vec<_>>(), ["w", "ids"]);
    assert_eq!(hf.len(), 2);
    let v = hf.tensor("w").unwrap();
    assert_eq!((v.dtype, v.shape.as_slice(), v.bytes), (DType::F32, &[1u64, 2][..], w.as_slice()));
    assert_eq!(hf.tensor("ids").unwrap_err().to_string(), "tensor ids has dtype I64, which apr-ir does not support");
    assert_eq!(hf.tensor("nope").unwrap_err().to_string(), "no tensor named nope");
    let (info, shard) = hf.tensor_info("ids").unwrap();
    assert_eq!(info.shape(), &[1]);
    assert_eq!(shard.path(), dir.join("model.safetensors"));
}

fn sharded(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    write(&dir, "config.json", CONFIG.as_bytes());
    let a = f32_bytes(&[1.0; 4]);
    let b = f32_bytes(&[2.0; 2]);
    write(&dir, "model-00001-of-00002.safetensors", &st_file(&[("embed", "F32", &[2, 2], &a)], None));
    write(
        &dir,
        "model-00002-of-00002.safetensors",
        &st_file(&[("norm", "BF16", &[4], &b), ("head", "F32", &[2], &b)], None),
    );
    write(
        &dir,
        "model.safetensors.index.json",
        br#"{"metadata":{"total_size":32},"weight_map":{
            "head":"model-00002-of-00002.safetensors",
            "embed":"model-00001-of-00002.safetensors",
            "norm":"model-00002-of-00002.safetensors"}}"#,
    );
    dir
}

#[test]
fn hf_dir_with_sharded_index() {
    let dir = sharded("sharded");
    // A stray file the index does not name is not opened.
    write(&dir, "stray.safetensors", b"garbage");
    let hf = HfDir::open(&dir).unwrap();
    assert_eq!(hf.shards().len(), 2);
    assert_eq!(hf.tensor_names().collect::<Vec<_>>(), ["embed", "norm", "head"]);
    assert_eq!(hf.tensor("embed").unwrap().bytes, f32_bytes(&[1.0; 4]).as_slice());
    let v = hf.tensor("norm").unwrap();
    assert_eq!((v.dtype, v.shape.as_slice()), (DType::BF16, &[4u64][..]));
    assert_eq!(hf.tensor_infos().count(), 3);
}

#[track_caller]
fn dir_rejects(dir: &Path, needle: &str) -> SafeTensorsError {
    match HfDir::open(dir) {
        Ok(_) => panic!("opened, but expected an error containing {needle:?}"),
        Err(e) => {
            assert!(e.to_string().contains(needle), "error {:?} should contain {needle:?}", e.to_string());
            e
        }
    }
}

#[test]
fn hf_dir_errors() {
    let dir = temp_dir("no_config");
    write(&dir, "model.safetensors", &st_file(&[], None));
    dir_rejects(&dir, "has no config.json");

    let dir = temp_dir("bad_config");
    write(&dir, "config.json", b"{\"hidden_size\":");
    write(&dir, "model.safetensors", &st_file(&[], None));
    dir_rejects(&dir, "config.json: invalid JSON");

    let dir = temp_dir("no_shards");
    write(&dir, "config.json", CONFIG.as_bytes());
    dir_rejects(&dir, "has no model.safetensors.index.json and no .safetensors files");

    let dir = temp_dir("two_shards");
    write(&dir, "config.json", CONFIG.as_bytes());
    write(&dir, "a.safetensors", &st_file(&[("w", "F32", &[1], &[0; 4])], None));
    write(&dir, "b.safetensors", &st_file(&[("w", "F32", &[1], &[0; 4])], None));
    dir_rejects(&dir, "tensor w is in two shards: a.safetensors and b.safetensors");

    let dir = temp_dir("bad_shard_file");
    write(&dir, "config.json", CONFIG.as_bytes());
    write(&dir, "model.safetensors", &u64::MAX.to_le_bytes());
    let e = dir_rejects(&dir, "model.safetensors: header length 18446744073709551615 exceeds");
    assert!(matches!(e, SafeTensorsError::InFile { .. }));

    let dir = sharded("missing_shard");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    dir_rejects(&dir, "model-00002-of-00002.safetensors named by the index does not exist");

    for evil in ["../config.json", "/etc/passwd", "sub/model.safetensors", "..", ""] {
        let dir = sharded("traversal");
        let index = format!(r#"{{"weight_map":{{"embed":"{evil}"}}}}"#);
        write(&dir, "model.safetensors.index.json", index.as_bytes());
        dir_rejects(&dir, &format!("index names shard {evil:?}, which is not a plain file name"));
    }

    let dir = sharded("wrong_shard");
    let index =
        r#"{"weight_map":{"embed":"model-00002-of-00002.safetensors","norm":"model-00001-of-00002.safetensors"}}"#;
    write(&dir, "model.safetensors.index.json", index.as_bytes());
    dir_rejects(&dir, "index places tensor embed in model-00002-of-00002.safetensors, which does not contain it");

    let dir = sharded("no_weight_map");
    write(&dir, "model.safetensors.index.json", br#"{"metadata":{}}"#);
    dir_rejects(&dir, "model.safetensors.index.json: invalid JSON: no weight_map object");

    let dir = sharded("non_string_shard");
    write(&dir, "model.safetensors.index.json", br#"{"weight_map":{"embed":3}}"#);
    dir_rejects(&dir, "weight_map entry embed is 3, not a file name");

    let missing = temp_dir("gone").join("nothing.safetensors");
    let e = SafeTensorsFile::open(&missing).unwrap_err().to_string();
    assert!(e.starts_with("cannot read") && e.contains("nothing.safetensors"), "{e}");
}
