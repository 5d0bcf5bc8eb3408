"""Two processes on CPU (gloo) train to the same weights as one process on the same global batch.

Both go through the real entry point, `lmsmith train`, once as one process and once under
`torchrun --nproc_per_node 2`. The global batch is the same: one process accumulates over
micro-batches what the two ranks split between them, so every loss, gradient norm and, at the
end, every weight must agree up to the order of floating-point sums.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmsmith.train.distributed import init_distributed, mean_across_ranks

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
MODEL = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0}
# fp32 and no dropout: the ranks draw their own dropout masks, and bf16 would blur the comparison.
# 512 tokens a step: 4 micro-batches of 4 x 32 in one process, 2 on each of two ranks.
TRAIN = dict(steps=6, warmup_steps=1, lr=3e-3, batch_tokens=512, micro_batch=4, precision="fp32", device="cpu",
             eval_every=0, eval_batches=2, save_every=100, log_every=1, peak_flops=1e11)


def run(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in TORCHRUN_VARIABLES:
        env.pop(name, None)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0:
        print(result.stdout, result.stderr)  # pytest shows it with the failure
    assert result.returncode == 0, result.stderr[-2000:]


def train(tokens: Path, out: Path, ranks: int, **settings) -> Path:
    recipe = out.with_name(out.name + ".yaml")
    recipe.write_text(yaml.safe_dump({"data": str(tokens), "out": str(out), "model": MODEL,
                                      "train": {**TRAIN, **settings}}))
    launcher = [sys.executable]
    if ranks > 1:
        # --standalone: torchrun picks a free local port for the rendezvous itself.
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    run([*launcher, "-m", "lmsmith", "train", "--config", str(recipe), "--quiet"])
    return out


def step_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "loss" in line]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tokens_dir) -> Path:
    return train(tokens_dir, tmp_path_factory.mktemp("one") / "run", ranks=1)


@pytest.mark.parametrize("parallel,checkpointing", [("ddp", "none"), ("fsdp", "full")])
def test_two_ranks_match_one_process(tmp_path, tokens_dir, one_process, parallel, checkpointing):
    two = train(tokens_dir, tmp_path / "run", ranks=2, parallel=parallel, activation_checkpointing=checkpointing)

    # Rank 0 alone logs: one line per step, and the same loss and gradient norm as one process
    # (the norm of gradients summed instead of averaged over ranks, or not synced, would differ).
    expected, got = step_lines(one_process), step_lines(two)
    assert [line["step"] for line in got] == list(range(1, TRAIN["steps"] + 1))
    for a, b in zip(expected, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), b["step"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), b["step"]
    assert expected[-1]["loss"] < expected[0]["loss"]  # it trained

    single = load_file(one_process / "model" / "model.safetensors")
    double = load_file(two / "model" / "model.safetensors")
    assert single.keys() == double.keys()
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=1e-4, atol=2e-5, msg=name)


def test_single_process_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.backend) == (0, 1, True, None)
    assert info.device == torch.device("cpu")
    assert mean_across_ranks(torch.tensor(2.5), info) == 2.5
