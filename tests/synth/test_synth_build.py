"""synth as a step of `lmsmith build`: the finetune step after it reads its items by itself, against a real
`lmsmith serve` of a tiny model on a free loopback port that the recipe names; and which data a finetune step
reads when the recipe also names a file, planned without running anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from serve_models import KEY
from synth_documents import TOPICS, passage

from lmsmith.build import Workdir, plan
from lmsmith.cli import main
from lmsmith.core.errors import UserError
from lmsmith.core.output import write_manifest
from lmsmith.finetune.synth_items import synth_items_file
from lmsmith.schema.recipe import load_recipe
from lmsmith.stages import STAGE_BY_NAME

TEACHER = "teacher"  # the name conftest serves it under


@pytest.fixture(scope="module")
def teacher(served_teacher):
    """The tiny served teacher of conftest; it is also the model the build fine-tunes."""
    return served_teacher


def recipe(tmp_path: Path, docs: Path, synth: dict, finetune: dict, base: str) -> Path:
    prompt = tmp_path / "prompt.jinja"
    prompt.write_text("Ask {{ n }} about:\n{{ passage }}\n", encoding="utf-8")
    steps = {
        "synth": {"synth": {"inputs": [str(docs)], "prompt": str(prompt), "items_per_passage": 1,
                            "max_field_chars": 12, "max_new_tokens": 300, "min_support": 0, "temperature": 1.0,
                            **synth}},
        "sft": {"stage": "finetune", "from": {"base": base},
                "finetune": {"template": "plain", "val_fraction": 0.25, **finetune},
                "train": {"steps": 2, "eval_every": 2, "micro_batch": 4, "log_every": 100, "peak_flops": 1e11}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"steps": steps}, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def many_docs(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for topic in TOPICS:
        (folder / f"{topic}.md").write_text(passage(topic) + "\n", encoding="utf-8")
    return folder


def test_a_build_runs_synth_then_fine_tunes_on_its_items_without_naming_them(teacher, many_docs, tmp_path,
                                                                             one_thread, capsys):
    synth = {"endpoint": teacher.url, "model": TEACHER, "api_key_file": str(teacher.key_file), "concurrency": 4}
    path = recipe(tmp_path, many_docs, synth, {}, str(teacher.model))
    work = tmp_path / "work"
    assert main(["build", str(path), "-o", str(work), "--quiet"]) == 0
    items = work / "synth" / "qa.jsonl"
    written = items.read_text().splitlines()
    assert len(written) >= len(TOPICS) - 2  # a random teacher's items may collide as duplicates
    report = json.loads((work / "runs" / "sft" / "finetune.json").read_text())
    assert report["data"]["kind"] == "instruct" and report["data"]["path"] == str(items.resolve())
    assert report["steps"] == 2

    capsys.readouterr()
    assert main(["build", str(path), "-o", str(work)]) == 0  # nothing changed: neither step runs again
    shown = capsys.readouterr().out
    assert "[synth] up to date" in shown and "[sft] up to date" in shown
    for file in work.rglob("*"):
        if file.is_file() and file.suffix in (".json", ".jsonl", ".yaml"):
            assert KEY not in file.read_text(errors="replace"), file


def planned_data(tmp_path: Path, finetune: dict, sources: dict | None = None) -> str:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "a.md").write_text(passage("invoice"))
    path = recipe(tmp_path, docs, {"endpoint": "http://127.0.0.1:9/v1", "model": TEACHER}, finetune,
                  str(tmp_path))
    loaded = load_recipe(str(path), [f"steps.sft.from.{k}={v}" for k, v in (sources or {}).items()], STAGE_BY_NAME)
    steps = plan(loaded, Workdir(tmp_path / "work"))
    return steps[1].inputs["data"]


def test_a_finetune_step_reads_the_synth_step_unless_it_names_its_own_data(tmp_path):
    assert planned_data(tmp_path, {}) == str((tmp_path / "work" / "synth").resolve())
    own = tmp_path / "own.jsonl"
    own.write_text("")
    assert planned_data(tmp_path, {"data": str(own)}) == str(own)
    # from: names the step explicitly, and wins over the file.
    assert planned_data(tmp_path, {"data": str(own)}, {"data": "synth"}) == str((tmp_path / "work" / "synth")
                                                                               .resolve())


@pytest.mark.parametrize("kind, mode, fits", [("qa", "instruct", True), ("conversation", "instruct", True),
                                              ("pairs", "dpo", True), ("exam", "rl", True),
                                              ("pairs", "instruct", False), ("qa", "dpo", False),
                                              ("labels", "instruct", False), ("qa", "continue", False)])
def test_a_synth_directory_gives_the_file_of_the_kind_the_mode_reads(tmp_path, kind, mode, fits):
    write_manifest(tmp_path, "synth", config={"kind": kind}, counts={"finished": True})
    if fits:
        assert synth_items_file(tmp_path, mode) == str(tmp_path / f"{kind}.jsonl")
    else:
        with pytest.raises(UserError, match=f"holds synth kind '{kind}', which --mode {mode} cannot read"):
            synth_items_file(tmp_path, mode)


def test_an_unfinished_synth_directory_is_refused(tmp_path):
    write_manifest(tmp_path, "synth", config={"kind": "qa"}, counts={"finished": False})
    with pytest.raises(UserError, match="did not finish: run the same synth command again"):
        synth_items_file(tmp_path, "instruct")
