"""`lmsmith exam` end to end on tiny models: the tasks read, every kind scored, the table, exam.json, --json."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
from conftest import greedy, write_jsonl, write_tiny_db

from lmsmith.cli import main
from lmsmith.exam.items import read_task
from lmsmith.exam.models import LocalModel
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.exam import ExamConfig

EXAMS = resources.files("lmsmith") / "configs" / "exams"
QUESTIONS = ["1+2=", "2+2=", "3+1=", "0+5="]




@pytest.fixture
def tasks(tmp_path, model_dir):
    """A multiple-choice task with a malformed line, and a mixed task whose first answer is the model's own."""
    write_tiny_db(tmp_path)
    choice = write_jsonl(tmp_path / "choice.jsonl", [
        {"question": q, "choices": ["3", "4", "5"], "answer": i % 3} for i, q in enumerate(QUESTIONS)][:2]
        + ["{not json"] + [{"question": q, "choices": ["3", "4", "5"], "answer": 1} for q in QUESTIONS[2:]])
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [
        {"prompt": "abc", "answer": greedy(model_dir, "abc")},  # right by construction
        {"prompt": "abc", "answer": "surely not this"},
        {"prompt": "abc", "regex": ".", "samples": 3},
        {"prompt": "q", "schema": {"type": "object"}},
        {"prompt": "q", "sql": "SELECT x FROM t", "db": "tiny.sqlite"},
        {"prompt": "def f(x):\n", "tests": "assert f(1) == 2"}])
    return choice, mixed


