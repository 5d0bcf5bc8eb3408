"""The choices of one HTTP request, followed as the engine makes them: tokens in, text out.

The engine calls back on its own thread; each callback is handed to the request's event loop
(`call_soon_threadsafe`) and lands in one asyncio queue shared by all the request's choices, so
one coroutine can stream them in the order the tokens come. Text goes through generate.py's
TextStream, which cuts it before the first stop string without ever sending a piece of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from lmsmith.model.constraints import Matcher
from lmsmith.model.decoding import TextStream
from lmsmith.serve.adapters import BASE
from lmsmith.serve.engine import Engine, EngineStopped, Finished, PromptScores, QueueFull, Request, Sampling, Token
from lmsmith.serve.errors import ApiError

DISCONNECT_POLL_S = 0.5  # how often a waiting request checks whether its client is still there


@dataclass
class Choice:
    index: int
    prompt: list[int]
    request: Request
    stream: TextStream
    tokens: list[Token] = field(default_factory=list)  # generated, a final stop token included
    scores: PromptScores | None = None
    finish_reason: str | None = None
    cached_tokens: int = 0  # of its prompt, found in the KV cache (a shared prefix), as OpenAI's usage reports

    @property
    def text(self) -> str:
        return self.stream.text

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


class Choices:
    """Submits one engine request per (prompt, n) pair and follows them to the end."""

    def __init__(self, engine: Engine, tokenizer, prompts: list[list[int]], n: int,
                 sampling: Callable[[int], Sampling], stop: list[str], stop_ids: frozenset[int],
                 matcher: Callable[[], Matcher] | None = None, adapter: int = BASE):
        self.engine = engine
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.prompts = prompts
        self.choices: list[Choice] = []
        for p, prompt in enumerate(prompts):
            for j in range(n):
                index = p * n + j
                request = Request(prompt, sampling(j), stop_ids, self._callback(index),
                                  matcher=matcher() if matcher is not None else None, adapter=adapter)
                self.choices.append(Choice(index, prompt, request, TextStream(tokenizer, stop)))
        self.stop_ids = stop_ids

    def _callback(self, index: int):
        def on_event(event) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

        return on_event

    def submit(self) -> None:
        """Hand every choice to the engine; a full queue refuses them all (429), none left running."""
        try:
            for choice in self.choices:
                self.engine.submit(choice.request)
        except QueueFull:
            self.cancel()
            raise ApiError(429, "the server is busy (its queue is full): retry in a moment",
                           code="queue_full") from None
        except EngineStopped:
            self.cancel()
            raise ApiError(503, "the server is shutting down", code="shutting_down") from None

    def cancel(self) -> None:
        for choice in self.choices:
            choice.request.cancel()

    async def pieces(self, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[tuple[Choice, str]]:
        """(choice, new text) as text is final; (choice, "") once more when a choice finishes.

        Ends when every choice has finished; cancels them all when the client goes away (or the
        consumer stops early), so their slots are freed between the engine's next steps.
        """
        open_choices = len(self.choices)
        try:
            while open_choices:
                try:
                    index, event = await asyncio.wait_for(self.queue.get(), DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    if await disconnected():
                        return
                    continue
                choice = self.choices[index]
                if choice.finish_reason is not None:
                    continue  # events after a stop string ended the choice
                for piece in self._take(choice, event):
                    yield choice, piece
                if choice.finish_reason is not None:
                    open_choices -= 1
                    yield choice, ""
        finally:
            self.cancel()  # a no-op for finished requests

    def _take(self, choice: Choice, event) -> list[str]:
        if isinstance(event, PromptScores):
            choice.scores = event
            return []
        if isinstance(event, Token):
            choice.tokens.append(event)
            if event.id in self.stop_ids:
                return []  # ends the text; the Finished event follows
            piece = choice.stream.push(event.id)
            if choice.stream.done:  # a stop string: no need for the rest
                choice.finish_reason = "stop"
                choice.request.cancel()
            return [piece] if piece else []
        if isinstance(event, Finished):
            if event.reason == "error":
                raise ApiError(500, "the model failed while generating; see the server log", code="engine_error")
            choice.finish_reason = "stop" if event.reason == "stop" else "length"
            choice.cached_tokens = event.cached_tokens
            piece = choice.stream.finish()
            return [piece] if piece else []
        return []
