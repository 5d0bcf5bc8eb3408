"""End to end: `lmsmith curate` on a mixed folder, checked against what was planted in it."""

import gzip
import json
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmsmith.cli import main
from lmsmith.core.atomic import write_json
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import file_sha256, read_manifest
from lmsmith.data.chain import document_steps
from lmsmith.data.pipeline import curate
from lmsmith.data.quality import QualityStep
from lmsmith.schema.curate import CurateConfig, load_curate_config, resolve_config
from lmsmith.text.curated_dir import iter_split_texts, split_files

SENTENCES = [
    "The lighthouse keeper wrote down the weather every morning before he climbed the stairs.",
    "Most of the village had never seen the inside of the tower, though they passed it every day.",
    "In winter the supply boat came only twice a month, and sometimes not at all.",
    "She learned to repair the lamp mechanism from a manual that was older than her grandmother.",
    "A good map is worth more than a fast horse when the roads are new and the signs are missing.",
    "The committee argued for three hours about the colour of the new benches in the square.",
    "Every spring the river carried away a little more of the old stone wall near the mill.",
    "He kept his tools in a wooden box that his father had built from the planks of a shipwreck.",
    "The school had one room, one stove, and a teacher who knew the name of every bird on the coast.",
    "Visitors from the city were surprised that the shop closed whenever the owner went fishing.",
    "At the end of the harvest the families shared a long meal in the barn behind the church.",
    "The old road to the quarry is now a path for walkers and the occasional lost cyclist.",
    "Children were told never to swim near the rocks where the current turned without warning.",
    "The baker started work at three in the morning so that the bread was warm by breakfast.",
    "A small museum in the former post office shows letters that were never delivered.",
    "When the telegraph line arrived, the news of the world reached the island within hours.",
    "The doctor visited once a week and stayed in the room above the tavern with the blue door.",
    "Fishermen read the colour of the sky with a skill that no instrument could quite match.",
    "The library was a single shelf of books that travelled from house to house in a basket.",
    "Nobody remembers who planted the apple trees along the edge of the northern field.",
    "During the storm of that year, the bell in the tower rang by itself for most of the night.",
    "The mayor insisted that the clock on the town hall be wound every Sunday after the service.",
    "Old maps of the bay show a second island that has since disappeared beneath the waves.",
    "The market on Saturday sold wool, cheese, honey and whatever the sea had offered that week.",
    "Letters from the emigrants described cities with streets so long that nobody walked them end to end.",
    "The ferry captain knew every sandbank in the channel and trusted none of them.",
    "On clear evenings you could see the lights of the mainland flicker across the water.",
    "The council finally paid for a proper pier after the third boat was lost at the old landing.",
]


def prose(seed: int, n: int = 8) -> str:
    rng = random.Random(seed)
    return " ".join(rng.sample(SENTENCES, n))


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8


def make_corpus(root):
    """A folder with one of everything; returns what was planted, for the checks."""
    root.mkdir(parents=True, exist_ok=True)
    original = prose(1, 10)
    (root / "story.txt").write_text(original)
    (root / "story_copy.txt").write_text(original)  # exact duplicate
    words = original.split()
    words[7] = "remarkably"
    (root / "story_near.txt").write_text(" ".join(words))  # near duplicate
    (root / "guide.md").write_text(
        "# Island notes\n\n" + prose(2) + "\n\nWrite to maria.lopez@fastmail.com for a copy.\n"
    )
    first, second = prose(3, 6), " ".join(s for s in SENTENCES if s not in prose(3, 6))[:400]
    (root / "page.html").write_text(
        "<html><head><title>Harbour</title></head><body><nav><a href='/'>Home</a> | <a href='/a'>About</a></nav>"
        f"<article><h1>The harbour</h1><p>{first}</p><p>{second}</p></article>"
        "<footer>Copyright 2024 Harbour Society</footer></body></html>")
    (root / "tool.py").write_text(
        '"""Count the words of a file."""\n\n__author__ = "Sam Lee <sam.lee@example.net>"\n\n\n'
        "def count(path):\n    with open(path) as f:\n        return len(f.read().split())\n")
    (root / "broken.py").write_text("def count(path:\n    return 0\n")
    records = [json.dumps({"text": prose(10 + i)}) for i in range(3)]
    records.insert(1, "{this line is not json")
    records.append(json.dumps({"body": "no text field"}))
    (root / "chats.jsonl").write_text("\n".join(records) + "\n")
    pq.write_table(pa.table({"text": [prose(20), prose(21)]}), root / "table.parquet")
    with gzip.open(root / "notes.txt.gz", "wt") as f:
        f.write(prose(30))
    (root / "picture.png").write_bytes(PNG)
    latin = prose(40) + " The café served a naïve crème brûlée to every visitor."
    (root / "latin.txt").write_bytes(latin.encode("latin-1"))
    (root / "empty.txt").write_text("")
    return {"latin": latin, "emails": ["maria.lopez@fastmail.com", "sam.lee@example.net"]}