def test_exam_scores_two_models_side_by_side_and_keeps_every_item(tasks, model_dir, other_model_dir, tmp_path,
                                                                 capsys):
    choice, mixed = tasks
    out = tmp_path / "exam"
    assert main(["exam", str(model_dir), str(other_model_dir), "--tasks", str(choice), str(mixed), "-o", str(out),
                 "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr()
    assert f"{choice}:3: not JSON" in printed.err
    assert "choice (n=4)" in printed.out and "mixed (n=6)" in printed.out and "within the noise" in printed.out
    record = json.loads((out / "exam.json").read_text())
    mine = record["models"][str(model_dir)]
    assert mine["choice"]["item_scores"][2] is None and mine["choice"]["n"] == 4
    mixed_items = mine["mixed"]["items"]
    assert [i["kind"] for i in mixed_items] == ["generation"] * 3 + ["json", "sql", "python"]
    assert mine["mixed"]["item_scores"][:3] == [1.0, 0.0, 1.0]  # its own answer, another, any text matches "."
    assert len(mixed_items[2]["outputs"]) == 3 and mixed_items[0]["outputs"][0] == greedy(model_dir, "abc")
    assert mine["mixed"]["item_scores"][3:] == [0.0, 0.0, 0.0]  # a random model writes no JSON, SQL or code
    assert mine["mixed"]["metric"] == "score" and mine["choice"]["metric"] == "acc"
    assert mixed_items[4]["reference_rows"] == 2
    assert {c["task"] for c in record["comparisons"]} == {"choice", "mixed"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "exam" and {"exam.json", "exam.html"} <= set(manifest["files"])
    page = (out / "exam.html").read_text()
    firsts = mine["choice"]["item_scores"]
    seconds = record["models"][str(other_model_dir)]["choice"]["item_scores"]
    wins = sum(a is not None and a > b for a, b in zip(firsts, seconds))
    assert f"choice: {wins} items {model_dir} got right and {other_model_dir} did not" in page


def test_multiple_choice_is_scored_by_the_models_own_log_likelihoods(tasks, model_dir, tmp_path, capsys):
    choice, _ = tasks
    assert main(["exam", str(model_dir), "--tasks", str(choice), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)["models"][str(model_dir)]["choice"]
    assert set(result) == {"metric", "score", "stderr", "n", "item_scores"}
    model, tokenizer = load_model_dir(model_dir)
    expected = []
    for line in read_task(choice).items:
        if line is None:
            expected.append(None)
            continue
        lls = []
        for c in line.fields["choices"]:  # one forward pass per choice, unbatched: an independent computation
            whole, head = tokenizer.encode(line.fields["question"] + " " + c), tokenizer.encode(line.fields["question"])
            with torch.no_grad():
                logprobs = model(torch.tensor([whole])).logits[0, :-1].log_softmax(-1)
            lls.append(float(logprobs.gather(1, torch.tensor(whole[1:])[:, None])[len(head) - 1:].sum()))
        expected.append(float(max(range(len(lls)), key=lls.__getitem__) == line.fields["answer"]))
    assert result["item_scores"] == expected
    scored = [s for s in expected if s is not None]
    assert result["score"] == pytest.approx(sum(scored) / len(scored)) and result["n"] == 4


def test_one_model_may_name_its_tasks_right_after_it(tasks, model_dir, capsys):
    """`lmsmith exam MODEL TASK...` is `lmsmith exam MODEL --tasks TASK...`."""
    choice, _ = tasks
    assert main(["exam", str(model_dir), str(choice), "--json", "--quiet"]) == 0
    short = json.loads(capsys.readouterr().out)
    assert main(["exam", str(model_dir), "--tasks", str(choice), "--json", "--quiet"]) == 0
    assert short == json.loads(capsys.readouterr().out) and list(short["models"]) == [str(model_dir)]


def test_batched_log_likelihoods_equal_one_at_a_time(model_dir):
    pairs = [("1+2=", " 3"), ("", "abc"), ("a much longer question than the others?", " yes"), ("x", " y z")]
    batched = LocalModel(model_dir, ExamConfig(batch_size=4)).loglikelihoods(pairs)
    single = LocalModel(model_dir, ExamConfig(batch_size=1)).loglikelihoods(pairs)
    assert batched == pytest.approx(single, abs=1e-4)


def test_bad_tasks_are_one_line_naming_the_line(tmp_path, model_dir, capsys):
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 0},
                                                       {"text": "what kind am I"}])
    no_db = write_jsonl(tmp_path / "nodb.jsonl", [{"prompt": "q", "sql": "SELECT 1", "db": "missing.sqlite"}])
    bad_answer = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 2}])
    for task, message in ((unknown, f"{unknown}:2: an item with none of the kinds' fields"),
                          (no_db, f"{no_db}:1: the database"), (bad_answer, f"{bad_answer}:1: \"answer\" must be"),
                          (tmp_path / "nothing.jsonl", "does not exist")):
        assert main(["exam", str(model_dir), "--tasks", str(task)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["exam", str(model_dir)]) == 2
    assert "no tasks given" in capsys.readouterr().err


def test_the_shipped_tasks_read_and_their_references_are_right():
    for name in ("choice", "json", "python", "sql"):
        task = read_task(EXAMS / f"{name}.jsonl")
        assert task.skipped == 0 and len(task.scored) >= 5
    from lmsmith.exam.checkers import check_python, check_sql

    sql = read_task(EXAMS / "sql.jsonl").scored
    assert len(sql) == 186 and all(check_sql(item, item.fields["sql"]) == 1.0 for item in sql[:50])
    solutions = ["    return a + b\n", "    return n % 2 == 0\n", "    return text[::-1]\n",
                 "    return max(numbers)\n", "    return sum(c in 'aeiou' for c in text)\n"]
    for item, solution in zip(read_task(EXAMS / "python.jsonl").scored, solutions):
        assert check_python(item, solution) == 1.0 and check_python(item, "    return None\n") == 0.0


def test_choices_sharing_their_question_score_as_if_each_were_whole(model_dir):
    """The shared path (the question once into a KV cache) against whole sequences, one at a time."""
    questions = ["1+2=", "a much longer question than the others?", "x"]
    pairs = [(q, " " + c) for q in questions for c in ("3", "yes no", "abc def ghi")] + [("solo", " one")]
    shared = LocalModel(model_dir, ExamConfig(batch_size=5)).loglikelihoods(pairs)
    whole = LocalModel(model_dir, ExamConfig(batch_size=1))
    single = [whole.loglikelihoods([pair])[0] for pair in pairs]
    assert shared == pytest.approx(single, abs=1e-4)


def test_a_hugging_face_directory_is_converted_on_the_way_in(model_dir, tasks, tmp_path, capsys):
    pytest.importorskip("transformers")
    choice, _ = tasks
    assert main(["convert", "--to-hf", str(model_dir), "-o", str(tmp_path / "hf"), "--quiet"]) == 0
    assert main(["exam", str(model_dir), str(tmp_path / "hf"), "--tasks", str(choice), "-o", str(tmp_path / "exam"),
                 "--quiet"]) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "exam" / "exam.json").read_text())["models"]
    ours, theirs = record[str(model_dir)]["choice"], record[str(tmp_path / "hf")]["choice"]
    assert ours["item_scores"] == theirs["item_scores"]
    for a, b in zip(ours["items"], theirs["items"]):
        assert (a is None) == (b is None) and (a is None or a["loglikelihoods"] == pytest.approx(b["loglikelihoods"],
                                                                                                 abs=1e-4))
