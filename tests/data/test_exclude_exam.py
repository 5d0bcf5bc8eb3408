"""curate --exclude-exam: documents that share a 13-gram of words with an exam item are dropped and named."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from lmsmith.cli import main

QUESTION = "Which desk on the third floor answers every refund request that arrives after the end of the month?"
CHOICE = "The accounts payable desk next to the lift, which also keeps the signed receipts for seven years"


def prose(n: int) -> str:
    """An ordinary paragraph, different for every n, that no exam item quotes."""
    return (f"Note {n}: the team met on day {n} to plan the garden. They chose {n % 7 + 2} kinds of beans, "
            f"a row of tomatoes and some herbs for the kitchen. Everyone agreed to water the plot on turn {n}, "
            f"and the tools now hang in shed number {n % 5}, where the gloves and the seeds are kept dry.\n")


def test_documents_quoting_an_exam_item_are_dropped_and_named_in_the_report_and_manifest(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(20):
        (corpus / f"doc{n:02d}.txt").write_text(prose(n), encoding="utf-8")
    # Planted leaks: the question inside a page of notes (case and punctuation changed), a choice quoted at length.
    (corpus / "leak_question.txt").write_text(prose(100) + "Someone asked: " + QUESTION.upper().replace("?", "!")
                                              + "\n", encoding="utf-8")
    (corpus / "leak_choice.txt").write_text(prose(101) + "Answer: " + CHOICE + ".\n", encoding="utf-8")
    # Twelve words of the question only: below the 13-gram rule, so kept.
    (corpus / "near_miss.txt").write_text(prose(102) + " ".join(QUESTION.split()[:12]) + "\n", encoding="utf-8")
    task = tmp_path / "exam" / "policies.jsonl"
    task.parent.mkdir()
    task.write_text(json.dumps({"question": QUESTION, "choices": ["The front desk", CHOICE], "answer": 1}) + "\n"
                    + "not json\n", encoding="utf-8")

    out = tmp_path / "out"
    assert main(["curate", str(corpus), "-o", str(out), "--exclude-exam", str(tmp_path / "exam"), "--quiet",
                 "--workers", "1", "split.val_fraction=0", "split.test_fraction=0", "quality.enabled=false"]) == 0
    report = json.loads((out / "report.json").read_text())
    excluded = report["exam_excluded"]
    assert excluded["docs"] == 2 and excluded["by_task"] == {"policies": 2}
    assert sorted(d["source"].rsplit("/", 1)[-1] for d in excluded["documents"]) == [
        "leak_choice.txt", "leak_question.txt"], excluded["documents"]
    assert json.loads((out / "manifest.json").read_text())["counts"]["exam_excluded"] == 2
    texts = [t for f in sorted((out / "train").glob("*.parquet")) for t in pq.read_table(f)["text"].to_pylist()]
    assert len(texts) == 21 and not any("Someone asked" in t or "Answer: The accounts" in t for t in texts)


def test_a_missing_exam_file_is_one_line_and_nothing_is_written(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(prose(1))
    assert main(["curate", str(tmp_path / "a.txt"), "-o", str(tmp_path / "out"), "--exclude-exam",
                 str(tmp_path / "none.jsonl"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none.jsonl" in err
    assert not (tmp_path / "out").exists()
