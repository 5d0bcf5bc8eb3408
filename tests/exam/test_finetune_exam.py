"""`lmsmith finetune ... exam=TASK`: the exam's tasks scored before and after fine-tuning, in its report."""

from __future__ import annotations

import json

from conftest import write_jsonl

from lmsmith.cli import main


def test_finetune_scores_an_exam_before_and_after(model_dir, tmp_path, capsys):
    pairs = [{"prompt": f"{a}+{b}=", "response": str(a + b)} for a in range(5) for b in range(5)]
    data = write_jsonl(tmp_path / "sums.jsonl", pairs)
    task = write_jsonl(tmp_path / "sums_exam.jsonl", [{"prompt": p["prompt"], "answer": p["response"]}
                                                      for p in pairs[:6]])
    run = tmp_path / "run"
    assert main(["finetune", str(model_dir), "--data", str(data), "-o", str(run), "--template", "chatml",
                 "train.steps=2", "train.eval_every=2", "train.micro_batch=8", f"exam={task}"]) == 0
    out = capsys.readouterr().out
    report = json.loads((run / "finetune.json").read_text())
    for when in ("before", "after"):
        scores = report[when]["exam"]["sums_exam"]
        assert scores["metric"] == "exact_match" and scores["n"] == 6 and 0.0 <= scores["score"] <= 1.0
    assert "exam sums_exam (exact_match, 6 items):" in out


def test_a_missing_exam_task_is_one_line(model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1=", "response": "2"}] * 8)
    assert main(["finetune", str(model_dir), "--data", str(data), "-o", str(tmp_path / "run"), "--quiet",
                 "train.steps=1", f"exam={tmp_path / 'missing.jsonl'}"]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
