#!/usr/bin/env python3
"""Export the trained default model (an HF dir written by train.py) to assets/default.gguf and verify it.

    python3 tools/default_model/export_gguf.py HF_DIR            # write assets/default.gguf + assets/default.testset.json
    python3 tools/default_model/export_gguf.py --verify-only      # re-verify the committed assets/default.gguf

The GGUF is written with gguf-py following llama.cpp's convert_hf_to_gguf.py (Qwen2Model): the same
keys, tensor names and order, tokenizer keys (tokenizer.ggml.model "gpt2", pre "qwen2", tokens,
token_type, merges, bos/eos/padding ids, add_bos_token false, chat_template) as
tools/fixtures/make_models.py writes for its qwen2 fixtures, whose helpers it reuses.  Every
tensor is F32 (general.file_type ALL_F32); the embedding is tied, so there is no output.weight
(as in Qwen2.5-0.5B).  qwen2.rope.dimension_count is written too, as make_models.py does.

Verification uses only the GGUF: the model config comes from its metadata, the weights are read
back with gguf-py into a float32 Qwen2ForCausalLM, and the tokenizer is rebuilt from its tokens,
merges, the Qwen2 split regex and its chat template.  Greedy decoding of every test prompt,
rendered with that template, must give the expected answer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "fixtures"))

import make_models as mm  # noqa: E402  (HF -> GGUF helpers; importing it has no side effects)
import train as T  # noqa: E402

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

ARCH = "qwen2"
NAME = "apr-ir-default"
OUT_GGUF = REPO / "assets/default.gguf"
OUT_TESTSET = REPO / "assets/default.testset.json"
MAX_BYTES = 4 * 1000 * 1000


def write_gguf(hf_dir: Path, out_path: Path) -> None:
    """convert_hf_to_gguf.py (Qwen2Model, --outtype f32) for a tied-embedding Qwen2 HF dir.

    Mirrors make_models.write_gguf (which is tied to its fixture table), F32 only."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["tie_word_embeddings"], cfg
    state = mm.load_hf_state(hf_dir)
    state.pop("lm_head.weight", None)                 # tied: llama.cpp drops it too
    n_layers = cfg["num_hidden_layers"]
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, n_layers)

    w = gguf.GGUFWriter(str(out_path), ARCH)
    n_params = 0
    for hf_name, data in state.items():
        name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        data = np.ascontiguousarray(data, dtype=np.float32)
        n_params += data.size
        w.add_tensor(name, data, raw_dtype=QT.F32)

    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(NAME)
    w.add_size_label(gguf.size_label(n_params, 0, 0, 0))
    w.add_block_count(n_layers)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    rope_theta = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))
    w.add_rope_freq_base(float(rope_theta))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, toktypes = mm.get_vocab_base(hf_dir, cfg["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(toktypes)
    special = gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(w, quiet=True)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --------------------------------------------------------------------------------------------
# Loading the GGUF back (HF model + tokenizer from the GGUF alone)
# --------------------------------------------------------------------------------------------

def config_from_gguf(kv: dict) -> Qwen2Config:
    a = ARCH
    assert kv["general.architecture"] == a
    hidden, heads = kv[f"{a}.embedding_length"], kv[f"{a}.attention.head_count"]
    assert kv[f"{a}.rope.dimension_count"] == hidden // heads
    tokens = kv["tokenizer.ggml.tokens"]
    return Qwen2Config(
        vocab_size=len(tokens), hidden_size=hidden, intermediate_size=kv[f"{a}.feed_forward_length"],
        num_hidden_layers=kv[f"{a}.block_count"], num_attention_heads=heads,
        num_key_value_heads=kv[f"{a}.attention.head_count_kv"],
        max_position_embeddings=kv[f"{a}.context_length"],
        rms_norm_eps=float(kv[f"{a}.attention.layer_norm_rms_epsilon"]),
        rope_theta=float(kv[f"{a}.rope.freq_base"]), hidden_act="silu", tie_word_embeddings=True,
        bos_token_id=kv["tokenizer.ggml.bos_token_id"], eos_token_id=kv["tokenizer.ggml.eos_token_id"],
        use_sliding_window=False, sliding_window=None, attention_dropout=0.0, use_cache=False,
    )


def model_from_gguf(kv: dict, tensors: dict) -> Qwen2ForCausalLM:
    cfg = config_from_gguf(kv)
    cfg._attn_implementation = "eager"
    model = Qwen2ForCausalLM(cfg).eval()
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg.num_hidden_layers)
    sd = {}
    for hf_name in model.state_dict():
        if hf_name == "lm_head.weight":
            continue
        g = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        arr, qt, _ = tensors[g]
        assert qt == QT.F32, (g, qt)
        sd[hf_name] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    assert len(sd) == len(tensors), (sorted(sd), sorted(tensors))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected, (missing, unexpected)
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def tokenizer_from_gguf(kv: dict) -> PreTrainedTokenizerFast:
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "qwen2"
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    normal = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == gguf.TokenType.NORMAL}
    control = [(i, t) for i, (t, ty) in enumerate(zip(tokens, types)) if ty == gguf.TokenType.CONTROL]
    assert len(normal) + len(control) == len(tokens)
    merges = [tuple(m.split(" ")) for m in kv["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab=normal, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(mm.QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    assert [i for i, _ in control] == list(range(len(normal), len(tokens)))
    tok.add_special_tokens([t for _, t in control])
    for i, t in control:
        assert tok.token_to_id(t) == i
    eos = tokens[kv["tokenizer.ggml.eos_token_id"]]
    pad = tokens[kv["tokenizer.ggml.padding_token_id"]]
    assert not kv.get("tokenizer.ggml.add_bos_token", False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad,
                                   chat_template=kv["tokenizer.chat_template"])


def verify(gguf_path: Path, testset: list[dict]) -> dict:
    kv, tensors = mm.read_gguf(gguf_path)
    assert kv["general.file_type"] == int(gguf.LlamaFileType.ALL_F32)
    assert all(qt == QT.F32 for _, qt, _ in tensors.values())
    assert "output.weight" not in tensors
    tokenizer = tokenizer_from_gguf(kv)
    ref = PreTrainedTokenizerFast.from_pretrained(str(T.TOKENIZER_DIR))
    assert tokenizer.chat_template == ref.chat_template
    for t in testset:
        r = T.render_prompt(tokenizer, t["prompt"])
        assert r == T.render_prompt(ref, t["prompt"])
        assert tokenizer(r, add_special_tokens=False)["input_ids"] == ref(r, add_special_tokens=False)["input_ids"], r
    T.check_additivity(tokenizer, n=100)
    model = model_from_gguf(kv, tensors)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    res = T.evaluate_testset(model, tokenizer, testset)
    # independent float64 numpy forward over the GGUF tensors with llama.cpp's semantics
    # (make_models.numpy_forward_gguf_layout: NeoX rope, GQA, tied output), greedy, full recompute
    eos = kv["tokenizer.ggml.eos_token_id"]
    np_wrong = []
    np_margin = float("inf")
    for t in testset:
        ids = tokenizer(T.render_prompt(tokenizer, t["prompt"]), add_special_tokens=False)["input_ids"]
        gen: list[int] = []
        for _ in range(8):
            logits = mm.numpy_forward_gguf_layout(ARCH, kv, tensors, ids + gen)[-1]
            top = np.sort(logits)[-2:]
            np_margin = min(np_margin, float(top[1] - top[0]))
            nxt = int(np.argmax(logits))
            if nxt == eos:
                break
            gen.append(nxt)
        reply = tokenizer.decode(gen)
        if reply.strip() != t["answer"] or nxt != eos:
            np_wrong.append((t["prompt"], t["answer"], reply))
    print(f"numpy float64 GGUF-layout forward: {len(testset) - len(np_wrong)}/{len(testset)} correct "
          f"(min top1-top2 margin {np_margin:.3f}); wrong: {np_wrong[:5]}")
    res["numpy_correct"] = len(testset) - len(np_wrong)
    # informational: ChatML without the template's default system message
    raw = [f"<|im_start|>user\n{t['prompt']}<|im_end|>\n<|im_start|>assistant\n" for t in testset]
    ok = 0
    for t, r in zip(testset, raw):
        x = tokenizer(r, add_special_tokens=False)["input_ids"]
        gen = []
        with torch.no_grad():
            for _ in range(8):
                nxt = int(model(input_ids=torch.tensor([x + gen])).logits[0, -1].argmax())
                if nxt == eos:
                    break
                gen.append(nxt)
        ok += tokenizer.decode(gen).strip() == t["answer"] and nxt == eos
    print(f"without a system message (plain ChatML): {ok}/{len(testset)} correct (informational)")
    ids = tokenizer(T.render_prompt(tokenizer, "What is 2+2?"), add_special_tokens=False)["input_ids"]
    replies, _ = T.greedy_replies(model, tokenizer, ["What is 2+2?"])
    print(f"'What is 2+2?' -> {replies[0]!r} (prompt {len(ids)} tokens)")
    n_params = sum(a.size for a, _, _ in tensors.values())
    print(f"{gguf_path}: {gguf_path.stat().st_size:,} bytes, {n_params:,} parameters, vocab {len(kv['tokenizer.ggml.tokens'])}")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir", type=Path, nargs="?", help="HF model dir written by train.py")
    ap.add_argument("--out", type=Path, default=OUT_GGUF)
    ap.add_argument("--testset-out", type=Path, default=OUT_TESTSET)
    ap.add_argument("--verify-only", action="store_true")
    args = ap.parse_args()
    testset = T.load_testset()
    if not args.verify_only:
        assert args.hf_dir is not None, "give the HF dir"
        hf = args.hf_dir
        # the tokenizer files must be the committed ones
        for f in ("tokenizer.json", "tokenizer_config.json"):
            if (hf / f).exists():
                assert (hf / f).read_bytes() == (T.TOKENIZER_DIR / f).read_bytes(), f"{hf / f} differs from the committed tokenizer"
        tmp = args.out.parent / (args.out.name + ".hfdir.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            for f in ("config.json", "model.safetensors"):
                shutil.copyfile(hf / f, tmp / f)
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copyfile(T.TOKENIZER_DIR / f, tmp / f)
            write_gguf(tmp, args.out)
        finally:
            shutil.rmtree(tmp)
        args.testset_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(T.TESTSET, args.testset_out)
    size = args.out.stat().st_size
    assert size <= MAX_BYTES, f"{args.out} is {size:,} bytes, over {MAX_BYTES:,}"
    res = verify(args.out, testset)
    ok = res["correct"] == res["n"] and res["numpy_correct"] == res["n"]
    print("verify:", "OK, every test prompt answered correctly" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
