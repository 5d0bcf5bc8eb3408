"""--engine ray: the same output as the local executor, document for document, on a mixed corpus."""

from __future__ import annotations

import json
import random
import sys

import pyarrow.parquet as pq

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
