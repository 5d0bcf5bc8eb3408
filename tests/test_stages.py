"""The registry of stages and the one command-line dialect: every verb reads its line the same way,
every shipped recipe parses with every verb that reads it, and no -o ever replaces a user's folder."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest
import yaml

from lmsmith.cli import VERBS as STAGES
from lmsmith.cli import main, parse_command
from lmsmith.schema.recipe import load_recipe, shipped_recipes
from lmsmith.schema.sections import SECTIONS
from lmsmith.schema.stage import field_type, stage_config
from lmsmith.stages import STAGE_BY_NAME

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def generic(stage) -> bool:
    """Stages whose config is their sections (build and sweep read a recipe, finetune has its own defaults)."""
    return stage.load_config is None and bool(stage.sections)


def all_sections() -> dict[str, type]:
    return SECTIONS


def stage_named(name: str):
    return next(s for s in STAGES if s.name == name)


def test_the_classic_journey_is_the_registry_stages_in_order():
    classic = tuple(s.name for s in STAGE_BY_NAME.values() if s.in_build)
    assert classic == ("curate", "tokenizer", "tokenize", "train", "eval", "generate", "report", "explain")


def test_every_section_a_stage_reads_is_in_the_schema_with_the_same_dataclass():
    for stage in STAGES:
        for name, cls in stage.sections.items():
            assert SECTIONS[name] is cls, (stage.name, name)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_flag_sets_a_real_config_key(stage):
    for flag in stage.flags:
        section, _, key = flag.key.partition(".")
        assert section in stage.sections and field_type(stage.sections[section], key) is not None, flag


def recipe_files() -> list[Path]:
    return sorted(CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("path", recipe_files(), ids=lambda p: p.name)
def test_every_shipped_recipe_parses_with_every_verb_that_reads_it(path):
    raw = yaml.safe_load(path.read_text()) or {}
    sections = set(all_sections())
    readers = []
    for stage in STAGES:
        if not generic(stage):
            continue
        if set(raw) & sections:
            if set(raw) & set(stage.sections):
                readers.append(stage)
        elif all(field_type(stage.sections[stage.own_section], str(k)) is not None for k in raw):
            readers.append(stage)  # a file of bare keys belongs to the stage whose section has them all
    assert readers, f"no verb reads {path.name}"
    for stage in readers:
        stage_config(stage, path)
    if path.stem in shipped_recipes():
        load_recipe(path.stem)


def test_the_train_verb_reads_the_gpt2_recipe_of_the_readme():
    command = parse_command(["train", "tokens/", "-o", "runs/gpt2", "--config", str(CONFIGS / "gpt2-124m.yaml")])
    assert command.config.model.n_layer == 12 and command.inputs["tokens"] == "tokens/"


@pytest.mark.parametrize("argv", [
    ["eval", "train.lr=1", "run/", "--split", "val"],
    ["eval", "run/", "eval.batch_size=4", "--split", "val"],
    ["eval", "run/", "--split", "val", "eval.batch_size=4"],
    ["eval", "eval.batch_size=4", "--split", "val", "run/"],
])
def test_overrides_stand_anywhere_on_the_line(argv):
    if "train.lr=1" in argv:
        with pytest.raises(Exception, match="does not read the train: section"):
            parse_command(argv)
        return
    command = parse_command(argv)
    assert command.inputs["model"] == "run/" and command.config.eval.batch_size == 4
    assert command.config.eval.split == "val"


MISSPELT = {"curate": "dedupp.threshold=0.9", "tokenizer": "vocab_sise=300", "tokenize": "shard_tokenz=5",
            "init": "model.n_layr=2", "train": "train.lrr=1", "eval": "batchsize=2", "generate": "temperatur=0",
            "finetune": "lora.rnk=2"}
SUGGESTED = {"curate": "dedup", "tokenizer": "vocab_size", "tokenize": "shard_tokens", "init": "n_layer",
             "train": "lr", "eval": "batch_size", "generate": "temperature", "finetune": "rank"}


@pytest.mark.parametrize("name", sorted(MISSPELT))
def test_a_misspelt_key_gets_the_closest_known_key_in_every_verb(name, capsys):
    stage = stage_named(name)
    argv = [*stage.words, "x", "-o", "out", MISSPELT[name]]
    if name == "tokenize":
        argv += ["-t", "tok"]
    if name == "init":
        argv = [*stage.words, "--tokenizer", "tok", "-o", "out", MISSPELT[name]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{SUGGESTED[name]}'" in err, err


def test_a_config_file_given_as_an_input_names_the_flag(capsys):
    assert main(["train", "configs/tiny.yaml"]) == 2
    assert "--config configs/tiny.yaml" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# No -o replaces a folder of the user's own files


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Real outputs of each stage, made through the CLI on a small slice of the standard library."""
    root = tmp_path_factory.mktemp("stages")
    text = root / "text"
    text.mkdir()
    for name in ("textwrap.py", "argparse.py", "shlex.py"):
        shutil.copy(STDLIB / name, text / f"{name}.txt")
    model = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32"]
    steps = ["train.steps=4", "train.batch_tokens=128", "train.micro_batch=4", "train.warmup_steps=0",
             "train.eval_every=4", "train.eval_batches=1"]
    assert main(["tokenizer", "train", str(text), "-o", str(root / "tok"), "--vocab-size", "300", "--quiet"]) == 0
    assert main(["tokenize", str(text), "-t", str(root / "tok"), "-o", str(root / "tokens"), "--quiet"]) == 0
    assert main(["train", str(root / "tokens"), "-o", str(root / "run"), *model, *steps, "--quiet"]) == 0
    return root


