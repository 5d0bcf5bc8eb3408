"""The `eval:` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmsmith.core.config import ConfigError


@dataclass
class EvalConfig:
    """The `eval:` section of a recipe, and the options of `lmsmith eval`."""

    split: Literal["val", "test"] = "test"
    context: int | None = None  # tokens each window sees; null: the model's block_size
    stride: int | None = None  # tokens a window moves on; null: half the context
    batch_size: int = 8  # windows per forward pass
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"  # fp32: exact; auto: the device's fast format
    text: list[str] | None = None  # text files or folders to score instead of a tokens directory's split

    def check(self, where: str = "eval") -> None:
        if self.context is not None and self.context < 1:
            raise ConfigError(
                f"{where}.context must be at least 1 (or null for the model's block_size), got {self.context}"
            )
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"{where}.stride must be at least 1 (or null for half the context), got {self.stride}")
        if self.context is not None and self.stride is not None and self.stride > self.context:
            raise ConfigError(f"{where}.stride ({self.stride}) cannot be longer than {where}.context ({self.context})")
        if self.batch_size < 1:
            raise ConfigError(f"{where}.batch_size must be at least 1, got {self.batch_size}")
