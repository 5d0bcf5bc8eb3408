"""A training recipe is checked before any work starts; every mistake is one line and exit code 2."""

from __future__ import annotations

import pytest
import yaml

from lmsmith.cli import main
from lmsmith.schema.stage import stage_config
from lmsmith.schema.train import train_recipe_of
from lmsmith.stages import TRAIN


def load_recipe(path, overrides=()):
    """The training recipe `lmsmith train --config PATH KEY=VALUE...` runs."""
    return train_recipe_of(stage_config(TRAIN, path, list(overrides)))


def train_cli(capsys, recipe, *args) -> tuple[int, str]:
    code = main(["train", "--config", str(recipe), *map(str, args), "--quiet"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("override,message", [
    ("train.lerning_rate=1", "unknown key 'train.lerning_rate'"),
    ("train.lrr=1", "did you mean 'lr'"),
    ("train.steps=many", "train.steps: expected a whole number"),
    ("train.precision=fp8", "'fp8' is not one of"),
    ("train.data_order=sequential", "'sequential' is not one of 'epochs', 'random'"),
    ("train.warmup_steps=50", "warmup_steps (50) must be fewer than train.steps (40)"),
    ("train.batch_tokens=300", "train.batch_tokens=300 does not divide into micro-batches of 4 x 32 tokens = 128: "
                               "use train.batch_tokens=256 or 384"),
    ("model.n_embd=33", "not divisible by model.n_head"),
    ("trian.steps=3", "unknown key 'trian.steps': did you mean 'train'?"),
    ("train.short_context=12", "train.short_context (12) must divide model.block_size (32) and be smaller: "
                               "e.g. train.short_context=16"),
    ("train.short_context=32", "train.short_context (32) must divide model.block_size (32)"),
    ("train.short_context_share=1", "train.short_context_share must be between 0 and 1"),
])
def test_config_mistakes_exit_2_before_any_work(tmp_path, recipe_file, capsys, override, message):
    code, err = train_cli(capsys, recipe_file(tmp_path / "run"), override)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_global_batch_must_divide_over_ranks(tmp_path, recipe_file, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(Exception, match=r"4 x 32 tokens x 3 ranks = 384: use train.batch_tokens=384 or 768"):
        load_recipe(recipe_file(tmp_path / "run"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Exception, match="muon needs whole matrices"):
        load_recipe(recipe_file(tmp_path / "run", optimizer="muon", parallel="fsdp"))


def test_other_stages_sections_are_left_alone(tmp_path, recipe_file):
    path = recipe_file(tmp_path / "run")
    raw = yaml.safe_load(path.read_text())
    raw.update(curate={"split": {"val_fraction": 0.05}}, tokenizer={"vocab_size": 4096})
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path, ["train.lr=3e-4"])
    assert recipe.train.lr == 3e-4 and recipe.model.n_layer == 2


@pytest.mark.parametrize("overrides,message", [
    (["model.vocab_size=100"], "model.vocab_size (100) is smaller than the vocabulary"),
    (["model.block_size=8000", "train.batch_tokens=32000"],
     "has 6701 tokens, fewer than block_size + 1 = 8001: lower model.block_size"),
])
def test_data_that_does_not_fit_the_model(tmp_path, recipe_file, capsys, overrides, message, one_thread):
    code, err = train_cli(capsys, recipe_file(tmp_path / "run"), *overrides)
    assert code == 2 and message in err, err


def test_data_without_or_with_a_foreign_manifest(tmp_path, recipe_file, capsys, tokenizer_dir):
    code, err = train_cli(capsys, recipe_file(tmp_path / "run"), f"data={tmp_path}")
    assert code == 2 and "has no manifest.json" in err and "lmsmith tokenize" in err
    code, err = train_cli(capsys, recipe_file(tmp_path / "run"), f"data={tokenizer_dir}")
    assert code == 2 and "has no manifest.json" in err
    (tmp_path / "curated").mkdir()
    (tmp_path / "curated" / "manifest.json").write_text('{"stage": "curate"}')
    code, err = train_cli(capsys, recipe_file(tmp_path / "run"), f"data={tmp_path / 'curated'}")
    assert code == 2 and "made by stage 'curate', but tokenize output is needed" in err


def test_an_existing_run_is_continued_only_when_asked(tmp_path, recipe_file, capsys, one_thread):
    recipe = recipe_file(tmp_path / "run", steps=8, save_every=4, eval_every=4)
    assert train_cli(capsys, recipe)[0] == 0
    code, err = train_cli(capsys, recipe)
    assert code == 2 and "already holds a run: continue it with --resume auto" in err
    code, err = train_cli(capsys, recipe, "model.n_layer=3", "train.steps=12", "--resume", "auto")
    assert code == 2 and "was made for another model (n_layer 2 vs 3)" in err
    code, err = train_cli(capsys, recipe, "train.steps=12", "train.optimizer=muon", "--resume", "auto")
    assert code == 2 and "does not fit this run's optimizer" in err
    code, err = train_cli(capsys, recipe, "train.steps=6", "--resume", "auto")
    assert code == 2 and "past train.steps=6" in err
    code, err = train_cli(capsys, recipe, "train.steps=12", "--resume", str(tmp_path))
    assert code == 2 and "is not a checkpoint" in err
    # Raising the step count continues the run from the checkpoint named (or with auto, the newest).
    assert train_cli(capsys, recipe, "train.steps=12",
                     "--resume", str(tmp_path / "run" / "checkpoints" / "step-000008"))[0] == 0
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000008", "step-000012"]


def test_logging_to_a_service_that_is_not_installed_is_refused_first(tmp_path, recipe_file, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # as if not installed
    code, err = train_cli(capsys, recipe_file(tmp_path / "run"), "train.tensorboard=true")
    assert code == 2 and "pip install 'lmsmith[tensorboard]'" in err
    assert not (tmp_path / "run").exists()