SPLIT = {"split": {"val_fraction": 0.25, "test_fraction": 0.25}}


def split_rows(out):
    rows = {}
    for split in ("train", "val", "test"):
        for path in split_files(out, split):
            for row in pq.read_table(path).to_pylist():
                rows[row["id"]] = (split, row["text"], row["source"], json.loads(row["meta"]))
    return rows


def reasons(report, step):
    return next(s["dropped_docs"] for s in report["steps"] if s["name"] == step)


def test_a_mixed_folder_is_curated_end_to_end(tmp_path):
    planted = make_corpus(tmp_path / "corpus")
    out = tmp_path / "data"
    report = curate([tmp_path / "corpus"], out, SPLIT, keep_dropped=True, quiet=True, workers=1)

    assert reasons(report, "read") == {"binary": 1, "malformed_json": 1, "missing_field": 1, "empty": 1}
    assert reasons(report, "quality") == {"syntax_error": 1}
    assert reasons(report, "dedup") == {"exact_duplicate": 1, "near_duplicate": 1}
    assert report["duplicates"]["exact_clusters"] == 1 and report["duplicates"]["near_clusters"] == 1
    assert report["redactions"].get("email", 0) >= 2

    rows = split_rows(out)
    texts = [text for _, text, _, _ in rows.values()]
    # story, guide, page, tool, 3 records, 2 rows, notes, latin: 11 documents, each once
    assert len(rows) == 11 == report["totals"]["docs_out"]
    assert len(set(texts)) == len(texts)
    assert sum(report["splits"][s]["docs"] for s in ("train", "val", "test")) == 11
    assert {split for split, *_ in rows.values()} == {"train", "val", "test"}
    assert any(planted["latin"] == text for text in texts)  # decoded from latin-1
    assert not any(email in text for email in planted["emails"] for text in texts)
    assert any("<EMAIL>" in text for text in texts)
    page = next(text for _, text, _, meta in rows.values() if meta["path"] == "page.html")
    assert "lighthouse" in page or "harbour" in page.lower()
    assert "Home | About" not in page and "<p>" not in page
    assert sorted(iter_split_texts(out, "train")) == sorted(t for s, t, _, _ in rows.values() if s == "train")

    dropped = pq.read_table(out / "dropped").to_pylist()
    by_reason = {row["reason"]: row for row in dropped}
    assert {"binary", "malformed_json", "missing_field", "empty", "syntax_error", "exact_duplicate",
            "near_duplicate"} <= set(by_reason)
    malformed = json.loads(by_reason["malformed_json"]["meta"])
    assert (malformed["path"], malformed["line"]) == ("chats.jsonl", 2)
    assert by_reason["malformed_json"]["text"] == "{this line is not json"
    assert by_reason["near_duplicate"]["step"] == "dedup"

    manifest = read_manifest(out, "curate")
    assert manifest["counts"]["train_docs"] == report["splits"]["train"]["docs"]
    assert all(file_sha256(out / name) == digest for name, digest in manifest["files"].items())
    assert manifest["inputs"][str(tmp_path / "corpus")]["files"] == 13
    assert json.loads((out / "report.json").read_text())["totals"] == report["totals"]
    assert not list(tmp_path.glob(".data*"))  # no temporary directory left behind


