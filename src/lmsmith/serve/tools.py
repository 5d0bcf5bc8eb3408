"""Tool calls in chat completions: the functions a request offers, how `tool_choice` constrains the
answer, and the calls read back out of it.

The format is the tool section of our chat templates (text/chat_template.py), Hermes' format, which
Qwen2.5's and SmolLM2's own templates also ask for: <tool_call>{"name": ..., "arguments": {...}}</tool_call>.
With tool_choice "required" or a named function the answer is decoded under a grammar that allows
exactly that: one call, its name one of the offered functions, its arguments valid against that
function's `parameters` schema. With "auto" the model writes what it likes, and any well-formed
call it wrote is taken (a bare {"name", "arguments"} object as the whole answer too, as Llama 3
writes them).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmsmith.model.constraints import JSON_OPTIONS, Constraint
from lmsmith.serve.errors import bad_request
from lmsmith.text.chat_template import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

MAX_TOOLS = 64  # functions one request may offer
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for a function name
_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ToolChoice:
    mode: str  # none | auto | required | function
    name: str | None = None  # with mode "function": the one to call


def read_tools(body: dict) -> tuple[list[dict], ToolChoice]:
    """`tools` (each {"type": "function", "function": {"name", "description", "parameters"}}) and
    `tool_choice`, checked; a 400 naming the field for anything else."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none"):
            raise bad_request("'tool_choice' needs 'tools': the functions the model may call", "tool_choice")
        return [], ToolChoice("none")
    if not isinstance(tools, list) or not tools:
        raise bad_request("'tools' must be a non-empty list of {type: function, function: {name, parameters}}",
                          "tools")
    if len(tools) > MAX_TOOLS:
        raise bad_request(f"'tools' holds {len(tools)} functions; at most {MAX_TOOLS} are allowed", "tools")
    checked, names = [], set()
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"tools[{i}] must be {{type: function, function: {{name, parameters}}}}", "tools")
        name = function["name"]
        if not _NAME.fullmatch(name):
            raise bad_request(f"tools[{i}]: function name {name!r} must be 1-64 letters, digits, _ or -", "tools")
        if name in names:
            raise bad_request(f"tools[{i}]: function {name!r} is offered twice", "tools")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise bad_request(f"tools[{i}]: the parameters of {name!r} must be a JSON schema object", "tools")
        names.add(name)
        checked.append({"type": "function", "function": {**function, "parameters": parameters}})
    return checked, _tool_choice(choice, names)


def _tool_choice(choice: Any, names: set[str]) -> ToolChoice:
    if choice is None:
        return ToolChoice("auto")
    if choice in ("none", "auto", "required"):
        return ToolChoice(choice)
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request("'tool_choice' must be none, auto, required or {type: function, function: {name}}",
                          "tool_choice")
    if function["name"] not in names:
        raise bad_request(f"'tool_choice' names function {function['name']!r}, which 'tools' does not offer",
                          "tool_choice")
    return ToolChoice("function", function["name"])


def call_constraint(tools: list[dict], choice: ToolChoice) -> Constraint | None:
    """For "required" or a named function: a grammar allowing one call, with valid arguments."""
    if choice.mode not in ("required", "function"):
        return None
    offered = [t["function"] for t in tools if choice.mode == "required" or t["function"]["name"] == choice.name]
    calls = [{"type": "object", "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
              "required": ["name", "arguments"], "additionalProperties": False} for f in offered]
    schema = {**(calls[0] if len(calls) == 1 else {"anyOf": calls}), "x-guidance": JSON_OPTIONS}
    return Constraint("grammar", f"start: {json.dumps(TOOL_CALL_OPEN)} call {json.dumps(TOOL_CALL_CLOSE)}\n"
                                 f"call: %json {json.dumps(schema)}")


Check = Callable[[str, dict], bool]  # (function name, arguments) -> whether they are valid for it


def parse_tool_calls(text: str, tools: list[dict], valid: Check | None = None) -> tuple[str | None, list[dict]]:
    """(the answer's text without its calls, or None if nothing else is left; the calls, as OpenAI's
    message.tool_calls). A call naming a function not offered, not valid JSON, or with arguments that
    `valid` refuses, stays in the text."""
    names = {t["function"]["name"] for t in tools}
    calls, kept, at = [], [], 0
    for match in _CALL.finditer(text):
        call = _call(match.group(1), names, valid)
        if call is not None:
            kept.append(text[at: match.start()])
            at = match.end()
            calls.append(call)
    kept.append(text[at:])
    if not calls:
        whole = _call(text, names, valid)  # Llama 3 writes a call as the bare JSON object
        if whole is not None:
            return None, [whole]
    rest = "".join(kept).strip()
    return (rest or None) if calls else text, calls


def _call(source: str, names: set[str], valid: Check | None) -> dict | None:
    try:
        value = json.loads(source)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string, as the API sends them
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict) or (valid is not None and not valid(value["name"], arguments)):
        return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": value["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}}


def in_schema_order(value: Any, schema: Any) -> Any:
    """`value` with each object's keys in the order its schema lists them (the order constrained JSON is
    written in), the others after them; arrays item by item."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        properties = schema["properties"]
        ordered = {k: in_schema_order(value[k], properties[k]) for k in properties if k in value}
        return {**ordered, **{k: v for k, v in value.items() if k not in properties}}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [in_schema_order(v, schema["items"]) for v in value]
    return value


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as chat templates expect them: an assistant's tool-call arguments as objects (the API sends
    them as JSON strings; Qwen's and our templates write them with tojson)."""
    out = []
    for message in messages:
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if isinstance(calls, list):
            message = {**message, "tool_calls": [_arguments_as_object(c) for c in calls]}
        out.append(message)
    return out


def _arguments_as_object(call: Any) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = json.loads(function["arguments"])
    except json.JSONDecodeError:
        return call
    return {**call, "function": {**function, "arguments": arguments}}
