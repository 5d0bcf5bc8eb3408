"""Word n-grams as 64-bit hashes in numpy arrays: the shared currency of the repetition rules
and the held-out overlap check.

Word hashes come from Python's `hash`, which is salted per process: compare hashes only within
one process (every caller here does).
"""

from __future__ import annotations

import numpy as np

_PRIME = np.uint64(1_000_003)


def word_hashes(words: list[str]) -> np.ndarray:
    return np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """One hash per n-gram: entry i covers words i..i+n-1 (wrapping 64-bit arithmetic)."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    h = hashes[:count].copy()
    for k in range(1, n):
        h = h * _PRIME + hashes[k: k + count]
    return h
