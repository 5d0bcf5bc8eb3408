"""A step with a non-finite loss or gradient changes nothing; several in a row stop the run."""

from __future__ import annotations

import pytest
import torch

from lmsmith.core.errors import UserError
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.stage import stage_config
from lmsmith.schema.train import BatchPlan, TrainConfig, train_recipe_of
from lmsmith.stages import TRAIN
from lmsmith.train import loop, trainer
from lmsmith.train.guard import NonFiniteGuard
from lmsmith.train.optim import build_optimizers
from lmsmith.train.precision import Precision


def load_recipe(path, overrides=()):
    """The training recipe `lmsmith train --config PATH KEY=VALUE...` runs."""
    return train_recipe_of(stage_config(TRAIN, path, list(overrides)))


class PoisonedGPT(GPT):
    """A GPT whose loss is NaN while `poisoned` is set."""

    poisoned = False

    def forward(self, idx, targets=None, **kw):
        out = super().forward(idx, targets, **kw)
        if PoisonedGPT.poisoned and out.loss is not None:
            out.loss = out.loss * float("nan")
        return out


class FixedBatches:
    def __init__(self):
        self.plan = BatchPlan(block_size=8, micro_batch=2, world_size=1, grad_accum=2)
        self.device = torch.device("cpu")

    def micro_batches(self, step):
        g = torch.Generator().manual_seed(step)
        for _ in range(2):
            rows = torch.randint(0, 50, (2, 9), generator=g)
            yield rows[:, :-1], rows[:, 1:]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_non_finite_step_leaves_weights_and_optimizer_state_alone(precision):
    torch.manual_seed(0)
    net = PoisonedGPT(ModelConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16))
    optimizers = build_optimizers(net, TrainConfig())
    p = Precision(precision, torch.device("cpu"))
    scaler = p.grad_scaler()
    trainer.train_step(net, optimizers, scaler, FixedBatches(), 0, p, grad_clip=1.0)  # a good step first: state exists
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    moments = {k: v["exp_avg"].clone() for k, v in zip(weights, optimizers[0].state.values())}
    PoisonedGPT.poisoned = True
    try:
        loss = trainer.train_step(net, optimizers, scaler, FixedBatches(), 1, p, grad_clip=1.0).loss
    finally:
        PoisonedGPT.poisoned = False
    assert loss != loss  # NaN
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
    assert all(torch.equal(moments[k], v["exp_avg"]) for k, v in zip(weights, optimizers[0].state.values()))
    assert all(p.grad is None for p in net.parameters())  # nothing carried into the next step
    loss = trainer.train_step(net, optimizers, scaler, FixedBatches(), 2, p, grad_clip=1.0).loss
    assert loss == loss and any(not torch.equal(weights[k], v) for k, v in net.state_dict().items())


def test_guard_counts_in_a_row():
    guard = NonFiniteGuard(3)
    for step, bad in enumerate([True, True, False, True, True], start=1):
        guard.record(bad, step)
    assert guard.skipped == 4 and guard.in_a_row == 2
    with pytest.raises(UserError, match="3 steps in a row"):
        guard.record(True, 6)


def test_run_stops_with_advice_after_several_bad_steps(tmp_path, recipe_file, monkeypatch, one_thread):
    monkeypatch.setattr(loop, "GPT", PoisonedGPT)
    monkeypatch.setattr(PoisonedGPT, "poisoned", True)
    recipe = load_recipe(recipe_file(tmp_path / "run", max_bad_steps=4, precision="fp32"))
    with pytest.raises(UserError, match="NaN or infinite for 4 steps in a row .*Lower train.lr"):
        loop.train(recipe, quiet=True)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"skipped_steps": 3' in lines[-1]

