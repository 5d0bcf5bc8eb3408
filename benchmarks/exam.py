"""Benchmark `lmsmith exam`'s multiple choice: items per second against lm-evaluation-harness's `hf` model.

    python benchmarks/exam.py                      # 200 items of 4 choices, a 4-layer model, on CPU
    python benchmarks/exam.py --items 400 --layers 6 --width 384 --device cuda

The same model (random weights, a character tokenizer) is scored both ways on the same
(question, " choice") pairs: our LocalModel.loglikelihoods, and the harness's HFLM.loglikelihood
on the model converted to a Hugging Face directory (transformers' LlamaForCausalLM), both in
float32 with the same batch size, each after one warm-up pass, taking turns (best of --rounds).
Ours feeds each question once into a KV cache shared by its choices; the harness scores each
(question, choice) as a whole sequence. Also checks that the two agree:
the largest difference of a log-likelihood, and how many items pick a different choice.

Prints ONE JSON line; the ratio is what to compare across machines (absolute times drift here).
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import tempfile
import time
from pathlib import Path

import torch


def make_items(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 8))) for _ in range(300)]
    return [{"question": " ".join(rng.choices(words, k=rng.randint(8, 20))) + "?",
             "choices": [" ".join(rng.choices(words, k=rng.randint(1, 4))) for _ in range(4)], "answer": 0}
            for _ in range(n)]


def build_model(folder: Path, layers: int, width: int):
    from lmsmith.cli import main
    from lmsmith.model.directory import save_model_dir
    from lmsmith.model.transformer import GPT
    from lmsmith.schema.model import ModelConfig
    from lmsmith.text.tokenizer import train_char

    tokenizer = train_char([string.ascii_letters + string.digits + " ?.,"], show_progress=False)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=layers, n_head=4,
                            n_embd=width, preset="llama"))
    ours = save_model_dir(folder / "model", model, tokenizer, made_by="benchmark")
    assert main(["convert", "--to-hf", str(ours), "-o", str(folder / "hf"), "--quiet"]) == 0
    return ours, folder / "hf"


def race(ours, theirs, rounds: int = 3):
    """Each side's best time over `rounds`, taking turns, so that load from other processes on a shared
    machine falls on both; one warm-up call each first (allocator, kernels)."""
    ours(), theirs()
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for side, fn in enumerate((ours, theirs)):
            start = time.perf_counter()
            result = fn()
            best[side] = min(best[side], time.perf_counter() - start)
            if side == 0:
                our_result = result
            else:
                their_result = result
    return our_result, best[0], their_result, best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per side, taking turns (best kept)")
    args = parser.parse_args()

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from lmsmith.exam.checkers import choice_scores
    from lmsmith.exam.items import Item
    from lmsmith.exam.models import LocalModel
    from lmsmith.exam.scoring import DELIMITER
    from lmsmith.schema.exam import ExamConfig

    items = make_items(args.items)
    pairs = [(it["question"], DELIMITER + c) for it in items for c in it["choices"]]
    with tempfile.TemporaryDirectory() as tmp:
        ours_dir, hf_dir = build_model(Path(tmp), args.layers, args.width)
        ours = LocalModel(ours_dir, ExamConfig(batch_size=args.batch_size, device=args.device))
        theirs = HFLM(pretrained=str(hf_dir), dtype="float32", device=args.device, batch_size=args.batch_size)
        requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
        our_lls, our_s, their_lls, their_s = race(
            lambda: ours.loglikelihoods(pairs),
            lambda: [ll for ll, _ in theirs.loglikelihood(requests, disable_tqdm=True)], args.rounds)

    def picks(lls):
        out = []
        for k, it in enumerate(items):
            item = Item("choice", it, "bench")
            out.append(choice_scores(item, lls[4 * k:4 * k + 4])["acc"])
        return out

    result = {"benchmark": "exam multiple choice", "items": args.items, "choices": 4, "layers": args.layers,
              "width": args.width, "batch_size": args.batch_size, "device": args.device,
              "threads": torch.get_num_threads(), "rounds": args.rounds,
              "lmsmith_items_per_s": round(args.items / our_s, 1),
              "lm_eval_hf_items_per_s": round(args.items / their_s, 1),
              "speedup": round(their_s / our_s, 2),
              "max_abs_loglikelihood_diff": max(abs(a - b) for a, b in zip(our_lls, their_lls)),
              "items_picking_differently": sum(a != b for a, b in zip(picks(our_lls), picks(their_lls)))}
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
