"""`lmsmith sweep`: an Optuna study over short runs of the real training engine, on a tiny recipe."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")
pytest.importorskip("matplotlib")

from lmsmith.cli import main  # noqa: E402
from lmsmith.core.config import ConfigError  # noqa: E402
from lmsmith.schema.recipe import load_recipe  # noqa: E402
from lmsmith.schema.sweep import SweepPlan, check_space_edges  # noqa: E402
from lmsmith.sweep.plots import PLOTS  # noqa: E402
from lmsmith.sweep.results import BEST_RECIPE, RESULTS  # noqa: E402
from lmsmith.sweep.study import STUDY_DB, load_sweep_recipe, sweep  # noqa: E402
from lmsmith.sweep.trials import run_trial  # noqa: E402

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def tiny_recipe(space: dict | None = None, **sweep_keys) -> dict:
    return {
        "tokenizer": {"kind": "bpe", "vocab_size": 300},
        "tokenize": {"inputs": [str(STDLIB / "textwrap.py"), str(STDLIB / "json" / "decoder.py")]},
        "model": {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32},
        "train": {"steps": 24, "batch_tokens": 256, "micro_batch": 8, "lr": 3e-3, "warmup_steps": 2,
                  "eval_batches": 2, "log_every": 4, "peak_flops": 1e11},
        "eval": {"split": "val"},
        "sweep": {"evals": 3, "startup_trials": 3, "seed": 0,
                  "space": space or {"train.lr": {"log_uniform": [1e-3, 3e-2]},
                                     "model.n_layer": {"int": [1, 2]},
                                     "train.batch_tokens": {"choice": [256, 512]}},
                  **sweep_keys},
    }


def write_recipe(folder: Path, raw: dict) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def one_thread_children(monkeypatch):
    """Each trial is a child process; tiny models train fastest on one thread, and the CPU is shared."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_sweep_runs_trials_writes_results_and_resumes(tmp_path):
    recipe = write_recipe(tmp_path, tiny_recipe())
    out, work = tmp_path / "sweep", tmp_path / "work"
    result = sweep(str(recipe), trials=3, out=str(out), workdir=str(work), quiet=True)
    assert result.trials == 3
    for name in (STUDY_DB, RESULTS, BEST_RECIPE, *PLOTS.values()):
        assert (out / name).is_file(), name
    for png in PLOTS.values():
        assert (out / png).read_bytes().startswith(b"\x89PNG")

    # The study as stored in the database, read back by Optuna itself.
    storage = f"sqlite:///{out / STUDY_DB}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({(t.params["train.lr"], t.params["model.n_layer"]) for t in trials}) == 3
    for t in trials:
        # The objective is the best validation loss that the trial's own run logged.
        metrics = out / "trials" / "tiny" / f"{t.number:04d}" / "run" / "metrics.jsonl"
        logged = [json.loads(line) for line in metrics.read_text().splitlines()]
        assert t.value == pytest.approx(min(r["val_loss"] for r in logged if "val_loss" in r))
        assert sorted(t.intermediate_values) == [8, 16, 24]
        config = yaml.safe_load((out / "trials" / "tiny" / f"{t.number:04d}" / "run" / "config.yaml").read_text())
        assert config["train"]["lr"] == pytest.approx(t.params["train.lr"])
        assert config["model"]["n_layer"] == t.params["model.n_layer"]
        assert config["train"]["batch_tokens"] == t.params["train.batch_tokens"]

    # The best recipe is a recipe: it loads, holds the best values, keeps the recipe's own steps, has no sweep.
    best = load_recipe(out / BEST_RECIPE)
    assert best.sweep is None
    assert best.train.lr == pytest.approx(study.best_params["train.lr"])
    assert best.model.n_layer == study.best_params["model.n_layer"]
    assert best.train.steps == 24
    rows = (out / RESULTS).read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("trial,state,val_loss")

    # Running again with a larger study continues it: the three trials stay, one more is added.
    again = sweep(str(recipe), trials=4, out=str(out), workdir=str(work), quiet=True)
    assert again.trials == 4
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.get_trials()) == 4
    assert [t.value for t in study.get_trials()[:3]] == [t.value for t in trials]
    # And again with the same size does nothing.
    assert sweep(str(recipe), trials=4, out=str(out), workdir=str(work), quiet=True).trials == 4
    assert len(optuna.load_study(study_name="tiny", storage=storage).get_trials()) == 4


