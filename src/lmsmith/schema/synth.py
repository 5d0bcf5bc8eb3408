"""The `synth:` section: instruction data written from documents by a teacher model behind an OpenAI-compatible API.

    synth:
      endpoint: http://127.0.0.1:8000/v1
      model: teacher
      kind: qa                # qa | conversation | exam | pairs | labels
      concurrency: 4
      max_items: 500
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lmsmith.core.config import ConfigError

KINDS = ("qa", "conversation", "exam", "pairs", "labels")


@dataclass
class SynthConfig:
    """The `synth:` section of a recipe, and the settings of `lmsmith synth`."""

    inputs: list[str] = field(default_factory=list)  # a curated directory, or text files and folders
    endpoint: str = ""  # the teacher's base URL, e.g. http://127.0.0.1:8000/v1
    model: str = ""  # the model id the teacher's server lists
    kind: Literal["qa", "conversation", "exam", "pairs", "labels"] = "qa"  # labels: good/bad per passage
    prompt: str | None = None  # a Jinja template file replacing the kind's shipped prompt
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (read, never logged)
    api_key_file: str | None = None  # or a file holding it (wins over the variable)
    items_per_passage: int = 2  # questions (or exam items, or pairs) asked for per passage
    passage_chars: int = 1500  # documents are cut at paragraph breaks into passages of at most this many characters
    min_passage_chars: int = 200  # shorter passages are counted and skipped: too little to ask about
    max_field_chars: int = 400  # the longest question or answer the teacher may write (its JSON schema says so)
    max_new_tokens: int = 1024  # tokens per teacher answer
    temperature: float = 0.7
    seed: int = 0
    concurrency: int = 4  # requests in flight at once
    retries: int = 4  # further tries of a request answered 429, 5xx, or not at all
    backoff: float = 1.0  # seconds before the first retry, doubled for each next one
    timeout: float = 300.0  # seconds one request may take
    max_items: int | None = None  # stop once this many items are written (earlier runs' included)
    max_tokens: int | None = None  # stop once the teacher has used this many tokens (prompt and answer)
    verify: bool = False  # ask the teacher whether each answer is supported, instead of the lexical rule
    min_support: float = 0.5  # the lexical rule: share of an answer's content words the passage holds
    exclude_exam: list[str] = field(default_factory=list)  # exam task files or folders: drop items sharing a 13-gram
    dedup_threshold: float = 0.8  # items whose word shingles overlap this much (Jaccard) are near duplicates

    def check(self, where: str = "synth") -> None:
        # An empty endpoint or model is refused by the stage, not here: a recipe may hold this section unfilled.
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.endpoint must start with http:// or https://, got {self.endpoint!r}")
        for name in ("items_per_passage", "passage_chars", "min_passage_chars", "max_field_chars", "max_new_tokens",
                     "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be at least 1, got {getattr(self, name)}")
        if self.min_passage_chars > self.passage_chars:
            raise ConfigError(f"{where}.min_passage_chars ({self.min_passage_chars}) is above passage_chars "
                              f"({self.passage_chars}): every passage would be skipped")
        if self.retries < 0 or self.backoff < 0 or not self.timeout > 0:
            raise ConfigError(f"{where}: retries and backoff must be at least 0 and timeout positive")
        for name in ("max_items", "max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be at least 1 (or null for no budget), got "
                                  f"{getattr(self, name)}")
        if self.verify and self.kind == "labels":
            raise ConfigError(f"{where}.verify checks answers against their passage, but a label judges the passage "
                              "itself: leave verify off for kind labels")
        if not 0 <= self.min_support <= 1 or not 0 < self.dedup_threshold < 1:
            raise ConfigError(f"{where}.min_support must be in [0, 1] and dedup_threshold in (0, 1)")

    def check_teacher(self, where: str = "synth") -> None:
        """Refuse a run without a teacher to ask."""
        if not self.endpoint:
            raise ConfigError(f"{where}.endpoint is empty: give the teacher's URL (--endpoint http://HOST:PORT/v1)")
        if not self.model:
            raise ConfigError(f"{where}.model is empty: give the teacher model's id (--model NAME)")
