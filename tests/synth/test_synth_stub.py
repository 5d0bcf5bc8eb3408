"""synth against a stub teacher: retries on 429 and 500, malformed JSON counted, a server without
response_format, budgets, the checks, and the bad inputs (endpoint down, model not listed, short documents)."""

from __future__ import annotations

import json
import re

import pytest
from stub_teacher import StubTeacher

from lmsmith.cli import main

pytest.importorskip("openai")


def topic_of(prompt: str) -> str:
    return re.search(r"The (\w+) policy", prompt).group(1)


def supported_answer(prompt: str) -> dict:
    """Two items a good teacher would write about the passage in the prompt, in the passage's words."""
    t = topic_of(prompt)
    return {"items": [{"question": f"Where does a {t} request go?", "answer": f"To the {t} desk."},
                      {"question": f"What should I keep after a {t} request?", "answer": f"Keep the {t} receipt."}]}


def synth(docs, out, stub, *extra) -> int:
    return main(["synth", str(docs), "-o", str(out), "--endpoint", stub.url, "--model", "teacher", "--quiet",
                 "synth.backoff=0.01", "synth.concurrency=1", *extra])


def report(out) -> dict:
    return json.loads((out / "report.json").read_text())


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_429_and_500_are_retried_then_every_passage_is_written_with_its_source(docs, tmp_path):
    with StubTeacher(supported_answer, script=[429, 500, 429]) as stub:
        assert synth(docs, tmp_path / "out", stub) == 0
    written = lines(tmp_path / "out" / "qa.jsonl")
    assert stub.chats == 4 + 3
    assert len(written) == 8
    assert {w["source"].split("/")[-1] for w in written} == {"printer.md#0", "invoice.md#0", "password.md#0",
                                                            "refund.md#0"}
    assert report(tmp_path / "out")["too_short"] == 1
    assert all(r.get("response_format", {}).get("type") == "json_schema" for r in stub.requests)


def test_malformed_json_is_counted_as_a_parse_failure_and_the_rest_is_kept(docs, tmp_path):
    with StubTeacher(supported_answer, script=[{"text": "Sure! {\"items\": [{\"question\": "}]) as stub:
        assert synth(docs, tmp_path / "out", stub) == 0
    r = report(tmp_path / "out")
    assert (r["answered"], r["parsed"], r["parse_failures"], r["items_written"]) == (4, 3, 1, 6)


def test_a_server_that_refuses_response_format_is_asked_again_and_its_prose_parsed(docs, tmp_path):
    def prose(prompt):
        return {"text": "Here you go:\n```json\n" + json.dumps(supported_answer(prompt)) + "\n```"}

    with StubTeacher(prose, script=["refuse_format"]) as stub:
        assert synth(docs, tmp_path / "out", stub) == 0
    r = report(tmp_path / "out")
    assert r["structured_output"] is False and r["items_written"] == 8
    assert "response_format" not in stub.requests[-1]


def test_duplicates_and_unsupported_answers_are_dropped_with_their_reasons(docs, tmp_path):
    def answer(prompt):
        t = topic_of(prompt)
        made_up = f"The regional {t} vice president, by telegram."
        return {"items": [{"question": f"Who approves a {t}?", "answer": made_up},
                          {"question": "Where does it go?", "answer": f"To the {t} desk."},
                          {"question": "Where does it go?", "answer": f"To the {t} desk."}]}

    with StubTeacher(answer) as stub:
        assert synth(docs, tmp_path / "out", stub, "synth.items_per_passage=3") == 0
    r = report(tmp_path / "out")
    assert r["dropped"] == {"exact_duplicate": 4, "unsupported": 4}
    assert r["items_written"] == 4
    reasons = {d["reason"] for d in lines(tmp_path / "out" / "dropped.jsonl")}
    assert reasons == {"exact_duplicate", "unsupported"}


def test_verify_asks_the_teacher_and_drops_what_it_rejects(docs, tmp_path):
    def answer(prompt):
        if prompt.startswith("Does the document below support"):
            return {"supported": "receipt" not in prompt.split("Answer:")[1]}
        return supported_answer(prompt)

    with StubTeacher(answer) as stub:
        assert synth(docs, tmp_path / "out", stub, "--verify") == 0
    r = report(tmp_path / "out")
    assert r["dropped"] == {"unsupported": 4} and r["items_written"] == 4
    assert stub.chats == 4 + 8


@pytest.mark.parametrize("flag, value, chats, items", [("--max-items", "3", 2, 3), ("--max-tokens", "250", 3, 6)])
def test_budgets_stop_the_asking(docs, tmp_path, flag, value, chats, items):
    with StubTeacher(supported_answer, tokens=100) as stub:
        assert synth(docs, tmp_path / "out", stub, flag, value) == 0
    assert stub.chats == chats
    assert len(lines(tmp_path / "out" / "qa.jsonl")) == items


