"""Structured outputs against a real `lmsmith serve` with the official openai client: response_format
(json_object, json_schema) on both endpoints, guided_regex and guided_grammar, and their 400s.

The served model is tiny and random (conftest.py): it never writes JSON by itself, so every output
that parses and validates does so because of the token masks.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_models import KEY, NAME

from lmsmith.model.constraints import MAX_SOURCE_CHARS

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llguidance")

# Nested objects, enums, arrays and required fields, small enough that the longest answer (98 tokens, with
# every character of a string a four-byte character spelt in byte-fallback tokens) fits max_tokens=100
# beside the 28-token prompt in the tiny model's 128-token context.
ORDER = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 2},
        "status": {"enum": ["open", "shut"]},
        "tags": {"type": "array", "items": {"enum": ["red", "blue"]}, "maxItems": 2},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 2},
                                                     "zip": {"type": "integer", "minimum": 0, "maximum": 999}},
                    "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "status", "tags", "address"],
    "additionalProperties": False,
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER, "strict": True}}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)


def ask_for_order(client, seed: int) -> tuple[str, str]:
    answer = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "An order?"}],
                                            response_format=SCHEMA_FORMAT, temperature=1.0, seed=seed,
                                            max_tokens=100)
    return answer.choices[0].message.content, answer.choices[0].finish_reason


def test_20_of_20_sampled_answers_parse_and_validate_while_free_requests_decode_beside_them(client):
    free_alone = client.completions.create(model=NAME, prompt="Where is my parcel?", max_tokens=30,
                                           temperature=0).choices[0].text
    with ThreadPoolExecutor(8) as pool:
        free = [pool.submit(lambda: client.completions.create(model=NAME, prompt="Where is my parcel?",
                                                              max_tokens=30, temperature=0).choices[0].text)
                for _ in range(4)]
        orders = list(pool.map(lambda seed: ask_for_order(client, seed), range(20)))
    for text, finish in orders:
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), ORDER)
    assert [f.result() for f in free] == [free_alone] * 4  # the free rows are untouched by the masks


def test_json_object_on_completions_and_a_stream_join_into_json(client):
    answer = client.completions.create(model=NAME, prompt="JSON:", max_tokens=100, temperature=0.8, seed=3,
                                       extra_body={"response_format": {"type": "json_object"}})
    if answer.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(answer.choices[0].text), dict)
    else:
        assert answer.choices[0].text.startswith("{")
    stream = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "An order?"}],
                                            response_format=SCHEMA_FORMAT, temperature=1.0, seed=7, max_tokens=100,
                                            stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    jsonschema.validate(json.loads(text), ORDER)


def test_guided_regex_and_guided_grammar_hold_the_whole_output(client):
    for seed in range(3):
        text = client.completions.create(model=NAME, prompt="Code:", max_tokens=20, temperature=1.0, seed=seed,
                                         extra_body={"guided_regex": r"[0-9]{3}-[a-z]{2}"}).choices[0].text
        assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", text), text
    grammar = 'start: "yes" | "no" | "maybe"'
    answer = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Well?"}],
                                            max_tokens=10, extra_body={"guided_grammar": grammar})
    assert answer.choices[0].message.content in ("yes", "no", "maybe")


def test_a_constrained_answer_cut_by_max_tokens_ends_with_length(client):
    answer = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "An order?"}],
                                            response_format=SCHEMA_FORMAT, max_tokens=5)
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == '{"nam'  # five tokens of the only start the schema allows


@pytest.mark.parametrize(("extra", "words"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}},
     "JSON schema cannot be compiled"),
    ({"response_format": {"type": "xml"}}, "'response_format' must be an object whose type"),
    ({"guided_regex": "(ab"}, "regex cannot be compiled"),
    ({"guided_grammar": "start: missing_rule"}, "grammar cannot be compiled"),
    ({"guided_regex": "a" * (MAX_SOURCE_CHARS + 1)}, f"at most {MAX_SOURCE_CHARS}"),
    ({"guided_regex": "a", "response_format": {"type": "json_object"}}, "at most one of"),
])
def test_a_schema_regex_or_grammar_the_library_refuses_is_a_400_naming_it(client, extra, words):
    with pytest.raises(openai.BadRequestError, match=re.escape(words)):
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                                       extra_body=extra)