def user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my own notes")
    return folder


def verb_lines(made: Path, out: Path) -> dict[str, list[str]]:
    return {
        "curate": ["curate", str(made / "text"), "-o", str(out)],
        "tokenizer": ["tokenizer", "train", str(made / "text"), "-o", str(out)],
        "tokenize": ["tokenize", str(made / "text"), "-t", str(made / "tok"), "-o", str(out)],
        "init": ["init", "--tokenizer", str(made / "tok"), "-o", str(out)],
        "train": ["train", str(made / "tokens"), "-o", str(out)],
        "eval": ["eval", str(made / "run"), "--split", "val", "-o", str(out)],
        "generate": ["generate", str(made / "run"), "--max-new-tokens", "2", "-o", str(out)],
        "convert": ["convert", "--to-hf", str(made / "run" / "model"), "-o", str(out)],
        "report": ["report", str(made / "run"), "-o", str(out)],
        "build": ["build", "quickstart", "-o", str(out)],
    }


@pytest.mark.parametrize("verb", ["curate", "tokenizer", "tokenize", "init", "train", "eval", "generate", "convert",
                                  "report", "build"])
def test_no_verb_writes_over_a_folder_of_the_users_files(verb, made, tmp_path, capsys):
    if verb == "convert":
        pytest.importorskip("transformers")
    folder = user_folder(tmp_path)
    assert main([*verb_lines(made, folder)[verb], "--quiet"]) == 2
    assert (folder / "notes.txt").read_text() == "my own notes"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert capsys.readouterr().err.count("\n") == 1


def test_a_file_the_user_put_into_an_earlier_output_is_never_deleted(made, tmp_path, capsys):
    out = tmp_path / "tok"
    line = ["tokenizer", "train", str(made / "text"), "-o", str(out), "--vocab-size", "300", "--quiet"]
    assert main(line) == 0
    (out / "mine.txt").write_text("keep me")
    assert main(line) == 2
    assert "mine.txt" in capsys.readouterr().err and (out / "mine.txt").read_text() == "keep me"


def test_a_trained_model_is_replaced_only_with_force(made, tmp_path, capsys):
    out = tmp_path / "m"
    shutil.copytree(made / "run" / "model", out)
    line = ["init", "--tokenizer", str(made / "tok"), "-o", str(out), "model.n_layer=1", "--quiet"]
    assert main(line) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*line, "--force"]) == 0


def test_an_output_may_not_be_its_input_or_hold_it(made, tmp_path, capsys):
    assert main(["curate", str(made / "text"), "-o", str(made / "text"), "--quiet"]) == 2
    assert main(["curate", str(made / "text"), "-o", str(made), "--quiet"]) == 2
    assert capsys.readouterr().err.count("would replace the input") == 2


