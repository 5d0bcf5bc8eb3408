"""Learning-rate schedules: warmup, then cosine or warmup-stable-decay, never below the floor."""

from __future__ import annotations

import math

import pytest

from lmsmith.core.config import parse_section
from lmsmith.schema.train import TrainConfig
from lmsmith.train.schedule import lr_factor


def config(**kw) -> TrainConfig:
    return parse_section(TrainConfig, {"steps": 1000, "warmup_steps": 100, "min_lr_ratio": 0.1, **kw}, "train")


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_warmup_rises_linearly_to_the_peak(schedule):
    cfg = config(schedule=schedule)
    factors = [lr_factor(s, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.01) and factors[99] == pytest.approx(1.0)
    steps = [b - a for a, b in zip(factors, factors[1:])]
    assert all(d == pytest.approx(0.01) for d in steps)


def test_cosine_follows_half_a_cosine_down_to_the_floor():
    cfg = config(schedule="cosine")
    for step in (100, 300, 550, 800, 999):
        progress = (step - 100) / 899
        assert lr_factor(step, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert lr_factor(999, cfg) == pytest.approx(0.1)
    after = [lr_factor(s, cfg) for s in range(100, 1000)]
    assert all(a >= b for a, b in zip(after, after[1:]))  # never rises again


def test_wsd_is_flat_then_decays_linearly_over_the_last_fraction():
    cfg = config(schedule="wsd", decay_fraction=0.2)
    assert all(lr_factor(s, cfg) == 1.0 for s in range(100, 800))
    decay = [lr_factor(s, cfg) for s in range(800, 1000)]
    assert decay[-1] == pytest.approx(0.1)
    gaps = [a - b for a, b in zip(decay, decay[1:])]
    assert all(g == pytest.approx(0.9 / 200) for g in gaps)


def test_floor_and_constant():
    assert min(lr_factor(s, config(schedule="cosine", min_lr_ratio=0.3)) for s in range(100, 1000)) >= 0.3 - 1e-12
    assert all(lr_factor(s, config(schedule="constant")) == 1.0 for s in range(100, 1000))
