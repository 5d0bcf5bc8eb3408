"""The OpenAI request bodies, read and checked: what a client may ask, and the 400 for what it may not.

Only the fields this server acts on are read; a field it cannot honour is refused by name instead
of being silently ignored.

Structured output: OpenAI's `response_format` ({"type": "json_object"} or {"type": "json_schema",
"json_schema": {"name", "schema", "strict"}}) on both endpoints, and our extension in vLLM's dialect:
`guided_regex` (a regular expression the whole output matches) or `guided_grammar` (a Lark grammar,
as llguidance reads it), sent by the openai client through `extra_body`. At most one per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmsmith.model.constraints import Constraint, ConstraintError
from lmsmith.serve.errors import ApiError, bad_request
from lmsmith.serve.tools import ToolChoice, read_tools

MAX_STOP_STRINGS = 4
MAX_LOGPROBS = 20
UNSUPPORTED_CHAT = ("functions", "function_call")  # OpenAI's deprecated forms of tools and tool_choice


@dataclass
class Limits:
    """What one request may ask for, from the server's settings and the model's context."""

    context: int  # the model's block size: prompt + new tokens must fit
    max_tokens: int  # the most new tokens per request
    max_n: int  # the most choices per request
    kv_cache_tokens: int | None = None  # with a block pool: the most tokens (prompt + new) one request can hold


@dataclass
class Sampled:
    """The fields completions and chat share."""

    model: str | None
    max_tokens: int | None  # None: the endpoint's default
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    constraint: Constraint | None = None  # response_format, guided_regex or guided_grammar


@dataclass
class CompletionBody(Sampled):
    prompts: list[str | list[int]] = field(default_factory=list)
    echo: bool = False
    logprobs: int | None = None


@dataclass
class ChatBody(Sampled):
    messages: list[dict] = field(default_factory=list)
    logprobs: int | None = None  # logprobs: true gives each answer token's; top_logprobs N the N likeliest too
    tools: list[dict] = field(default_factory=list)  # the functions the model may call (serve/tools.py)
    tool_choice: ToolChoice = field(default_factory=lambda: ToolChoice("none"))
    valid_arguments: Any = None  # with tools: (name, arguments) -> bool, set by the HTTP layer (api.py)

    @property
    def calls_tools(self) -> bool:
        """Tools are offered and may be called: the answer is read for tool calls."""
        return bool(self.tools) and self.tool_choice.mode != "none"


def _number(body: dict, name: str, default, low: float, high: float, integer: bool = False):
    value = body.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise bad_request(f"'{name}' must be {kind}, got {value!r}", name)
    if not low <= value <= high:
        raise bad_request(f"'{name}' must be between {low} and {high}, got {value}", name)
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false, got {value!r}", name)
    return value


def _stop(body: dict) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"'stop' holds {len(stops)} strings; at most {MAX_STOP_STRINGS} are allowed", "stop")
    return stops


def _sampled(body: dict, limits: Limits, token_field: str = "max_tokens") -> dict:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string", "model")
    max_tokens = _number(body, token_field, None, 0, float("inf"), integer=True) if body.get(token_field) is not None \
        else None
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise bad_request(f"'{token_field}' is {max_tokens}, but this server allows at most {limits.max_tokens} "
                          f"new tokens (the model's context is {limits.context} tokens)", token_field)
    top_k = _number(body, "top_k", None, -1, float("inf"), integer=True)
    top_p = _number(body, "top_p", None, 0, 1)
    if top_p is not None and top_p <= 0:
        raise bad_request("'top_p' must be greater than 0 (1 keeps every token)", "top_p")
    options = body.get("stream_options")
    stream = _flag(body, "stream")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise bad_request("'stream_options' is an object, allowed only with stream: true", "stream_options")
    return dict(
        model=model, max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0, 2),
        top_p=None if top_p in (None, 1) else top_p,
        top_k=None if top_k in (None, -1, 0) else top_k,  # -1 / 0: no top-k, as vLLM reads it
        stop=_stop(body), seed=_number(body, "seed", None, -(2**63), 2**63 - 1, integer=True),
        n=_number(body, "n", 1, 1, limits.max_n, integer=True), stream=stream,
        include_usage=bool(options and options.get("include_usage")),
        constraint=_constraint(body),
    )


def _constraint(body: dict) -> Constraint | None:
    """The one structured-output field a request may carry, as a Constraint (too large: a 400)."""
    given = [name for name in ("response_format", "guided_regex", "guided_grammar") if body.get(name) is not None]
    if not given:
        return None
    if len(given) > 1:
        raise bad_request(f"give at most one of {' and '.join(repr(n) for n in given)}", given[1])
    name = given[0]
    value = body[name]
    try:
        if name == "response_format":
            return _response_format(value)
        if not isinstance(value, str) or not value:
            raise bad_request(f"'{name}' must be a non-empty string", name)
        return Constraint("regex" if name == "guided_regex" else "grammar", value)
    except ConstraintError as exc:
        raise bad_request(str(exc), name) from None


def _response_format(value: Any) -> Constraint | None:
    kinds = ("text", "json_object", "json_schema")
    if not isinstance(value, dict) or value.get("type") not in kinds:
        raise bad_request(f"'response_format' must be an object whose type is one of {', '.join(kinds)}",
                          "response_format")
    if value["type"] == "text":
        return None
    if value["type"] == "json_object":
        return Constraint("json_object")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise bad_request("'response_format.json_schema' must be an object with a 'schema' object "
                          "(and a 'name')", "response_format")
    return Constraint.json_schema(spec.get("schema", {}))


def _prompts(value: Any, vocab_size: int) -> list[str | list[int]]:
    """`prompt` as text, a list of texts, token ids, or a list of token-id lists."""
    def token_list(items) -> bool:
        return isinstance(items, list) and bool(items) and all(isinstance(t, int) and not isinstance(t, bool)
                                                               for t in items)

    if isinstance(value, str):
        prompts = [value]
    elif token_list(value):
        prompts = [value]
    elif isinstance(value, list) and value and all(isinstance(p, str) or token_list(p) for p in value):
        prompts = list(value)
    else:
        raise bad_request("'prompt' must be a string, a list of strings, a list of token ids, or a list of such lists",
                          "prompt")
    for prompt in prompts:
        if isinstance(prompt, list) and not all(0 <= t < vocab_size for t in prompt):
            raise bad_request(f"'prompt' holds a token id outside the vocabulary (0..{vocab_size - 1})", "prompt")
    return prompts


def read_completion(body: Any, limits: Limits, vocab_size: int) -> CompletionBody:
    body = _object(body)
    if "prompt" not in body:
        raise bad_request("'prompt' is required", "prompt")
    parsed = CompletionBody(**_sampled(body, limits), prompts=_prompts(body["prompt"], vocab_size),
                            echo=_flag(body, "echo"),
                            logprobs=_number(body, "logprobs", None, 0, MAX_LOGPROBS, integer=True))
    if len(parsed.prompts) * parsed.n > limits.max_n:
        raise bad_request(f"{len(parsed.prompts)} prompts x n={parsed.n} asks for {len(parsed.prompts) * parsed.n} "
                          f"choices; this server gives at most {limits.max_n} per request", "n")
    if parsed.max_tokens == 0 and not parsed.echo:
        raise bad_request("'max_tokens' is 0: that returns nothing unless echo is true", "max_tokens")
    return parsed


def read_chat(body: Any, limits: Limits) -> ChatBody:
    body = _object(body)
    for name in UNSUPPORTED_CHAT:
        if body.get(name) is not None:
            raise bad_request(f"'{name}' is not supported by this server", name)
    if "messages" not in body:
        raise bad_request("'messages' is required: a list of {role, content} objects", "messages")
    token_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    top = _number(body, "top_logprobs", None, 0, MAX_LOGPROBS, integer=True)
    wanted = _flag(body, "logprobs")
    if top is not None and not wanted:
        raise bad_request("'top_logprobs' needs logprobs: true", "top_logprobs")
    tools, tool_choice = read_tools(body)
    parsed = ChatBody(**_sampled(body, limits, token_field), messages=body["messages"],
                      logprobs=(top or 0) if wanted else None, tools=tools, tool_choice=tool_choice)
    if tool_choice.mode in ("required", "function") and parsed.constraint is not None:
        raise bad_request("'tool_choice' required or a named function already holds the answer to a call: "
                          "drop 'response_format' (or the guided_ field)", "tool_choice")
    if parsed.max_tokens == 0:
        raise bad_request(f"'{token_field}' must be at least 1", token_field)
    if not isinstance(parsed.messages, list):
        raise bad_request("'messages' must be a list of {role, content} objects", "messages")
    for i, message in enumerate(parsed.messages):
        if isinstance(message, dict) and isinstance(message.get("content"), list):  # content parts: text only
            parts = message["content"]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in parts):
                raise bad_request(f"messages[{i}].content: only text parts are supported", "messages")
            parsed.messages[i] = {**message, "content": "".join(p["text"] for p in parts)}
    return parsed


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def check_fits(prompt_tokens: int, max_tokens: int, limits: Limits, index: int = 0) -> None:
    """A prompt plus the tokens asked for must fit the model's context (400 naming the limit)."""
    if limits.kv_cache_tokens is not None and prompt_tokens + max_tokens > limits.kv_cache_tokens:
        raise ApiError(400, f"this server's KV cache holds {limits.kv_cache_tokens} tokens (--kv-cache-tokens or "
                            "--kv-cache-gb); "
                            f"the prompt has {prompt_tokens} tokens and {max_tokens} new tokens were asked for: "
                            "shorten the prompt or lower max_tokens", "max_tokens", "kv_cache_exceeded")
    if prompt_tokens + max_tokens > limits.context:
        where = f"prompt {index + 1}" if index else "the prompt"
        raise ApiError(400, f"this model's maximum context length is {limits.context} tokens; {where} has "
                            f"{prompt_tokens} tokens and {max_tokens} new tokens were asked for: shorten the "
                            "prompt or lower max_tokens", "prompt", "context_length_exceeded")
