//! `apr-ir run`: the built-in default model answers its test set through --chat; logits
//! dumped by --dump-logits equal the float64 references; sampling repeats with its seed;
//! the GPU backend runs behind its parity gate; `bench` reports the CPU roofline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir_tests::{apr_ir, fixture, par_map, workspace_root, TempDir};

#[test]
fn default_model_answers_its_test_set() {
    let path = workspace_root().join("assets/default.testset.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(cases.len() >= 50, "the test set is too small");
    let results = par_map(&cases, |c| {
        let prompt = c["prompt"].as_str().unwrap();
        let out = apr_ir(["run", "--chat", "--prompt", prompt]).ok().trim().to_string();
        (prompt.to_string(), c["answer"].as_str().unwrap().to_string(), out)
    });
    let wrong: Vec<_> = results.iter().filter(|(_, want, got)| want != got).collect();
    assert!(wrong.is_empty(), "{} of {} wrong: {wrong:?}", wrong.len(), results.len());
    assert!(results.iter().any(|(p, a, _)| p == "What is 2+2?" && a == "4"));
}

fn read_npy_f32(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert_eq!((10 + hlen) % 64, 0, "header not padded to 64 bytes");
    let dims = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape = dims.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let data = bytes[10 + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (shape, data)
}

fn read_npy_f64(path: &std::path::Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + hlen..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn dumped_logits_match_the_float64_reference() {
    let dir = TempDir::new("run-logits");
    for (arch, ty) in [("qwen2", "q4_k"), ("llama", "f16")] {
        let tokens: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(&format!("models/{arch}.tokens.json"))).unwrap())
                .unwrap();
        let ids: Vec<String> = tokens["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
        let out = dir.join(&format!("{arch}.npy"));
        let model = fixture(&format!("models/{arch}-{ty}.gguf"));
        apr_ir([
            "run".as_ref(),
            model.as_os_str(),
            "--tokens".as_ref(),
            ids.join(",").as_ref(),
            "--max-tokens".as_ref(),
            "0".as_ref(),
            "--dump-logits".as_ref(),
            out.as_os_str(),
        ])
        .ok();
        let (shape, got) = read_npy_f32(&out);
        let want = read_npy_f64(&fixture(&format!("models/{arch}-{ty}.logits.npy")));
        assert_eq!(shape, vec![ids.len(), want.len() / ids.len()], "{arch}: one row per prompt position");
        for (pos, (g, w)) in got.chunks(shape[1]).zip(want.chunks(shape[1])).enumerate() {
            let err: f64 = g.iter().zip(w).map(|(&a, &b)| (f64::from(a) - b).powi(2)).sum::<f64>().sqrt();
            let norm: f64 = w.iter().map(|b| b * b).sum::<f64>().sqrt();
            assert!(err / norm < 1e-4, "{arch}-{ty} position {pos}: relative L2 {}", err / norm);
        }
    }
}

#[test]
fn generation_rows_and_sampling_repeat() {
    let dir = TempDir::new("run-sample");
    let model = fixture("models/qwen2-q8_0.gguf");
    let m = model.to_str().unwrap();
    let run = |seed: &str, out: &str| {
        let path = dir.join(out);
        let args = ["run", m, "--prompt", "In 2024 the", "--max-tokens", "6", "--temperature", "0.9", "--top-k", "40"];
        let stdout = apr_ir(args.iter().copied().chain([
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--dump-logits",
            path.to_str().unwrap(),
        ]))
        .ok()
        .to_string();
        (stdout, read_npy_f32(&path).0)
    };
    let (a, shape) = run("1", "a.npy");
    let (b, _) = run("1", "b.npy");
    assert_eq!(a, b, "the same seed must give the same text");
    // Prompt positions plus every generated token but the last (nothing reads its logits).
    let prompt_len = shape[0] - 5;
    assert!(prompt_len >= 1 && shape[1] == 512, "{shape:?}");
    let different = (2..8).map(|s| run(&s.to_string(), "c.npy").0).any(|c| c != a);
    assert!(different, "sampling ignores the seed");
}

/// The GPU, or a skip note — except under CI=true, where a missing adapter fails.
fn gpu_available() -> bool {
    let r = apr_ir(["bench", "--backend", "gpu", "--prompt-tokens", "1", "--gen-tokens", "1"]);
    if r.code == Some(0) {
        return true;
    }
    assert!(!apr_ir_tests::in_ci(), "CI=true but no GPU adapter: {}", r.stderr);
    eprintln!("note: skipping GPU run test: {}", r.stderr.trim());
    false
}

#[test]
fn default_model_answers_alike_on_cpu_and_gpu() {
    if !gpu_available() {
        return;
    }
    let path = workspace_root().join("assets/default.testset.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let sample: Vec<&serde_json::Value> = cases.iter().step_by(25).collect();
    let results = par_map(&sample, |c| {
        let prompt = c["prompt"].as_str().unwrap();
        let cpu = apr_ir(["run", "--chat", "--prompt", prompt, "--backend", "cpu"]).ok().to_string();
        // The GPU at every optimization level (-O1 is the default).
        let gpu: Vec<String> = ["-O0", "-O1", "-O2"]
            .iter()
            .map(|o| apr_ir(["run", "--chat", "--prompt", prompt, "--backend", "gpu", o]).ok().to_string())
            .collect();
        (prompt.to_string(), c["answer"].as_str().unwrap().to_string(), cpu, gpu)
    });
    for (prompt, answer, cpu, gpu) in &results {
        for (level, gpu) in gpu.iter().enumerate() {
            assert_eq!(cpu, gpu, "{prompt:?}: CPU and GPU (-O{level}) answers differ");
        }
        assert_eq!(cpu.trim(), answer, "{prompt:?}");
    }
}

#[test]
fn bad_run_arguments_are_one_line() {
    let e = apr_ir(["run", "--tokens", "1,99999"]).one_line_error().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = apr_ir(["run", "--prompt", "hi", "--max-tokens", "100000"]).one_line_error().to_string();
    assert!(e.contains("exceed the model's context"), "{e}");
    let e = apr_ir(["run", "--prompt", "hi", "--top-p", "0"]).one_line_error().to_string();
    assert!(e.contains("top-p"), "{e}");
    apr_ir(["run", "--prompt", "hi"]).ok();
    let e =
        apr_ir(["run", "tests/fixtures/models/qwen2-f32.gguf", "--chat", "--tokens", "1"]).one_line_error().to_string();
    assert!(!e.is_empty());
}

/// `bench --backend cpu --json`: the figures are consistent with each other, and the roofline
/// (this machine's read bandwidth, measured around the run) is reported beside them.
#[test]
fn cpu_bench_reports_its_roofline() {
    let r = apr_ir(["bench", "--backend", "cpu", "--prompt-tokens", "2", "--gen-tokens", "3", "--json"]);
    let v = r.json();
    let per_token = v["weight_bytes_per_token"].as_f64().unwrap();
    let median_s = v["ms_per_token_median"].as_f64().unwrap() / 1e3;
    let gbs = v["weight_gb_per_s"].as_f64().unwrap();
    assert!(per_token > 0.0 && median_s > 0.0 && v["ms_per_token_min"].as_f64().unwrap() / 1e3 <= median_s);
    assert!((gbs - per_token / median_s / 1e9).abs() <= 1e-9 * gbs.max(1.0), "{v:#}");
    let bw = v["read_bandwidth_gb_per_s"].as_f64().expect("the CPU bench measures read bandwidth");
    assert!(bw > 0.1 && bw < 10_000.0, "implausible read bandwidth {bw} GB/s");
    let fraction = v["bandwidth_fraction"].as_f64().unwrap();
    assert!((fraction - gbs / bw).abs() <= 1e-9, "{v:#}");
    assert!(v["dispatches_per_token"].is_null() && v["opt_level"].is_null(), "no GPU figures on the CPU: {v:#}");
}

/// `bench --profile` times every dispatch of its profiled tokens: one entry per kernel whose
/// dispatch counts add up to the schedule's, whose times add up to the reported total with
/// shares summing to one, largest first, each naming a node of the graph; the CPU refuses it.
#[test]
fn gpu_bench_profiles_every_dispatch() {
    let r = apr_ir(["bench", "--profile"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--backend gpu"), "{}", r.stderr);
    if !gpu_available() {
        return;
    }
    let args =
        ["bench", "--backend", "gpu", "-O", "2", "--prompt-tokens", "2", "--gen-tokens", "3", "--profile", "--json"];
    let v = apr_ir(args).json();
    let kernels = v["profile"].as_array().expect("a profile");
    let counts: u64 = kernels.iter().map(|k| k["dispatches_per_token"].as_u64().unwrap()).sum();
    assert_eq!(Some(counts), v["dispatches_per_token"].as_u64(), "{v:#}");
    let times: Vec<f64> = kernels.iter().map(|k| k["us_per_token"].as_f64().unwrap()).collect();
    assert!(times.iter().all(|&t| t > 0.0) && times.windows(2).all(|w| w[0] >= w[1]), "{v:#}");
    let total = v["profile_us_per_token"].as_f64().unwrap();
    assert!((times.iter().sum::<f64>() - total).abs() <= 1e-6 * total, "{v:#}");
    let shares: f64 = kernels.iter().map(|k| k["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{v:#}");
    let names = apr_ir(["dot", "-O", "2"]).ok().to_string();
    for k in kernels {
        let node = k["slowest_node"].as_str().unwrap();
        assert!(!node.is_empty() && names.contains(node), "{node} is not a node of the graph");
        assert!(k["slowest_us"].as_f64().unwrap() <= k["us_per_token"].as_f64().unwrap() * 3.0 + 1e-9);
    }
    assert!(kernels.iter().any(|k| k["kernel"].as_str().unwrap().starts_with("MatvecSwiGlu")), "{v:#}");
}

/// A LLaMA-family GGUF with a SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`, as
/// Llama 2, TinyLlama and Mistral files carry it): the llama fixture's weights with the
/// SentencePiece fixture's vocabulary (tests/fixtures/tokenizer/spm.gguf, padded with unused
/// pieces to the model's 512 rows). `run --prompt` tokenizes as the `sentencepiece` library
/// does (BOS, then its ids: the logits equal those of `run --tokens` with those ids), and prints
/// the same text either way.
#[test]
fn a_sentencepiece_vocabulary_model_runs() {
    use apr_ir_model::gguf::{write_gguf_file, GgufFile, Metadata, TensorSpec, Value};
    let dir = TempDir::new("run-spm");
    let weights = GgufFile::open(fixture("models/llama-f32.gguf")).unwrap();
    let vocab = GgufFile::open(fixture("tokenizer/spm.gguf")).unwrap();
    let rows = 512;
    let mut meta: Metadata = weights
        .gguf()
        .metadata()
        .iter()
        .filter(|(k, _)| !k.starts_with("tokenizer."))
        .map(|(k, v)| (k, v.clone()))
        .collect();
    let spm = vocab.gguf().metadata();
    for (k, v) in spm.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        meta.set(k, v.clone());
    }
    let mut tokens: Vec<String> = spm.get_str_array("tokenizer.ggml.tokens").unwrap().to_vec();
    let (mut scores, mut types) =
        (spm.get_f32_array("tokenizer.ggml.scores").unwrap(), spm.get_i32_array("tokenizer.ggml.token_type").unwrap());
    for i in tokens.len()..rows {
        tokens.push(format!("<unused{i}>"));
        scores.push(0.0);
        types.push(5);
    }
    meta.set("tokenizer.ggml.tokens", Value::from(tokens.iter().map(String::as_str).collect::<Vec<_>>()));
    meta.set("tokenizer.ggml.scores", Value::from(scores));
    meta.set("tokenizer.ggml.token_type", Value::from(types));
    let tensors: Vec<(TensorSpec, &[u8])> = weights
        .gguf()
        .tensors()
        .iter()
        .map(|t| (TensorSpec::new(t.name(), t.dims().to_vec(), t.ggml_type()), weights.tensor_data(t)))
        .collect();
    let model = dir.join("llama-spm.gguf");
    write_gguf_file(&model, &meta, &tensors).unwrap();
    let m = model.to_str().unwrap();
    let described = apr_ir(["inspect", m]).ok().to_string();
    assert!(
        described.contains("\ntokenizer    SentencePiece BPE, 512 tokens, 0 merges; bos 1 (added to prompts)"),
        "{described}"
    );

    let corpus: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer/spm.json")).unwrap()).unwrap();
    let text = "Hello world";
    let case = corpus["cases"].as_array().unwrap().iter().find(|c| c["text"] == text).unwrap();
    let ids: Vec<String> = case["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    assert!(ids.len() > 2, "{ids:?}");
    let with_bos = format!("1,{}", ids.join(","));
    let run = |source: [&str; 2], out: &str| {
        let path = dir.join(out);
        let args = ["run", m, source[0], source[1], "--max-tokens", "4", "--dump-logits", path.to_str().unwrap()];
        let stdout = apr_ir(args).ok().to_string();
        (stdout, read_npy_f32(&path))
    };
    let (text_a, (shape_a, logits_a)) = run(["--prompt", text], "a.npy");
    let (text_b, (shape_b, logits_b)) = run(["--tokens", &with_bos], "b.npy");
    // BOS + the prompt, then every generated token but the last.
    assert_eq!(shape_a, vec![1 + ids.len() + 3, rows], "the prompt was not tokenized as sentencepiece does");
    assert_eq!(shape_a, shape_b);
    assert!(logits_a.iter().zip(&logits_b).all(|(a, b)| a.to_bits() == b.to_bits()), "different logits");
    assert_eq!(text_a, text_b);
}

/// `--chat-arg` reaches the chat template as transformers' `apply_chat_template(**kwargs)` does:
/// Qwen3 with `enable_thinking=false` gets its empty think block, and the prompt is exactly
/// transformers' ids (tests/fixtures/models/qwen3.tokens.json): its logits equal those of
/// `run --tokens` with them. A malformed one, or one without --chat, exits 2.
#[test]
fn chat_args_reach_the_template() {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("models/qwen3.tokens.json")).unwrap()).unwrap();
    let case = doc["chat"].as_array().unwrap().iter().find(|c| c["kwargs"]["enable_thinking"] == false).unwrap();
    let ids: Vec<String> = case["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let prompt = case["messages"][0]["content"].as_str().unwrap();
    let model = fixture("models/qwen3-q8_0.gguf");
    let m = model.to_str().unwrap();
    let dir = TempDir::new("chat-arg");
    let dump = |source: &[&str], out: &str| {
        let path = dir.join(out);
        let mut args = vec!["run", m];
        args.extend_from_slice(source);
        args.extend(["--max-tokens", "0", "--dump-logits", path.to_str().unwrap()]);
        apr_ir(args).ok();
        read_npy_f32(&path)
    };
    let joined = ids.join(",");
    let (shape_a, a) = dump(&["--chat", "--prompt", prompt, "--chat-arg", "enable_thinking=false"], "a.npy");
    let (shape_b, b) = dump(&["--tokens", &joined], "b.npy");
    assert_eq!(shape_a, vec![ids.len(), 512]);
    assert_eq!((shape_a, a), (shape_b, b));
    let (shape_c, _) = dump(&["--chat", "--prompt", prompt], "c.npy");
    assert!(shape_c[0] < ids.len(), "without the variable the template thinks: {shape_c:?}");
    for bad in [
        vec!["--chat", "--chat-arg", "enable_thinking"],
        vec!["--chat-arg", "a=1"],
        vec!["--chat", "--chat-arg", "1x=2"],
    ] {
        let mut args = vec!["run", m, "--prompt", prompt];
        args.extend(bad.iter());
        let r = apr_ir(args);
        assert_eq!(r.code, Some(2), "{bad:?}: {}", r.stderr);
    }
}
