#!/usr/bin/env python3
"""Build the default model's tokenizer and test set (CPU, seconds, deterministic).

Writes (relative to this folder):
  tokenizer/tokenizer.json, tokenizer/tokenizer_config.json
      byte-level BPE trained on the task's text with the Qwen2 split regex (digits one by one),
      NFC normalizer, specials <|endoftext|> <|im_start|> <|im_end|> after the regular vocabulary,
      the Qwen2.5 ChatML chat template, eos = <|im_end|>, pad = <|endoftext|>
  testset.json
      ~100 held-out prompts with their answers ([{"prompt": ..., "answer": ...}])

    python3 tools/default_model/prepare.py            # write
    python3 tools/default_model/prepare.py --check    # rebuild in a temp dir and compare bytes
"""

from __future__ import annotations

import argparse
import filecmp
import json
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "fixtures"))

import train as T  # noqa: E402  (task definitions)
from make_models import QWEN2_CHAT_TEMPLATE, QWEN2_SPLIT  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

VOCAB_TARGET = 384          # upper bound; BPE stops earlier when no pair occurs twice
CTX = T.MODEL["max_position_embeddings"]


def corpus() -> list[str]:
    """The texts between special tokens of a sample of rendered training conversations."""
    rng = random.Random(99)
    lines = []
    for s in [T.DEFAULT_SYSTEM] + T.OTHER_SYSTEMS:
        lines += [f"system\n{s}"] * 50
    for op in T.OPS:
        for k in range(len(T.PHRASINGS[op])):
            for _ in range(40):
                a, b = rng.randint(0, T.N_MAX), rng.randint(0, T.N_MAX)
                lines.append(f"user\n{T.question(a, op, b, k)}")
                lines.append(f"assistant\n{T.answer(a, op, b)}")
                lines.append("\n")
    return lines


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET - len(T.SPECIALS), min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_special_tokens(T.SPECIALS)          # after the regular vocabulary, as in Qwen2
    return tok


def tokenizer_config(tok: Tokenizer) -> dict:
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                       "single_word": False, "special": True} for t in T.SPECIALS}
    return {   # like Qwen2.5-*-Instruct's tokenizer_config.json
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN2_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": CTX,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write(root: Path) -> None:
    tdir = root / "tokenizer"
    tdir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tok.save(str(tdir / "tokenizer.json"), pretty=True)
    with open(tdir / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(tok), f, indent=2, ensure_ascii=False)
        f.write("\n")
    testset = T.make_testset()
    with open(root / "testset.json", "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(" " + json.dumps(t, ensure_ascii=False) for t in testset) + "\n]\n")

    # checks: the HF tokenizer loads, encodes like the raw one, renders the template, and the
    # training encoder's piece-wise encoding equals the whole-text encoding
    hf = AutoTokenizer.from_pretrained(str(tdir))
    for t in ["What is 2+2?", "Compute 17 minus 25.", "café 🚀 x", "<|im_start|>user\nhi<|im_end|>"]:
        assert hf(t, add_special_tokens=False)["input_ids"] == tok.encode(t, add_special_tokens=False).ids, t
    for d in "0123456789":
        assert len(tok.encode(d).ids) == 1
    assert len(tok.encode("1234").ids) == 4
    T.check_additivity(hf)
    assert [T.answer(*T.parse_question(t["prompt"])) for t in testset] == [t["answer"] for t in testset]
    assert len({T.parse_question(t["prompt"]) for t in testset}) == len(testset)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare bytes with the tree")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp))
            names = ["tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "testset.json"]
            bad = [n for n in names if not filecmp.cmp(Path(tmp) / n, HERE / n, shallow=False)]
            print("check:", "OK, identical bytes" if not bad else f"differ: {bad}")
            return 1 if bad else 0
    write(HERE)
    tok = Tokenizer.from_file(str(HERE / "tokenizer/tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(HERE / "tokenizer"))
    ids = hf(T.render_prompt(hf, "What is 2+2?"), add_special_tokens=False)["input_ids"]
    print(f"tokenizer: {tok.get_vocab_size()} tokens ({tok.get_vocab_size() - 256 - len(T.SPECIALS)} merges); "
          f"'What is 2+2?' chat prompt = {len(ids)} tokens: {hf.convert_ids_to_tokens(ids)}")
    print(f"test set: {len(T.make_testset())} prompts -> {HERE / 'testset.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
