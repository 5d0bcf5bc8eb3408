"""`lmsmith build`: a shortened recipe end to end, skipping what is up to date, --force, resuming, bad input.

The recipe curates a few dozen standard-library modules and trains a model of a few thousand
parameters for a few dozen steps, so one whole build takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import lmsmith.train.trainer as train_trainer
from lmsmith.build import Workdir, build
from lmsmith.cli import main
from lmsmith.core.config import ConfigError
from lmsmith.core.errors import UserError
from lmsmith.evaluate.heldout import evaluate
from lmsmith.schema.evaluate import EvalConfig
from lmsmith.schema.recipe import find_recipe, load_recipe, shipped_recipes
from lmsmith.stages import STAGE_BY_NAME
from lmsmith.text.tokenizer import load_tokenizer


def build_stage_names() -> list[str]:
    """The steps of the classic journey, in order."""
    return [name for name, stage in STAGE_BY_NAME.items() if stage.in_build]


def result_json(work: Path, step: str, name: str):
    return json.loads((Workdir(work).output(step) / name).read_text(encoding="utf-8"))


ROOT = Path(__file__).resolve().parents[1]
TRAIN_STEPS = 30

TINY = {
    "curate": {
        "inputs": ["stdlib"],
        "sources": {"include": ["json/*.py", "email/*.py", "textwrap.py", "argparse.py"]},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2},
        "workers": 1,
    },
    "tokenizer": {"vocab_size": 320},
    "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
    "train": {"steps": TRAIN_STEPS, "batch_tokens": 256, "micro_batch": 8, "warmup_steps": 3, "eval_every": 10,
              "eval_batches": 2, "save_every": 5, "log_every": 5, "peak_flops": 1.0e11},
    "eval": {"batch_size": 64},
    "generate": {"prompts": ["def ", ""], "max_new_tokens": 8, "seed": 0},
}


@pytest.fixture(autouse=True)
def _every_test_on_one_thread(one_thread):
    """Tiny models run fastest on one thread (one_thread is in tests/conftest.py)."""


def write_recipe(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One whole tiny build; the tests below build again in the same directory or a copy of its recipe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("build")
    recipe_file = write_recipe(root / "tiny.yaml", TINY)
    result = build(load_recipe(recipe_file), root / "work", quiet=True)
    torch.set_num_threads(before)
    return recipe_file, root / "work", result


def manifests(work: Path) -> dict[str, str]:
    return {stage: (Workdir(work).output(stage) / "manifest.json").read_text() for stage in build_stage_names()}


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


# ---------------------------------------------------------------------------------------------
# A whole build


def test_a_build_runs_every_stage_into_its_directory(built):
    _, work, result = built
    assert result.ran == list(build_stage_names()) and result.skipped == []
    w = Workdir(work)
    for stage in build_stage_names():
        assert (w.output(stage) / "manifest.json").is_file(), stage
    tokens = json.loads((w.output("tokenize") / "manifest.json").read_text())
    assert tokens["config"]["tokenizer_sha256"] == load_tokenizer(w.output("tokenizer")).sha256
    assert all(tokens["counts"][split]["tokens"] > 0 for split in ("train", "val", "test"))
    run = json.loads((w.folder("train") / "manifest.json").read_text())
    assert run["counts"]["steps"] == TRAIN_STEPS


def test_the_build_scores_the_whole_test_split_of_its_model(built):
    _, work, result = built
    w = Workdir(work)
    direct = evaluate(w.output("train"), w.output("tokenize"), EvalConfig(split="test", batch_size=64),
                      quiet=True).to_dict()
    scored = result_json(work, "eval", "result.json")
    assert scored.pop("compressors") == pytest.approx(direct.pop("compressors"))
    assert scored == pytest.approx(direct) and scored["split"] == "test"
    tokens = json.loads((w.output("tokenize") / "manifest.json").read_text())
    assert result_json(work, "eval", "result.json")["tokens"] == tokens["counts"]["test"]["tokens"] - 1
    assert [s["prompt"] for s in result_json(work, "generate", "samples.json")] == ["def ", ""]
    assert all(s["text"] for s in result_json(work, "generate", "samples.json"))


def test_a_second_build_skips_every_stage(built, capsys):
    recipe_file, work, _ = built
    before = manifests(work)
    assert main(["build", str(recipe_file), "-o", str(work)]) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") == len(build_stage_names()) and "running" not in out
    assert manifests(work) == before
    # Even with nothing to do, it ends with the scores and the samples.
    assert "perplexity" in out and "bits per byte" in out and "prompt 'def '" in out


def test_force_redoes_a_stage_and_every_stage_after_it(built):
    recipe_file, work, _ = built
    before = manifests(work)
    result = build(load_recipe(recipe_file), work, force=["tokenize"], quiet=True)
    assert result.skipped == ["curate", "tokenizer"]
    assert result.ran == ["tokenize", "train", "eval", "generate", "report", "explain"]
    after = manifests(work)
    assert after["tokenizer"] == before["tokenizer"] and after["train"] != before["train"]
    # Retraining from scratch on the same tokens gives the same model: the run is a function of the seed.
    assert json.loads(after["eval"])["counts"]["loss"] == pytest.approx(json.loads(before["eval"])["counts"]["loss"])


def test_a_changed_setting_reruns_its_stage_and_those_after(built):
    recipe_file, work, _ = built
    result = build(load_recipe(recipe_file, ["eval.stride=8"]), work, quiet=True)
    assert result.ran == ["eval", "report"]  # the samples (and the explanation of one) do not depend on eval settings
    assert result_json(work, "eval", "result.json")["stride"] == 8
    result = build(load_recipe(recipe_file, ["generate.max_new_tokens=4"]), work, quiet=True)
    # eval back to its recipe stride; samples with the new length
    assert result.ran == ["eval", "generate", "report", "explain"]


def test_until_stops_after_a_stage(tmp_path):
    recipe_file = write_recipe(tmp_path / "tiny.yaml", TINY)
    result = build(load_recipe(recipe_file), tmp_path / "work", until="tokenizer", quiet=True)
    assert result.ran == ["curate", "tokenizer"]
    assert not Workdir(tmp_path / "work").output("tokenize").exists()


# ---------------------------------------------------------------------------------------------
# Interrupted training continues


def test_an_interrupted_build_resumes_training_where_it_stopped(built, tmp_path, monkeypatch):
    recipe_file, reference_work, _ = built
    steps_run = []
    real_step = train_trainer.train_step

    def counting_step(*args, **kwargs):
        steps_run.append(args[4])  # the step number
        if len(steps_run) == 12 and interrupt:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends: the loop checkpoints and stops
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_trainer, "train_step", counting_step)
    work = tmp_path / "work"
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        build(load_recipe(recipe_file), work, quiet=True)
    stopped_at = len(steps_run)
    assert 12 <= stopped_at < TRAIN_STEPS
    assert not (Workdir(work).output("train") / "manifest.json").exists()

    interrupt, steps_run[:] = False, []
    result = build(load_recipe(recipe_file), work, quiet=True)
    assert result.skipped == ["curate", "tokenizer", "tokenize"]
    assert steps_run == list(range(stopped_at, TRAIN_STEPS))  # continued, not started over
    # ... and ended with exactly the model of the build that was never interrupted.
    resumed, reference = weights(Workdir(work).output("train")), weights(Workdir(reference_work).output("train"))
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_training_under_torchrun_gives_the_model_of_one_process(built, tmp_path):
    recipe_file, _, _ = built
    # fp32: bf16 would blur the comparison; the two ranks split the same global batch one process accumulates.
    recipe = load_recipe(recipe_file, ["train.precision=fp32", "train.device=cpu", "train.steps=8",
                                         "train.micro_batch=4"])
    work = tmp_path / "work"
    build(recipe, work, until="train", quiet=True)
    one = weights(Workdir(work).output("train"))
    result = build(recipe, work, until="train", force=["train"], nproc_per_node=2, quiet=True)
    assert result.ran == ["train"]
    with pytest.raises(ConfigError, match="x 3 ranks"):  # refused before any stage runs
        build(recipe, work, nproc_per_node=3, quiet=True)
    assert json.loads((Workdir(work).folder("train") / "manifest.json").read_text())["counts"]["steps"] == 8
    two = weights(Workdir(work).output("train"))
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)


# ---------------------------------------------------------------------------------------------
# Plain text files, without curation


def test_a_recipe_without_curate_tokenizes_plain_files(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 200)
    raw = {
        "tokenizer": {"kind": "char", "vocab_size": None},
        "tokenize": {"inputs": [str(text)], "val_fraction": 0.1},
        "model": TINY["model"],
        "train": {**TINY["train"], "steps": 6, "eval_every": 3},
        "eval": {"split": "val"},
        "generate": {"prompts": ["To be"], "max_new_tokens": 5},
    }
    result = build(load_recipe(write_recipe(tmp_path / "char.yaml", raw)), tmp_path / "work", quiet=True)
    assert result.ran == ["tokenizer", "tokenize", "train", "eval", "generate", "report", "explain"]
    assert load_tokenizer(Workdir(tmp_path / "work").output("tokenizer")).kind == "char"
    scored = result_json(tmp_path / "work", "eval", "result.json")
    assert scored["split"] == "val" and scored["tokens"] > 0


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("change, message", [
    ({"trian": {}}, "unknown stage 'trian' in the recipe: did you mean 'train'?"),
    ({"train": {"stepz": 3}}, "unknown key 'train.stepz': did you mean 'steps'?"),
    ({"curate": {"inputs": ["stdlib"], "split": {"val_fraction": 0.2, "test_fractoin": 0.1}}},
     "unknown key 'curate.split.test_fractoin': did you mean 'test_fraction'?"),
    ({"curate": {"inputs": []}}, "curate.inputs is empty"),
    ({"eval": {"context": 64}}, "eval.context (64) is longer than model.block_size (32)"),
    ({"train": {**TINY["train"], "batch_tokens": 300}}, "train.batch_tokens=300 does not divide"),
])
def test_a_bad_recipe_is_one_clear_error(tmp_path, change, message):
    recipe_file = write_recipe(tmp_path / "bad.yaml", {**TINY, **change})
    with pytest.raises(ConfigError) as caught:
        load_recipe(recipe_file)
    assert message in str(caught.value)


def test_a_recipe_without_any_input_says_where_to_put_one(tmp_path):
    raw = {k: v for k, v in TINY.items() if k != "curate"}
    with pytest.raises(ConfigError, match="the recipe has no input: add a curate: section"):
        load_recipe(write_recipe(tmp_path / "bad.yaml", raw))
    raw["tokenize"] = {"inputs": ["notes.txt"]}
    with pytest.raises(ConfigError, match="eval.split is test, but plain text files are only split into train and val"):
        load_recipe(write_recipe(tmp_path / "bad.yaml", raw))


def test_a_missing_input_is_refused_before_any_work(tmp_path, capsys):
    recipe_file = write_recipe(
        tmp_path / "r.yaml", {**TINY, "curate": {**TINY["curate"], "inputs": [str(tmp_path / "gone")]}}
    )
    assert main(["build", str(recipe_file), "-o", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert f"input '{tmp_path / 'gone'}' does not exist" in err and err.count("\n") == 1
    assert not (tmp_path / "work").exists()


def test_a_deleted_stage_output_is_made_again(built):
    recipe_file, work, _ = built
    import shutil

    shutil.rmtree(Workdir(work).output("tokenize"))
    result = build(load_recipe(recipe_file), work, quiet=True)
    assert result.skipped[:2] == ["curate", "tokenizer"] and result.ran[0] == "tokenize"
    assert (Workdir(work).output("tokenize") / "manifest.json").is_file()


def test_bad_build_options_are_refused(built, tmp_path, capsys):
    recipe_file, work, _ = built
    assert main(["build", str(recipe_file), "-o", str(work), "--force", "trainn"]) == 2
    assert (
        "--force trainn: not a step; the steps are curate, tokenizer, tokenize, train, eval, generate"
        in capsys.readouterr().err
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    assert main(["build", str(recipe_file), "-o", str(tmp_path / "mine")]) == 2
    assert "already holds files that no build made" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert main(["build", "quickstrat", "-o", str(tmp_path / "w")]) == 2
    assert "did you mean 'quickstart'?" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The shipped recipes


def test_the_default_recipe_is_the_shipped_quickstart():
    assert find_recipe(None) == find_recipe("quickstart")
    assert find_recipe(None).parent.name == "configs" and find_recipe(None).parent.parent.name == "lmsmith"
    recipe = load_recipe()
    assert recipe.curate.inputs == ["stdlib:no-tests"] and recipe.eval.split == "test"
    assert len(recipe.generate.prompts) == 3


@pytest.mark.parametrize("name", ["quickstart", "shakespeare-char", "shakespeare-char-cpu", "tinystories", "gpt2-124m"])
def test_every_shipped_recipe_loads_and_is_the_file_in_configs(name):
    assert name in shipped_recipes()
    packaged = find_recipe(name)
    in_repo = ROOT / "configs" / f"{name}.yaml"
    assert in_repo.read_text() == packaged.read_text()  # one source of truth
    head = packaged.read_text().splitlines()[0]
    assert head.startswith(f"# {name}:")  # the header says what it makes
    load_recipe(packaged)


def test_a_build_killed_during_its_first_step_continues_with_the_same_command(tmp_path, monkeypatch):
    import lmsmith.build as build_module

    recipe_file = write_recipe(tmp_path / "tiny.yaml", TINY)
    real_run_step = build_module.run_step

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what SIGINT (or a kill, for what is left on disk) does during curate

    monkeypatch.setattr(build_module, "run_step", killed)
    with pytest.raises(KeyboardInterrupt):
        build(load_recipe(recipe_file), tmp_path / "work", until="curate", quiet=True)
    monkeypatch.setattr(build_module, "run_step", real_run_step)
    result = build(load_recipe(recipe_file), tmp_path / "work", until="curate", quiet=True)
    assert result.ran == ["curate"]


def test_a_dangling_link_as_the_work_directory_is_one_line(tmp_path):
    recipe_file = write_recipe(tmp_path / "tiny.yaml", TINY)
    link = tmp_path / "work"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="is a link to nothing"):
        build(load_recipe(recipe_file), link, quiet=True)
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_the_summary_says_what_a_run_trained_and_when_it_is_short_of_its_recipe(built, capsys):
    from lmsmith.core.manifest import read_manifest
    from lmsmith.schema.train import run_summary

    _, work, _ = built
    manifest = read_manifest(Workdir(work).folder("train"), "train")
    tokens = manifest["counts"]["tokens"]
    assert run_summary(manifest).startswith(f"trained {tokens / 1e6:.2f}M tokens in {TRAIN_STEPS} steps (")
    assert manifest["counts"]["device"] == "cpu" and "expect a weaker model" not in run_summary(manifest)
    manifest["config"]["train"].update(reference_tokens=4 * tokens, max_minutes=2.0)
    short = run_summary(manifest)
    assert "25% of the" in short and "expect a weaker model" in short and "lmsmith build --minutes 8" in short
    assert main(["build", str(built[0]), "-o", str(work)]) == 0
    assert f"trained {tokens / 1e6:.2f}M tokens in {TRAIN_STEPS} steps" in capsys.readouterr().out