def test_endpoint_down_is_one_line_naming_the_url_after_the_retries(docs, tmp_path, capsys):
    with StubTeacher(supported_answer) as stub:
        url = stub.url
    assert main(["synth", str(docs), "-o", str(tmp_path / "out"), "--endpoint", url, "--model", "teacher", "--quiet",
                 "synth.backoff=0.01", "synth.retries=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and url in err and "3 tries" in err
    assert not (tmp_path / "out").exists()


def test_a_persistent_500_is_one_line_after_the_retries(docs, tmp_path, capsys):
    with StubTeacher(lambda prompt: 500) as stub:
        assert synth(docs, tmp_path / "out", stub, "synth.retries=1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and stub.url in err and stub.chats == 2


def test_a_model_the_server_does_not_list_is_refused_before_any_work(docs, tmp_path, capsys):
    with StubTeacher(supported_answer, models=("other",)) as stub:
        assert main(["synth", str(docs), "-o", str(tmp_path / "out"), "--endpoint", stub.url, "--model", "teacher",
                     "--quiet"]) == 2
    assert stub.chats == 0
    assert "does not serve model 'teacher'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_documents_all_too_short_are_counted_and_refused(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("Short.\n")
    with StubTeacher(supported_answer) as stub:
        assert synth(tmp_path / "a.txt", tmp_path / "out", stub) == 2
    assert "1 shorter ones skipped" in capsys.readouterr().err and stub.chats == 0


def test_the_api_key_from_a_file_is_sent_but_never_written(docs, tmp_path, capsys):
    key = "sk-secret-4242424242"
    (tmp_path / "key").write_text(key + "\n")
    with StubTeacher(supported_answer, script=[500]) as stub:
        assert synth(docs, tmp_path / "out", stub, "--api-key-file", str(tmp_path / "key")) == 0
    assert stub.headers == [f"Bearer {key}"]
    captured = capsys.readouterr()
    assert key not in captured.out + captured.err
    for path in (tmp_path / "out").rglob("*"):
        assert key not in path.read_text(errors="replace"), path


def test_each_kind_writes_the_format_its_reader_takes(docs, tmp_path):
    from lmsmith.exam.items import read_task
    from lmsmith.finetune.instruct_data import parse_example
    from lmsmith.finetune.preferences import parse_pair

    def answer(prompt):
        t = topic_of(prompt)
        return {"items": [{"question": f"Where does a {t} request go?", "chosen": f"To the {t} desk.",
                           "rejected": "Nowhere.", "choices": ["Nowhere.", f"To the {t} desk.", "Home.", "Mars."],
                           "answer": 1}],
                "turns": [{"user": f"Where does a {t} request go?", "assistant": f"To the {t} desk."},
                          {"user": "And the receipt?", "assistant": f"Keep the {t} receipt."}]}

    def strict(prompt):  # the stub ignores the schema: keep only the fields the kind asked for
        return answer(prompt)

    for kind in ("conversation", "exam", "pairs"):
        with StubTeacher(strict) as stub:
            assert synth(docs, tmp_path / kind, stub, "--kind", kind) == 0
    conversation = lines(tmp_path / "conversation" / "conversation.jsonl")
    assert len(conversation) == 4 and all(parse_example(c, "x") for c in conversation)
    assert len(conversation[0]["messages"]) == 4
    pairs = lines(tmp_path / "pairs" / "pairs.jsonl")
    assert len(pairs) == 4 and all(parse_pair(p, "x", 1) for p in pairs)
    task = read_task(tmp_path / "exam" / "exam.jsonl")
    assert len(task.scored) == 4 and all(item.kind == "choice" for item in task.scored)


def test_items_that_quote_an_exam_are_dropped_with_exclude_exam(docs, tmp_path):
    exam_question = "Where does a refund request go when it arrives after the end of the month on a weekend?"
    (tmp_path / "exam.jsonl").write_text(json.dumps({"question": exam_question, "choices": ["a", "b"], "answer": 0})
                                         + "\n")

    def answer(prompt):
        t = topic_of(prompt)
        question = exam_question if t == "refund" else f"Where does a {t} request go?"
        return {"items": [{"question": question, "answer": f"To the {t} desk."}]}

    with StubTeacher(answer) as stub:
        assert synth(docs, tmp_path / "out", stub, "--exclude-exam", str(tmp_path / "exam.jsonl")) == 0
    assert report(tmp_path / "out")["dropped"] == {"exam_overlap": 1}
    assert all("refund" not in line["source"] for line in lines(tmp_path / "out" / "qa.jsonl"))


def test_a_refused_request_is_one_line_without_the_key(docs, tmp_path, capsys):
    key = "sk-secret-1717171717"
    (tmp_path / "key").write_text(key)
    with StubTeacher(supported_answer, script=[401]) as stub:
        assert synth(docs, tmp_path / "out", stub, "--api-key-file", str(tmp_path / "key")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(401)" in err and stub.url in err and key not in err


def test_verify_with_labels_is_refused_before_any_request(docs, tmp_path, capsys):
    with StubTeacher(supported_answer) as stub:
        assert synth(docs, tmp_path / "out", stub, "--kind", "labels", "--verify") == 2
        assert stub.chats == 0
    assert "leave verify off for kind labels" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
