//! Hostile GGUF input: every malformed header must give a clear error, never a panic, a
//! huge allocation or a hang.

// Helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use apr_ir::DType;
use apr_ir_model::gguf::{write_gguf, Array, GgmlType, Gguf, Metadata, TensorSpec};
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// Hand-built GGUF bytes, for headers the writer would refuse to produce.
#[derive(Clone)]
struct Raw(Vec<u8>);

const T_U8: u32 = 0;
const T_U32: u32 = 4;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;

impl Raw {
    /// Magic, version, tensor count, metadata count.
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).raw(s)
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(T_U32).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Zero padding to `align`, then `n` bytes of data.
    fn data(&mut self, align: usize, n: usize) -> &mut Self {
        let pad = self.0.len().next_multiple_of(align) - self.0.len();
        self.0.resize(self.0.len() + pad + n, 0xAB);
        self
    }
    fn done(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// Parses `bytes` expecting an error whose message contains `needle`.
#[track_caller]
fn rejects(bytes: &[u8], needle: &str) {
    match Gguf::parse(bytes) {
        Ok(_) => panic!("parsed, but expected an error containing {needle:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "error {msg:?} should contain {needle:?}");
            assert!(!msg.contains('\n'), "one line: {msg:?}");
        }
    }
}

/// A small valid file with every kind of header field and two tensors; the last tensor's
/// size is a multiple of the alignment, so cutting the file anywhere loses data.
fn valid_file() -> Vec<u8> {
    let mut m = Metadata::new();
    m.push("general.architecture", "llama").unwrap();
    m.push("llama.block_count", 2u32).unwrap();
    m.push("f", 1.5f32).unwrap();
    m.push("b", true).unwrap();
    m.push("tokens", vec!["a", "bc", ""]).unwrap();
    m.push("nested", vec![Array::I32(vec![1, 2]), Array::String(vec!["x".into()])]).unwrap();
    m.push("u64", 7u64).unwrap();
    let w1 = vec![1u8; 2 * 34];
    let w2 = vec![2u8; 32];
    write_gguf(
        Vec::new(),
        &m,
        &[
            (TensorSpec::new("blk.0.w", vec![32, 2], DType::Q8_0), w1.as_slice()),
            (TensorSpec::new("blk.0.b", vec![8], DType::F32), w2.as_slice()),
        ],
    )
    .unwrap()
}

#[test]
fn the_valid_file_parses() {
    let g = Gguf::parse(&valid_file()).unwrap();
    assert_eq!(g.tensors().len(), 2);
    assert_eq!(g.metadata().len(), 7);
}

#[test]
fn truncation_at_every_byte_offset_is_an_error() {
    let file = valid_file();
    for len in 0..file.len() {
        assert!(Gguf::parse(&file[..len]).is_err(), "truncated to {len} bytes parsed");
    }
    rejects(&file[..3], "truncated at byte 0: magic");
    rejects(&file[..30], "tensor count at byte 8 is 2, which cannot fit");
    rejects(&file[..200], "key of metadata entry 5: string length 6 at byte 190 exceeds the 2 remaining bytes");
    rejects(
        &file[..188],
        "file truncated at byte 182: length of element 2 of array tokens needs 8 bytes but only 6 remain",
    );
    rejects(&file[..file.len() - 1], "out of range");
}

#[test]
fn bad_magic_and_versions() {
    rejects(b"", "file truncated at byte 0: magic needs 4 bytes but only 0 remain");
    rejects(b"GGML\x03\0\0\0", "not a GGUF file: magic is \"GGML\"");
    rejects(b"\x7fELF\x02\x01\x01\0", "not a GGUF file: magic is \"\\x7fELF\"");
    rejects(&Raw::header(1, 0, 0).done(), "GGUF version 1 is not supported");
    rejects(&Raw::header(4, 0, 0).done(), "GGUF version 4 is not supported");
    rejects(&Raw::header(0, 0, 0).done(), "GGUF version 0 is not supported");
    rejects(&Raw::header(3u32.swap_bytes(), 0, 0).done(), "big-endian");
    rejects(&Raw::header(2u32.swap_bytes(), 0, 0).done(), "version 2 byte-swapped");
    rejects(b"GGUF\x03\0\0", "truncated at byte 4: version");
    assert!(Gguf::parse(&Raw::header(3, 0, 0).done()).is_ok(), "an empty v3 file is valid");
}

#[test]
fn absurd_counts_fail_before_allocating() {
    for n in [u64::MAX, 1 << 40, 1 << 62, 1000] {
        rejects(&Raw::header(3, n, 0).done(), &format!("tensor count at byte 8 is {n}, which cannot fit"));
        rejects(&Raw::header(3, 0, n).done(), &format!("metadata entry count at byte 16 is {n}, which cannot fit"));
    }
    // Strings and arrays.
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 60).raw(b"key").raw(&[0; 32]);
    rejects(&r.done(), "key of metadata entry 0: string length 1152921504606846976 at byte 24 exceeds");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(T_STRING).u64(1 << 60);
    rejects(&r.done(), "value of key k: string length 1152921504606846976");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"arr").u32(T_ARRAY).u32(T_U8).u64(1 << 60).raw(&[0; 64]);
    rejects(&r.done(), "element count of array arr at byte 43 is 1152921504606846976, which cannot fit");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"arr").u32(T_ARRAY).u32(T_STRING).u64(u64::MAX);
    rejects(&r.done(), "element count of array arr");
    // Eight u64s fit in 64 bytes; nine do not.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"arr").u32(T_ARRAY).u32(T_U64).u64(9).raw(&[0; 64]);
    rejects(&r.done(), "each entry needs at least 8");
}

