"""`lmsmith exam http://...`: a model behind an OpenAI-compatible server (our own `lmsmith serve` here)
is scored the same as the model directory itself; a server that is down is one line naming its URL."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import pytest
from conftest import write_jsonl

from lmsmith.cli import main


def serving_module():
    """tests/serve/serving.py: the real server process the serving tests use."""
    spec = importlib.util.spec_from_file_location("serving", Path(__file__).parents[1] / "serve" / "serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    pytest.importorskip("fastapi")
    log = tmp_path_factory.mktemp("server") / "server.log"
    process = serving_module().ServerProcess(model_dir, "--threads", "1", "--max-batch", "16", log_file=log)
    yield process
    process.stop()


def test_a_served_model_scores_item_for_item_as_the_model_itself(server, model_dir, tmp_path, capsys):
    choice = write_jsonl(tmp_path / "choice.jsonl", [
        {"question": q, "choices": ["3", "4", "5", "12"], "answer": i % 4}
        for i, q in enumerate(["1+2=", "2+2=", "3+1=", "0+5=", "4+4=", "9+3="])])
    answers = write_jsonl(tmp_path / "answers.jsonl", [{"prompt": p, "regex": "^a"} for p in ["abc", "x=", "Hello"]])
    out = tmp_path / "exam"
    assert main(["exam", server.url, str(model_dir), "--tasks", str(choice), str(answers), "--max-new-tokens", "6",
                 "-o", str(out), "--quiet"]) == 0
    capsys.readouterr()
    record = json.loads((out / "exam.json").read_text())["models"]
    served, local = record[server.url], record[str(model_dir)]
    for s, m in zip(served["choice"]["items"], local["choice"]["items"]):
        assert s["loglikelihoods"] == pytest.approx(m["loglikelihoods"], abs=1e-3)
        assert s["acc"] == m["acc"] and s["acc_norm"] == m["acc_norm"]
    assert [i["outputs"] for i in served["answers"]["items"]] == [i["outputs"] for i in local["answers"]["items"]]
    assert served["choice"]["item_scores"] == local["choice"]["item_scores"]


def test_a_server_that_is_down_is_named_by_its_url(model_dir, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    task = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a", "answer": "b"}])
    assert main(["exam", f"http://127.0.0.1:{port}/v1", "--tasks", str(task)]) == 2
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{port}/v1/models: cannot reach the server" in err and len(err.splitlines()) == 1


def test_a_server_answering_errors_is_reported_with_the_status(server, tmp_path, capsys, monkeypatch):
    long_prompt = "a" * 1000  # past the tiny model's context of 128 tokens: the server refuses it (400)
    task = write_jsonl(tmp_path / "t.jsonl", [{"prompt": long_prompt, "answer": "b"}])
    assert main(["exam", server.url, "--tasks", str(task)]) == 2
    err = capsys.readouterr().err
    assert f"{server.url}/completions answered 400" in err and len(err.splitlines()) == 1
