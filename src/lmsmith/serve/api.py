"""The HTTP layer: OpenAI's API (models, completions, chat completions) over the engine.

It only translates: a JSON body becomes engine requests (protocol.py checks it), engine events
become a JSON answer or a stream of server-sent events. No endpoint reads or writes files, and
the logs record each request's size and timing, not its text (unless serve.log_text is set).
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions' annotations, and those
# must be the real classes, which are imported inside create_app (fastapi comes with the serve extra only).
import asyncio
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lmsmith.model.constraints import JSON_OPTIONS, Constraint, ConstraintError, Grammars, Matcher
from lmsmith.serve.adapters import BASE
from lmsmith.serve.choices import Choice, Choices
from lmsmith.serve.engine import Engine, Sampling
from lmsmith.serve.errors import ApiError, bad_request
from lmsmith.serve.protocol import ChatBody, CompletionBody, Limits, Sampled, check_fits, read_chat, read_completion
from lmsmith.serve.tools import call_constraint, in_schema_order, parse_tool_calls, template_messages
from lmsmith.text.chat_template import ChatFormat, TemplateError

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

log = logging.getLogger("lmsmith.serve")

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


@dataclass(frozen=True)
class ModelRoute:
    """A name a request's `model` may give: the base, or one of its LoRA adapters (serve/adapters.py)."""

    name: str
    adapter: int  # what the engine routes the request's rows by; BASE for the base model
    chat: ChatFormat | None = None
    no_chat_reason: str = ""  # why chat is unavailable, for the 400


@dataclass
class ServedModel:
    """Everything the HTTP layer needs: the engine, how to read and write text, and the limits."""

    name: str
    engine: Engine
    tokenizer: object
    limits: Limits
    chat: ChatFormat | None = None
    no_chat_reason: str = ""  # why chat is unavailable, for the 400
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    log_text: bool = False
    created: int = 0
    grammars: Grammars | None = None  # made at the first constrained request: plain serving never needs it
    grammars_lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: dict[str, ModelRoute] = field(default_factory=dict)  # by name, the base's own left out

    def routes(self) -> list[ModelRoute]:
        """Every model a request may name: the base first, then its adapters."""
        return [ModelRoute(self.name, BASE, self.chat, self.no_chat_reason), *self.adapters.values()]


def create_app(served: ServedModel) -> "FastAPI":
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="lmsmith", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:  # unknown path, wrong method
        return JSONResponse(ApiError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)

    app.add_middleware(RequestLog)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        authorize(request, served)
        return {"object": "list", "data": [model_card(served, route) for route in served.routes()]}

    @app.get("/v1/models/{name}")
    async def model(name: str, request: Request) -> dict:
        authorize(request, served)
        return model_card(served, check_model(served, name))

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request, served)
        body = read_completion(await read_body(request, served), served.limits, served.tokenizer.vocab_size)
        return await complete(request, served, body)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request, served)
        body = read_chat(await read_body(request, served), served.limits)
        return await chat(request, served, body)

    from lmsmith.serve.page import add_page

    add_page(app, served, authorize, read_body)
    return app


class RequestLog:
    """Logs each request's method, path, status and time (never its body), when its response has ended.

    Plain ASGI rather than FastAPI's @middleware("http"), which would copy every streamed chunk
    through an extra queue on its way out.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [0]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info("%s %s -> %d in %.0f ms", scope["method"], scope["path"], status[0],
                     (time.perf_counter() - started) * 1000)


# ---------------------------------------------------------------------------------------------
# Checks every request passes


def authorize(request: "Request", served: ServedModel) -> None:
    """With an API key set, every request must carry it as a bearer token (compared in constant time)."""
    if served.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), served.api_key.encode()):
        raise ApiError(401, "missing or wrong API key: send it as 'Authorization: Bearer KEY'", code="invalid_api_key")


async def read_body(request: "Request", served: ServedModel):
    """The JSON body, read no further than the size limit."""
    limit = served.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise bad_request(f"the request body is {int(declared)} bytes; this server takes at most {limit}")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise bad_request(f"the request body is over {limit} bytes, the most this server takes")
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply: a request is a few levels of objects") from None
    check_unicode(body)
    return body


def check_unicode(body) -> None:
    """Refuse text that is not Unicode: JSON may spell a lone surrogate (\\ud800), which no tokenizer encodes."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise bad_request(f"the request holds a lone surrogate ({exc.object[exc.start:exc.end]!a}), which is not "
                          "text: send valid Unicode") from None


