//! GGUF writer → reader round trips, and reading a file written by gguf-py.

// Helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use apr_ir::DType;
use apr_ir_model::gguf::{
    write_gguf, write_gguf_file, Array, GgmlType, Gguf, GgufError, GgufFile, GgufWriter, Metadata, TensorSpec, Value,
};
use half::f16;
use std::path::PathBuf;

/// Deterministic arbitrary bytes.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn every_value_type() -> Metadata {
    let mut m = Metadata::new();
    let entries: Vec<(&str, Value)> = vec![
        ("general.architecture", "llama".into()),
        ("t.u8", u8::MAX.into()),
        ("t.i8", i8::MIN.into()),
        ("t.u16", u16::MAX.into()),
        ("t.i16", i16::MIN.into()),
        ("t.u32", u32::MAX.into()),
        ("t.i32", i32::MIN.into()),
        ("t.f32", 3.5f32.into()),
        ("t.f32_inf", f32::NEG_INFINITY.into()),
        ("t.bool_true", true.into()),
        ("t.bool_false", false.into()),
        ("t.string", "plain".into()),
        ("t.empty_string", "".into()),
        ("t.unicode", "héllo ✓ 日本語 🦀 \u{0}nul".into()),
        ("t.u64", u64::MAX.into()),
        ("t.i64", i64::MIN.into()),
        ("t.f64", std::f64::consts::PI.into()),
        ("", "an empty key is legal".into()),
        ("a.u8", vec![0u8, 1, 255].into()),
        ("a.i8", vec![-128i8, 0, 127].into()),
        ("a.u16", vec![1u16, 65535].into()),
        ("a.i16", vec![-32768i16, 32767].into()),
        ("a.u32", vec![7u32].into()),
        ("a.i32", vec![-1i32, 0, 1].into()),
        ("a.f32", vec![0.5f32, -1e-30, f32::MAX].into()),
        ("a.bool", vec![true, false, true].into()),
        ("a.string", vec!["", "x", "ünï", "a\nb"].into()),
        ("a.u64", vec![u64::MAX, 0].into()),
        ("a.i64", vec![i64::MIN, i64::MAX].into()),
        ("a.f64", vec![1e300f64, -0.25].into()),
        ("a.empty_u32", Vec::<u32>::new().into()),
        ("a.empty_string", Vec::<String>::new().into()),
        ("a.empty_nested", Vec::<Array>::new().into()),
        (
            "a.nested",
            vec![
                Array::I32(vec![1, 2]),
                Array::String(vec!["in".into(), "".into()]),
                Array::U8(vec![]),
                Array::Array(vec![Array::F64(vec![0.5]), Array::Array(vec![Array::Bool(vec![true])])]),
            ]
            .into(),
        ),
    ];
    for (k, v) in entries {
        m.push(k, v).unwrap();
    }
    m
}