def test_a_trial_is_stopped_when_the_pruner_says_so(tmp_path):
    """The child training stops at the first evaluation whose report asks for it, long before its last step."""
    from lmsmith.text.tokenizer import TextFiles, train_bpe
    from lmsmith.text.tokens_dir import tokenize_corpus

    files = [str(STDLIB / "textwrap.py"), str(STDLIB / "json" / "decoder.py")]
    train_bpe(TextFiles(files), vocab_size=300, show_progress=False).save(tmp_path / "tok")
    tokenize_corpus(files, tmp_path / "tok", tmp_path / "tokens", quiet=True)
    raw = tiny_recipe()
    recipe = {"data": str(tmp_path / "tokens"), "out": str(tmp_path / "run"), "model": raw["model"],
              "train": {**raw["train"], "steps": 2000, "eval_every": 5}}
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(recipe))
    seen = []

    def prune_at_once(step, loss):
        seen.append((step, loss))
        return True

    outcome = run_trial(tmp_path / "trial.yaml", tmp_path / "run", tmp_path / "train.log", prune_at_once, deadline=None)
    assert outcome.stopped == "pruned"
    assert seen[0][0] == 5 and outcome.val_losses[0] == seen[0]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged) < 2000


@pytest.mark.parametrize("space, message", [
    ({"train.lr": {"log_uniform": [1e-2, 1e-3]}}, r"range \[0.01, 0.001\] is empty"),
    ({"train.lr": {"uniform": [0.01, 0.01]}}, "is empty"),
    ({"train.batch_size": {"choice": [256, 512]}}, "unknown key 'train.batch_size': did you mean 'train.batch_tokens'"),
    ({"model.dropout": {"normal": [0, 0.1]}}, "unknown distribution 'normal'"),
    ({"train.lr": {"log_uniform": [0, 1e-2]}}, "log range must be above 0"),
    ({"model.n_layer": {"uniform": [1, 4]}}, "whole number"),
    ({"train.batch_tokens": {"choice": []}}, "non-empty list"),
    ({"train.warmup_steps": {"int": [0, 100]}}, "the value 100 does not fit"),
    ({"model.dropout": {"uniform": [0.0, 1.5]}}, "the value 1.5 does not fit"),
    ({"train.lr": [1e-3, 1e-2]}, "give one distribution"),
])
def test_a_bad_space_is_refused_before_any_work(tmp_path, space, message):
    recipe = write_recipe(tmp_path, tiny_recipe(space))
    with pytest.raises(ConfigError, match=message):
        sweep(str(recipe), trials=2, out=str(tmp_path / "sweep"), workdir=str(tmp_path / "work"), quiet=True)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "work").exists()


def test_cli_refuses_a_recipe_without_a_space(tmp_path, capsys):
    raw = tiny_recipe()
    raw["sweep"]["space"] = {}
    recipe = write_recipe(tmp_path, raw)
    assert main(["sweep", str(recipe), "--trials", "2", "-o", str(tmp_path / "s")]) == 2
    assert "sweep.space is empty" in capsys.readouterr().err
    del raw["sweep"]
    recipe = write_recipe(tmp_path, raw)
    assert main(["sweep", str(recipe), "--trials", "2", "-o", str(tmp_path / "s")]) == 2
    assert "has no sweep: section" in capsys.readouterr().err


def test_the_quickstart_sweep_space_fits_its_recipe():
    """`lmsmith sweep quickstart` works as shipped: every edge of its space makes a recipe that trains."""
    recipe, config, as_written = load_sweep_recipe("quickstart", [])
    assert config.dimensions() and config.steps < recipe.train.steps
    base = {k: v for k, v in as_written.items() if k != "sweep"}
    check_space_edges(SweepPlan(base, config, config.dimensions(), Path("unused")))


def test_trials_run_equal_steps_without_the_recipes_time_budget():
    """The quickstart trains under a time budget; its sweep's trials must not, or each would run its own length."""
    recipe, config, as_written = load_sweep_recipe("quickstart", [])
    assert recipe.train.max_minutes is not None
    base = {k: v for k, v in as_written.items() if k != "sweep"}
    trial = SweepPlan(base, config, config.dimensions(), Path("unused")).trial_train_dict({}, Path("t"))["train"]
    assert trial["max_minutes"] is None and trial["steps"] == config.steps
