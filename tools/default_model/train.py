#!/usr/bin/env python3
"""Train apr-ir's default model: a tiny Qwen2 (Qwen2ForCausalLM) chat model that does arithmetic.

The task: add or subtract two integers 0..99, asked in a few phrasings ("What is 17+25?",
"Compute 17 minus 25.", ...), answered with the bare result ("42", "-8") and <|im_end|>.
Conversations are rendered with the Qwen2.5 ChatML template that the tokenizer carries.

Needs only torch, transformers and tokenizers (it runs on the GPU machine, which has no gguf).
Reads the tokenizer from tools/default_model/tokenizer/ and the held-out test set from
tools/default_model/testset.json (both written by prepare.py); the test set's (a, op, b) triples,
and a second held-out validation set, never appear in training, in any phrasing.

    python3 tools/default_model/train.py --out DIR                 # the recipe of assets/default.gguf
    python3 tools/default_model/train.py --out DIR --steps 40 --batch 32 --pool 5000   # CPU smoke test

The defaults are the recipe that made assets/default.gguf (see README.md): batch 512, AdamW
(0.9, 0.98, wd 0.1 on matrices), lr 1e-3 with 300 warmup steps and a cosine to 2%, 10863 steps,
seed 1; under 5 minutes on one H200 (27 ms/step with a second run sharing the GPU).

Writes DIR/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json, metrics.json}
and prints the test-set accuracy of greedy decoding of the chat-formatted prompts.
The functions under "task" and "evaluation" are also used by prepare.py and export_gguf.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

HERE = Path(__file__).resolve().parent
TOKENIZER_DIR = HERE / "tokenizer"
TESTSET = HERE / "testset.json"

# --------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------

N_MAX = 99                       # operands are 0..N_MAX
OPS = ("+", "-")
PHRASINGS = {
    "+": ["What is {a}+{b}?", "What is {a} + {b}?", "{a}+{b}=?", "{a} + {b} = ?", "{a}+{b}",
          "Compute {a} plus {b}.", "What is {a} plus {b}?", "Calculate {a} + {b}.", "What's {a}+{b}?",
          "Add {a} and {b}."],
    "-": ["What is {a}-{b}?", "What is {a} - {b}?", "{a}-{b}=?", "{a} - {b} = ?", "{a}-{b}",
          "Compute {a} minus {b}.", "What is {a} minus {b}?", "Calculate {a} - {b}.", "What's {a}-{b}?",
          "Subtract {b} from {a}."],
}
# The Qwen2.5 template's default system message (used when the messages have none).
DEFAULT_SYSTEM = "You are a helpful assistant."
OTHER_SYSTEMS = ["You are a calculator.", "You are a tiny arithmetic model. Answer with a number.",
                 "Answer briefly.", "You are apr-ir's default model."]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VALID_SEED, N_VALID = 1234, 300  # held-out validation triples (besides the test set's)


def answer(a: int, op: str, b: int) -> str:
    return str(a + b if op == "+" else a - b)


def question(a: int, op: str, b: int, k: int) -> str:
    return PHRASINGS[op][k].format(a=a, b=b)


_NUM_OP = re.compile(r"(\d+)\s*(\+|-|plus|minus)\s*(\d+)")


def parse_question(q: str) -> tuple[int, str, int]:
    """(a, op, b) of a question in any of PHRASINGS."""
    m = re.fullmatch(r"(?:Subtract|subtract) (\d+) from (\d+)\.", q)
    if m:
        return int(m.group(2)), "-", int(m.group(1))
    m = re.fullmatch(r"Add (\d+) and (\d+)\.", q)
    if m:
        return int(m.group(1)), "+", int(m.group(2))
    m = _NUM_OP.search(q)
    assert m, q
    op = {"plus": "+", "minus": "-"}.get(m.group(2), m.group(2))
    return int(m.group(1)), op, int(m.group(3))


def all_triples() -> list[tuple[int, str, int]]:
    return [(a, op, b) for op in OPS for a in range(N_MAX + 1) for b in range(N_MAX + 1)]


def make_testset() -> list[dict]:
    """~100 held-out prompts: "What is 2+2?", edge cases, then random triples in random phrasings."""
    rng = random.Random(20251)
    fixed = [((2, "+", 2), 0), ((0, "+", 0), 1), ((99, "+", 99), 2), ((50, "+", 50), 5), ((9, "+", 1), 6),
             ((17, "+", 25), 0), ((45, "-", 45), 1), ((0, "-", 99), 2), ((99, "-", 0), 3),
             ((10, "-", 90), 5), ((7, "-", 8), 9), ((58, "+", 47), 8), ((1, "+", 9), 4)]
    seen = {t for t, _ in fixed}
    items = list(fixed)
    while len(items) < 100:
        op = "+" if len(items) % 5 < 3 else "-"
        t = (rng.randint(0, N_MAX), op, rng.randint(0, N_MAX))
        if t in seen:
            continue
        seen.add(t)
        items.append((t, rng.randrange(len(PHRASINGS[op]))))
    return [{"prompt": question(*t, k), "answer": answer(*t)} for t, k in items]


def load_testset(path: Path = TESTSET) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def valid_triples(exclude: set) -> list[tuple[int, str, int]]:
    rng = random.Random(VALID_SEED)
    pool = [t for t in all_triples() if t not in exclude]
    rng.shuffle(pool)
    return sorted(pool[:N_VALID])


# --------------------------------------------------------------------------------------------
# Chat rendering into token ids (additive over pieces; checked against apply_chat_template)
# --------------------------------------------------------------------------------------------

class Encoder:
    """Encodes conversations as concatenations of separately-encoded pieces.

    Every piece boundary is at a special token or right after a newline that the pre-tokenizer
    splits off anyway, so the concatenation equals the encoding of the whole rendered text
    (check_additivity() verifies this against the chat template)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.cache: dict[str, list[int]] = {}
        self.eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def enc(self, pieces: list[str]) -> None:
        new = sorted({p for p in pieces if p not in self.cache})
        for i in range(0, len(new), 65536):
            chunk = new[i:i + 65536]
            for p, ids in zip(chunk, self.tok(chunk, add_special_tokens=False)["input_ids"]):
                self.cache[p] = ids

    @staticmethod
    def pieces(system: str | None, turns: list[tuple[str, str | None]]) -> list[tuple[str, bool]]:
        """(text, is_loss) pieces of a ChatML conversation; a None reply ends with the generation prompt."""
        out = []
        if system is not None:
            out.append((f"<|im_start|>system\n{system}<|im_end|>\n", False))
        for q, r in turns:
            out.append((f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n", False))
            if r is not None:
                out.append((f"{r}<|im_end|>", True))
                out.append(("\n", False))
        return out

    def encode(self, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
        ids: list[int] = []
        loss: list[bool] = []
        for p, is_loss in pieces:
            e = self.cache[p]
            ids += e
            loss += [is_loss] * len(e)
        return ids, loss


def render_prompt(tokenizer, prompt: str) -> str:
    """The chat-formatted prompt exactly as `apr-ir run --chat` should build it: the model's own
    template, one user message, no system message (the template adds its default), generation prompt."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def check_additivity(tokenizer, n: int = 400) -> None:
    enc = Encoder(tokenizer)
    rng = random.Random(7)
    for i in range(n):
        system = [DEFAULT_SYSTEM, None, rng.choice(OTHER_SYSTEMS)][i % 3]
        turns = []
        for _ in range(1 + i % 3):
            op = rng.choice(OPS)
            t = (rng.randint(0, N_MAX), op, rng.randint(0, N_MAX))
            turns.append((question(*t, rng.randrange(len(PHRASINGS[op]))), answer(*t)))
        if i % 2:
            turns[-1] = (turns[-1][0], None)
        pcs = Encoder.pieces(system, turns)
        text = "".join(p for p, _ in pcs)
        enc.enc([p for p, _ in pcs])
        ids, _ = enc.encode(pcs)
        whole = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == whole, (text, ids, whole)
        if system is not None:
            msgs = ([] if system == DEFAULT_SYSTEM else [{"role": "system", "content": system}])
            for q, r in turns:
                msgs.append({"role": "user", "content": q})
                if r is not None:
                    msgs.append({"role": "assistant", "content": r})
            tmpl = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=turns[-1][1] is None)
            assert tmpl == text, (tmpl, text)


# --------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------

def sample_conversations(rng: random.Random, n: int, triples: list) -> list[list[tuple[str, bool]]]:
    """n random training conversations over the given triples.

    System: the template default 75%, none 10%, another 15%.  Turns: 1 (80%), 2 (15%), 3 (5%)."""
    out = []
    for _ in range(n):
        u = rng.random()
        system = DEFAULT_SYSTEM if u < 0.75 else (None if u < 0.85 else rng.choice(OTHER_SYSTEMS))
        u = rng.random()
        k = 1 if u < 0.80 else (2 if u < 0.95 else 3)
        turns = []
        for _ in range(k):
            t = triples[rng.randrange(len(triples))]
            turns.append((question(*t, rng.randrange(len(PHRASINGS[t[1]]))), answer(*t)))
        out.append(Encoder.pieces(system, turns))
    return out


def pack(enc: Encoder, convs: list, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, L] input ids (right-padded with <|endoftext|>), next-token targets (-100 = no loss), lengths."""
    enc.enc([p for c in convs for p, _ in c])
    flat_ids: list[int] = []
    flat_loss: list[bool] = []
    lens = np.empty(len(convs), dtype=np.int64)
    for i, c in enumerate(convs):
        n = 0
        for p, is_loss in c:
            e = enc.cache[p]
            flat_ids += e
            flat_loss += [is_loss] * len(e)
            n += len(e)
        lens[i] = n
    L = int(lens.max())
    assert L <= max_len, (L, max_len)
    ids = np.asarray(flat_ids, dtype=np.int64)
    loss = np.asarray(flat_loss, dtype=bool)
    row = np.repeat(np.arange(len(convs)), lens)
    col = np.arange(len(ids)) - np.repeat(np.cumsum(lens) - lens, lens)
    x = np.full((len(convs), L + 1), enc.pad, dtype=np.int64)
    m = np.zeros((len(convs), L + 1), dtype=bool)
    x[row, col] = ids
    m[row, col] = loss
    # target at position j is token j+1, where that token is a loss token
    y = np.where(m[:, 1:], x[:, 1:], -100)
    return torch.from_numpy(x[:, :L].copy()), torch.from_numpy(y[:, :L].copy()), torch.from_numpy(lens)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

MODEL = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-6)


def make_config(tokenizer) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer), hidden_act="silu", tie_word_embeddings=True, initializer_range=0.02,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        use_sliding_window=False, sliding_window=None, max_window_layers=MODEL["num_hidden_layers"],
        attention_dropout=0.0, use_cache=False, **MODEL,
    )


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def teacher_forced_exact(model, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """Per sequence: are all loss positions' argmax right?  Equivalent to greedy decoding producing
    exactly the target reply (and then <|im_end|>) at every assistant turn."""
    dev = next(model.parameters()).device
    ok = []
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].to(dev), y[i:i + batch].to(dev)
        logits = model(input_ids=xb).logits
        pred = logits.argmax(-1)
        good = (pred == yb) | (yb == -100)
        ok.append(good.all(-1).cpu())
    return torch.cat(ok)


