"""How sure is a score? Standard errors of a mean score, and a paired test between two models.

A task's score is the mean of its items' scores. Its standard error is the sample standard
deviation over sqrt(n), as lm-evaluation-harness reports it; for 0/1 scores that is the binomial
standard error sqrt(p(1-p)/(n-1)). `bootstrap_stderr` resamples the items instead, for scores
that are not means of independent items.

Two models scored on the same items are compared item by item: the differences' mean over its
standard error is approximately normal when the models are equally good, which gives a two-sided
p-value (a paired z-test; for 0/1 scores it is McNemar's test in its large-sample form).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def stderr(values: list[float]) -> float:
    """The standard error of the mean: sample standard deviation (n - 1) over sqrt(n)."""
    n = len(values)
    if n < 2:
        return float("nan")
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)


def bootstrap_stderr(values: list[float], resamples: int = 1000, seed: int = 0) -> float:
    """The standard deviation of the mean over `resamples` resamplings of the items with replacement."""
    if len(values) < 2:
        return float("nan")
    rng = random.Random(seed)
    means = [mean(rng.choices(values, k=len(values))) for _ in range(resamples)]
    return stderr(means) * math.sqrt(len(means))


@dataclass
class Paired:
    difference: float  # mean score of A minus B, over the items both were scored on
    stderr: float
    p_value: float  # two-sided: the chance of a difference this large if the models were equally good
    n: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def to_dict(self) -> dict:
        return {"difference": self.difference, "stderr": self.stderr, "p_value": self.p_value, "n": self.n,
                "significant": self.significant}


def paired_test(a: list[float | None], b: list[float | None]) -> Paired:
    """Compare two models' scores on the same items (None: an item one of them was not scored on)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same items, got {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    d, se = mean(differences), stderr(differences)
    if not differences:
        return Paired(float("nan"), float("nan"), float("nan"), 0)
    if se == 0 or math.isnan(se):  # every item moved the same way (or not at all): no noise to measure
        return Paired(d, 0.0 if se == 0 else se, 1.0 if d == 0 else 0.0 if se == 0 else float("nan"),
                      len(differences))
    z = d / se
    return Paired(d, se, math.erfc(abs(z) / math.sqrt(2)), len(differences))