def test_a_dangling_link_as_output_is_refused(made, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    assert main(["tokenizer", "train", str(made / "text"), "-o", str(link), "--quiet"]) == 2
    assert "link to nothing" in capsys.readouterr().err and link.is_symlink()


def _dead_pid() -> int:
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# Names beside -o tok: what a killed lmsmith left is removed; a user's own look-alikes and a live run's are kept.
LEFTOVERS = {
    "killed-run-temporary": (lambda: f".tok.lmsmith-{_dead_pid()}-abc123.tmp", False),
    "killed-run-backup": (lambda: f".tok.lmsmith-{_dead_pid()}-abc123.old", False),
    "users-own-old": (lambda: ".tok.old", True),
    "users-own-tmp": (lambda: ".tok.abc123.tmp", True),
    "live-runs-temporary": (lambda: ".tok.lmsmith-1-abc123.tmp", True),  # process 1 is always alive
}


@pytest.mark.parametrize("name, kept", LEFTOVERS.values(), ids=LEFTOVERS.keys())
def test_leftovers_of_a_killed_stage_are_removed_on_the_next_run(made, tmp_path, name, kept):
    out = tmp_path / "tok"
    leftover = tmp_path / name()
    leftover.mkdir()
    (leftover / "tokenizer.json").write_text("half")
    assert main(["tokenizer", "train", str(made / "text"), "-o", str(out), "--vocab-size", "300", "--quiet"]) == 0
    assert leftover.exists() is kept and (out / "tokenizer.json").is_file()
    if kept:
        assert (leftover / "tokenizer.json").read_text() == "half"


def test_eval_and_generate_write_what_build_writes(made, tmp_path):
    assert main(["eval", str(made / "run"), "--split", "val", "-o", str(tmp_path / "ev"), "--quiet"]) == 0
    assert main(["generate", str(made / "run"), "--max-new-tokens", "3", "--seed", "0", "-o", str(tmp_path / "s"),
                 "--quiet"]) == 0
    import json

    scored = json.loads((tmp_path / "ev" / "result.json").read_text())
    samples = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert scored["split"] == "val" and scored["loss"] > 0
    assert samples[0]["prompt"] == "" and isinstance(samples[0]["text"], str)
    assert json.loads((tmp_path / "ev" / "manifest.json").read_text())["stage"] == "eval"


def test_a_run_directory_is_locked_while_a_run_writes_it(made, tmp_path, capsys):
    import os

    from lmsmith.core.output import LOCK

    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    (run / LOCK).write_text(f"{os.getppid()} now\n")  # a live process that is not this one
    assert main(["train", str(made / "tokens"), "-o", str(run), "--resume", "auto", "model.n_layer=1",
                 "model.n_head=2", "model.n_embd=32", "model.block_size=32", "train.steps=6",
                 "train.batch_tokens=128", "train.micro_batch=4", "train.warmup_steps=0", "--quiet"]) == 2
    assert "is writing to" in capsys.readouterr().err


def test_tokenizer_train_reads_a_curated_directory_and_sample_mb(made, tmp_path):
    data = tmp_path / "data"
    assert main(["curate", str(made / "text"), "-o", str(data), "--quiet", "--workers", "1",
                 "split.val_fraction=0.2", "split.test_fraction=0.2"]) == 0
    assert main(["tokenizer", "train", str(data), "-o", str(tmp_path / "tok"), "--vocab-size", "300",
                 "--sample-mb", "0.01", "--quiet"]) == 0
    import json

    manifest = json.loads((tmp_path / "tok" / "manifest.json").read_text())
    assert manifest["inputs"]["data"]["path"] == str(data) and manifest["config"]["sample_mb"] == 0.01


def test_every_stage_runs_a_function_even_after_every_module_is_imported():
    """A submodule named like a package's function replaces it on import (finetune/run.py once did)."""
    import importlib
    import inspect
    import pkgutil

    import lmsmith

    for module in pkgutil.walk_packages(lmsmith.__path__, "lmsmith."):
        if module.name != "lmsmith.__main__":  # that one runs the CLI
            importlib.import_module(module.name)
    for stage in STAGES:
        assert inspect.isfunction(stage.run), stage.name
        owner = importlib.import_module(stage.run.__module__)
        assert inspect.isfunction(getattr(owner, stage.run.__name__)), f"{owner.__name__}.{stage.run.__name__}"
