"""The `exam:` section."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmsmith.core.config import ConfigError


@dataclass
class ExamConfig:
    """The `exam:` section of a recipe, and the settings of `lmsmith exam`."""

    tasks: list[str] = field(default_factory=list)  # JSONL task files, or folders of them
    lm_eval: list[str] = field(default_factory=list)  # lm-evaluation-harness tasks (hellaswag, arc_easy, ...)
    lm_eval_include: str | None = None  # a folder of the harness's task YAMLs (local, offline tasks)
    limit: int | None = None  # score only the first N items of each task (a quick look; null: all)
    max_new_tokens: int = 128  # the longest answer a generated item may get
    temperature: float = 0.8  # of the samples of an item with `samples: k` (one sample is always greedy)
    pass_k: int = 1  # items with samples: report pass@k (at most the item's samples)
    ignore_case: bool = False  # exact match: compare answers case-insensitively
    chat: bool | None = None  # prompts as a user's message in the model's chat template; null: when it has one
    template: str | None = None  # with chat: chatml | plain | raw, for a model without its own template
    stop: list[str] = field(default_factory=list)  # plain (not chat) prompts: answers end before these
    batch_size: int = 16  # items (or choices) per forward pass
    timeout: float = 5.0  # seconds a Python item's tests may run
    memory_mb: int = 512  # memory a Python item's tests may use
    failures: str | None = None  # write every item a model got wrong, with its answer, to this JSONL file
    seed: int = 0
    device: str = "auto"

    def check(self, where: str = "exam") -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{where}.limit must be at least 1 (or null for every item), got {self.limit}")
        for name in ("max_new_tokens", "pass_k", "batch_size", "memory_mb"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be at least 1, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ConfigError(f"{where}.temperature must be positive (samples beyond the first are drawn at it), "
                              f"got {self.temperature}")
        if not self.timeout > 0:
            raise ConfigError(f"{where}.timeout must be positive (seconds), got {self.timeout}")
        if any(not s for s in self.stop):
            raise ConfigError(f"{where}.stop: a stop string cannot be empty")
