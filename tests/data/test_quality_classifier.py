"""The learned quality filter: `lmsmith curate train-classifier`, then `curate --classifier` on held-out documents."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest

from lmsmith.cli import main

pytest.importorskip("sklearn")

GOOD = ("the committee reviewed the annual budget and approved the plan for the new library . researchers measured "
        "the river temperature every morning and wrote a careful report about the results . students read the "
        "chapter on photosynthesis before the seminar and discussed the evidence").split()
BAD = ("buy cheap pills now click here free winner casino bonus limited offer act fast subscribe unlock prize "
       "hot deals best price guaranteed viral shocking you won claim reward").split()
FILLER = "and the a of to in it is".split()


def document(rng: random.Random, good: bool) -> str:
    """Forty words, mostly from one vocabulary, with shared filler: a clear signal, not a trivial one."""
    vocabulary = GOOD if good else BAD
    return " ".join(rng.choice(vocabulary if rng.random() < 0.7 else FILLER) for _ in range(40))


def write_labels(path, rng: random.Random, n: int) -> None:
    lines = [{"text": document(rng, i % 2 == 0), "label": "good" if i % 2 == 0 else "bad"} for i in range(n)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def test_the_classifier_keeps_good_documents_and_drops_bad_ones_on_a_held_out_set(tmp_path, capsys):
    rng = random.Random(0)
    write_labels(tmp_path / "labels.jsonl", rng, 400)
    assert main(["curate", "train-classifier", str(tmp_path / "labels.jsonl"), "-o", str(tmp_path / "clf")]) == 0
    held_out = json.loads((tmp_path / "clf" / "manifest.json").read_text())["counts"]["held_out"]
    assert held_out["precision"] >= 0.9 and held_out["recall"] >= 0.9 and held_out["lines"] > 40
    assert "precision" in capsys.readouterr().err

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    truth = {}
    for i in range(200):  # documents the classifier never saw
        good = i % 2 == 0
        name = f"doc{i:03d}.txt"
        (corpus / name).write_text(document(rng, good) + "\n", encoding="utf-8")
        truth[name] = good
    out = tmp_path / "out"
    assert main(["curate", str(corpus), "-o", str(out), "--classifier", str(tmp_path / "clf"), "--quiet",
                 "--workers", "1", "split.val_fraction=0", "split.test_fraction=0", "quality.enabled=false",
                 "dedup.enabled=false"]) == 0
    rows = [row for f in sorted((out / "train").glob("*.parquet")) for row in pq.read_table(f).to_pylist()]
    kept = [row["source"].rsplit("/", 1)[-1] for row in rows]
    good_kept = sum(truth[name] for name in kept)
    precision, recall = good_kept / len(kept), good_kept / sum(truth.values())
    print(f"\nheld-out curate: precision {precision:.3f}, recall {recall:.3f}; training held-out {held_out}")
    assert precision >= 0.9 and recall >= 0.9
    assert all(0.5 <= json.loads(row["meta"])["quality_score"] <= 1 for row in rows)
    report = json.loads((out / "report.json").read_text())
    classifier = next(step for step in report["steps"] if step["name"] == "classifier")
    assert classifier["dropped_docs"] == {"low_quality_score": 200 - len(kept)}


def test_a_labels_file_with_one_class_is_refused(tmp_path, capsys):
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps({"text": f"text {i}", "label": 1}) + "\n"
                                                   for i in range(10)))
    assert main(["curate", "train-classifier", str(tmp_path / "labels.jsonl"), "-o", str(tmp_path / "clf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "every label is good" in err
    assert not (tmp_path / "clf").exists()


def test_a_classifier_directory_that_is_not_one_is_refused_before_curation(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("some text here\n")
    (tmp_path / "clf").mkdir()
    assert main(["curate", str(tmp_path / "a.txt"), "-o", str(tmp_path / "out"), "--classifier",
                 str(tmp_path / "clf"), "--quiet", "--workers", "1"]) == 2
    assert "train-classifier" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
