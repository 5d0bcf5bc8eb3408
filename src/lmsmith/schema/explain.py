"""The `explain:` section."""

from __future__ import annotations

from dataclasses import dataclass

from lmsmith.core.errors import UserError


@dataclass
class ExplainConfig:
    """What `lmsmith explain` computes and how much of it."""

    focus: str | None = None  # a token of the text: which earlier tokens each head looks at from it
    heads: bool = False  # also measure what each head does over held-out text (slower)
    top_k: int = 5  # guesses shown per position (next token, logit lens)
    neighbours: int = 8  # nearest tokens shown per token in the embedding table
    map_tokens: int = 150  # most frequent tokens on the 2-D embedding map
    temperature: float | None = None  # the sampled pick's temperature (default: the recipe's generate.temperature)
    seed: int = 0  # the sampled pick's seed
    head_windows: int = 16  # held-out windows the head scores average over
    device: str = "cpu"

    def check(self, where: str = "explain") -> None:
        for key in ("top_k", "neighbours", "map_tokens", "head_windows"):
            if getattr(self, key) < 1:
                raise UserError(f"{where}.{key} must be at least 1, got {getattr(self, key)}")
        if self.temperature is not None and not self.temperature >= 0:
            raise UserError(f"{where}.temperature must be 0 (greedy) or positive, got {self.temperature}")