@torch.no_grad()
def greedy_replies(model, tokenizer, prompts: list[str], max_new: int = 8) -> tuple[list[str], list[float]]:
    """Greedy decoding of each chat-formatted prompt (full forward per step, no cache, no padding:
    prompts are batched by token length).  Returns the replies (up to <|im_end|>) and, per prompt,
    the smallest top1-top2 logit margin over the generated tokens."""
    dev = next(model.parameters()).device
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = [tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    replies: list = [None] * len(prompts)
    margins: list = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(ids):
        by_len.setdefault(len(s), []).append(i)
    for _, idx in sorted(by_len.items()):
        x = torch.tensor([ids[i] for i in idx], device=dev)
        done = torch.zeros(len(idx), dtype=torch.bool, device=dev)
        gen = [[] for _ in idx]
        marg = torch.full((len(idx),), float("inf"), device=dev)
        for _ in range(max_new):
            logits = model(input_ids=x).logits[:, -1].float()
            top2 = logits.topk(2, dim=-1).values
            marg = torch.where(done, marg, torch.minimum(marg, top2[:, 0] - top2[:, 1]))
            nxt = logits.argmax(-1)
            for j in range(len(idx)):
                if not done[j]:
                    gen[j].append(int(nxt[j]))
            done |= nxt == eos
            if bool(done.all()):
                break
            x = torch.cat([x, nxt[:, None]], dim=1)
        for j, i in enumerate(idx):
            g = gen[j]
            g = g[:g.index(eos)] if eos in g else g + [-1]        # -1: never stopped
            replies[i] = tokenizer.decode([t for t in g if t >= 0], skip_special_tokens=False) + \
                ("" if (not g or g[-1] != -1) else "<no eos>")
            margins[i] = float(marg[j])
    return replies, margins


def evaluate_testset(model, tokenizer, testset: list[dict], verbose: bool = True) -> dict:
    replies, margins = greedy_replies(model, tokenizer, [t["prompt"] for t in testset])
    wrong = [(t["prompt"], t["answer"], r) for t, r in zip(testset, replies) if r.strip() != t["answer"]]
    res = {"n": len(testset), "correct": len(testset) - len(wrong), "wrong": wrong,
           "min_margin": min(margins), "median_margin": sorted(margins)[len(margins) // 2]}
    if verbose:
        for p, a, r in wrong[:20]:
            print(f"  WRONG: {p!r}: expected {a!r}, got {r!r}")
        print(f"test set: {res['correct']}/{res['n']} correct under greedy decoding of the chat-formatted prompt; "
              f"top1-top2 logit margin min {res['min_margin']:.3f}, median {res['median_margin']:.3f}")
    return res


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output HF model dir")
    ap.add_argument("--steps", type=int, default=10863)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.02)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--pool", type=int, default=600_000, help="training conversations pre-generated")
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="seconds of training (0: no limit); if the projection at step 200 exceeds it, "
                         "fewer steps (the same schedule, compressed)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--full-eval", action=argparse.BooleanOptionalAction, default=None,
                    help="teacher-forced exact match over every triple x phrasing (default: on CUDA)")
    ap.add_argument("--full-eval-stride", type=int, default=1, help="use every n-th triple in --full-eval")
    args = ap.parse_args()
    if args.full_eval is None:
        args.full_eval = args.device.startswith("cuda")

    t0 = time.time()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True      # training only; evaluation below is full fp32
        print(f"device: {torch.cuda.get_device_name(dev)}; torch {torch.__version__}")
    import transformers
    import tokenizers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    check_additivity(tokenizer)
    testset = load_testset()
    test_triples = {parse_question(t["prompt"]) for t in testset}
    for t in testset:
        assert answer(*parse_question(t["prompt"])) == t["answer"], t
    val = valid_triples(test_triples)
    held = test_triples | set(val)
    train_triples = [t for t in all_triples() if t not in held]
    print(f"triples: {len(train_triples)} train, {len(val)} validation, {len(test_triples)} test (held out)")

    enc = Encoder(tokenizer)
    rng = random.Random(args.seed)
    ctx = MODEL["max_position_embeddings"]
    X, Y, LENS = pack(enc, sample_conversations(rng, args.pool, train_triples), ctx)
    print(f"training pool: {X.shape[0]} conversations, max {X.shape[1]} tokens, "
          f"{int((Y != -100).sum())} loss tokens ({time.time() - t0:.1f}s)")
    # validation: every held-out validation triple in every phrasing, default system, one turn
    vconv = [Encoder.pieces(DEFAULT_SYSTEM, [(question(*t, k), answer(*t))])
             for t in val for k in range(len(PHRASINGS[t[1]]))]
    VX, VY, _ = pack(enc, vconv, ctx)

    cfg = make_config(tokenizer)
    cfg._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {MODEL}, vocab {cfg.vocab_size}, tied embeddings, {n_params:,} parameters")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8,
                            fused=dev.type == "cuda")
    total = [args.steps]

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = min(1.0, (step - args.warmup) / max(1, total[0] - args.warmup))
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))

    Xd, Yd = X.to(dev), Y.to(dev)
    g = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    model.train()
    t_train = time.time()
    step = 0
    hist = []
    ema = None
    while step < total[0]:
        idx = torch.randint(0, Xd.shape[0], (args.batch,), generator=g).to(dev, non_blocking=True)
        xb, yb = Xd[idx], Yd[idx]       # full pool width: no host sync for the batch's max length
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step)
        logits = model(input_ids=xb).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), yb.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        lv = float(loss.detach()) if step % 50 == 0 or step == 1 else None
        if lv is not None:
            ema = lv if ema is None else 0.9 * ema + 0.1 * lv
        if step == 200 and args.time_limit > 0:
            per = (time.time() - t_train) / step
            if per * total[0] > args.time_limit:
                total[0] = max(step + 1, int(args.time_limit / per))
                print(f"  {per * 1e3:.1f} ms/step: cutting the run to {total[0]} steps to fit {args.time_limit:.0f}s")
        if step % args.eval_every == 0 or step == total[0]:
            model.eval()
            tf32 = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            vacc = float(teacher_forced_exact(model, VX, VY).float().mean())
            model.train()
            torch.backends.cuda.matmul.allow_tf32 = tf32
            hist.append({"step": step, "loss_ema": ema, "val_exact": vacc, "lr": lr_at(step - 1)})
            print(f"  step {step:6d}/{total[0]}  loss {ema:.4f}  lr {lr_at(step - 1):.2e}  "
                  f"val exact {vacc:.4f}  ({time.time() - t_train:.0f}s)", flush=True)
    train_s = time.time() - t_train
    print(f"trained {step} steps in {train_s:.0f}s ({train_s / step * 1e3:.1f} ms/step)")

    model.eval()
    torch.backends.cuda.matmul.allow_tf32 = False
    metrics: dict = {"steps": step, "batch": args.batch, "lr": args.lr, "train_seconds": train_s, "history": hist,
                     "n_params": n_params, "model": MODEL, "vocab": cfg.vocab_size}
    vacc = float(teacher_forced_exact(model, VX, VY).float().mean())
    metrics["val_exact"] = vacc
    print(f"validation (held out, {len(VX)} prompts, teacher-forced exact): {vacc:.4f}")
    if args.full_eval:
        trip = all_triples()[::args.full_eval_stride]
        conv = [Encoder.pieces(DEFAULT_SYSTEM, [(question(*t, k), answer(*t))])
                for t in trip for k in range(len(PHRASINGS[t[1]]))]
        is_train = torch.tensor([t not in held for t in trip for k in range(len(PHRASINGS[t[1]]))])
        FX, FY, _ = pack(enc, conv, ctx)
        ok = teacher_forced_exact(model, FX, FY)
        metrics["exact_all_triples"] = float(ok.float().mean())
        metrics["exact_train_triples"] = float(ok[is_train].float().mean())
        metrics["exact_heldout_triples"] = float(ok[~is_train].float().mean())
        print(f"every triple x every phrasing, default system ({len(FX)} prompts, teacher-forced exact): "
              f"{metrics['exact_all_triples']:.5f} (train triples {metrics['exact_train_triples']:.5f}, "
              f"held-out {metrics['exact_heldout_triples']:.5f}); wrong: {int((~ok).sum())}")
        bad = [c for c, o in zip(conv, ok.tolist()) if not o][:10]
        for c in bad:
            print("   wrong:", repr(c[1][0].split("\n")[1].split("<|im_end|>")[0]), "expected", c[2][0][:-10])
        # the other system variants, on the validation triples
        for sname, system in (("no system", None), ("other system", OTHER_SYSTEMS[0])):
            conv = [Encoder.pieces(system, [(question(*t, k), answer(*t))])
                    for t in val for k in range(len(PHRASINGS[t[1]]))]
            FX, FY, _ = pack(enc, conv, ctx)
            a = float(teacher_forced_exact(model, FX, FY).float().mean())
            metrics[f"val_exact_{sname.replace(' ', '_')}"] = a
            print(f"validation with {sname}: {a:.4f}")

    res = evaluate_testset(model, tokenizer, testset)
    metrics["test"] = {k: v for k, v in res.items()}

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.to("cpu").to(torch.float32).save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_DIR / f, out / f)
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
    print(f"wrote {out} ({time.time() - t0:.0f}s total)")
    return 0 if res["correct"] == res["n"] else 2


if __name__ == "__main__":
    sys.exit(main())