#[test]
fn every_value_type_and_several_tensor_types_round_trip() {
    let mut meta = every_value_type();
    meta.push("t.f32_nan", f32::NAN).unwrap();
    meta.push("t.neg_zero", -0.0f64).unwrap();
    let tensors = vec![
        (TensorSpec::new("f32", vec![3, 2], GgmlType::F32), bytes(24, 1)),
        (TensorSpec::new("f16", vec![8, 4], DType::F16), bytes(64, 2)),
        (TensorSpec::new("q8_0", vec![64, 2], DType::Q8_0), bytes(2 * 2 * 34, 3)),
        (TensorSpec::new("q4_k", vec![256, 3, 1], DType::Q4K), bytes(3 * 144, 4)),
        (TensorSpec::new("iq2_xxs", vec![256], GgmlType::IQ2_XXS), bytes(66, 5)),
        (TensorSpec::new("scalar", vec![], GgmlType::F32), bytes(4, 6)),
    ];
    let pairs: Vec<(TensorSpec, &[u8])> = tensors.iter().map(|(s, b)| (s.clone(), b.as_slice())).collect();
    let file = write_gguf(Vec::new(), &meta, &pairs).unwrap();

    let g = Gguf::parse(&file).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_offset() % 32, 0);
    // NaN is not equal to itself; check it by bits and the rest with ==.
    let nan = g.metadata().get("t.f32_nan").unwrap();
    assert!(matches!(nan, Value::F32(x) if x.to_bits() == f32::NAN.to_bits()));
    assert!(matches!(g.metadata().get("t.neg_zero"), Some(Value::F64(x)) if x.to_bits() == (-0.0f64).to_bits()));
    let mut expected = meta.clone();
    let mut got = g.metadata().clone();
    expected.set("t.f32_nan", 0u8);
    got.set("t.f32_nan", 0u8);
    assert_eq!(got, expected);
    assert_eq!(g.metadata().keys().collect::<Vec<_>>(), meta.keys().collect::<Vec<_>>(), "metadata order is preserved");

    assert_eq!(g.tensors().len(), tensors.len());
    for (info, (spec, data)) in g.tensors().iter().zip(&tensors) {
        assert_eq!(info.name(), spec.name);
        assert_eq!(info.dims(), spec.dims.as_slice());
        assert_eq!(info.ggml_type(), spec.ggml_type);
        assert_eq!(info.offset() % 32, 0, "{}", info.name());
        assert_eq!(info.n_bytes(), data.len() as u64);
        assert_eq!(g.tensor_data(&file, info).unwrap(), data.as_slice(), "{}", info.name());
    }
    let q4k = g.tensor("q4_k").unwrap();
    assert_eq!(q4k.shape(), vec![1, 3, 256]);
    assert_eq!(q4k.dtype().unwrap(), DType::Q4K);
    assert_eq!(q4k.n_elements(), 768);
    let err = g.tensor("iq2_xxs").unwrap().dtype().unwrap_err().to_string();
    assert_eq!(err, "tensor iq2_xxs has type IQ2_XXS, which apr-ir does not support");
    assert_eq!(g.tensor("scalar").unwrap().n_elements(), 1);

    // Writing what was read gives the same bytes.
    let again: Vec<(TensorSpec, &[u8])> = g
        .tensors()
        .iter()
        .map(|t| (TensorSpec::new(t.name(), t.dims().to_vec(), t.ggml_type()), g.tensor_data(&file, t).unwrap()))
        .collect();
    assert_eq!(write_gguf(Vec::new(), g.metadata(), &again).unwrap(), file);
}

#[test]
fn custom_alignment_is_respected() {
    for align in [1u32, 8, 64, 4096] {
        let mut meta = Metadata::new();
        meta.push("general.alignment", align).unwrap();
        meta.push("general.name", "aligned").unwrap();
        let a = bytes(12, 1);
        let b = bytes(2 * 34, 2);
        let c = bytes(10, 3);
        let tensors = [
            (TensorSpec::new("a", vec![3], DType::F32), a.as_slice()),
            (TensorSpec::new("b", vec![32, 2], DType::Q8_0), b.as_slice()),
            (TensorSpec::new("c", vec![5], DType::F16), c.as_slice()),
        ];
        let file = write_gguf(Vec::new(), &meta, &tensors).unwrap();
        let g = Gguf::parse(&file).unwrap();
        let align = u64::from(align);
        assert_eq!(g.alignment(), align);
        assert_eq!(g.data_offset() % align, 0);
        assert_eq!(file.len() as u64 % align, 0, "the last tensor is padded too");
        let offsets: Vec<u64> = g.tensors().iter().map(|t| t.offset()).collect();
        let pad = |n: u64| n.div_ceil(align) * align;
        assert_eq!(offsets, vec![0, pad(12), pad(12) + pad(68)]);
        for ((_, data), t) in tensors.iter().zip(g.tensors()) {
            assert_eq!(g.tensor_data(&file, t).unwrap(), *data);
        }
    }
}

#[test]
fn streaming_writer_checks_order_sizes_and_completion() {
    let meta = Metadata::new();
    let specs = vec![TensorSpec::new("x", vec![4], DType::F32), TensorSpec::new("y", vec![2], DType::F32)];
    let mut w = GgufWriter::new(Vec::new(), &meta, specs.clone()).unwrap();
    assert_eq!(w.tensors()[1].offset(), 32);
    let e = w.write_tensor("y", &[0; 8]).unwrap_err();
    assert!(matches!(e, GgufError::TensorOrder { .. }), "{e}");
    assert!(e.to_string().contains("expected x"), "{e}");
    let e = w.write_tensor("x", &[0; 15]).unwrap_err();
    assert!(e.to_string().contains("got 15 bytes, expected 16"), "{e}");
    // Chunks add up to the tensor; a chunk too many is refused.
    w.write_tensor_chunk("x", &[1; 10]).unwrap();
    let e = w.write_tensor_chunk("x", &[1; 7]).unwrap_err();
    assert!(e.to_string().contains("got 17 bytes, expected 16"), "{e}");
    w.write_tensor_chunk("x", &[1; 6]).unwrap();
    let e = GgufWriter::new(Vec::new(), &meta, specs.clone()).unwrap().finish().unwrap_err();
    assert!(e.to_string().contains("2 planned tensor(s) were not written, starting with x"), "{e}");
    w.write_tensor("y", &[2; 8]).unwrap();
    let e = w.write_tensor("z", &[]).unwrap_err();
    assert!(e.to_string().contains("no more tensors"), "{e}");
    let file = w.finish().unwrap();
    let g = Gguf::parse(&file).unwrap();
    assert_eq!(g.tensor_data(&file, g.tensor("x").unwrap()).unwrap(), &[1; 16]);
    assert_eq!(g.tensor_data(&file, g.tensor("y").unwrap()).unwrap(), &[2; 8]);
}

