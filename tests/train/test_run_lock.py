"""Two `train`s into one run directory at once: the second takes the lock before it looks at the directory,
so a run that finished there meanwhile is found (and kept), never trained over."""

from __future__ import annotations

import contextlib
import shutil

import yaml

from lmsmith.cli import main
from lmsmith.train import loop


def test_a_run_that_finished_while_another_waited_is_not_trained_over(tmp_path, tiny_recipe, monkeypatch, capsys):
    first, second = tmp_path / "first", tmp_path / "run"
    short = dict(steps=4, save_every=2, warmup_steps=1, eval_every=2)
    for out in (first, second):
        (tmp_path / f"{out.name}.yaml").write_text(yaml.safe_dump(tiny_recipe(out, **short)))
    assert main(["train", "--config", str(tmp_path / "first.yaml"), "--quiet"]) == 0
    real_lock = loop.directory_lock

    @contextlib.contextmanager
    def lock_after_the_other_run_finished(directory, what):
        shutil.copytree(first, directory, dirs_exist_ok=True)  # the other run finished while this one started
        with real_lock(directory, what):
            yield

    monkeypatch.setattr(loop, "directory_lock", lock_after_the_other_run_finished)
    before = (second / "model" / "model.safetensors")
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert before.read_bytes() == (first / "model" / "model.safetensors").read_bytes()  # kept as it was
    assert not (second / ".lock").exists()


def test_a_dangling_link_as_the_run_directory_is_one_line(tmp_path, tiny_recipe, capsys):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "nowhere")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_recipe(link, steps=4, warmup_steps=1)))
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a link to nothing" in err and "\n" not in err
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()
