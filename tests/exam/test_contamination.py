"""Items whose 13 words in a row are in the model's training data are flagged; --decontaminated drops them."""

from __future__ import annotations

import json
import shutil

from conftest import write_jsonl

from lmsmith.cli import main

SEEN = "which of these numbers is the sum of two and three when you add them together in your head"
UNSEEN = "which of these numbers is the product of two and three when you multiply them in a quiet room"


def test_items_seen_in_training_are_flagged_and_can_be_left_out(model_dir, tmp_path, capsys):
    training = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"Question: {SEEN.upper()}?", "response": "5"},
                                                      {"prompt": "short", "response": "x"}])
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["inputs"] = {"data": {"kind": "instruct", "path": str(training)}}  # as a fine-tuned model's names it
    (model / "manifest.json").write_text(json.dumps(manifest))
    task = write_jsonl(tmp_path / "choice.jsonl", [
        {"question": SEEN, "choices": ["5", "6"], "answer": 0},
        {"question": UNSEEN, "choices": ["5", "6"], "answer": 1},
        {"question": "two plus three", "choices": ["5", "6"], "answer": 0}])
    assert main(["exam", str(model), "--tasks", str(task), "-o", str(tmp_path / "exam")]) == 0
    assert "1 items possibly contaminated" in capsys.readouterr().out
    record = json.loads((tmp_path / "exam" / "exam.json").read_text())["models"][str(model)]["choice"]
    assert record["contaminated"] == 1 and [i.get("contaminated", False) for i in record["items"]] == [True, False,
                                                                                                         False]
    assert record["n"] == 3
    assert main(["exam", str(model), "--tasks", str(task), "--json", "--decontaminated"]) == 0
    clean = json.loads(capsys.readouterr().out)["models"][str(model)]["choice"]
    assert clean["n"] == 2 and clean["item_scores"][0] is None and clean["item_scores"][1:] == record["item_scores"][1:]
    assert main(["exam", str(model_dir), "--tasks", str(task), "--json"]) == 0  # no training data named: not checked
    assert json.loads(capsys.readouterr().out)["models"][str(model_dir)]["choice"]["n"] == 3