#[test]
fn writer_refuses_what_the_reader_would_refuse() {
    let ok = Metadata::new();
    let cases: Vec<(Metadata, Vec<TensorSpec>, &str)> = vec![
        ([("general.alignment", 0u32)].into_iter().collect(), vec![], "nonzero power of two"),
        ([("general.alignment", 48u32)].into_iter().collect(), vec![], "nonzero power of two"),
        ([("general.alignment", 64u64)].into_iter().collect(), vec![], "expected u32"),
        (ok.clone(), vec![TensorSpec::new("q", vec![33], DType::Q8_0)], "not a multiple of the Q8_0 block length 32"),
        (ok.clone(), vec![TensorSpec::new("z", vec![4, 0], DType::F32)], "dimension 1 (ne1) is 0"),
        (ok.clone(), vec![TensorSpec::new("d", vec![1; 5], DType::F32)], "5 dimensions"),
        (
            ok.clone(),
            vec![TensorSpec::new("t", vec![1], DType::F32), TensorSpec::new("t", vec![1], DType::F32)],
            "duplicate tensor name t",
        ),
    ];
    for (meta, specs, needle) in cases {
        let e = GgufWriter::new(Vec::new(), &meta, specs).unwrap_err().to_string();
        assert!(e.contains(needle), "{e:?} should contain {needle:?}");
    }
    let mut deep = Array::U8(vec![1]);
    for _ in 0..8 {
        deep = Array::Array(vec![deep]);
    }
    let meta: Metadata = [("deep", deep)].into_iter().collect();
    let e = GgufWriter::new(Vec::new(), &meta, vec![]).unwrap_err().to_string();
    assert!(e.contains("metadata key deep: arrays nested deeper than 8"), "{e}");
}

#[test]
fn version_2_files_are_read() {
    let meta: Metadata = [("general.architecture", "llama")].into_iter().collect();
    let data = bytes(8, 0);
    let mut file = write_gguf(Vec::new(), &meta, &[(TensorSpec::new("w", vec![2], DType::F32), &data)]).unwrap();
    file[4..8].copy_from_slice(&2u32.to_le_bytes());
    let g = Gguf::parse(&file).unwrap();
    assert_eq!(g.version(), 2);
    assert_eq!(g.architecture().unwrap(), "llama");
}

#[test]
fn files_on_disk_are_mapped() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gguf_roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.gguf");
    let meta: Metadata = [("general.name", "disk")].into_iter().collect();
    let w = bytes(256 * 2 / 32 * 34, 9);
    write_gguf_file(&path, &meta, &[(TensorSpec::new("w", vec![256, 2], DType::Q8_0), &w)]).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.path(), path);
    assert_eq!(f.gguf().metadata().get_str("general.name").unwrap(), "disk");
    let (info, data) = f.tensor("w").unwrap();
    assert_eq!(info.dims(), &[256, 2]);
    assert_eq!(data, w.as_slice());
    assert_eq!(f.tensor_data(info), w.as_slice());
    assert!(f.tensor("nope").unwrap_err().to_string().contains("no tensor named nope"));

    let missing = dir.join("missing.gguf");
    let e = GgufFile::open(&missing).unwrap_err().to_string();
    assert!(e.contains("cannot read") && e.contains("missing.gguf"), "{e}");
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).unwrap_err().to_string();
    assert!(e.contains("truncated at byte 0: magic"), "{e}");
}

/// The file `tools/fixtures/make_gguf_sample.py` writes with gguf-py; missing is a failure.
fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf/sample.gguf")
}