#[test]
fn array_nesting_is_bounded() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"bomb").u32(T_ARRAY);
    for _ in 0..100_000 {
        r.u32(T_ARRAY).u64(1);
    }
    rejects(&r.done(), "metadata key bomb: arrays nested deeper than 8 levels");
    // Eight levels are fine.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"ok").u32(T_ARRAY);
    for _ in 0..7 {
        r.u32(T_ARRAY).u64(1);
    }
    r.u32(T_U8).u64(1).raw(&[5]);
    assert!(Gguf::parse(&r.done()).is_ok());
}

#[test]
fn bad_metadata_values() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(13).u32(0);
    rejects(&r.done(), "metadata key k: unknown value type 13 at byte 33");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(T_ARRAY).u32(0xFFFF_FFFF).u64(0);
    rejects(&r.done(), "unknown value type 4294967295");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(T_BOOL).raw(&[2]);
    rejects(&r.done(), "metadata key k: invalid bool byte 2 at byte 37");
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("same", 1).kv_u32("same", 2);
    rejects(&r.done(), "duplicate metadata key same");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k\xff").u32(T_U8).raw(&[0]);
    rejects(&r.done(), "invalid UTF-8 in key of metadata entry 0 at byte 32");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"name").u32(T_STRING).str(b"ok\xc3\x28");
    rejects(&r.done(), "invalid UTF-8 in value of key name");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"toks").u32(T_ARRAY).u32(T_STRING).u64(2).str(b"a").str(b"\xed\xa0\x80");
    rejects(&r.done(), "invalid UTF-8 in element 1 of array toks");
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48, 0x8000_0001] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        rejects(&r.done(), &format!("general.alignment is {a}; it must be a nonzero power of two"));
    }
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.alignment").u32(T_U64).u64(64);
    rejects(&r.done(), "metadata key general.alignment has type u64, expected u32");
}

