"""curate.mixture: a weight per input repeats or samples its train documents; the report shows planned and written."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from lmsmith.cli import main


def write_docs(folder, prefix: str, n: int) -> None:
    folder.mkdir()
    for i in range(n):
        (folder / f"{prefix}{i:03d}.txt").write_text(
            f"Document {i} of the {prefix} collection talks about item number {i * 7 + len(prefix)} in detail, "
            f"with a sentence on colour {i % 5} and another on size {i % 3}.\n", encoding="utf-8")


def curate(tmp_path, *overrides) -> int:
    return main(["curate", str(tmp_path / "small"), str(tmp_path / "big"), "-o", str(tmp_path / "out"), "--quiet",
                 "--workers", "1", "split.val_fraction=0", "split.test_fraction=0", "quality.enabled=false",
                 *overrides])


def test_weights_repeat_a_small_input_and_sample_a_big_one(tmp_path):
    write_docs(tmp_path / "small", "small", 10)
    write_docs(tmp_path / "big", "big", 80)
    small, big = str(tmp_path / "small"), str(tmp_path / "big")
    assert curate(tmp_path, f"curate.mixture={json.dumps({small: 3, big: 0.5})}") == 0
    sources = [s for f in sorted((tmp_path / "out" / "train").glob("*.parquet"))
               for s in pq.read_table(f)["source"].to_pylist()]
    from_small = sum("/small/" in s for s in sources)
    from_big = sum("/big/" in s for s in sources)
    assert from_small == 30
    assert 25 <= from_big <= 55  # about half of 80, drawn per document
    mixture = json.loads((tmp_path / "out" / "report.json").read_text())["mixture"]
    assert mixture[small] == {"weight": 3.0, "train_docs_read": 10, "train_docs_written": 30,
                              "share_planned": round(30 / 70, 4), "share_written": round(30 / (30 + from_big), 4)}
    assert mixture[big]["train_docs_written"] == from_big
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["mixture"] == {small: 3, big: 0.5}  # so a build's key changes with the weights
    assert manifest["counts"]["mixture_written"] == {small: 30, big: from_big}


@pytest.mark.parametrize("weights, message", [({"small": -1}, "at least 0"),
                                              ({"small": 0, "big": 0}, "every weight is 0"),
                                              ({"other": 1}, "not an input")])
def test_negative_all_zero_and_unknown_weights_are_refused(tmp_path, capsys, weights, message):
    write_docs(tmp_path / "small", "small", 3)
    write_docs(tmp_path / "big", "big", 3)
    named = {str(tmp_path / k) if k != "other" else k: w for k, w in weights.items()}
    assert curate(tmp_path, f"curate.mixture={json.dumps(named)}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()