def check_model(served: ServedModel, name: str | None) -> ModelRoute:
    """The base or adapter a request names (no name: the base); an unknown name is a 404 naming the known ones."""
    routes = served.routes()
    if name is None:
        return routes[0]
    for route in routes:
        if route.name == name:
            return route
    known = ", ".join(f"'{r.name}'" for r in routes)
    raise ApiError(404, f"model '{name}' does not exist: this server serves {known}", "model", "model_not_found")


def model_card(served: ServedModel, route: ModelRoute) -> dict:
    card = {"id": route.name, "object": "model", "created": served.created, "owned_by": "lmsmith",
            "max_model_len": served.limits.context}
    if route.adapter != BASE:
        card["parent"] = served.name  # vLLM names a LoRA adapter's base the same way
    return card


# ---------------------------------------------------------------------------------------------
# Completions


async def complete(request: "Request", served: ServedModel, body: CompletionBody):
    route = check_model(served, body.model)
    if body.stream and body.logprobs is not None:
        raise bad_request("'logprobs' with stream: true is not supported: ask without streaming", "logprobs")
    tokenizer = served.tokenizer
    prompts = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in body.prompts]
    if any(not p for p in prompts):
        raise bad_request("a prompt encodes to no tokens: give some text (or token ids) to continue", "prompt")
    longest = max(len(p) for p in prompts)
    check_fits(longest, 0, served.limits)
    max_tokens = body.max_tokens
    if max_tokens is None:
        max_tokens = min(DEFAULT_COMPLETION_TOKENS, served.limits.context - longest)
    for i, prompt in enumerate(prompts):
        check_fits(len(prompt), max_tokens, served.limits, i)
    prompt_logprobs = body.logprobs if body.echo and body.logprobs is not None else None
    stop_ids = frozenset({tokenizer.eot_id})
    matcher = await matchers(served, body.constraint, stop_ids)
    choices = start_choices(served, prompts, body, max_tokens, body.logprobs, prompt_logprobs, stop_ids, matcher,
                            route.adapter)
    log_request(served, "completion", prompts, body)
    ids = Ids("cmpl", "text_completion", route.name)
    if body.stream:
        return sse(stream_completion(request, served, choices, body, ids))
    await drain(request, served, choices)
    return {**ids.head(), "choices": [completion_choice(c, body, tokenizer) for c in choices.choices],
            "usage": usage(choices)}


