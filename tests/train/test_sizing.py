"""Sizing a time-budgeted run to the machine (`sizing:`): candidates probed on the device, the largest the budget
trains enough taken, the user's keys always winning, the choice kept on resume, a failed probe never fatal.

The choices here are forced by extreme `tokens_per_parameter` values, so they hold on any machine speed."""

from __future__ import annotations

import json

import pytest
import yaml

from lmsmith.cli import main
from lmsmith.schema.recipe import load_recipe
from lmsmith.stages import STAGE_BY_NAME
from lmsmith.train import sizing
from lmsmith.train.sizing import SIZING_FILE, Measured, choose

SMALL = {"model.n_embd": 16, "model.n_head": 2, "train.batch_tokens": 128}
LARGE = {"model.n_embd": 32, "model.n_head": 4, "train.batch_tokens": 256}


def sized_recipe(tmp_path, tiny_recipe, tokens_per_parameter: float, minutes: float = 0.2, **train) -> str:
    train = {"steps": 100_000, "warmup_steps": 2, "eval_every": 1000, "save_every": 1000, **train}
    raw = tiny_recipe(tmp_path / "run", max_minutes=minutes, **train)
    raw["sizing"] = {"tokens_per_parameter": tokens_per_parameter, "probe_steps": 1, "candidates": [SMALL, LARGE]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def trained_shape(run) -> dict:
    config = json.loads((run / "model" / "config.json").read_text())
    return {"model.n_embd": config["n_embd"], "model.n_head": config["n_head"]}


def train(capsys, recipe: str, *args) -> tuple[int, str, str]:
    code = main(["train", "--config", recipe, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("tokens_per_parameter, chosen", [(1e-6, LARGE), (1e9, SMALL)])
def test_the_largest_candidate_the_budget_trains_enough_is_taken(tmp_path, tiny_recipe, capsys, one_thread,
                                                                  tokens_per_parameter, chosen):
    code, out, err = train(capsys, sized_recipe(tmp_path, tiny_recipe, tokens_per_parameter))
    assert code == 0, err
    run = tmp_path / "run"
    record = json.loads((run / SIZING_FILE).read_text())
    assert record["candidate"] == chosen
    assert trained_shape(run) == {k: v for k, v in chosen.items() if k.startswith("model.")}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["train"]["batch_tokens"] == chosen["train.batch_tokens"]
    # The probe's seconds came out of the budget, so the run as a whole keeps to it.
    assert manifest["config"]["train"]["max_minutes"] == record["train_minutes"]
    assert record["train_minutes"] == pytest.approx(0.2 - record["probe_seconds"] / 60, abs=1e-3)
    assert out.count("sizing: ") == 1 and "tokens/s" in out  # what it chose and why, with each candidate's speed
    # The probe stops at the first candidate with too few tokens: a larger one would have fewer still.
    assert len(record["measured"]) == (2 if chosen is LARGE else 1)


def test_keys_given_on_the_command_line_win_over_every_candidate(tmp_path, tiny_recipe, capsys, one_thread):
    code, _, err = train(capsys, sized_recipe(tmp_path, tiny_recipe, 1e-6), "model.n_embd=24", "--quiet")
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["n_embd"] == 24 and config["n_head"] == LARGE["model.n_head"]  # the candidate's other keys stand


def test_a_build_recipe_pins_the_users_keys_into_the_candidates():
    recipe = load_recipe("quickstart", ["train.batch_tokens=16384", "model.dropout=0.1"], STAGE_BY_NAME)
    assert {c["train.batch_tokens"] for c in recipe.sizing.candidates} == {16384}
    assert not any("model.dropout" in c for c in recipe.sizing.candidates)  # a key no candidate sets stays put
    assert recipe.model.dropout == 0.1


def test_without_a_time_budget_the_recipe_trains_as_written(tmp_path, tiny_recipe, capsys, one_thread):
    raw = yaml.safe_load(open(sized_recipe(tmp_path, tiny_recipe, 1e-6)))
    raw["train"].update(max_minutes=None, steps=3)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    code, out, err = train(capsys, str(tmp_path / "recipe.yaml"))
    assert code == 0, err
    assert not (tmp_path / "run" / SIZING_FILE).exists() and "sizing:" not in out
    assert trained_shape(tmp_path / "run") == {"model.n_embd": 32, "model.n_head": 2}  # the recipe's own


def test_a_budget_too_short_for_any_candidate_names_the_smallest_that_works(tmp_path, tiny_recipe, capsys,
                                                                               one_thread):
    code, _, err = train(capsys, sized_recipe(tmp_path, tiny_recipe, 1e-6, minutes=0.001, warmup_steps=50_000))
    assert code == 2
    assert "too short for any shape" in err and "give at least" in err and "--minutes" in err
    assert len(err.strip().splitlines()) == 1


def test_a_failed_probe_trains_the_recipes_own_shape(tmp_path, tiny_recipe, capsys, one_thread, monkeypatch):
    def odd_blas(*args, **kwargs):  # what a broken BLAS or driver raises; it cannot be made to fail on cue
        raise RuntimeError("mkl_malloc: failed to allocate memory")

    monkeypatch.setattr(sizing, "measure", odd_blas)
    code, out, err = train(capsys, sized_recipe(tmp_path, tiny_recipe, 1e-6))
    assert code == 0, err
    assert "warning: sizing to this machine failed" in out and "mkl_malloc" in out
    assert trained_shape(tmp_path / "run") == {"model.n_embd": 32, "model.n_head": 2}


def test_a_resumed_run_keeps_the_shape_it_was_sized_to(tmp_path, tiny_recipe, capsys, one_thread):
    from lmsmith.schema.stage import stage_config
    from lmsmith.schema.train import train_recipe_of

    # Sized to choose SMALL, if it probed again.
    recipe = train_recipe_of(stage_config(STAGE_BY_NAME["train"], sized_recipe(tmp_path, tiny_recipe, 1e9)))
    run = tmp_path / "run"
    run.mkdir()
    (run / SIZING_FILE).write_text(json.dumps({"candidate": LARGE, "train_minutes": 0.15}))
    sized = sizing.size_to_machine(recipe, tokens=None, info=None, run_dir=run, resuming=True, quiet=True)
    assert (sized.model.n_embd, sized.train.batch_tokens, sized.train.max_minutes) == (32, 256, 0.15)


@pytest.mark.parametrize("candidate, message", [
    ({"optimizer.lr": 1}, "is not a model.* or train.* key"),
    ({"model.n_embd": 30, "model.n_head": 4}, "sizing.candidates[1]"),
    ({"model.n_embd": "wide"}, "sizing.candidates[1]"),
])
def test_a_bad_candidate_is_refused_before_any_work(tmp_path, tiny_recipe, capsys, candidate, message):
    raw = yaml.safe_load(open(sized_recipe(tmp_path, tiny_recipe, 1.0)))
    raw["sizing"]["candidates"] = [candidate]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    code, _, err = train(capsys, str(tmp_path / "recipe.yaml"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_pinned_key_that_breaks_a_candidate_names_the_candidate(capsys):
    assert main(["build", "quickstart", "train.batch_tokens=4096", "--until", "curate"]) == 2
    err = capsys.readouterr().err
    assert "sizing.candidates[" in err and "train.micro_batch" in err and len(err.strip().splitlines()) == 1


def measured(parameters: int, tokens_per_s: float, seconds: float = 100, per_parameter: float = 1.0) -> Measured:
    m = Measured({}, "", parameters, 1.0, tokens_per_s)
    m.budget_tokens, m.needed_tokens = tokens_per_s * seconds, per_parameter * parameters
    return m


def test_choose_takes_the_last_candidate_with_enough_tokens_and_else_the_first():
    assert choose([measured(1000, 100), measured(5000, 60), measured(20000, 250)]) == 2
    assert choose([measured(1000, 100), measured(5000, 60)]) == 1
    assert choose([measured(1000, 100), measured(50000, 60)]) == 0
    assert choose([measured(100_000, 100), measured(500_000, 60)]) == 0  # none: the smallest
