"""Benchmark fine-tuning methods: LoRA against full fine-tuning on the same model and data.

    python benchmarks/finetune.py                       # a small GPT-2-style model, CPU-sized
    python benchmarks/finetune.py --shape distilgpt2    # distilgpt2's shape (82M parameters), for a GPU

Both methods run the training engine's own step (lmsmith.train.trainer.train_step: autocast,
backward, clipping, AdamW) on the same packed instruction batches, each in a fresh process so
that its peak memory is its own. Measured per method:

- trainable parameters, and the bytes of training state they imply (weights + gradients + the
  two AdamW moments of every trainable parameter);
- peak memory: CUDA's peak allocation on a GPU; on a CPU the growth of the process's peak
  resident memory from just before the model is built;
- tokens per second over the timed steps (after warm-up steps); each method runs --repeats
  times, alternating with the other, and its fastest run is reported.

Prints ONE JSON line, with LoRA/full ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import string
import subprocess
import sys
import time

SHAPES = {
    "small": dict(n_layer=4, n_head=4, n_embd=256, vocab_size=4096, block_size=256),
    "distilgpt2": dict(n_layer=6, n_head=12, n_embd=768, vocab_size=50257, block_size=1024),
}
GPT2_STYLE = dict(position="learned", norm="layernorm", feed_forward="gelu", gelu_approximate="tanh",
                  bias=True, tie_embeddings=True, dropout=0.0)


def synthetic_examples(n: int, seed: int = 0):
    """Prompt/response pairs of random words, about a hundred characters each."""
    from lmsmith.finetune.instruct_data import Example

    rng = random.Random(seed)
    word = lambda: "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 8)))  # noqa: E731
    text = lambda k: " ".join(word() for _ in range(k))  # noqa: E731
    return [Example((("user", text(rng.randint(8, 16)) + "?"), ("assistant", text(rng.randint(10, 20)) + ".")))
            for _ in range(n)]


def peak_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure(method: str, shape: str, steps: int, warmup: int, micro_batch: int, length: int, device: str) -> dict:
    """One method's numbers, in this process."""
    import torch
    from lmsmith.finetune.templates import get_template

    from lmsmith.core.device import pick_device
    from lmsmith.finetune.instruct_data import InstructBatches, tokenize_examples
    from lmsmith.finetune.methods import choose_trainable
    from lmsmith.model.transformer import GPT
    from lmsmith.schema.finetune import FinetuneConfig, LoRAConfig
    from lmsmith.schema.model import ModelConfig
    from lmsmith.schema.train import TrainConfig, plan_batch
    from lmsmith.text.tokenizer import train_char
    from lmsmith.train.optim import build_optimizers
    from lmsmith.train.precision import resolve_precision
    from lmsmith.train.trainer import train_step

    target = pick_device(device)
    tokenizer = train_char([string.ascii_lowercase + " ?."], show_progress=False)
    examples = synthetic_examples(400)
    data = tokenize_examples(examples, get_template("plain"), tokenizer, length, "training")

    rss_before = peak_rss_bytes()
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    torch.manual_seed(0)
    model = GPT(ModelConfig(**SHAPES[shape], **GPT2_STYLE)).to(target)
    chosen = choose_trainable(model, FinetuneConfig(method=method, lora=LoRAConfig(rank=16, alpha=32)))
    train = TrainConfig(steps=steps + warmup, warmup_steps=0, lr=1e-4, micro_batch=micro_batch,
                        batch_tokens=micro_batch * length, precision="auto", device=str(target))
    plan = plan_batch(train, length, 1)
    precision = resolve_precision(train.precision, target)
    batches = InstructBatches(data, plan, seed=0, rank=0, device=target, pad_id=tokenizer.eot_id, packing=True)
    optimizers = build_optimizers(model, train)
    scaler = precision.grad_scaler()
    model.train()

    def sync():
        if target.type == "cuda":
            torch.cuda.synchronize(target)

    for step in range(warmup):
        train_step(model, optimizers, scaler, batches, step, precision, train.grad_clip)
    sync()
    started = time.perf_counter()
    for step in range(warmup, warmup + steps):
        train_step(model, optimizers, scaler, batches, step, precision, train.grad_clip)
    sync()
    elapsed = time.perf_counter() - started
    tokens = sum(len(batches.items[i].inputs) for step in range(warmup, warmup + steps)
                 for micro in batches.step_items(step) for i in micro)
    if target.type == "cuda":
        peak = torch.cuda.max_memory_allocated(target)
    else:
        peak = peak_rss_bytes() - rss_before
    trainable, total = chosen["trainable_parameters"], chosen["total_parameters"]
    return {
        "trainable_params": trainable, "total_params": total,
        "train_state_mib": round(4 * (total + 3 * trainable) / 2**20, 1),
        "peak_mem_mib": round(peak / 2**20, 1),
        "tokens_per_s": round(tokens / elapsed, 1),
        "precision": precision.name, "device": str(target),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="small")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256, help="tokens per packed row")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="runs per method, alternating; the fastest is kept")
    parser.add_argument("--child", choices=["lora", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(
            measure(args.child, args.shape, args.steps, args.warmup, args.micro_batch, args.length, args.device)
        ))
        return
    results: dict[str, dict] = {}
    for _ in range(args.repeats):  # alternating, so that a busy spell of a shared machine hits both methods
        for method in ("full", "lora"):
            command = [sys.executable, __file__, "--child", method, "--shape", args.shape, "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--micro-batch", str(args.micro_batch),
                       "--length", str(args.length), "--device", args.device]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if method not in results or result["tokens_per_s"] > results[method]["tokens_per_s"]:
                results[method] = result  # the fastest of the repeats: the least disturbed
    lora, full = results["lora"], results["full"]
    print(json.dumps({
        "benchmark": "finetune", "shape": args.shape, "device": full["device"], "precision": full["precision"],
        "tokens_per_step": args.micro_batch * args.length, "lora_rank": 16, "repeats": args.repeats,
        "full": full, "lora": lora,
        "lora_vs_full": {
            "trainable_params": round(lora["trainable_params"] / full["trainable_params"], 5),
            "train_state": round(lora["train_state_mib"] / full["train_state_mib"], 4),
            "peak_mem": round(lora["peak_mem_mib"] / full["peak_mem_mib"], 4) if full["peak_mem_mib"] > 0 else None,
            "tokens_per_s": round(lora["tokens_per_s"] / full["tokens_per_s"], 4),
        },
    }))


if __name__ == "__main__":
    main()
