"""What is dropped after generation: duplicates (the curation's exact and near dedup) and unsupported answers.

An answer is supported, by the default lexical rule, when at least `min_support` of its content
words (words of three letters or more, minus common function words) occur in its passage. It is
a cheap guard against answers the teacher made up; `--verify` asks the teacher instead.
"""

from __future__ import annotations

import re

import numpy as np

from lmsmith.data.dedup import exact_key, near_duplicate_clusters
from lmsmith.data.exam_overlap import exam_ngrams, word_hashes
from lmsmith.data.ngrams import ngram_hashes
from lmsmith.schema.curate import DedupConfig

_WORD = re.compile(r"\w+", re.UNICODE)
_FUNCTION_WORDS = frozenset(
    "the and for are but not you all any can had her was one our out has him his how its may new now see two way who "
    "did get let say she too use with that this from they have what when will your which their there about would "
    "these other into more some than then them been were also only yes".split())
SHINGLE_WORDS = 3  # items are short: 5-word shingles would leave most of them without any


def content_words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _WORD.findall(text)) if len(w) >= 3 and w not in _FUNCTION_WORDS}


def support(answer: str, passage: str) -> float:
    """The share of the answer's content words that the passage holds (1.0 for an answer without any)."""
    words = content_words(answer)
    if not words:
        return 1.0
    return len(words & content_words(passage)) / len(words)


def duplicate_positions(texts: list[str], threshold: float) -> dict[int, str]:
    """Position -> "exact_duplicate" or "near_duplicate" for every text after the first of its group."""
    dropped: dict[int, str] = {}
    seen: set[int] = set()
    for i, text in enumerate(texts):
        key = exact_key(text)
        if key in seen:
            dropped[i] = "exact_duplicate"
        seen.add(key)
    remaining = [i for i in range(len(texts)) if i not in dropped]
    config = DedupConfig(threshold=threshold, shingle_size=SHINGLE_WORDS)
    for cluster in near_duplicate_clusters([texts[i] for i in remaining], config):
        for member in sorted(cluster)[1:]:  # the earliest stays: order is the documents' order
            dropped[remaining[member]] = "near_duplicate"
    return dropped


EXAM_NGRAM = 13


def exam_overlapping(texts: list[str], tasks: list[str]) -> list[bool]:
    """Whether each text shares a 13-gram of words with an item of the exam tasks (curate --exclude-exam's rule)."""
    known = [grams for grams in exam_ngrams(tasks, EXAM_NGRAM).values() if len(grams)]
    exam = np.unique(np.concatenate(known)) if known else np.empty(0, dtype=np.uint64)
    return [bool(len(exam)) and bool(np.isin(ngram_hashes(word_hashes(t), EXAM_NGRAM), exam).any()) for t in texts]
