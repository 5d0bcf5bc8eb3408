"""`lmsmith report`: rendered from a real build (curate, tokenizer, tokenize, train, eval, generate) of a tiny model."""

from __future__ import annotations

import base64
import html
import json
import re
import sysconfig
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")

from lmsmith.build import build
from lmsmith.cli import main
from lmsmith.core.errors import UserError
from lmsmith.report.page import OPTIONAL_PNGS, PNGS, REPORT_HTML, write_report
from lmsmith.schema.recipe import recipe_from_dict
from lmsmith.schema.stage import stage_config
from lmsmith.schema.train import train_recipe_of
from lmsmith.stages import TRAIN
from lmsmith.train.loop import train


def load_train_recipe(path, overrides=()):
    """The training recipe `lmsmith train --config PATH KEY=VALUE...` runs."""
    return train_recipe_of(stage_config(TRAIN, path, list(overrides)))

STDLIB = Path(sysconfig.get_paths()["stdlib"])
PROMPTS = ["def ", "<b>&"]  # the second one must come out escaped in the HTML


def tiny_recipe() -> dict:
    return {
        "curate": {"inputs": [str(STDLIB / "json"), str(STDLIB / "email")],
                   "split": {"val_fraction": 0.1, "test_fraction": 0.1}},
        "tokenizer": {"kind": "bpe", "vocab_size": 300},
        "model": {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32},
        "train": {"steps": 40, "batch_tokens": 256, "micro_batch": 8, "lr": 1e-2, "warmup_steps": 4,
                  "eval_every": 10, "eval_batches": 2, "log_every": 2, "save_every": 40, "peak_flops": 1e11},
        "eval": {"split": "test", "context": 32, "batch_size": 16},
        "generate": {"prompts": PROMPTS, "max_new_tokens": 20, "seed": 0},
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest on one thread, and the CPU is shared
    try:
        work = tmp_path_factory.mktemp("build") / "work"
        build(recipe_from_dict(tiny_recipe()), work, quiet=True)
    finally:
        torch.set_num_threads(threads)
    return work


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_of_a_build_shows_curves_scores_samples_and_data(workdir, tmp_path):
    page_path = write_report(workdir, tmp_path / "report")
    assert page_path == tmp_path / "report" / REPORT_HTML
    pictures = [*PNGS.values(), OPTIONAL_PNGS["compression"]]  # the eval recorded the compressors' scores
    for png in pictures:
        data = (tmp_path / "report" / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, png
    page = page_path.read_text(encoding="utf-8")

    # Self-contained: every picture is inside the page, byte for byte the PNG beside it, and nothing is fetched.
    images = embedded_images(page)
    assert sorted(images) == sorted((tmp_path / "report" / png).read_bytes() for png in pictures)
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page and "<link" not in page and "url(" not in page

    scored = json.loads((workdir / "eval" / "result.json").read_text())
    assert f"{scored['perplexity']:.3f}" in page and f"{scored['bits_per_byte']:.4f}" in page
    assert f"{scored['loss']:.4f}" in page
    for sample in json.loads((workdir / "samples" / "samples.json").read_text()):
        assert html.escape(sample["text"]) in page
    assert "&lt;b&gt;&amp;" in page and "<b>&" not in page  # the prompt is text, not markup

    best_val = min(r["val_loss"] for r in metrics(workdir / "runs" / "main") if "val_loss" in r)
    assert f"{best_val:.4f}" in page
    curation = json.loads((workdir / "data" / "report.json").read_text())
    assert "curation funnel" in page.lower()
    for step in curation["steps"]:
        assert f"<td>{step['name']}</td><td>{step['docs_in']:,}</td><td>{step['docs_kept']:,}</td>" in page


def test_report_of_a_run_finds_its_data_through_the_manifests(workdir, tmp_path):
    """A run outside any build: the curated directory is found via run -> tokens -> data manifests."""
    raw = tiny_recipe()
    recipe_file = tmp_path / "train.yaml"
    recipe_file.write_text(json.dumps({"data": str(workdir / "tokens"), "out": str(tmp_path / "run"),
                                       "model": raw["model"], "train": {**raw["train"], "steps": 12}}))
    torch.set_num_threads(1)
    train(load_train_recipe(recipe_file), quiet=True)

    page_path = write_report(tmp_path / "run")
    assert page_path == tmp_path / "run" / "report" / REPORT_HTML
    page = page_path.read_text(encoding="utf-8")
    assert "curation funnel" in page.lower() and str(workdir / "data") in page
    assert "Held-out evaluation" not in page  # a lone run has no eval/ of a build
    assert len(embedded_images(page)) == len(PNGS)

    # Rendering again replaces the report; the run's own files are untouched.
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    write_report(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_a_directory_without_a_run_is_refused(workdir, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not a run")
    for path in (tmp_path / "notes", workdir / "tokens", workdir / "data"):
        with pytest.raises(UserError, match="holds no training run"):
            write_report(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["report", str(tmp_path / "notes")]) == 2
    assert "holds no training run" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_the_report_never_replaces_a_folder_of_other_files(workdir, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "thesis.txt").write_text("precious")
    with pytest.raises(UserError, match="lmsmith did not make"):
        write_report(workdir, keep)
    assert (keep / "thesis.txt").read_text() == "precious"


def test_cli_writes_the_report(workdir, tmp_path, capsys):
    assert main(["report", str(workdir), "-o", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / REPORT_HTML).is_file()
    assert "report written to" in capsys.readouterr().out


def test_the_smoothed_loss_does_not_lag_behind_a_falling_curve():
    from lmsmith.report.page import smooth

    falling = [10.0 - i for i in range(30)]  # a straight line: a centred average leaves it as it is
    assert smooth(falling, 3) == pytest.approx(falling)
    noisy = [1.0, 3.0] * 10
    inner = smooth(noisy, 2)[2:-2]
    assert max(inner) - min(inner) < 0.5 and sum(inner) / len(inner) == pytest.approx(2.0, abs=0.25)


def test_a_short_run_says_so_why_and_what_to_do(workdir, tmp_path):
    import shutil

    copy = tmp_path / "work"
    shutil.copytree(workdir, copy, symlinks=True)
    run_manifest = copy / "runs" / "main" / "manifest.json"
    manifest = json.loads(run_manifest.read_text())
    page = write_report(copy, tmp_path / "plain").read_text(encoding="utf-8")
    assert "A short run." not in page and f"Trained {manifest['counts']['tokens'] / 1e6:.2f}M tokens" in page

    # The recipe says it trains four times as much on the machine it was tuned on, in a two-minute budget.
    manifest["config"]["train"].update(reference_tokens=4 * manifest["counts"]["tokens"], max_minutes=2.0)
    run_manifest.write_text(json.dumps(manifest))
    page = write_report(copy, tmp_path / "short").read_text(encoding="utf-8")
    assert "A short run." in page and "25% of the" in page and "lmsmith build --minutes 8" in page
