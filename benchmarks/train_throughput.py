"""Training throughput: our engine's full training step against a plain nanoGPT-style loop.

A step is everything an optimizer step costs: drawing the batch, forward, backward, gradient
clipping and the AdamW update. The contenders take turns, round after round, so load from other
processes falls on all of them alike:

    reference     a minimal nanoGPT-style model and loop written below: fp32, eager, torch's
                  default AdamW, batches cut from the memory-mapped token shard with torch.stack
    ours_gpt2     lmsmith's engine (lmsmith.train.trainer.train_step with its data loader, optimizer
                  and precision, after lmsmith.train.parallel.parallelize) on lmsmith.model.GPT
                  in the GPT-2 layout, the same architecture and parameter count as the reference
    ours_gpt2_fp32  the same in fp32 (when the engine picks another precision), to tell the gain
                  of the precision from the rest
    ours_default  the same engine on lmsmith's default architecture (RoPE, RMSNorm, SwiGLU)

Shapes are nanoGPT's Shakespeare-char model (6 layers, 6 heads, width 384, block 256, batch 16,
vocab 65) and its CPU "baby" model (4, 4, 128, block 64, batch 12). With a CUDA GPU, the GPT-2
124M shape at block 1024 (bf16, torch.compile) is measured too. MFU is model FLOPs per second
(GPT.flops_per_token) over this device's matrix-product peak, measured in the same run, in the
precision the step runs in: square products of that precision take turns with the steps, and
each round's MFU is its step's FLOP/s over its own product's. The data-and-logging share is the
part of our step spent drawing batches (TrainBatches) and writing metrics (MetricsLog, the
progress bar) if logging every step.

With `--nanogpt PATH` (a checkout of karpathy/nanoGPT in a scratch folder; never committed),
the real nanoGPT `train.py` also runs at each shape, in its own process after the race, on the
same tokens (written as its `train.bin`), with the reference's settings (biases, no dropout,
fp32 on CPU; bf16 and compile on CUDA). Its tokens/s come from the per-iteration times it
prints itself, the first few (evaluation, warm-up) left out. Not interleaved with the others:
read its ratio with the machine's noise in mind.

Prints one JSON line.

    python benchmarks/train_throughput.py [--quick] [--steps N] [--threads N] [--compile] [--precision P]
                                          [--nanogpt PATH]
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import re
import shutil
import statistics
import string
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmsmith.core.config import parse_section
from lmsmith.core.host_memory import keep_freed_memory
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.train import TrainConfig, plan_batch
from lmsmith.text.tokenizer import train_char
from lmsmith.text.tokens_dir import open_tokens_dir, tokenize_corpus
from lmsmith.train.data import TokenWindows, TrainBatches
from lmsmith.train.distributed import DistInfo
from lmsmith.train.metrics import MetricsLog
from lmsmith.train.optim import build_optimizers
from lmsmith.train.parallel import parallelize
from lmsmith.train.precision import resolve_precision
from lmsmith.train.progress import TrainProgress
from lmsmith.train.trainer import train_step


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch: int
    vocab: int = 65  # nanoGPT's Shakespeare characters


SHAPES = {
    "shakespeare": Shape(6, 6, 384, 256, 16),
    "baby": Shape(4, 4, 128, 64, 12),
}
GPU_SHAPES = {"gpt2_124m": Shape(12, 12, 768, 1024, 16, vocab=50304)}
CHARSET = "\n !$&',-.3:;?" + string.ascii_uppercase + string.ascii_lowercase  # Shakespeare's 65 characters
LR, BETAS, WEIGHT_DECAY, GRAD_CLIP = 1e-3, (0.9, 0.95), 0.1, 1.0


# ---------------------------------------------------------------------------------------------
# The reference: a GPT written the plainest way, and the loop that trains it


class RefSelfAttention(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.n_head = s.n_head
        self.c_attn = nn.Linear(s.n_embd, 3 * s.n_embd)
        self.c_proj = nn.Linear(s.n_embd, s.n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class RefBlock(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(s.n_embd), RefSelfAttention(s)
        self.ln_2 = nn.LayerNorm(s.n_embd)
        self.mlp = nn.Sequential(nn.Linear(s.n_embd, 4 * s.n_embd), nn.GELU(), nn.Linear(4 * s.n_embd, s.n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(s.vocab, s.n_embd), nn.Embedding(s.block_size, s.n_embd)
        self.blocks = nn.ModuleList(RefBlock(s) for _ in range(s.n_layer))
        self.ln_f = nn.LayerNorm(s.n_embd)
        self.lm_head = nn.Linear(s.n_embd, s.vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def reference_step(s: Shape, data: np.ndarray, device: torch.device):
    torch.manual_seed(0)
    model = RefGPT(s).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)

    def get_batch():
        ix = torch.randint(len(data) - s.block_size - 1, (s.batch,)).tolist()
        x = torch.stack([torch.from_numpy(data[i:i + s.block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + s.block_size].astype(np.int64)) for i in ix])
        return x.to(device), y.to(device)

    def step() -> float:
        x, y = get_batch()
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step, sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Ours: the training engine's own step


def model_config(s: Shape, architecture: str) -> ModelConfig:
    size = dict(
        vocab_size=s.vocab, block_size=s.block_size, n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd, dropout=0.0
    )
    if architecture == "gpt2":  # the reference's layout: learned positions, LayerNorm, exact GELU, biases, tied head
        size.update(preset="gpt2", gelu_approximate="none")
    return parse_section(ModelConfig, size, "model")


class EngineStep:
    """One optimizer step of lmsmith's engine, timed, with its data and logging time kept apart."""

    def __init__(self, s: Shape, architecture: str, windows: TokenWindows, device: torch.device, compile: bool,
                 precision: str, metrics_dir: Path):
        cfg = TrainConfig(micro_batch=s.batch, batch_tokens=s.batch * s.block_size, lr=LR, beta1=BETAS[0],
                          beta2=BETAS[1], weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP, compile=compile,
                          precision=precision, device=device.type)
        self.precision = resolve_precision(cfg.precision, device)
        info = DistInfo(device=device)
        torch.manual_seed(0)
        self.model = GPT(model_config(s, architecture)).to(device)
        self.params = self.model.num_params()
        self.flops_per_token = self.model.flops_per_token(s.block_size)
        self.model = parallelize(self.model, cfg, info)
        self.optimizers = build_optimizers(self.model, cfg)
        self.batches = TrainBatches(windows, plan_batch(cfg, s.block_size, 1), cfg.seed, 0, device)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLog(metrics_dir)
        self.progress = TrainProgress(10**9, 0, quiet=True)
        self.step_number = 0
        self.side_seconds = 0.0  # data loading + logging

    def __call__(self) -> float:
        data_before = self.batches.seconds
        result = train_step(self.model, self.optimizers, None, self.batches, self.step_number, self.precision,
                            GRAD_CLIP)
        loss, grad_norm = result.loss, result.grad_norm
        self.step_number += 1
        logging_started = time.perf_counter()
        self.progress.update(self.step_number, loss, LR, 0.0, 0.0, True)
        self.metrics.log({"step": self.step_number, "loss": loss, "lr": LR, "grad_norm": grad_norm})
        self.side_seconds += time.perf_counter() - logging_started + self.batches.seconds - data_before
        return loss


