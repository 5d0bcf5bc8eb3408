"""--engine ray: the same output as the local executor, document for document, on a mixed corpus."""

from __future__ import annotations

import json
import random
import sys

import pyarrow.parquet as pq
import pytest

from lmsmith.cli import main
from lmsmith.data.pipeline import curate
from tests.data.test_books import _page, write_dump, write_paper
from tests.data.test_pipeline import SENTENCES, SPLIT, make_corpus, split_rows


def mixed_corpus(root):
    make_corpus(root)
    rng = random.Random(5)
    base = " ".join(rng.sample(SENTENCES, 12))
    words = base.split()
    near = list(words)
    near[3], near[40] = "quietly", "northern"
    pairs = [base, " ".join(near), " ".join(words[:60]) + " " + " ".join(rng.sample(SENTENCES, 4))]
    (root / "more.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in pairs))
    write_paper(root / "paper.pdf", [rng.sample(SENTENCES, 5), rng.sample(SENTENCES, 5)])
    write_dump(root / "wiki.xml.bz2", [_page("Survey", 0, " ".join(rng.sample(SENTENCES, 8))),
                                       _page("Old", 0, "#REDIRECT [[Survey]]", redirect=True, page_id=2)])


def dropped_rows(out):
    return sorted((r["id"], r["step"], r["reason"]) for r in pq.read_table(out / "dropped").to_pylist())


def test_ray_output_equals_the_local_output(tmp_path, ray_cluster):
    mixed_corpus(tmp_path / "corpus")
    local = curate([tmp_path / "corpus"], tmp_path / "local", SPLIT, keep_dropped=True, quiet=True, workers=1)
    on_ray = curate([tmp_path / "corpus"], tmp_path / "ray", {**SPLIT, "engine": "ray"}, keep_dropped=True,
                    quiet=True, workers=2)
    assert split_rows(tmp_path / "ray") == split_rows(tmp_path / "local")
    assert dropped_rows(tmp_path / "ray") == dropped_rows(tmp_path / "local")
    for ours, theirs in zip(on_ray["steps"], local["steps"]):
        assert (ours["name"], ours["docs_in"], ours["docs_kept"], ours["dropped_docs"], ours["counters"]) == \
            (theirs["name"], theirs["docs_in"], theirs["docs_kept"], theirs["dropped_docs"], theirs["counters"])
    assert on_ray["duplicates"] == local["duplicates"] and on_ray["duplicates"]["near_dropped"] >= 2
    assert on_ray["read_issues"] == local["read_issues"] and on_ray["overlap"] == local["overlap"]
    manifests = [json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("local", "ray")]
    assert manifests[0]["inputs"] == manifests[1]["inputs"] and manifests[0]["counts"] == manifests[1]["counts"]


def test_no_cluster_at_the_address_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(" ".join(SENTENCES))
    code = main(["curate", str(tmp_path / "a.txt"), "-o", str(tmp_path / "out"), "--engine", "ray",
                 "--address", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "no Ray cluster at --address 127.0.0.1:9" in err
    assert not (tmp_path / "out").exists()


def test_what_ray_does_not_do_yet_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(" ".join(SENTENCES))
    code = main(["curate", str(tmp_path / "a.txt"), "-o", str(tmp_path / "out"), "--engine", "ray",
                 "dedup.boilerplate.enabled=true"])
    assert code == 2 and "not supported with --engine ray" in capsys.readouterr().err


def test_engine_ray_without_ray_installed_names_the_extra(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.txt").write_text(" ".join(SENTENCES))
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    code = main(["curate", str(tmp_path / "a.txt"), "-o", str(tmp_path / "out"), "--engine", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'lmsmith[ray]'" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_the_learned_filter_and_the_exam_exclusion_give_the_local_output_on_ray(tmp_path, ray_cluster):
    pytest.importorskip("sklearn")
    from tests.data.test_exclude_exam import CHOICE, QUESTION, prose
    from tests.data.test_quality_classifier import document, write_labels

    rng = random.Random(3)
    write_labels(tmp_path / "labels.jsonl", rng, 200)
    assert main(["curate", "train-classifier", str(tmp_path / "labels.jsonl"), "-o", str(tmp_path / "clf"),
                 "classifier.features=4096"]) == 0
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"doc{i:02d}.txt").write_text(document(rng, i % 3 != 0) + "\n", encoding="utf-8")
    (corpus / "leak.txt").write_text(document(rng, True) + " " + QUESTION + "\n", encoding="utf-8")
    (corpus / "leak_choice.txt").write_text(prose(7) + CHOICE + "\n", encoding="utf-8")
    (tmp_path / "exam.jsonl").write_text(json.dumps({"question": QUESTION, "choices": ["No", CHOICE], "answer": 1})
                                         + "\n", encoding="utf-8")
    settings = {**SPLIT, "classifier": str(tmp_path / "clf"), "exclude_exam": [str(tmp_path / "exam.jsonl")],
                "quality": {"enabled": False}}
    local = curate([corpus], tmp_path / "local", settings, keep_dropped=True, quiet=True, workers=1)
    on_ray = curate([corpus], tmp_path / "ray", {**settings, "engine": "ray"}, keep_dropped=True, quiet=True,
                    workers=2)
    assert split_rows(tmp_path / "ray") == split_rows(tmp_path / "local")  # the scores in meta included
    assert dropped_rows(tmp_path / "ray") == dropped_rows(tmp_path / "local")
    steps = {s["name"]: s for s in local["steps"]}
    assert steps["classifier"]["dropped_docs"]["low_quality_score"] >= 10  # a third of the documents are bad
    assert on_ray["exam_excluded"] == local["exam_excluded"] and local["exam_excluded"]["docs"] == 2
    for ours, theirs in zip(on_ray["steps"], local["steps"]):
        assert (ours["name"], ours["docs_in"], ours["docs_kept"], ours["dropped_docs"]) == \
            (theirs["name"], theirs["docs_in"], theirs["docs_kept"], theirs["dropped_docs"])