#[test]
fn reads_a_file_written_by_gguf_py() {
    let f = GgufFile::open(sample_path()).unwrap_or_else(|e| {
        panic!("{e}: the fixture is committed; regenerate it with python3 tools/fixtures/make_gguf_sample.py")
    });
    let g = f.gguf();
    let m = g.metadata();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(m.keys().take(3).collect::<Vec<_>>(), ["general.architecture", "general.name", "sample.u8"]);
    assert_eq!(m.len(), 20);
    assert_eq!(m.get_str("general.name").unwrap(), "sample");
    assert_eq!(m.get("sample.u8"), Some(&Value::U8(200)));
    assert_eq!(m.get("sample.i8"), Some(&Value::I8(-100)));
    assert_eq!(m.get("sample.u16"), Some(&Value::U16(60000)));
    assert_eq!(m.get("sample.i16"), Some(&Value::I16(-30000)));
    assert_eq!(m.get("llama.block_count"), Some(&Value::U32(2)));
    assert_eq!(m.get("sample.i32"), Some(&Value::I32(-123456)));
    assert_eq!(m.get("sample.bool"), Some(&Value::Bool(true)));
    assert_eq!(m.get("sample.u64"), Some(&Value::U64((1 << 40) + 7)));
    assert_eq!(m.get("sample.i64"), Some(&Value::I64(-(1 << 40))));
    assert_eq!(m.get("sample.f64"), Some(&Value::F64(0.1)));
    assert_eq!(m.get_str("sample.unicode").unwrap(), "héllo wörld ✓ 日本");
    // Typed getters: any integer width, f32 or f64.
    assert_eq!(m.get_usize("llama.block_count").unwrap(), 2);
    assert_eq!(m.get_i64("sample.u16").unwrap(), 60000);
    assert_eq!(m.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(m.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(), 1e-5);
    assert_eq!(m.get_f32("sample.f64").unwrap(), 0.1);
    let e = m.get_u32("sample.i32").unwrap_err().to_string();
    assert_eq!(e, "metadata key sample.i32: value -123456 does not fit in u32");
    let e = m.get_f32("general.name").unwrap_err().to_string();
    assert_eq!(e, "metadata key general.name has type string, expected f32 or f64");
    assert_eq!(m.get_str_array("tokenizer.ggml.tokens").unwrap(), ["<s>", "</s>", "a", "b", "ab"]);
    assert_eq!(m.get_f32_array("tokenizer.ggml.scores").unwrap(), [0.0, -1.0, -2.5, -3.0, -4.0]);
    assert_eq!(m.get_i32_array("tokenizer.ggml.token_type").unwrap(), [3, 3, 1, 1, 1]);
    assert_eq!(m.get_as::<Vec<bool>>("sample.bools").unwrap(), [true, false, true]);
    assert_eq!(
        m.get_array("sample.nested").unwrap(),
        &Array::Array(vec![Array::I32(vec![1, 2]), Array::I32(vec![3]), Array::I32(vec![4, 5, 6])])
    );
    let e = m.get_str_array("sample.nested").unwrap_err().to_string();
    assert_eq!(e, "metadata key sample.nested has type array of array, expected array of string");

    let names: Vec<&str> = g.tensors().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["f32.weight", "f16.weight", "q8_0.weight"]);

    let (t, data) = f.tensor("f32.weight").unwrap();
    assert_eq!((t.dims(), t.shape(), t.dtype().unwrap()), (&[3u64, 2][..], vec![2, 3], DType::F32));
    let vals: Vec<f32> = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(vals, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);

    let (t, data) = f.tensor("f16.weight").unwrap();
    assert_eq!((t.dims(), t.dtype().unwrap()), (&[8u64, 4][..], DType::F16));
    let vals: Vec<f32> = data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
    let want: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 4.0).collect();
    assert_eq!(vals, want);

    // Q8_0: blocks of an f16 scale and 32 signed bytes; x = d * q.
    let (t, data) = f.tensor("q8_0.weight").unwrap();
    assert_eq!((t.dims(), t.dtype().unwrap(), t.n_bytes()), (&[64u64, 2][..], DType::Q8_0, 4 * 34));
    assert_eq!(data.len(), 4 * 34);
    for (b, block) in data.chunks_exact(34).enumerate() {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        for (j, &q) in block[2..].iter().enumerate() {
            let x = ((b * 32 + j) as f32 - 64.0) / 8.0;
            let got = d * f32::from(q as i8);
            assert!((got - x).abs() <= d, "block {b} elem {j}: {got} vs {x}");
        }
    }
    assert_eq!(g.tensors().iter().map(|t| t.offset()).collect::<Vec<_>>(), [0, 32, 96]);
}
