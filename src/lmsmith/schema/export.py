"""The `export:` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class ExportConfig:
    """How `lmsmith export` writes the file."""

    quant: Quant = "f16"  # the type of the weight matrices; vectors are always f32
    ollama: bool = False  # -o is a directory: model.gguf and an Ollama Modelfile
    temperature: float = 0.7  # the Modelfile's sampling defaults
    top_p: float = 0.9
    num_ctx: int | None = None  # the Modelfile's context length (default: the model's block_size)

    def check(self, where: str = "export") -> None:
        from lmsmith.core.config import ConfigError

        if self.temperature < 0:
            raise ConfigError(f"{where}.temperature must be 0 or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}.top_p must be in (0, 1], got {self.top_p}")
        if self.num_ctx is not None and self.num_ctx < 1:
            raise ConfigError(f"{where}.num_ctx must be at least 1, got {self.num_ctx}")


Quant = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