# ---------------------------------------------------------------------------------------------
# Data: a character-level tokens directory of Shakespeare's alphabet, made from local text


def make_tokens(folder: Path) -> Path:
    """Token shards (through `lmsmith tokenize`) of standard-library source kept to CHARSET, so ids < 65."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    allowed = set(CHARSET)
    text = "".join(c for name in ("argparse.py", "textwrap.py", "difflib.py", "pydoc.py", "inspect.py")
                   for c in (stdlib / name).read_text(encoding="utf-8") if c in allowed)
    corpus = folder / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")  # one document: no end-of-text ids between documents
    tokenizer_dir = folder / "tokenizer"
    train_char([text, CHARSET], show_progress=False).save(tokenizer_dir)
    tokens = folder / "tokens"
    tokenize_corpus([str(corpus)], tokenizer_dir, tokens, quiet=True)
    return tokens


# ---------------------------------------------------------------------------------------------
# Timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul(device: torch.device, dtype: torch.dtype):
    """One square matrix product of a size that saturates the device; returns (step, FLOPs)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.full((n, n), 0.5, device=device, dtype=dtype)
    b = torch.full((n, n), 0.25, device=device, dtype=dtype)
    return (lambda: a @ b), 2 * n**3


def race(steps: dict, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each, taking turns one step at a time."""
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - started)
    return times


def measure_shape(name: str, s: Shape, windows: TokenWindows, data: np.ndarray, device: torch.device, rounds: int,
                  compile: bool, precision: str, folder: Path) -> dict:
    """Per-round seconds, FLOPs per token, precision and size of each contender; our side share."""
    reference, ref_params = reference_step(s, data, device)
    ours = {"ours_gpt2": EngineStep(s, "gpt2", windows, device, compile, precision, folder / f"{name}-gpt2")}
    # the same model, weight for weight
    assert ours["ours_gpt2"].params == ref_params, (ours["ours_gpt2"].params, ref_params)
    if ours["ours_gpt2"].precision.name != "fp32":  # how much of the gain is the precision, how much the rest
        ours["ours_gpt2_fp32"] = EngineStep(s, "gpt2", windows, device, compile, "fp32", folder / f"{name}-gpt2-fp32")
    ours["ours_default"] = EngineStep(s, "default", windows, device, compile, precision, folder / f"{name}-default")
    peaks = {f"peak_{p}": matmul(device, dtype) for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    steps = {"reference": reference, **ours, **{k: step for k, (step, _) in peaks.items()}}
    for step in steps.values():  # warm-up: allocations, kernel choice, compilation
        for _ in range(3 if compile else 2):
            step()
    synchronize(device)
    for engine in ours.values():
        engine.side_seconds = 0.0
    # The peak products take turns with the steps, so each round's MFU compares work done under the same load.
    times = race(steps, rounds, device)
    for engine in ours.values():
        engine.metrics.close()

    contenders = {"reference": {"times": times["reference"], "flops_per_token": ours["ours_gpt2"].flops_per_token,
                                "precision": "fp32", "params": ref_params}}
    for key, engine in ours.items():
        contenders[key] = {"times": times[key], "flops_per_token": engine.flops_per_token,
                           "precision": engine.precision.name, "params": engine.params}
    return {"contenders": contenders, "peaks": {k: (times[k], flops) for k, (_, flops) in peaks.items()},
            "data_and_logging_share": ours["ours_gpt2"].side_seconds / sum(times["ours_gpt2"])}


def summarize(s: Shape, measured: dict) -> dict:
    """tokens/s (median and best round); MFU and speedup as medians of per-round ratios."""
    tokens = s.batch * s.block_size
    peak_rate = {
        key.removeprefix("peak_"): [flops / t for t in seconds] for key, (seconds, flops) in measured["peaks"].items()
    }
    reference = measured["contenders"]["reference"]["times"]
    out = {"params": measured["contenders"]["reference"]["params"], "tokens_per_step": tokens}
    for name, c in measured["contenders"].items():
        seconds = c["times"]
        rate = [c["flops_per_token"] * tokens / t for t in seconds]
        entry = {"tokens_per_s": round(tokens / statistics.median(seconds)),
                 "best_tokens_per_s": round(tokens / min(seconds)),
                 "mfu": round(statistics.median(r / p for r, p in zip(rate, peak_rate[c["precision"]])), 4),
                 "precision": c["precision"]}
        if name != "reference":
            entry["speedup"] = round(statistics.median(r / o for r, o in zip(reference, seconds)), 3)
        if c["params"] != out["params"]:
            entry["params"] = c["params"]
        out[name] = entry
    out["peak_gflops"] = {p: round(statistics.median(r) / 1e9, 1) for p, r in peak_rate.items()}
    out["data_and_logging_share"] = round(measured["data_and_logging_share"], 5)
    return out


# ---------------------------------------------------------------------------------------------
# The real nanoGPT, in its own process


NANOGPT_FILES = ("train.py", "model.py", "configurator.py")
NANOGPT_SKIPPED_ITERS = 3  # iteration 0 includes an evaluation; the next ones warm up


def nanogpt_tokens_per_s(checkout: Path, s: Shape, data: np.ndarray, device: torch.device, steps: int,
                         folder: Path) -> dict:
    """nanoGPT's own train.py at shape `s` on `data`; tokens/s from the iteration times it prints."""
    missing = [name for name in NANOGPT_FILES if not (checkout / name).is_file()]
    if missing:
        raise SystemExit(f"--nanogpt {checkout}: no {', '.join(missing)} there; give a checkout of karpathy/nanoGPT")
    work = folder / "nanogpt"
    shutil.rmtree(work, ignore_errors=True)
    dataset = work / "data" / "lmsmith"
    dataset.mkdir(parents=True)
    for name in NANOGPT_FILES:  # train.py reads configurator.py and data/ from its working directory
        shutil.copy(checkout / name, work / name)
    for split in ("train", "val"):
        data.astype(np.uint16).tofile(dataset / f"{split}.bin")
    with open(dataset / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": s.vocab}, f)
    cuda = device.type == "cuda"
    args = ["--dataset=lmsmith", f"--n_layer={s.n_layer}", f"--n_head={s.n_head}", f"--n_embd={s.n_embd}",
            f"--block_size={s.block_size}", f"--batch_size={s.batch}", "--gradient_accumulation_steps=1",
            "--dropout=0.0", "--bias=True", f"--learning_rate={LR}", f"--weight_decay={WEIGHT_DECAY}",
            f"--grad_clip={GRAD_CLIP}", f"--max_iters={steps + NANOGPT_SKIPPED_ITERS}", "--eval_interval=1000000000",
            "--eval_iters=1", "--log_interval=1", "--always_save_checkpoint=False", "--wandb_log=False",
            f"--device={device.type}", f"--dtype={'bfloat16' if cuda else 'float32'}", f"--compile={cuda}"]
    done = subprocess.run([sys.executable, "train.py", *args], cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"nanoGPT's train.py failed at shape {s}: {tail[0]}")
    times = [float(ms) / 1000 for it, ms in re.findall(r"^iter (\d+): loss \S+, time ([\d.]+)ms", done.stdout, re.M)
             if int(it) >= NANOGPT_SKIPPED_ITERS]
    tokens = s.batch * s.block_size
    return {"tokens_per_s": round(tokens / statistics.median(times)), "best_tokens_per_s": round(tokens / min(times)),
            "iterations_timed": len(times), "precision": "bf16" if cuda else "fp32", "compile": cuda}


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test, not a measurement")
    parser.add_argument("--steps", type=int, default=None, help="timed steps of each contender per shape")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our blocks (always on with CUDA)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                        help="our steps' precision (auto: what `lmsmith train` picks for this device)")
    parser.add_argument("--nanogpt", type=Path, default=None, metavar="PATH",
                        help="a checkout of karpathy/nanoGPT: also run its train.py at each shape")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Our training loop makes malloc keep freed memory (lmsmith.core.host_memory); the setting is the
    # process's, so it is made before the race and the reference loop in this process gets it too:
    # the race compares the engines. nanoGPT's train.py runs in its own process, without it.
    keep_freed_memory()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    compile = args.compile or device.type == "cuda"
    shapes = {**SHAPES, **(GPU_SHAPES if device.type == "cuda" else {})}
    rounds = {
        name: args.steps or (3 if args.quick else 8 if s.block_size * s.batch > 2048 else 30)
        for name, s in shapes.items()
    }

    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokens = open_tokens_dir(make_tokens(folder))
        data = tokens.shards("train")[0]
        for name, s in shapes.items():
            windows = TokenWindows(tokens, "train", s.block_size)
            measured[name] = measure_shape(
                name, s, windows, data, device, rounds[name], compile, args.precision, folder
            )
        results = {name: summarize(shapes[name], m) for name, m in measured.items()}
        for name, s in shapes.items():
            if args.nanogpt is None:
                break
            nano = nanogpt_tokens_per_s(args.nanogpt, s, data, device, rounds[name], folder)
            nano["ours_gpt2_vs_nanogpt"] = round(results[name]["ours_gpt2"]["tokens_per_s"] / nano["tokens_per_s"], 3)
            results[name]["nanogpt"] = nano

    main_shape = results["shakespeare"]
    line = {
        "benchmark": "train_throughput",
        "device": cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "compile": compile,
        "precision": args.precision,
        "rounds": rounds,
        "shapes": results,
        "speedup_shakespeare": main_shape["ours_gpt2"]["speedup"],
        "target_speedup": 1.5,
        "target_met": main_shape["ours_gpt2"]["speedup"] >= 1.5,
        "data_and_logging_share_max": max(r["data_and_logging_share"] for r in results.values()),
        "nanogpt": ("measured: shapes.*.nanogpt" if args.nanogpt
                    else "skipped: give --nanogpt PATH (a nanoGPT checkout)"),
    }
    if "gpt2_124m" in results:
        line["gpt2_124m_mfu"] = results["gpt2_124m"]["ours_gpt2"]["mfu"]
        line["gpt2_124m_target_mfu"] = 0.5
    print(json.dumps(line))


if __name__ == "__main__":
    main()
