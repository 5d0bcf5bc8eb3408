"""Held-out splits: deterministic by text, close to the asked fractions, and the overlap check."""

import random
import re

import pytest

from lmsmith.core.config import ConfigError, parse_section
from lmsmith.data.split import heldout_overlap, split_of
from lmsmith.schema.curate import SplitConfig


def texts(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(["alpha", "beta", "gamma", "delta", "eps"]) for _ in range(12)) + f" {i}"
            for i in range(n)]


def test_the_same_text_always_lands_in_the_same_split():
    config = SplitConfig(val_fraction=0.1, test_fraction=0.1)
    sample = texts(2000)
    first = [split_of(t, config) for t in sample]
    shuffled = list(zip(sample, first))
    random.Random(1).shuffle(shuffled)
    assert all(split_of(t, config) == s for t, s in shuffled)


def test_fractions_are_close_to_what_was_asked():
    config = SplitConfig(val_fraction=0.1, test_fraction=0.05)
    splits = [split_of(t, config) for t in texts(20000)]
    # Binomial: 5 standard deviations either way (sd about 42 and 31 documents here).
    assert abs(splits.count("val") - 2000) < 5 * 42
    assert abs(splits.count("test") - 1000) < 5 * 31


def test_another_seed_draws_other_documents_and_zero_fractions_hold_out_nothing():
    sample = texts(3000)
    a = [split_of(t, SplitConfig(val_fraction=0.2, seed=0)) for t in sample]
    b = [split_of(t, SplitConfig(val_fraction=0.2, seed=1)) for t in sample]
    assert a != b
    assert {split_of(t, SplitConfig(val_fraction=0.0, test_fraction=0.0)) for t in sample} == {"train"}


def reference_overlap(heldout, train, n):
    def grams(text):
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}

    train_grams = set().union(*(grams(t) for t in train)) if train else set()
    out = {}
    for split, docs in heldout.items():
        per_doc = [grams(d) for d in docs]
        total = sum(len(g) for g in per_doc)
        shared = sum(len(g & train_grams) for g in per_doc)
        mostly = sum(1 for g in per_doc if g and len(g & train_grams) > 0.5 * len(g))
        out[split] = (total, shared, mostly)
    return out


def test_overlap_matches_a_set_based_reference():
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(30)]

    def doc(k):
        return " ".join(rng.choice(vocab) for _ in range(k))

    train = [doc(rng.randint(0, 60)) for _ in range(40)]
    heldout = {"val": [doc(40), train[3] + " extra words here", "too short"], "test": [train[5][:80], doc(25)]}
    config = SplitConfig(overlap_ngram=3)
    report = heldout_overlap(heldout, iter(train), config)
    expected = reference_overlap(heldout, train, 3)
    for split, (total, shared, mostly) in expected.items():
        got = report[split]
        assert (got["ngrams"], got["ngrams_in_train"], got["docs_mostly_in_train"]) == (total, shared, mostly)
    assert report["val"]["docs_mostly_in_train"] >= 1  # the planted copy of a train document


def test_config_is_checked():
    with pytest.raises(ConfigError, match="val_fraction must be in"):
        parse_section(SplitConfig, {"val_fraction": 1.2}, "split")
    with pytest.raises(ConfigError, match="must leave something to train on"):
        parse_section(SplitConfig, {"val_fraction": 0.5, "test_fraction": 0.5}, "split")
    with pytest.raises(ConfigError, match="overlap_ngram must be 0"):
        parse_section(SplitConfig, {"overlap_ngram": -1}, "split")
