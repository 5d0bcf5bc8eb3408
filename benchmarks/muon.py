"""Muon's optimizer step: lmsmith's GroupedMuon against torch.optim.Muon on the same matrices.

    python benchmarks/muon.py [--rounds 30]

For the hidden matrices of three model shapes (nanoGPT's CPU "baby" width with lmsmith's default
architecture, the quickstart recipe, nanoGPT's Shakespeare width), both optimizers take the same
steps from the same weights and gradients. They alternate round after round, so load from other
processes falls on both alike, and each reports its median step time. Also printed: the largest
difference between the weights the two produce (they should agree to float rounding).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lmsmith.core.config import parse_section
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.train.muon import GroupedMuon
from lmsmith.train.optim import parameter_kinds

SHAPES = {
    "width128_4layers": dict(n_layer=4, n_head=4, n_embd=128),
    "quickstart_width256_4layers": dict(n_layer=4, n_head=4, n_embd=256),
    "width384_6layers": dict(n_layer=6, n_head=6, n_embd=384),
}


def hidden_matrices(shape: dict) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = GPT(parse_section(ModelConfig, {"vocab_size": 96, "block_size": 128, **shape}, "model"))
    return [p.detach().clone() for _, p in parameter_kinds(model)["hidden_matrix"]]


def timed_step(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], grads: list[torch.Tensor]) -> float:
    for p, g in zip(params, grads):
        p.grad = g
    start = time.perf_counter()
    optimizer.step()
    return time.perf_counter() - start


def measure(shape: dict, rounds: int) -> dict:
    weights = hidden_matrices(shape)
    contenders = {}
    for name, cls in (("torch_muon", torch.optim.Muon), ("grouped_muon", GroupedMuon)):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        contenders[name] = (cls(params, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True), params, [])
    g = torch.Generator().manual_seed(1)
    for round_ in range(rounds + 3):
        grads = [torch.randn(w.shape, generator=g) for w in weights]
        for optimizer, params, times in contenders.values():
            seconds = timed_step(optimizer, params, grads)
            if round_ >= 3:  # the first steps allocate the momentum buffers
                times.append(seconds)
    (_, torch_params, torch_times), (_, ours_params, ours_times) = contenders["torch_muon"], contenders["grouped_muon"]
    return {
        "matrices": len(weights),
        "shapes": sorted({tuple(w.shape) for w in weights}),
        "torch_muon_ms": round(1000 * statistics.median(torch_times), 2),
        "grouped_muon_ms": round(1000 * statistics.median(ours_times), 2),
        "speedup": round(statistics.median(torch_times) / statistics.median(ours_times), 2),
        "max_weight_difference": max((a - b).abs().max().item() for a, b in zip(torch_params, ours_params)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed steps of each optimizer per shape")
    args = parser.parse_args()
    result = {name: measure(shape, args.rounds) for name, shape in SHAPES.items()}
    print(json.dumps({"benchmark": "muon", "device": "cpu", "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "rounds": args.rounds, "shapes": result}))


if __name__ == "__main__":
    main()
