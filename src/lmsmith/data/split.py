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

import numpy as np

from lmsmith.data.ngrams import ngram_hashes, word_hashes
from lmsmith.schema.curate import SplitConfig

_WORD = re.compile(r"\w+")




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
