"""The `classifier:` section: training the learned quality filter (`lmsmith curate train-classifier`)."""

from __future__ import annotations

from dataclasses import dataclass

from lmsmith.core.config import ConfigError


@dataclass
class ClassifierConfig:
    """Hashed word n-grams and a logistic regression, trained on {"text", "label"} lines."""

    features: int = 2 ** 20  # hash buckets of the n-grams (more: fewer collisions, a bigger weight file)
    ngrams: int = 2  # word n-grams from 1 to this
    regularization: float = 1.0  # the logistic regression's C: smaller is smoother
    held_out: float = 0.2  # the share of labelled lines kept out of training to measure precision and recall
    seed: int = 0

    def check(self, where: str = "classifier") -> None:
        if not 2 ** 8 <= self.features <= 2 ** 24:
            raise ConfigError(f"{where}.features must be between 256 and 16777216, got {self.features}")
        if not 1 <= self.ngrams <= 3:
            raise ConfigError(f"{where}.ngrams must be 1, 2 or 3, got {self.ngrams}")
        if not self.regularization > 0:
            raise ConfigError(f"{where}.regularization must be positive, got {self.regularization}")
        if not 0 < self.held_out < 1:
            raise ConfigError(f"{where}.held_out must be between 0 and 1 (exclusive), got {self.held_out}")
