"""Quality at equal time: our small recipe against a plain nanoGPT-style reference, same clock.

    python benchmarks/quality_at_equal_time.py TEXT_FILE --minutes 3

Both arms learn the same character-level split of TEXT_FILE (the first 90% to train on, the
last 10% held out) on this machine, one after the other:

  ours       the engine (`lmsmith.train`) with the model and train sections of a recipe
             (the shipped shakespeare-char-cpu by default: RoPE, QK-norm, SwiGLU, Muon,
             warmup-stable-decay, short windows first). Its number of steps is chosen from a
             short timed run so that training fills the budget.
  reference  a plain GPT written below in the style of the well-known minimal implementations,
             with the settings of nanoGPT's CPU Shakespeare run: learned positions, LayerNorm,
             GELU, AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1), fp32, 4 layers, 4 heads,
             width 128, context 64, batch 12, no dropout, 100 warmup steps and a cosine decay to
             1e-4. It trains for exactly as many seconds as ours took, its decay spread over
             that time, so neither arm has more time or a schedule that ends early.

Then the same code scores both models on every character of the held-out text (non-overlapping
windows of each model's context, fp32) and one JSON line is printed. The wall-clock time of both
arms covers everything from the first step to the trained weights; evaluation is outside it.
On a busy machine, --threads 1 keeps both arms steadier. A text of Python source makes a handy
local corpus:

    python -c "import sysconfig, pathlib; r = pathlib.Path(sysconfig.get_paths()['stdlib']); \\
      print(''.join(f.read_text() for f in sorted(r.glob('*.py')))[:1_100_000], end='')" > stdlib.txt

With `--nanogpt PATH` (a checkout of karpathy/nanoGPT in a scratch folder; never committed) the
reference is nanoGPT itself: its own train.py, run in its own process with the command its
README gives for a CPU (4 layers x 128, context 64, batch 12, 2000 iterations, fp32, no
compile), on the same characters. Its wall-clock time, process start to exit, is then ours:
our recipe runs as `lmsmith train` in its own process with `train.max_minutes` set to it, so
the recipe's `sizing:` picks the shape this machine trains best in that time, as `lmsmith build
--minutes` does. nanoGPT's saved weights are scored by the same code on the same held-out
characters, each model on windows of its own context; `ours_val_loss_on_nanogpt_windows` is ours
on nanoGPT's shorter windows, to show what the longer context is worth.

    python benchmarks/quality_at_equal_time.py input.txt --nanogpt ../nanoGPT   # tiny Shakespeare
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from train_throughput import cpu_name  # the benchmark beside this one

from lmsmith.core.config import read_yaml
from lmsmith.core.errors import UserError
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.recipe import find_recipe
from lmsmith.schema.stage import stage_config
from lmsmith.schema.train import train_recipe_of
from lmsmith.stages import TRAIN
from lmsmith.text.tokenizer import TextFiles, train_char
from lmsmith.text.tokens_dir import open_tokens_dir, read_split, tokenize_corpus
from lmsmith.train.budget import UNCAPPED
from lmsmith.train.loop import train
from lmsmith.train.metrics import METRICS
from lmsmith.train.sizing import SIZING_FILE

CALIBRATION_STEPS = 40


# ---------------------------------------------------------------------------------------------
# The data: one character-level split, shared by both arms


def prepare_tokens(text_file: Path, work: Path) -> tuple[Path, str, str]:
    """A char tokenizer and token shards of the file (last tenth held out); returns (tokens, train text, val text).

    The reference arm trains and is scored on the decoded splits, so both arms see exactly the
    same characters.
    """
    tokenizer = train_char(TextFiles([text_file]), show_progress=False)
    tokenizer.save(work / "tokenizer")
    tokens = work / "tokens"
    tokenize_corpus([str(text_file)], work / "tokenizer", tokens, val_fraction=0.1, quiet=True)
    opened = open_tokens_dir(tokens)
    tok = opened.tokenizer()
    train_text = tok.decode(read_split(opened, "train").tolist()).replace(tok.eot_token, "")
    val_text = tok.decode(read_split(opened, "val").tolist()).replace(tok.eot_token, "")
    return tokens, train_text, val_text


@torch.no_grad()
def held_out_loss(logits_of, ids: torch.Tensor, block: int, batch: int = 32) -> float:
    """Mean cross-entropy (nats per character) over non-overlapping windows of `block` characters."""
    n = (len(ids) - 1) // block
    inputs = ids[: n * block].view(n, block)
    targets = ids[1 : n * block + 1].view(n, block)
    total = 0.0
    for i in range(0, n, batch):
        logits = logits_of(inputs[i : i + batch]).float()
        total += F.cross_entropy(logits.flatten(0, 1), targets[i : i + batch].flatten(), reduction="sum").item()
    return total / (n * block)


# ---------------------------------------------------------------------------------------------
# Ours: the engine


def our_recipe(recipe_file: Path, tokens: Path, out: Path, steps: int, overrides: list[str]) -> dict:
    """The recipe file's model and train sections, pointed at the benchmark's tokens, for `steps` steps."""
    raw = read_yaml(recipe_file)
    train_section = dict(raw.get("train") or {})
    warmup_share = train_section.get("warmup_steps", 0) / max(1, train_section.get("steps", 1))
    train_section.update(steps=steps, warmup_steps=min(steps - 1, round(warmup_share * steps)),
                         eval_every=0, eval_batches=1, save_every=steps, keep_last=1, log_every=10,
                         peak_flops=1e12)  # a fixed peak: measuring it would spend the budget
    recipe = {"data": str(tokens), "out": str(out), "model": raw.get("model") or {}, "train": train_section}
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return train_recipe_of(stage_config(TRAIN, path, overrides))


def seconds_per_step(recipe_file: Path, tokens: Path, work: Path, overrides: list[str]) -> tuple[float, float]:
    """(seconds per step, fixed seconds per run) from a short run of the engine."""
    recipe = our_recipe(recipe_file, tokens, work / "calibration", CALIBRATION_STEPS, overrides)
    start = time.perf_counter()
    train(recipe, quiet=True)
    total = time.perf_counter() - start
    lines = [json.loads(line) for line in (work / "calibration" / METRICS).read_text().splitlines()]
    timed = [r for r in lines if "elapsed_s" in r]
    first, last = timed[0], timed[-1]  # skip the first logged steps: warm-up of kernels and caches
    per_step = (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])
    return per_step, max(0.0, total - per_step * CALIBRATION_STEPS)


def run_ours(recipe_file: Path, tokens: Path, work: Path, budget: float, overrides: list[str]) -> dict:
    per_step, fixed = seconds_per_step(recipe_file, tokens, work, overrides)
    steps = max(CALIBRATION_STEPS, int(0.97 * (budget - fixed) / per_step))
    recipe = our_recipe(recipe_file, tokens, work / "ours", steps, overrides)
    start = time.perf_counter()
    train(recipe, quiet=True)
    seconds = time.perf_counter() - start
    model, tokenizer = load_model_dir(work / "ours" / "model")
    model.float()
    return {"model": model, "tokenizer": tokenizer, "seconds": seconds, "steps": steps,
            "tokens": steps * recipe.train.batch_tokens, "block": recipe.model.block_size,
            "params": model.num_params()}


# ---------------------------------------------------------------------------------------------
# The reference: a plain GPT with nanoGPT's CPU Shakespeare settings


class ReferenceAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (part.view(b, t, self.heads, c // self.heads).transpose(1, 2) for part in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class ReferenceBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, bias=False)
        self.attn = ReferenceAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, bias=False)
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, vocab: int, block: int, layers: int, heads: int, width: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(block, width)
        self.blocks = nn.ModuleList(ReferenceBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width, bias=False)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tokens.weight  # tied input and output embeddings
        for name, p in self.named_parameters():
            if p.ndim == 2:
                # Output projections of each residual branch start smaller, by the depth.
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("out.weight", "down.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


REFERENCE = dict(layers=4, heads=4, width=128, block=64, batch=12, lr=1e-3, min_lr=1e-4, warmup=100,
                 weight_decay=0.1, betas=(0.9, 0.99), grad_clip=1.0)


def reference_lr(step: int, elapsed: float, seconds: float) -> float:
    """Linear warmup over the first steps, then a cosine over the time budget down to min_lr."""
    r = REFERENCE
    if step < r["warmup"]:
        return r["lr"] * (step + 1) / r["warmup"]
    progress = min(1.0, elapsed / seconds)
    return r["min_lr"] + 0.5 * (r["lr"] - r["min_lr"]) * (1.0 + math.cos(math.pi * progress))


def run_reference(train_ids: torch.Tensor, vocab: int, seconds: float, seed: int) -> dict:
    r = REFERENCE
    torch.manual_seed(seed)
    model = ReferenceGPT(vocab, r["block"], r["layers"], r["heads"], r["width"])
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": r["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=r["lr"], betas=r["betas"])
    generator = torch.Generator().manual_seed(seed)
    start, step = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        for group in optimizer.param_groups:
            group["lr"] = reference_lr(step, elapsed, seconds)
        starts = torch.randint(len(train_ids) - r["block"] - 1, (r["batch"],), generator=generator)
        x = torch.stack([train_ids[s : s + r["block"]] for s in starts.tolist()])
        y = torch.stack([train_ids[s + 1 : s + r["block"] + 1] for s in starts.tolist()])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
        optimizer.step()
        step += 1
    model.eval()
    return {"model": model, "seconds": time.perf_counter() - start, "steps": step,
            "tokens": step * r["batch"] * r["block"], "params": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------
# The reference, real: nanoGPT's own train.py with its README's CPU command

NANOGPT_CPU_ARGS = ("config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                    "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                    "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0")
NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")


def nanogpt_folder(checkout: Path, train_text: str, val_text: str, work: Path) -> tuple[Path, dict[str, int]]:
    """nanoGPT's files, and its data/shakespeare_char written as its prepare.py would, from our split."""
    missing = [name for name in NANOGPT_FILES if not (checkout / name).is_file()]
    if missing:
        raise SystemExit(f"--nanogpt {checkout}: no {', '.join(missing)} there; give a checkout of karpathy/nanoGPT")
    folder = work / "nanogpt"
    shutil.rmtree(folder, ignore_errors=True)
    for name in NANOGPT_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(checkout / name, folder / name)
    chars = sorted(set(train_text + val_text))  # prepare.py's vocabulary: every character, in code point order
    index = {c: i for i, c in enumerate(chars)}
    data = folder / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    for split, text in (("train", train_text), ("val", val_text)):
        np.array([index[c] for c in text], dtype=np.uint16).tofile(data / f"{split}.bin")
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": index}, f)
    return folder, index


