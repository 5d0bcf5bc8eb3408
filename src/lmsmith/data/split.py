"""Held-out splits: each document goes to train, val or test by a hash of its text.

The hash makes the choice deterministic (the same text lands in the same split on every run, in
any order, with any number of workers) and independent of everything else about the document.
Splitting happens after dedup, so near-duplicates are already one document and cannot straddle
two splits. The overlap check then measures what dedup cannot promise: how many word n-grams of
the held-out text also occur in train (shared boilerplate, quotations, common code idioms).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from lmsmith.config import ConfigError
from lmsmith.data.ngrams import ngram_hashes, word_hashes

SPLITS = ("train", "val", "test")
_WORD = re.compile(r"\w+")


@dataclass
class SplitConfig:
    val_fraction: float = 0.01
    test_fraction: float = 0.01
    seed: int = 0  # another seed draws other held-out documents
    overlap_ngram: int = 13  # word n-gram size of the held-out/train overlap check; 0 skips the check
    mostly_shared: float = 0.5  # a held-out document with more of its n-grams in train is reported

    def check(self, where: str = "split") -> None:
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{where}.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(f"{where}: val_fraction + test_fraction must leave something to train on, "
                              f"got {self.val_fraction} + {self.test_fraction}")
        if self.overlap_ngram < 0:
            raise ConfigError(f"{where}.overlap_ngram must be 0 (off) or a word count, got {self.overlap_ngram}")


def split_of(text: str, config: SplitConfig) -> str:
    """train, val or test for this text: a uniform draw from its hash, fixed by the seed."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8,
                             key=str(config.seed).encode())
    u = int.from_bytes(digest.digest(), "big") / 2**64
    if u < config.val_fraction:
        return "val"
    if u < config.val_fraction + config.test_fraction:
        return "test"
    return "train"


def text_ngrams(text: str, n: int) -> np.ndarray:
    """Distinct hashes of the lower-cased word n-grams of a text (punctuation ignored)."""
    return np.unique(ngram_hashes(word_hashes(_WORD.findall(text.lower())), n))


def heldout_overlap(heldout: dict[str, list[str]], train_texts: Iterable[str], config: SplitConfig) -> dict:
    """For each held-out split: how many of its n-grams occur anywhere in train.

    The held-out n-grams (a few percent of the corpus) are held in memory; train streams past.
    """
    n = config.overlap_ngram
    per_doc = {split: [text_ngrams(t, n) for t in texts] for split, texts in heldout.items()}
    arrays = [a for docs in per_doc.values() for a in docs]
    table = np.unique(np.concatenate(arrays)) if arrays else np.empty(0, dtype=np.uint64)
    in_train = np.zeros(len(table), dtype=bool)
    if len(table):
        for text in train_texts:
            grams = text_ngrams(text, n)
            at = np.searchsorted(table, grams)
            at[at == len(table)] = 0
            in_train[at[table[at] == grams]] = True
    report: dict = {"n": n}
    for split, docs in per_doc.items():
        total = shared = mostly = 0
        for grams in docs:
            hits = int(in_train[np.searchsorted(table, grams)].sum()) if len(grams) else 0
            total += len(grams)
            shared += hits
            mostly += bool(len(grams)) and hits > config.mostly_shared * len(grams)
        report[split] = {"docs": len(docs), "ngrams": total, "ngrams_in_train": shared,
                         "share_in_train": round(shared / total, 4) if total else 0.0,
                         "docs_mostly_in_train": mostly}
    return report
