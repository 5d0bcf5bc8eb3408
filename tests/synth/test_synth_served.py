"""synth against a real `lmsmith serve` of a tiny random model on loopback: every kind's answers parse
because the server constrains them to the kind's JSON schema; a run killed with SIGKILL continues
without duplicates; the API key reaches the server and nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from serve_models import KEY
from synth_documents import TOPICS, passage

from lmsmith.cli import main

pytest.importorskip("openai")
pytest.importorskip("llguidance")
pytest.importorskip("fastapi")

# A random model writes random text: the checks that judge content are off, so what is counted is parsing.
SETTINGS = ["synth.items_per_passage=1", "synth.max_field_chars=12", "synth.max_new_tokens=300",
            "synth.min_support=0", "synth.temperature=1.0"]

TEACHER = "teacher"  # the name conftest serves it under


@pytest.fixture(scope="module")
def served(served_teacher):
    """The tiny served teacher of conftest."""
    return served_teacher


@pytest.fixture
def prompt(tmp_path):
    """A short prompt: the tiny model's context holds it, the passage and the answer."""
    path = tmp_path / "prompt.jinja"
    path.write_text("Ask {{ n }} about:\n{{ passage }}\n", encoding="utf-8")
    return path


@pytest.fixture
def many_docs(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for topic in TOPICS:
        (folder / f"{topic}.md").write_text(passage(topic) + "\n", encoding="utf-8")
    return folder


def command(docs, out, served, prompt, *extra) -> list[str]:
    return ["synth", str(docs), "-o", str(out), "--endpoint", served.url, "--model", TEACHER, "--prompt", str(prompt),
            "--quiet", *SETTINGS, *extra]


@pytest.mark.parametrize("kind", ["qa", "conversation", "exam", "pairs", "labels"])
def test_every_answer_of_a_random_model_parses_through_json_schema(served, docs, prompt, tmp_path, kind,
                                                                   monkeypatch, one_thread):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    started = time.perf_counter()
    assert main(command(docs, tmp_path / "out", served, prompt, "--kind", kind, "--concurrency", "4")) == 0
    minutes = (time.perf_counter() - started) / 60
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["structured_output"] is True
    assert report["answered"] == 4 and report["too_short"] == 1
    assert report["parsed"] == 4, report
    written = [json.loads(line) for line in (tmp_path / "out" / f"{kind}.jsonl").read_text().splitlines()]
    assert len(written) == report["items_written"] >= 3  # a random pair of items may collide
    assert all(line["source"].endswith(".md#0") for line in written)
    print(f"\n{kind}: {report['items_generated'] / minutes:.1f} items/min, {report['tokens']} tokens")


def test_labels_are_the_lines_train_classifier_reads_one_per_passage(served, many_docs, prompt, tmp_path,
                                                                     monkeypatch, one_thread):
    from lmsmith.core.errors import UserError
    from lmsmith.data.classifier_training import read_labels

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "labels"
    assert main(command(many_docs, out, served, prompt, "--kind", "labels", "--concurrency", "4")) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["parsed"] == report["items_written"] == len(TOPICS) and report["dropped"] == {}
    written = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    # Each line carries its passage whole, so the classifier learns from the very text the teacher judged.
    assert [line["text"] for line in written] == [passage(t) for t in sorted(TOPICS)]
    assert {line["label"] for line in written} <= {"good", "bad"} and all(line["reason"] for line in written)
    try:
        texts, labels = read_labels(out / "labels.jsonl")
    except UserError as exc:  # a random teacher may give every passage the same label: refused as one class
        assert "every label is" in str(exc) and len({line["label"] for line in written}) == 1
    else:
        assert texts == [line["text"] for line in written]
        assert list(labels) == [int(line["label"] == "good") for line in written]


def test_a_run_killed_with_sigkill_continues_without_duplicates_and_never_shows_the_key(served, many_docs, prompt,
                                                                                          tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "lmsmith", *command(many_docs, out, served, prompt, "--concurrency", "1")]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not journal.exists() or journal.read_text().count("\n") < 3):
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    killed_out, killed_err = first.communicate()
    done_before = journal.read_text().count("\n")
    assert 3 <= done_before < len(TOPICS)

    second = subprocess.run(argv, env=env, capture_output=True, timeout=300)
    assert second.returncode == 0, second.stderr.decode()
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(TOPICS)
    report = json.loads((out / "report.json").read_text())
    assert report["asked_this_run"] == len(TOPICS) - done_before
    sources = [json.loads(line)["source"] for line in (out / "qa.jsonl").read_text().splitlines()]
    dropped = [json.loads(line)["source"] for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert len(set(sources)) == len(sources) and len(sources) + len(dropped) == len(TOPICS)
    assert sources == sorted(sources)  # the documents' order (files by name), whatever the order answers came in

    for text in (killed_out, killed_err, second.stdout, second.stderr):
        assert KEY.encode() not in text
    for path in out.rglob("*"):
        assert KEY not in path.read_text(errors="replace"), path