def run_nanogpt(checkout: Path, train_text: str, val_text: str, work: Path) -> dict:
    folder, index = nanogpt_folder(checkout, train_text, val_text, work)
    start = time.perf_counter()
    # nanoGPT seeds itself (torch.manual_seed(1337)): the default --seed is the same number.
    done = subprocess.run([sys.executable, "train.py", *NANOGPT_CPU_ARGS], cwd=folder,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"nanoGPT's train.py failed: {tail[0]}")
    own = re.findall(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", done.stdout, re.M)
    spec = importlib.util.spec_from_file_location("nanogpt_model", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    checkpoint = torch.load(folder / "out-shakespeare-char" / "ckpt.pt", map_location="cpu", weights_only=False)
    model = module.GPT(module.GPTConfig(**checkpoint["model_args"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    val_ids = torch.tensor([index[c] for c in val_text], dtype=torch.long)
    # Given targets, nanoGPT's forward returns the logits of every position (without, only the last).
    loss = held_out_loss(lambda x: model(x, torch.zeros_like(x))[0], val_ids, checkpoint["model_args"]["block_size"])
    return {"val_loss": loss, "own_val_loss": float(own[-1][2]) if own else None, "seconds": seconds,
            "steps": checkpoint["iter_num"], "tokens": checkpoint["iter_num"] * 12 * 64,
            "params": sum(p.numel() for p in model.parameters()), "block": checkpoint["model_args"]["block_size"]}


def run_ours_budgeted(recipe_file: Path, tokens: Path, work: Path, seconds: float, overrides: list[str]) -> dict:
    """Our recipe as `lmsmith train` in its own process, with `seconds` of wall clock as its budget."""
    raw = read_yaml(recipe_file)
    config = work / "ours.yaml"
    config.write_text(yaml.safe_dump({key: raw[key] for key in ("model", "train", "sizing") if key in raw},
                                     sort_keys=False))
    out = work / "ours"
    command = [sys.executable, "-m", "lmsmith", "train", str(tokens), "-o", str(out), "--config", str(config),
               f"train.max_minutes={seconds / 60:.4f}", f"train.steps={UNCAPPED}", "--quiet", *overrides]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"lmsmith train failed: {tail[0]}")
    model, tokenizer = load_model_dir(out / "model")
    model.float()
    sizing = json.loads((out / SIZING_FILE).read_text()) if (out / SIZING_FILE).is_file() else None
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    return {"model": model, "tokenizer": tokenizer, "seconds": elapsed, "steps": counts["steps"],
            "tokens": counts["tokens"], "precision": counts["precision"], "sizing": sizing,
            "block": model.config.block_size, "params": model.num_params()}


# ---------------------------------------------------------------------------------------------


def score_ours(ours: dict, val_text: str, block: int | None = None) -> float:
    """Our model's held-out loss on windows of its own context, or of `block` characters."""
    val_ids = torch.tensor(ours["tokenizer"].encode(val_text), dtype=torch.long)
    if len(val_ids) != len(val_text):
        raise SystemExit("the char tokenizer did not map the held-out text one token per character")
    return held_out_loss(lambda x: ours["model"](x).logits, val_ids, min(block or ours["block"], ours["block"]))


def against_reference(args, tokens: Path, train_text: str, val_text: str, work: Path, overrides: list[str]) -> dict:
    """Ours for `--minutes`, then the plain reference written above for as long as ours took."""
    ours = run_ours(args.recipe, tokens, work, 60.0 * args.minutes, overrides)
    ours_loss = score_ours(ours, val_text)
    chars = sorted(set(train_text) | set(val_text))
    index = {c: i for i, c in enumerate(chars)}
    train_ids = torch.tensor([index[c] for c in train_text], dtype=torch.long)
    ref = run_reference(train_ids, len(chars), ours["seconds"], args.seed)
    ref_val = torch.tensor([index[c] for c in val_text], dtype=torch.long)
    ref_loss = held_out_loss(ref["model"], ref_val, REFERENCE["block"])
    return {
        "benchmark": "quality_at_equal_time", "minutes": args.minutes, "threads": torch.get_num_threads(),
        "ours_val_loss": round(ours_loss, 4), "reference_val_loss": round(ref_loss, 4),
        "margin_nats": round(ref_loss - ours_loss, 4),
        "ours_seconds": round(ours["seconds"], 1), "reference_seconds": round(ref["seconds"], 1),
        "ours_steps": ours["steps"], "reference_steps": ref["steps"],
        "ours_tokens": ours["tokens"], "reference_tokens": ref["tokens"],
        "ours_params": ours["params"], "reference_params": ref["params"],
        "ours_context": ours["block"], "reference_context": REFERENCE["block"],
    }


# Our process starts Python, imports and writes its model after the budget ends; nanoGPT's wall clock
# includes the same kind of work, so ours gets its wall clock less this margin.
STARTUP_MARGIN_S = 8.0


def against_nanogpt(args, tokens: Path, train_text: str, val_text: str, work: Path, overrides: list[str]) -> dict:
    """nanoGPT's own CPU run first; then ours, in its own process, with nanoGPT's wall clock as its budget."""
    ref = run_nanogpt(args.nanogpt, train_text, val_text, work)
    ours = run_ours_budgeted(args.recipe, tokens, work, ref["seconds"] - STARTUP_MARGIN_S, overrides)
    ours_loss = score_ours(ours, val_text)
    # Each model is scored on windows of its own context; this says what ours reaches on nanoGPT's windows.
    ours_loss_short = score_ours(ours, val_text, ref["block"])
    return {
        "benchmark": "quality_at_equal_time", "reference": "nanoGPT train.py (README CPU command)",
        "cpu": cpu_name(), "ours_val_loss": round(ours_loss, 4), "nanogpt_val_loss": round(ref["val_loss"], 4),
        "nanogpt_own_estimate": ref["own_val_loss"], "margin_nats": round(ref["val_loss"] - ours_loss, 4),
        "ours_val_loss_on_nanogpt_windows": round(ours_loss_short, 4),
        "ours_seconds": round(ours["seconds"], 1), "nanogpt_seconds": round(ref["seconds"], 1),
        "ours_steps": ours["steps"], "nanogpt_steps": ref["steps"],
        "ours_tokens": ours["tokens"], "nanogpt_tokens": ref["tokens"],
        "ours_params": ours["params"], "nanogpt_params": ref["params"],
        "ours_context": ours["block"], "nanogpt_context": ref["block"], "ours_precision": ours["precision"],
        "ours_sizing": ours["sizing"] and {"chosen": ours["sizing"]["candidate"],
                                           "probe_seconds": ours["sizing"]["probe_seconds"],
                                           "measured": [{"shape": m["shape"], "tokens_per_s": round(m["tokens_per_s"])}
                                                        for m in ours["sizing"]["measured"]]},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text_file", type=Path)
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget of each arm")
    parser.add_argument("--recipe", default="shakespeare-char-cpu",
                        help="recipe (a file or a shipped recipe's name) whose model: and train: sections are ours")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both arms (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--nanogpt", type=Path, default=None, metavar="PATH",
                        help="a checkout of karpathy/nanoGPT: the reference is its own train.py (CPU settings), "
                             "and its wall-clock time is our budget")
    parser.add_argument("overrides", nargs="*", help="overrides of our recipe, e.g. train.muon_lr=0.03")
    args = parser.parse_intermixed_args(argv)  # overrides may come after the options
    if not args.text_file.is_file():
        parser.error(f"{args.text_file} is not a file")
    try:
        args.recipe = find_recipe(args.recipe)
    except UserError as exc:
        parser.error(str(exc))

    if args.threads is not None:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # and the arms that run in their own process
    with tempfile.TemporaryDirectory(prefix="lmsmith-bench-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        tokens, train_text, val_text = prepare_tokens(args.text_file, work)
        overrides = [f"train.seed={args.seed}", *args.overrides]

        if args.nanogpt is not None:
            result = against_nanogpt(args, tokens, train_text, val_text, work, overrides)
        else:
            result = against_reference(args, tokens, train_text, val_text, work, overrides)
    result.update(text=args.text_file.name, train_chars=len(train_text), val_chars=len(val_text),
                  recipe=args.recipe.name, overrides=args.overrides)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