def completion_choice(choice: Choice, body: CompletionBody, tokenizer) -> dict:
    prompt_text = tokenizer.decode(choice.prompt) if body.echo else ""
    text = prompt_text + choice.text
    logprobs = None
    if body.logprobs is not None:
        logprobs = completion_logprobs(choice, body, tokenizer)
    return {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": choice.finish_reason}


def completion_logprobs(choice: Choice, body: CompletionBody, tokenizer) -> dict:
    """OpenAI's legacy logprobs: the token strings, each one's log-probability, the top ones, and offsets."""
    ids, lps, tops = [], [], []
    if body.echo and choice.scores is not None:
        ids += choice.prompt
        lps += choice.scores.logprobs
        tops += [None if t is None else t for t in choice.scores.top]
    for token in choice.tokens:
        ids.append(token.id)
        lps.append(token.logprob)
        tops.append(token.top)
    strings = [tokenizer.decode([t]) for t in ids]
    offsets, at = [], 0
    for s in strings:
        offsets.append(at)
        at += len(s)
    top_dicts = [None if top is None else {tokenizer.decode([t]): lp for t, lp in top} for top in tops]
    return {"tokens": strings, "token_logprobs": lps, "top_logprobs": top_dicts, "text_offset": offsets}


async def stream_completion(request: "Request", served: ServedModel, choices: Choices, body: CompletionBody, ids):
    if body.echo:
        for choice in choices.choices:
            yield ids.chunk([{"index": choice.index, "text": served.tokenizer.decode(choice.prompt), "logprobs": None,
                              "finish_reason": None}])
    async for choice, piece in choices.pieces(request.is_disconnected):
        finish = choice.finish_reason if not piece else None
        yield ids.chunk([{"index": choice.index, "text": piece, "logprobs": None, "finish_reason": finish}])
    log_outputs(served, choices)
    if body.include_usage:
        yield ids.chunk([], usage=usage(choices))


# ---------------------------------------------------------------------------------------------
# Chat completions


async def chat(request: "Request", served: ServedModel, body: ChatBody):
    route = check_model(served, body.model)
    if route.chat is None:
        raise bad_request(route.no_chat_reason, "messages")
    try:
        text = route.chat.prompt(template_messages(body.messages), tools=body.tools if body.calls_tools else None)
    except TemplateError as exc:
        raise bad_request(str(exc), "messages") from None
    prompt = served.tokenizer.encode(text)
    check_fits(len(prompt), body.max_tokens or 0, served.limits)
    room = min(served.limits.context, served.limits.kv_cache_tokens or served.limits.context) - len(prompt)
    max_tokens = body.max_tokens or min(served.limits.max_tokens, room)  # unasked: as much as the cache can hold
    if max_tokens < 1:
        check_fits(len(prompt), 1, served.limits)
    stop_ids, stop = {served.tokenizer.eot_id}, list(body.stop)
    end = route.chat.answer_end
    if end is not None:
        end_id = served.tokenizer.backend.token_to_id(end)
        if end_id is not None:
            stop_ids.add(end_id)  # a special token ends the answer at once
        elif end not in stop:
            stop.append(end)  # a marker spelt in several tokens: cut the text before it
    body.stop = stop
    if body.stream and body.logprobs is not None:
        raise bad_request("'logprobs' with stream: true is not supported: ask without streaming", "logprobs")
    call = call_constraint(body.tools, body.tool_choice)
    if body.calls_tools:
        body.valid_arguments = arguments_check(served, body.tools)
    matcher = await matchers(served, call or body.constraint, frozenset(stop_ids), "tools" if call else None)
    choices = start_choices(served, [prompt], body, max_tokens, body.logprobs, None, frozenset(stop_ids), matcher,
                            route.adapter)
    log_request(served, "chat", [prompt], body)
    ids = Ids("chatcmpl", "chat.completion", route.name)
    if body.stream:
        return sse(stream_chat(request, served, choices, body, ids))
    await drain(request, served, choices)
    logprobs = (lambda c: chat_logprobs(c, served.tokenizer, choices.stop_ids)) if body.logprobs is not None else None
    return {**ids.head(), "choices": [
        {"index": c.index, "message": chat_message(c, body), "logprobs": logprobs(c) if logprobs else None,
         "finish_reason": chat_finish(c, body)} for c in choices.choices],
        "usage": usage(choices)}


def chat_message(choice: Choice, body: ChatBody) -> dict:
    """The assistant's message: its text, and with tools offered, the calls it made (its text without them)."""
    if not body.calls_tools or choice.finish_reason != "stop":
        return {"role": "assistant", "content": choice.text}
    content, calls = parse_tool_calls(choice.text, body.tools, body.valid_arguments)
    return {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}


def chat_finish(choice: Choice, body: ChatBody) -> str | None:
    if body.calls_tools and choice.finish_reason == "stop" and \
            parse_tool_calls(choice.text, body.tools, body.valid_arguments)[1]:
        return "tool_calls"
    return choice.finish_reason


def arguments_check(served: ServedModel, tools: list[dict]):
    """Whether a freely written call's arguments are valid for its function: they must match the grammar
    of its parameters schema, the one a constrained call is decoded under."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    grammars: dict[str, str] = {}

    def valid(name: str, arguments: dict) -> bool:
        with served.grammars_lock:
            if served.grammars is None:
                served.grammars = Grammars(served.tokenizer, served.engine.vocab_size)
        try:
            if name not in grammars:
                grammars[name] = served.grammars.compile(Constraint.json_schema(schemas[name]))
        except ConstraintError:
            return False
        text = json.dumps(in_schema_order(arguments, schemas[name]), ensure_ascii=False,
                          separators=(JSON_OPTIONS["item_separator"], JSON_OPTIONS["key_separator"]))
        return served.grammars.matches(grammars[name], text)

    return valid


def chat_logprobs(choice: Choice, tokenizer, stop_ids: frozenset[int]) -> dict:
    """The chat API's logprobs: per answer token its text, bytes, log-probability and the likeliest others."""
    def entry(token_id: int, logprob: float) -> dict:
        raw = tokenizer.token_bytes(token_id)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    return {"content": [{**entry(t.id, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top or []]}
                        for t in choice.tokens if t.id not in stop_ids]}


async def stream_chat(request: "Request", served: ServedModel, choices: Choices, body: ChatBody, ids):
    ids.object = "chat.completion.chunk"
    for choice in choices.choices:
        yield ids.chunk([{"index": choice.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}])
    forced = {c.index: ForcedCallStream() for c in choices.choices} \
        if body.tool_choice.mode in ("required", "function") else None
    async for choice, piece in choices.pieces(request.is_disconnected):
        if forced is not None:  # the answer is one call: its arguments stream as they are written
            delta = forced[choice.index].delta(choice.text, finished=not piece)
            if delta:
                yield ids.chunk([{"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": None}])
            if not piece:
                reason = "tool_calls" if choice.finish_reason == "stop" else choice.finish_reason
                yield ids.chunk([{"index": choice.index, "delta": {}, "logprobs": None, "finish_reason": reason}])
        elif body.calls_tools:  # an answer is known to be a call or text only once it ends: sent whole then
            if not piece:
                yield ids.chunk([{"index": choice.index, "delta": tool_delta(chat_message(choice, body)),
                                  "logprobs": None, "finish_reason": None}])
                yield ids.chunk([{"index": choice.index, "delta": {}, "logprobs": None,
                                  "finish_reason": chat_finish(choice, body)}])
        elif piece:
            yield ids.chunk([{"index": choice.index, "delta": {"content": piece}, "logprobs": None,
                              "finish_reason": None}])
        else:
            yield ids.chunk([{"index": choice.index, "delta": {}, "logprobs": None,
                              "finish_reason": choice.finish_reason}])
    log_outputs(served, choices)
    if body.include_usage:
        yield ids.chunk([], usage=usage(choices))


class ForcedCallStream:
    """The streamed deltas of an answer decoded under a call's grammar (tool_choice required or named):
    its one call's id and name once the name is written, then its arguments piece by piece, holding
    back the end of the call. The grammar writes compact JSON, so the text has exactly this shape."""

    HEAD = re.compile(r'<tool_call>\{"name":"([A-Za-z0-9_-]+)","arguments":')
    TAIL = "}</tool_call>"

    def __init__(self):
        self.id = f"call_{uuid.uuid4().hex[:24]}"
        self.head = None  # the match of the call's beginning, once written
        self.sent = 0  # characters of the arguments sent

    def delta(self, text: str, finished: bool) -> dict | None:
        call: dict = {"index": 0}
        if self.head is None:
            self.head = self.HEAD.match(text)
            if self.head is None:
                return None
            call.update(id=self.id, type="function", function={"name": self.head.group(1), "arguments": ""})
        arguments = text[self.head.end():]
        end = len(arguments) - len(self.TAIL) if finished and arguments.endswith(self.TAIL) else \
            len(arguments) if finished else max(self.sent, len(arguments) - len(self.TAIL))
        if end > self.sent:
            call.setdefault("function", {})["arguments"] = arguments[self.sent: end]
            self.sent = end
        return {"tool_calls": [call]} if len(call) > 1 else None


def tool_delta(message: dict) -> dict:
    """A whole message as one streamed delta: its text, and its calls each with their index."""
    delta = {"content": message["content"]} if message["content"] else {}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    return delta


# ---------------------------------------------------------------------------------------------
# Shared pieces


async def matchers(served: ServedModel, constraint: Constraint | None, stop_ids: frozenset[int],
                   param: str | None = None) -> Callable[[], Matcher] | None:
    """What makes each choice's matcher for a constrained request (None for a free one); a schema, regex or
    grammar the library refuses is a 400 naming the problem. Compiling runs off the event loop: a large
    schema takes a while, and other requests' streams must not wait for it."""
    if constraint is None:
        return None

    def compile_it() -> Callable[[], Matcher]:
        with served.grammars_lock:
            if served.grammars is None:
                served.grammars = Grammars(served.tokenizer, served.engine.vocab_size)
        grammar = served.grammars.compile(constraint)
        served.grammars.matcher(grammar, stop_ids)  # refuses a grammar the matcher cannot start
        return lambda: served.grammars.matcher(grammar, stop_ids)

    try:
        return await asyncio.to_thread(compile_it)
    except ConstraintError as exc:
        param = param or {"regex": "guided_regex", "grammar": "guided_grammar"}.get(constraint.kind, "response_format")
        raise bad_request(str(exc), param) from None


def start_choices(served: ServedModel, prompts: list[list[int]], body: Sampled, max_tokens: int,
                  logprobs: int | None, prompt_logprobs: int | None, stop_ids: frozenset[int],
                  matcher: Callable[[], Matcher] | None = None, adapter: int = BASE) -> Choices:
    def sampling(j: int) -> Sampling:
        # n choices with one seed would all be the same text: choice j samples with seed + j
        seed = None if body.seed is None else body.seed + j
        return Sampling(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                        seed=seed, logprobs=logprobs, prompt_logprobs=prompt_logprobs)

    choices = Choices(served.engine, served.tokenizer, prompts, body.n, sampling, body.stop, stop_ids, matcher,
                      adapter)
    choices.submit()
    return choices


def usage(choices: Choices) -> dict:
    prompt_tokens = sum(len(p) for p in choices.prompts)  # each prompt once, however many choices it has
    completion_tokens = sum(c.completion_tokens for c in choices.choices)
    n = len(choices.choices) // max(1, len(choices.prompts))
    cached = sum(c.cached_tokens for c in choices.choices[::n])  # each prompt's first choice, as prompt_tokens counts
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached}}


