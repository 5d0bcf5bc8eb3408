"""How to sample (shared by generate, chat, serve and explain), and the `generate:` section."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lmsmith.core.errors import UserError


@dataclass
class GenerationConfig:
    """How to pick each next token, and when to stop."""

    max_new_tokens: int = 100
    temperature: float = 0.8  # 0 is greedy: always the most likely token
    top_k: int | None = None  # sample only among the k most likely tokens
    top_p: float | None = None  # ... or the fewest tokens holding this much probability (nucleus)
    repetition_penalty: float = 1.0  # > 1 makes tokens already present less likely
    stop: list[str] = field(default_factory=list)  # output ends before the first of these strings
    seed: int | None = None  # the same seed gives the same text

    def check(self, where: str = "generate") -> None:
        """`where` names the keys in messages: a config section ("generate" gives generate.top_p)
        or "--" for command-line flags (--top-p)."""

        def key(name: str) -> str:
            return f"--{name.replace('_', '-')}" if where == "--" else f"{where}.{name}"

        if self.max_new_tokens < 1:
            raise UserError(f"{key('max_new_tokens')} must be at least 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:  # written so that NaN fails too
            raise UserError(f"{key('temperature')} must be 0 (greedy) or positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"{key('top_k')} must be at least 1 (or unset to keep every token), got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise UserError(f"{key('top_p')} must be in (0, 1] (or unset to keep every token), got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise UserError(f"{key('repetition_penalty')} must be positive (1.0 is no penalty), "
                            f"got {self.repetition_penalty}")
        if any(not s for s in self.stop):
            raise UserError(f"{key('stop')}: a stop string cannot be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class GenerateConfig(GenerationConfig):
    """The `generate:` section of a recipe, and the settings of `lmsmith generate`.

    How to sample, and from which prompts.
    """

    prompts: list[str] = field(default_factory=lambda: [""])  # "" starts from scratch, as a new document would
    device: str = "auto"  # auto | cpu | cuda | mps
    chat: bool = False  # each prompt is a user's message, rendered through the model's chat template
    template: str | None = None  # with chat: chatml | plain | raw, for a model without its own chat_template
    compile: bool = False  # decode through torch.compile: same tokens, faster once compiled (seconds to compile)
    json_schema: str | None = None  # a file holding a JSON schema every output is held to (constrained decoding)
    regex: str | None = None  # ... or a regular expression every whole output matches

    def check(self, where: str = "generate") -> None:
        super().check(where)
        if not self.prompts:
            raise UserError(f"{where}.prompts is empty: give at least one prompt (\"\" writes from scratch)")
        if self.json_schema is not None and self.regex is not None:
            raise UserError(f"{where}.json_schema and {where}.regex: give one of them, not both")
        if self.regex == "":
            raise UserError(f"{where}.regex is empty: give a regular expression, or leave it unset")

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GenerationConfig)})