def test_worker_processes_give_the_same_output_as_one_process(tmp_path):
    make_corpus(tmp_path / "corpus")
    one = curate([tmp_path / "corpus"], tmp_path / "one", SPLIT, quiet=True, workers=1)
    two = curate([tmp_path / "corpus"], tmp_path / "two", SPLIT, quiet=True, workers=2)
    assert split_rows(tmp_path / "one") == split_rows(tmp_path / "two")
    assert [s["dropped_docs"] for s in one["steps"]] == [s["dropped_docs"] for s in two["steps"]]
    assert two["workers"] == 2


def test_splits_do_not_move_when_the_corpus_grows(tmp_path):
    make_corpus(tmp_path / "corpus")
    (tmp_path / "more").mkdir()
    for i in range(6):
        (tmp_path / "more" / f"extra{i}.txt").write_text(prose(100 + i))
    curate([tmp_path / "corpus"], tmp_path / "small", SPLIT, quiet=True, workers=1)
    curate([tmp_path / "more", tmp_path / "corpus"], tmp_path / "big", SPLIT, quiet=True, workers=1)
    small, big = split_rows(tmp_path / "small"), split_rows(tmp_path / "big")
    assert len(big) == len(small) + 6
    assert all(big[doc_id][0] == split for doc_id, (split, *_) in small.items())


def test_nothing_surviving_is_a_clear_error_and_leaves_no_output(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(PNG)
    (tmp_path / "in" / "b.txt").write_text("too short")
    with pytest.raises(UserError, match=r"no document survived curation \(2 read; dropped: .*binary 1"):
        curate([tmp_path / "in"], tmp_path / "out", quiet=True, workers=1)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_a_failed_run_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    make_corpus(tmp_path / "corpus")
    out = tmp_path / "data"
    curate([tmp_path / "corpus"], out, SPLIT, quiet=True, workers=1)
    before = read_manifest(out, "curate")

    def crash(self, doc, stats):
        raise RuntimeError("power cut")

    monkeypatch.setattr(QualityStep, "decide", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        curate([tmp_path / "corpus"], out, SPLIT, quiet=True, workers=1)
    assert read_manifest(out, "curate") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "data"]


def test_readers_refuse_a_directory_that_is_not_curated_data(tmp_path):
    with pytest.raises(UserError, match="has no manifest.json"):
        list(iter_split_texts(tmp_path))
    write_json(tmp_path / "manifest.json", {"stage": "tokenizer"})
    with pytest.raises(UserError, match="made by stage 'tokenizer', but curate output is needed"):
        list(iter_split_texts(tmp_path))


def test_steps_can_be_switched_off_and_max_docs_limits_reading(tmp_path):
    make_corpus(tmp_path / "corpus")
    config = {**SPLIT, "quality": {"enabled": False}, "dedup": {"enabled": False}, "pii": {"enabled": False},
              "sources": {"max_docs": 5}}
    report = curate([tmp_path / "corpus"], tmp_path / "out", config, quiet=True, workers=1)
    assert [s["name"] for s in report["steps"]] == ["read", "html", "format", "safety"]
    assert report["steps"][0]["docs_kept"] == 5
    assert report["redactions"] == {}


def test_boilerplate_lines_are_removed_in_a_second_pass(tmp_path):
    header = "# Copyright 2024 The Harbour Society. Licensed under the Apache License 2.0."
    (tmp_path / "src").mkdir()
    for i in range(6):
        body = f"def f{i}(x):\n    return x + {i} * {i + 1}\n\n\ndef g{i}():\n    return '{prose(i, 2)}'\n"
        (tmp_path / "src" / f"m{i}.py").write_text(header + "\n" + body)
    config = {
        "dedup": {"boilerplate": {"enabled": True, "min_docs": 5}},
        "split": {"val_fraction": 0.0, "test_fraction": 0.0},
    }
    report = curate([tmp_path / "src"], tmp_path / "out", config, quiet=True, workers=1)
    texts = list(iter_split_texts(tmp_path / "out"))
    assert len(texts) == 6 and not any("Copyright" in t for t in texts)
    assert all(t.startswith("def f") for t in texts)
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["boilerplate"]["counters"]["boilerplate_lines_removed"] == 6
    assert not (tmp_path / "out" / ".spool").exists()


def test_a_50_mb_single_line_file_is_dropped_and_the_run_goes_on(tmp_path):
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "huge.txt", "wb") as f:
        for _ in range(50):
            f.write(b"token " * 170_000)
    (tmp_path / "in" / "ok.txt").write_text(prose(5))
    report = curate([tmp_path / "in"], tmp_path / "out", quiet=True, workers=1)
    assert reasons(report, "quality") == {"too_many_words": 1}
    assert report["totals"]["docs_out"] == 1