class Ids:
    """The id, object type, creation time and model name every response and chunk repeats."""

    def __init__(self, prefix: str, object: str, model: str):
        self.id = f"{prefix}-{uuid.uuid4().hex[:24]}"
        self.object, self.model, self.created = object, model, int(time.time())

    def head(self) -> dict:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model}

    def chunk(self, choices: list[dict], usage: dict | None = None) -> str:
        data = {**self.head(), "choices": choices}
        if usage is not None:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse(events: AsyncIterator[str]) -> "StreamingResponse":
    """Server-sent events, ended by OpenAI's `data: [DONE]`."""
    from fastapi.responses import StreamingResponse

    async def body():
        async for event in events:
            yield event
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def log_request(served: ServedModel, kind: str, prompts: list[list[int]], body: Sampled) -> None:
    log.info("%s: %d prompt(s) of %s tokens, n=%d, stream=%s", kind, len(prompts),
             "/".join(str(len(p)) for p in prompts), body.n, body.stream)
    if served.log_text:
        for prompt in prompts:
            log.info("%s prompt: %r", kind, served.tokenizer.decode(prompt))


async def drain(request: "Request", served: ServedModel, choices: Choices) -> None:
    """Wait for every choice of a non-streamed answer (a client that leaves frees its rows), then log it."""
    async for _ in choices.pieces(request.is_disconnected):
        pass
    log_outputs(served, choices)


def log_outputs(served: ServedModel, choices: Choices) -> None:
    """With --log-text, log what each choice wrote (the engine logs every request's token counts anyway)."""
    for choice in choices.choices:
        if served.log_text:
            log.info("choice %d (%s, %d tokens): %r", choice.index, choice.finish_reason, choice.completion_tokens,
                     choice.text)
