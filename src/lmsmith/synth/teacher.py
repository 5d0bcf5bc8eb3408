"""The teacher: any OpenAI-compatible chat endpoint, through the official `openai` client.

The client's own retries are off: the retry policy here (429 and 5xx and no answer at all are
retried with doubling backoff; anything else is the request's own fault) is the one the user
set, and its last failure becomes one line naming the URL. Structured output is asked for with
`response_format: json_schema`; a server that refuses that field is asked again without it, and
from then on every answer is parsed from plain text (the failures are counted by the caller).
The API key is given to the client and to nothing else: every message that leaves this module
passes through `_redact`.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from lmsmith.core.errors import UserError, cannot_read
from lmsmith.core.extras import require
from lmsmith.schema.synth import SynthConfig

NO_KEY = "none"  # what a keyless local server is sent: the client insists on some key


def api_key(cfg: SynthConfig) -> str:
    """The key from `api_key_file`, else from the `api_key_env` variable, else none (a local server)."""
    if cfg.api_key_file is not None:
        try:
            key = Path(cfg.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise cannot_read(cfg.api_key_file, exc) from None
        if not key:
            raise UserError(f"{cfg.api_key_file} is empty: put the API key in it, or leave api_key_file unset")
        return key
    return os.environ.get(cfg.api_key_env, "").strip() or NO_KEY


@dataclass
class Answer:
    text: str
    tokens: int  # prompt and completion, as the server counted them
    finish_reason: str | None


class TeacherDown(UserError):
    """The endpoint gave no usable answer after every retry."""


def parse_json_answer(text: str) -> dict | None:
    """The JSON object in a teacher's answer: all of it, or the outermost {...} inside prose or a code fence."""
    for candidate in (text, *re.findall(r"\{.*\}", text, flags=re.DOTALL)):
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, TypeError):
            continue
        if isinstance(value, dict):
            return value
    return None


class Teacher:
    def __init__(self, cfg: SynthConfig, key: str):
        openai = require("openai", extra="synth", purpose="lmsmith synth")
        self.cfg = cfg
        self._key = key
        self._openai = openai
        self.client = openai.OpenAI(base_url=cfg.endpoint, api_key=key, max_retries=0, timeout=cfg.timeout)
        self.structured = True  # until the server refuses response_format

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key != NO_KEY else text

    def _retryable(self, exc: Exception) -> bool:
        o = self._openai
        if isinstance(exc, (o.APIConnectionError, o.APITimeoutError, o.RateLimitError)):
            return True
        return isinstance(exc, o.APIStatusError) and exc.status_code >= 500

    def _call(self, what: str, request):
        """`request()` with the retry policy; the last failure as one line naming the URL."""
        for attempt in range(self.cfg.retries + 1):
            try:
                return request()
            except self._openai.OpenAIError as exc:
                if not self._retryable(exc):
                    raise
                if attempt == self.cfg.retries:
                    reason = self._redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    raise TeacherDown(f"the teacher at {self.cfg.endpoint} did not answer {what} after "
                                      f"{self.cfg.retries + 1} tries ({reason}): check the server and the URL"
                                      ) from None
                time.sleep(self.cfg.backoff * 2 ** attempt)
        raise AssertionError("unreachable")

    def _refused(self, exc) -> UserError:
        message = " ".join(self._redact(str(exc)).split())[:300]
        return UserError(f"the teacher at {self.cfg.endpoint} refused a request ({exc.status_code}): {message}")

    def check_model(self) -> None:
        """Refuse a model the server does not list, before any work."""
        try:
            listed = [m.id for m in self._call("the model list", lambda: list(self.client.models.list()))]
        except self._openai.APIStatusError as exc:
            raise UserError(f"the teacher at {self.cfg.endpoint} refused the model list ({exc.status_code}): "
                            "check the URL and the API key") from None
        if self.cfg.model not in listed:
            raise UserError(f"the teacher at {self.cfg.endpoint} does not serve model '{self.cfg.model}': "
                            f"it lists {', '.join(listed) or 'none'}")

    def _create(self, messages: list[dict], schema: dict | None):
        extra = {}
        if schema is not None and self.structured:
            extra["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "items", "schema": schema, "strict": True}}
        return self.client.chat.completions.create(
            model=self.cfg.model, messages=messages, max_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature, seed=self.cfg.seed, **extra)

    def ask(self, prompt: str, schema: dict | None) -> Answer:
        messages = [{"role": "user", "content": prompt}]
        try:
            response = self._call("a request", lambda: self._create(messages, schema))
        except self._openai.BadRequestError as exc:
            if not (self.structured and schema is not None and "response_format" in str(exc)):
                raise self._refused(exc) from None
            self.structured = False  # this server cannot constrain its output: parse what it writes
            response = self._call("a request", lambda: self._create(messages, schema))
        except self._openai.APIStatusError as exc:  # 401, 403, 404: no retry makes these right
            raise self._refused(exc) from None
        choice = response.choices[0]
        usage = response.usage
        tokens = (usage.prompt_tokens + usage.completion_tokens) if usage is not None else 0
        return Answer(choice.message.content or "", tokens, choice.finish_reason)
