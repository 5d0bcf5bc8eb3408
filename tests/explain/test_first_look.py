"""`lmsmith build` ends with its report and an explanation of one sample, and says where to open them."""

from __future__ import annotations

import json

import yaml
from explain_models import STDLIB

from lmsmith.cli import main


def test_a_build_ends_with_its_report_and_an_explanation(tmp_path, capsys, one_thread):
    recipe = {
        "tokenizer": {"vocab_size": 300},
        "tokenize": {"inputs": [str(STDLIB / "textwrap.py")], "val_fraction": 0.1},
        "model": {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32},
        "train": {"steps": 4, "batch_tokens": 256, "micro_batch": 8, "warmup_steps": 1, "eval_every": 2,
                  "eval_batches": 1, "save_every": 2, "log_every": 1, "peak_flops": 1.0e11},
        "eval": {"split": "val"},
        "generate": {"prompts": ["def "], "max_new_tokens": 6, "seed": 0},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    work = tmp_path / "work"
    assert main(["build", str(tmp_path / "tiny.yaml"), "-o", str(work), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"open {work / 'report' / 'report.html'}" in printed
    assert f"open {work / 'explain' / 'index.html'}" in printed
    assert (work / "report" / "loss.png").is_file()
    sample = json.loads((work / "samples" / "samples.json").read_text())[0]
    explained = json.loads((work / "explain" / "explain.json").read_text())
    assert explained["text"] == sample["prompt"] + sample["text"]  # the sample the build wrote, whole (short)
