"""`lmsmith exam --failures FILE`: every missed item with the model's own answer, and those lines as DPO pairs."""

from __future__ import annotations

import json

from conftest import greedy, write_jsonl, write_tiny_db

from lmsmith.cli import main
from lmsmith.finetune.preferences import read_pairs

TOKENS = 6




def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_failures_hold_each_missed_item_with_its_answer_and_the_reference(tmp_path, model_dir):
    db = write_tiny_db(tmp_path)
    task = write_jsonl(tmp_path / "mixed.jsonl", [
        {"prompt": "abc", "answer": greedy(model_dir, "abc")},  # right by construction: not a failure
        {"prompt": "xyz", "answer": "surely not this"},
        "{not json",  # a skipped line is no failure either
        {"prompt": "q", "sql": "SELECT x FROM t", "db": "tiny.sqlite"},  # a random model writes no SQL
        {"prompt": "r", "regex": "QQQQQQQQ"},  # no reference answer to prefer
    ])
    wrong = tmp_path / "out" / "failures.jsonl"
    assert main(["exam", str(model_dir), "--tasks", str(task), "--failures", str(wrong), "--quiet",
                 "--max-new-tokens", str(TOKENS)]) == 0
    lines = read_lines(wrong)
    assert [line["where"] for line in lines] == [f"{task}:2", f"{task}:4", f"{task}:5"]
    assert all(line["model"] == str(model_dir) and line["task"] == "mixed" and line["score"] == 0.0
               for line in lines)
    assert [line["rejected"] for line in lines] == [greedy(model_dir, p) for p in ("xyz", "q", "r")]
    assert [line.get("chosen") for line in lines] == ["surely not this", "SELECT x FROM t", None]
    assert lines[1]["db"] == str(db.resolve())  # resolved, so the line works from any folder


def test_failures_of_reference_items_are_dpo_pairs_as_they_stand(tmp_path, model_dir):
    rows = [{"prompt": p, "answer": f"the answer to {p}"} for p in ("one", "two", "three")]
    task = write_jsonl(tmp_path / "answers.jsonl", rows)
    wrong = tmp_path / "failures.jsonl"
    assert main(["exam", str(model_dir), "--tasks", str(task), "--failures", str(wrong), "--quiet",
                 "--max-new-tokens", str(TOKENS)]) == 0
    pairs = read_pairs(wrong)
    assert pairs.identical == 0 and len(pairs.pairs) == 3
    for pair, row in zip(pairs.pairs, rows):
        assert pair.chosen.answer == row["answer"]
        assert pair.rejected.answer == greedy(model_dir, row["prompt"])


def test_a_failures_path_that_is_a_folder_or_a_task_is_refused_before_scoring(tmp_path, model_dir, capsys):
    task = write_jsonl(tmp_path / "answers.jsonl", [{"prompt": "one", "answer": "1"}])
    for path in (tmp_path, task):
        assert main(["exam", str(model_dir), "--tasks", str(task), "--failures", str(path), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"--failures {path}" in err
    assert read_lines(task) == [{"prompt": "one", "answer": "1"}]