#[test]
fn bad_tensor_records() {
    let f32 = GgmlType::F32.id();
    let case = |dims: &[u64], ty: u32, offset: u64, data: usize| {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("blk.0.w", dims, ty, offset).data(32, data);
        r.done()
    };
    assert!(Gguf::parse(&case(&[4, 2], f32, 0, 32)).is_ok());
    rejects(&case(&[1, 1, 1, 1, 1], f32, 0, 32), "tensor blk.0.w: 5 dimensions; GGUF allows at most 4");
    rejects(&case(&[1 << 32, 1 << 32], f32, 0, 32), "tensor blk.0.w: element count or byte size of dims");
    rejects(&case(&[1 << 62, 2], f32, 0, 32), "overflows");
    rejects(&case(&[1 << 62], f32, 0, 32), "overflows");
    rejects(&case(&[4, 0], f32, 0, 32), "tensor blk.0.w: dimension 1 (ne1) is 0");
    rejects(&case(&[4], 4, 0, 32), "tensor blk.0.w: unknown ggml type id 4 at byte");
    rejects(&case(&[4], 1000, 0, 32), "unknown ggml type id 1000");
    rejects(&case(&[33], GgmlType::Q8_0.id(), 0, 64), "ne0 = 33 is not a multiple of the Q8_0 block length 32");
    rejects(&case(&[4, 2], f32, 32, 32), "tensor blk.0.w: data at offset 32 with size 32 is out of range");
    rejects(&case(&[4, 2], f32, u64::MAX - 31, 32), "out of range");
    rejects(&case(&[4, 2], f32, 0, 31), "out of range (the data section holds 31 bytes)");
    rejects(&case(&[4, 2], f32, 4, 64), "tensor blk.0.w: data offset 4 is misaligned (alignment is 32)");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("bad\u{0}\u{80}", &[1], f32, 0);
    r.0[32 + 4] = 0xFF;
    rejects(&r.done(), "invalid UTF-8 in name of tensor 0");
    let mut r = Raw::header(3, 1, 0);
    r.raw(&[1, 0, 0, 0, 0, 0, 0, 0]).raw(b"w").u32(u32::MAX).raw(&[0; 32]);
    rejects(&r.done(), "4294967295 dimensions");
    let mut r = Raw::header(3, 1, 0);
    r.str(b"w").u32(2).u64(4).raw(&[0; 4]);
    rejects(&r.done(), "dimension 1 of tensor w");
}

#[test]
fn tensor_layout_conflicts() {
    let f32 = GgmlType::F32.id();
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], f32, 0).tensor("b", &[8], f32, 32).data(32, 64);
    rejects(&r.done(), "tensors a and b overlap in the data section");
    // A small tensor inside a big one that starts earlier, past a third in between.
    let mut r = Raw::header(3, 3, 0);
    r.tensor("big", &[64], f32, 0).tensor("mid", &[8], f32, 64).tensor("late", &[8], f32, 192).data(32, 256);
    rejects(&r.done(), "tensors big and mid overlap");
    let mut r = Raw::header(3, 2, 0);
    r.tensor("same", &[8], f32, 0).tensor("same", &[8], f32, 32).data(32, 64);
    rejects(&r.done(), "duplicate tensor name same");
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], f32, 0).tensor("b", &[8], f32, 0).data(32, 64);
    rejects(&r.done(), "overlap");
    // Disjoint, out of order, with a gap: fine.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], f32, 64).tensor("b", &[8], f32, 0).data(32, 96);
    assert!(Gguf::parse(&r.done()).is_ok());
}

#[test]
fn tensor_dtype_errors_name_the_type() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("blk.0.attn_q.weight", &[256], GgmlType::IQ2_XXS.id(), 0).data(32, 66);
    let g = Gguf::parse(&r.done()).unwrap();
    let e = g.tensors()[0].dtype().unwrap_err().to_string();
    assert_eq!(e, "tensor blk.0.attn_q.weight has type IQ2_XXS, which apr-ir does not support");
}

/// Parses `bytes`, which must not panic, and must finish quickly.
fn parse_quickly(bytes: &[u8]) {
    let start = Instant::now();
    let _ = Gguf::parse(bytes);
    assert!(start.elapsed() < Duration::from_secs(2), "parse took {:?}", start.elapsed());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut file = valid_file();
        for (at, byte) in &edits {
            let i = at.index(file.len());
            file[i] = *byte;
        }
        if truncate {
            file.truncate(cut.index(file.len() + 1));
        }
        parse_quickly(&file);
    }

    #[test]
    fn huge_words_anywhere_never_panic(at in any::<prop::sample::Index>(), word in prop_oneof![
        Just(u64::MAX), Just(1u64 << 63), Just(1 << 60), Just(1 << 40), Just(1 << 32), Just(u32::MAX as u64),
        any::<u64>(),
    ]) {
        let mut file = valid_file();
        let i = at.index(file.len() - 8);
        file[i..i + 8].copy_from_slice(&word.to_le_bytes());
        parse_quickly(&file);
    }

    #[test]
    fn random_bytes_after_a_valid_prefix_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512), keep in 0usize..24) {
        let mut file = Raw::header(3, 2, 3).done();
        file.truncate(keep);
        file.extend_from_slice(&tail);
        parse_quickly(&file);
    }
}
