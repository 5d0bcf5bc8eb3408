"""A time budget (`train.max_minutes`): the run plans the steps that fit and ends on time, fully decayed."""

from __future__ import annotations

import json

import pytest

from lmsmith.cli import main
from lmsmith.train.schedule import lr_factor


def run_cli(capsys, recipe, *args) -> tuple[int, str]:
    code = main(["train", "--config", str(recipe), *map(str, args), "--quiet"])
    return code, capsys.readouterr().err


def test_a_budgeted_run_stops_on_time_with_its_learning_rate_decayed(tmp_path, recipe_file, capsys, one_thread):
    budget_s = 12.0
    recipe = recipe_file(tmp_path / "run", steps=100_000, warmup_steps=5, eval_every=50, save_every=10_000,
                         log_every=1, min_lr_ratio=0.1)
    code, err = run_cli(capsys, recipe, "--minutes", budget_s / 60)
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    steps, seconds = manifest["counts"]["steps"], manifest["counts"]["seconds"]
    assert abs(seconds - budget_s) <= 0.1 * budget_s, (seconds, steps)
    assert 20 < steps < 100_000  # the budget, not the cap, decided
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    peak = 3e-3
    assert lrs[-1] == pytest.approx(0.1 * peak)  # the last step is at the floor: the schedule ran to its end
    assert max(lrs) == pytest.approx(peak, rel=0.05)


def test_the_plan_is_the_schedule_of_that_many_steps():
    from lmsmith.schema.train import TrainConfig

    cfg = TrainConfig(steps=10**9, warmup_steps=10, max_minutes=1.0)
    factors = [lr_factor(s, cfg, total=200) for s in range(200)]
    assert factors[-1] == pytest.approx(cfg.min_lr_ratio)
    assert factors == [lr_factor(s, TrainConfig(steps=200, warmup_steps=10), None) for s in range(200)]


def test_a_budget_too_short_for_the_warmup_names_the_smallest_that_works(tmp_path, recipe_file, capsys, one_thread):
    recipe = recipe_file(tmp_path / "run", steps=100_000, warmup_steps=50_000)
    code, err = run_cli(capsys, recipe, "--minutes", 0.01)
    assert code == 2
    assert "train.max_minutes=0.01 is too short" in err and "give at least" in err and "warmup" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_budget_must_be_positive(tmp_path, recipe_file, capsys, value):
    code, err = run_cli(capsys, recipe_file(tmp_path / "run"), f"train.max_minutes={value}")
    assert code == 2 and "train.max_minutes (--minutes) must be positive" in err


def test_build_minutes_must_be_positive(capsys, tmp_path):
    code = main(["build", "-o", str(tmp_path / "w"), "--minutes", "0", "--quiet"])
    assert code == 2 and "--minutes must be positive" in capsys.readouterr().err
