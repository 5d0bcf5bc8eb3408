"""Tool calls against a real `lmsmith serve` with the official openai client: tools rendered through the
chat template, tool_choice none/auto/required/named, streamed and not, and role "tool" messages back.

The tool section takes a few hundred tokens of the prompt, so these tests serve a tiny random model
with a longer context (1,024 tokens) through our `plain` template (`--template plain`).
"""

from __future__ import annotations

import json

import pytest
from serve_models import tiny_model

from lmsmith.model.constraints import Constraint, Grammars
from lmsmith.model.directory import save_model_dir
from lmsmith.serve.tools import MAX_TOOLS, in_schema_order, parse_tool_calls
from lmsmith.text.chat_template import ChatFormat, find_answer_end, get_template, jinja_source

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llguidance")

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 4}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"],
        "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.fixture(scope="module")
def client(char_tokenizer, tmp_path_factory):
    from serving import ServerProcess

    work = tmp_path_factory.mktemp("tools")
    path = save_model_dir(work / "model", tiny_model(char_tokenizer.vocab_size, block_size=1024), char_tokenizer,
                          made_by="test")
    process = ServerProcess(path, "--template", "plain", "--threads", "1", "--model-name", "tools",
                            log_file=work / "server.log")
    yield openai.OpenAI(base_url=process.url, api_key="none", max_retries=0)
    assert process.stop() == 0
    assert "Traceback" not in process.log()


def check_call(call, names=SCHEMAS) -> dict:
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in names
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


def test_a_named_function_is_called_with_arguments_valid_against_its_schema(client):
    for seed in range(5):
        answer = client.chat.completions.create(
            model="tools", messages=ASK, tools=TOOLS, temperature=1.0, seed=seed, max_tokens=120,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
        check_call(choice.message.tool_calls[0])


def test_required_calls_one_of_the_tools_and_a_stream_carries_the_call(client):
    answer = client.chat.completions.create(model="tools", messages=ASK, tools=TOOLS, tool_choice="required",
                                            temperature=1.0, seed=1, max_tokens=120)
    assert answer.choices[0].finish_reason == "tool_calls"
    check_call(answer.choices[0].message.tool_calls[0])
    stream = client.chat.completions.create(model="tools", messages=ASK, tools=TOOLS, tool_choice="required",
                                            temperature=1.0, seed=2, max_tokens=120, stream=True)
    pieces, finish = [], None
    for chunk in stream:
        pieces += chunk.choices[0].delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and {p.index for p in pieces} == {0}
    assert len(pieces) > 2  # the arguments came in pieces, as they were written
    head = pieces[0]
    arguments = "".join(p.function.arguments or "" for p in pieces)
    call = head.model_copy(update={"function": head.function.model_copy(update={"arguments": arguments})})
    check_call(call)


def test_auto_and_none_answer_in_text_and_a_tool_result_goes_back_through_the_template(client):
    for choice in ("auto", "none"):
        answer = client.chat.completions.create(model="tools", messages=ASK, tools=TOOLS, tool_choice=choice,
                                                temperature=0, max_tokens=10)
        assert answer.choices[0].finish_reason in ("stop", "length")  # a random model writes no call
        assert not answer.choices[0].message.tool_calls
    called = client.chat.completions.create(model="tools", messages=ASK, tools=TOOLS, tool_choice="required",
                                            max_tokens=120).choices[0].message
    follow_up = [*ASK, called.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": called.tool_calls[0].id, "content": "12 degrees, rain"}]
    answer = client.chat.completions.create(model="tools", messages=follow_up, tools=TOOLS, max_tokens=5,
                                            temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_our_templates_render_tools_calls_and_results():
    fmt = ChatFormat(jinja_source(get_template("chatml")), "<|endoftext|>")
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"}]
    text = fmt.prompt(messages, tools=TOOLS)
    assert text.startswith("<|im_start|>system\nYou can call functions.")
    assert json.dumps(TOOLS[0]["function"]) in text
    assert '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>' \
           '<|im_end|>' in text
    assert text.endswith("<|im_start|>user\n<tool_response>rain</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert fmt.prompt(ASK) == fmt.prompt(ASK, tools=None)  # without tools, the text is what it always was
    assert find_answer_end(fmt.source, type("T", (), {"eot_token": "<|endoftext|>",
                                                      "special_tokens": ["<|im_end|>"]})()) == "<|im_end|>"


def test_auto_reads_well_formed_calls_out_of_an_answer():
    content, calls = parse_tool_calls('Let me look. <tool_call>{"name": "get_time", "arguments": {"zone": "utc"}}'
                                      '</tool_call>', TOOLS)
    assert content == "Let me look." and [c["function"]["name"] for c in calls] == ["get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"zone": "utc"}
    assert parse_tool_calls('{"name": "get_time", "parameters": {"zone": "cet"}}', TOOLS)[1]  # Llama 3's form
    assert parse_tool_calls('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', TOOLS)[1] == []
    assert parse_tool_calls("just text", TOOLS) == ("just text", [])


def test_auto_keeps_a_call_only_when_its_arguments_match_its_schema(char_tokenizer):
    grammars = Grammars(char_tokenizer)
    compiled = {name: grammars.compile(Constraint.json_schema(schema)) for name, schema in SCHEMAS.items()}

    def valid(name: str, arguments: dict) -> bool:
        text = json.dumps(in_schema_order(arguments, SCHEMAS[name]), separators=(",", ":"))
        return grammars.matches(compiled[name], text)

    good = '<tool_call>{"name": "get_weather", "arguments": {"unit": "c", "city": "Oslo"}}</tool_call>'
    assert len(parse_tool_calls(good, TOOLS, valid)[1]) == 1  # keys in any order
    for arguments in ('{"city": "Oslo"}', '{"city": "Oslo City", "unit": "c"}', '{"city": "Oslo", "unit": "k"}'):
        text = f'<tool_call>{{"name": "get_weather", "arguments": {arguments}}}</tool_call>'
        assert parse_tool_calls(text, TOOLS, valid) == (text, [])  # not a valid call: it stays text


@pytest.mark.parametrize(("extra", "words"), [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "launch"}}}, "does not offer"),
    ({"tool_choice": "required"}, "'tool_choice' needs 'tools'"),
    ({"tools": TOOLS * (MAX_TOOLS // 2 + 1)}, f"at most {MAX_TOOLS}"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "letters, digits"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}],
      "tool_choice": "required"}, "cannot be compiled"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "drop 'response_format'"),
])
def test_bad_tools_are_a_400_naming_the_problem(client, extra, words):
    with pytest.raises(openai.BadRequestError, match=words):
        client.chat.completions.create(model="tools", messages=ASK, max_tokens=5, extra_body=extra)