def test_the_stdlib_corpus_on_a_subset(tmp_path):
    report = curate(
        ["stdlib"], tmp_path / "out", {"sources": {"include": ["json/*", "email/*"]}}, quiet=True, workers=1
    )
    assert report["totals"]["docs_out"] > 20
    rows = split_rows(tmp_path / "out")
    assert all(source == "stdlib" for _, _, source, _ in rows.values())
    assert any(meta["path"] == "json/decoder.py" for *_, meta in rows.values())
    assert report["redactions"].get("email", 0) > 0  # the modules' author addresses


# -- the command line ----------------------------------------------------------------------------


def test_cli_curates_and_takes_overrides_anywhere(tmp_path, capsys):
    make_corpus(tmp_path / "corpus")
    code = main(["curate", str(tmp_path / "corpus"), "split.val_fraction=0.3", "-o", str(tmp_path / "out"),
                 "split.test_fraction=0.3", "--workers", "1"])
    assert code == 0
    shown = capsys.readouterr().out
    assert "quality" in shown and "syntax_error" in shown and "redactions: " in shown
    assert read_manifest(tmp_path / "out", "curate")["config"]["split"]["val_fraction"] == 0.3


def test_cli_config_file_and_bad_input_exit_codes(tmp_path, capsys):
    make_corpus(tmp_path / "corpus")
    config = tmp_path / "c.yaml"
    config.write_text("curate:\n  split:\n    val_fraction: 0.5\n    test_fraction: 0.1\nmodel:\n  n_layer: 2\n")
    assert main(["curate", str(tmp_path / "corpus"), "-o", str(tmp_path / "out"), "--config", str(config),
                 "--quiet", "--workers", "1"]) == 0
    assert capsys.readouterr().out == ""
    assert read_manifest(tmp_path / "out", "curate")["config"]["split"]["val_fraction"] == 0.5

    for argv, message in [
        ([str(tmp_path / "missing")], "input '.*missing' does not exist"),
        ([str(tmp_path / "corpus"), "split.val_fractoin=0.1"], "unknown key 'curate.split.val_fractoin'"),
        ([str(tmp_path / "corpus"), "--workers", "0"], "must be at least 1"),
    ]:
        assert main(["curate", *argv, "-o", str(tmp_path / "bad"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert re.search(message, err)
    assert not (tmp_path / "bad").exists()


def test_document_steps_follow_the_config():
    config = resolve_config({"safety": {"enabled": False}, "html": {"enabled": False}})
    assert [s.name for s in document_steps(config)] == ["format", "quality", "pii", "minhash"]
    assert "minhash" not in [
        s.name for s in document_steps(resolve_config({"dedup": {"enabled": False}}))
    ]


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_default_config_file_spells_out_the_defaults():
    assert load_curate_config(CONFIGS / "curate-default.yaml") == CurateConfig()


def test_the_code_config_on_a_small_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "vendor").mkdir()
    header = "# Copyright (c) 2024 Example Corp. All rights reserved. Licensed under MIT."
    for i in range(12):
        (repo / "pkg" / f"mod{i}.py").write_text(f"{header}\n\n\ndef f{i}(x):\n    return x * {i} + {i * i}\n")
    (repo / "pkg" / "settings.json").write_text('{"debug": false, "level": 3}\n')
    (repo / "vendor" / "lib.py").write_text("def vendored():\n    return 1\n")
    (repo / "logo.bin").write_bytes(PNG)
    report = curate([repo], tmp_path / "out", CONFIGS / "curate-code.yaml",
                    overrides=["split.val_fraction=0", "split.test_fraction=0"], quiet=True, workers=1)
    rows = split_rows(tmp_path / "out")
    paths = sorted(meta["path"] for *_, meta in rows.values())
    assert paths == sorted([f"pkg/mod{i}.py" for i in range(12)] + ["pkg/settings.json"])
    assert not any("Copyright" in text for _, text, _, _ in rows.values())
    assert reasons(report, "read") == {"unsupported_type": 1}
