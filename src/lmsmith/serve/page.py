"""The playground page of `lmsmith serve`, at `/`: write or chat with the model, then look inside it.

    GET  /                 the page (static/index.html, plain HTML and JavaScript: no build step,
                           nothing fetched from the internet)
    GET  /static/NAME      its script and style sheet
    POST /explain          {"text": ...} or {"messages": [...]} (a conversation, laid out by the chat
                           template) -> tokens, attention of every head, logit lens, top-k next
                           tokens (lmsmith.explain computes them; the page only draws)

Writing and chatting go through the server's own OpenAI endpoints, streamed. Explanations run on
a copy of the model, made on first use, so they never share state with the engine's decode loop.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations, which must be the
# real classes; they are imported inside add_page, as in api.py (fastapi comes with the serve extra only).
import copy
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from lmsmith.core.errors import UserError
from lmsmith.serve.errors import ApiError, bad_request

if TYPE_CHECKING:
    from fastapi import FastAPI

STATIC = Path(__file__).with_name("static")
FILES = {"page.js": "text/javascript", "page.css": "text/css"}


class Explainer:
    """Explanations of texts on a private copy of the served model (one at a time)."""

    def __init__(self, model, tokenizer):
        self.source, self.tokenizer = model, tokenizer
        self.model = None
        self.lock = threading.Lock()

    def explain(self, text: str) -> dict:
        from lmsmith.explain.explanation import explain_text, jsonable
        from lmsmith.schema.explain import ExplainConfig

        with self.lock:
            if self.model is None:
                self.model = copy.deepcopy(self.source).eval()
            try:
                result = explain_text(self.model, self.tokenizer, text, ExplainConfig(top_k=5), with_embeddings=False)
            except UserError as exc:
                raise bad_request(str(exc)) from None
        return jsonable(result, digits=4)


def add_page(app: "FastAPI", served, authorize, read_body) -> None:
    """Add the page and its /explain endpoint to the server's app."""
    from fastapi import Request
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool

    explainer = Explainer(served.engine.model, served.tokenizer)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        if name not in FILES:
            raise ApiError(404, f"no file {name} here", code="not_found")
        return FileResponse(STATIC / name, media_type=FILES[name])

    @app.post("/explain")
    async def explain(request: Request) -> JSONResponse:
        authorize(request, served)
        body = await read_body(request, served)
        text = explained_text(body, served)
        return JSONResponse(await run_in_threadpool(explainer.explain, text))


def explained_text(body, served) -> str:
    """The text of {"text": ...}, or of {"messages": [...]} as the model's chat template lays it out."""
    from lmsmith.text.chat_template import TemplateError

    if isinstance(body, dict) and isinstance(body.get("text"), str):
        return body["text"]
    if isinstance(body, dict) and "messages" in body:
        if served.chat is None:
            raise bad_request(served.no_chat_reason or "this model has no chat template", "messages")
        try:
            return served.chat.conversation(body["messages"])
        except TemplateError as exc:
            raise bad_request(str(exc), "messages") from None
    raise bad_request('send {"text": "..."} (or {"messages": [...]}, a conversation): what to explain')
