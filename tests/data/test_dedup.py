"""Dedup: exact and near duplicates (MinHash LSH against exact Jaccard), boilerplate lines."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsmith.core.config import ConfigError, parse_section
from lmsmith.data import dedup
from lmsmith.data.dedup import (
    BoilerplateRemover,
    Deduplicator,
    LineFrequencyCounter,
    MinHasher,
    MinHashSigner,
    NearDuplicateIndex,
    count_document_lines,
    document_line_keys,
    estimated_jaccard,
    exact_key,
    near_duplicate_clusters,
    shingle_hashes,
)
from lmsmith.data.document import Document
from lmsmith.data.step import StepStats
from lmsmith.schema.curate import BoilerplateConfig, DedupConfig, candidate_probability, optimal_bands_rows

VOCAB = [f"{a}{b}{c}" for a in "bcdfghklmnprstvz" for b in "aeiou" for c in "bdgklmnprstxz"] * 1  # 1040 words


# An independent reference: shingles as tuples of words, Jaccard from Python sets.
def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingle_set(a, n), shingle_set(b, n)
    return len(sa & sb) / len(sa | sb)


def random_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n_words))


def mutate(rng: random.Random, text: str, n_changes: int) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), n_changes):
        words[i] = rng.choice(VOCAB)
    return " ".join(words)


def planted_corpus(seed: int = 0):
    """Originals, near duplicates at Jaccard ~0.9, related texts at ~0.3, exact copies with case/space changes."""
    rng = random.Random(seed)
    originals = [random_text(rng, 300) for _ in range(30)]
    near = [(i, mutate(rng, originals[i], 3)) for i in range(15)]
    related = []
    for i in range(15, 25):
        words = originals[i].split()
        related.append((i, " ".join(words[:135]) + " " + random_text(rng, 165)))
    exact = [(i, "  " + originals[i].upper().replace(" ", " \n ")) for i in range(25, 30)]
    return originals, near, related, exact


def run(step, docs):
    stats = StepStats(step.name)
    kept, dropped = step(docs, stats)
    return kept, {d.id: reason for d, reason in dropped}, stats


# ---------------------------------------------------------------------------------------------
# MinHash against exact Jaccard


def test_shingle_hashes_are_one_per_distinct_shingle():
    rng = random.Random(1)
    a = random_text(rng, 200)
    b = " ".join(a.split()[50:150])
    ha, hb = shingle_hashes(a, 5), shingle_hashes(b, 5)
    assert len(set(ha.tolist())) == len(shingle_set(a)) and len(ha) == 196
    assert set(hb.tolist()) <= set(ha.tolist())  # the same shingle hashes the same wherever it is
    assert len(set(shingle_hashes("one two three", 5).tolist())) == 1  # fewer words than n: one shingle
    assert len(shingle_hashes("  ... !!! ", 5)) == 0
    assert not np.array_equal(shingle_hashes("a b c d e", 5), shingle_hashes("e d c b a", 5))  # order matters


def test_minhash_estimates_match_exact_jaccard():
    rng = random.Random(2)
    hasher = MinHasher(num_perm=256, seed=3)
    z_scores, errors = [], []
    for _ in range(60):
        a = random_text(rng, 300)
        b = mutate(rng, a, rng.randint(0, 50))
        exact = jaccard(a, b)
        estimate = estimated_jaccard(hasher.signature(shingle_hashes(a, 5)), hasher.signature(shingle_hashes(b, 5)))
        errors.append(estimate - exact)
        if 0 < exact < 1:
            z_scores.append((estimate - exact) / np.sqrt(exact * (1 - exact) / 256))
    assert abs(np.mean(errors)) < 0.01  # unbiased
    assert np.max(np.abs(z_scores)) < 4.5  # and as precise as the binomial variance says
    assert 0.6 < np.std(z_scores) < 1.4


def test_batched_signatures_equal_one_at_a_time():
    rng = random.Random(4)
    hasher = MinHasher(num_perm=64, seed=1)
    sets = [shingle_hashes(random_text(rng, n), 5) for n in (3, 40, 2000, 7, 1, 600, 5000, 12)]
    batched = hasher.signatures(sets)
    assert batched.dtype == np.uint32 and batched.shape == (8, 64)
    for row, shingles in zip(batched, sets):
        assert np.array_equal(row, hasher.signature(shingles))


def _reference_error(threshold, bands, rows, fp_weight):
    # Independent of the module: trapezoid integration on a fine grid.
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    def p(s):
        return 1 - (1 - s**rows) ** bands

    below = np.linspace(0, threshold, 4001)
    above = np.linspace(threshold, 1, 4001)
    return fp_weight * trapezoid(p(below), below) + (1 - fp_weight) * trapezoid(1 - p(above), above)


@pytest.mark.parametrize(
    "threshold, num_perm, weight", [(0.8, 128, 0.5), (0.8, 128, 0.1), (0.5, 64, 0.5), (0.9, 256, 0.3)]
)
def test_bands_and_rows_minimise_the_weighted_error(threshold, num_perm, weight):
    bands, rows = optimal_bands_rows(threshold, num_perm, weight)
    assert bands * rows <= num_perm
    chosen = _reference_error(threshold, bands, rows, weight)
    best = min(
        _reference_error(threshold, b, r, weight) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)
    )
    assert chosen <= best + 1e-4


def test_default_choice_favours_recall_when_candidates_are_verified():
    bands, rows = DedupConfig().bands_rows()
    assert candidate_probability(0.85, bands, rows) > 0.95
    assert DedupConfig(bands=4, rows=8).bands_rows() == (4, 8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(VOCAB[:50]), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_exact_key_ignores_case_and_whitespace_only(words, rnd):
    text = " ".join(words)
    respaced = "".join(w.upper() if rnd.random() < 0.5 else w for w in words[:1]) + "".join(
        rnd.choice([" ", "\n", "\t ", "  \r\n"]) + (w.upper() if rnd.random() < 0.5 else w) for w in words[1:]
    )
    assert exact_key(respaced) == exact_key(text)
    assert exact_key(text + "x") != exact_key(text)


# ---------------------------------------------------------------------------------------------
# The dedup step


def _docs():
    originals, near, related, exact = planted_corpus()
    docs = [Document(f"orig{i}", t, "t") for i, t in enumerate(originals)]
    docs += [Document(f"near{i}", t, "t") for i, t in near]
    docs += [Document(f"related{i}", t, "t") for i, t in related]
    docs += [Document(f"exact{i}", t, "t") for i, t in exact]
    docs += [Document("empty1", " ... ", "t"), Document("empty2", " !!! ", "t")]  # no words: never near duplicates
    return docs, originals, near, related


def test_exact_and_near_duplicates_go_related_texts_stay():
    docs, originals, near, related = _docs()
    for i, text in near:
        assert jaccard(originals[i], text) > 0.85
    for i, text in related:
        assert 0.2 < jaccard(originals[i], text) < 0.4
    kept, dropped, stats = run(Deduplicator(), docs)
    expected = {f"near{i}": "near_duplicate" for i, _ in near}
    expected.update({f"exact{i}": "exact_duplicate" for i in range(25, 30)})
    assert dropped == expected
    assert {d.id for d in kept} >= {f"orig{i}" for i in range(30)} | {f"related{i}" for i, _ in related}
    assert stats.counters["exact_duplicate_clusters"] == 5
    assert stats.counters["near_duplicate_clusters"] == 15


def test_results_do_not_depend_on_batching_or_index_merges(monkeypatch):
    docs, *_ = _docs()
    reference = run(Deduplicator(), [Document(d.id, d.text, d.source) for d in docs])
    for size in (1, 7):
        step, stats, dropped = Deduplicator(), StepStats("dedup"), {}
        if size == 7:
            monkeypatch.setattr(dedup._Buckets, "MERGE_AT", 5)  # merge the bucket arrays many times
        for start in range(0, len(docs), size):
            batch = [Document(d.id, d.text, d.source) for d in docs[start : start + size]]
            dropped.update({d.id: r for d, r in step(batch, stats)[1]})
        assert dropped == reference[1]
        assert stats.counters == reference[2].counters
        if size == 7:
            assert len(step.near.buckets.keys) > 0


def _sign_in_worker(signer, docs):
    kept, _ = signer(docs, StepStats(signer.name))
    return kept


def test_signatures_from_worker_processes_give_the_same_result():
    docs, *_ = _docs()
    reference = run(Deduplicator(), [Document(d.id, d.text, d.source) for d in docs])
    signer = MinHashSigner(DedupConfig())
    batches = [docs[i : i + 9] for i in range(0, len(docs), 9)]
    with ProcessPoolExecutor(2) as pool:
        signed = [doc for batch in pool.map(_sign_in_worker, [signer] * len(batches), batches) for doc in batch]
    assert all("_dedup_fingerprint" in d.meta for d in signed)
    _, dropped, stats = run(Deduplicator(), signed)
    assert dropped == reference[1] and stats.counters == reference[2].counters
    assert not any(d.meta for d in signed)  # the fingerprints never reach the output


def test_later_batches_are_compared_with_earlier_ones():
    docs, *_ = _docs()
    step = Deduplicator()
    run(step, docs[:30])  # originals
    _, dropped, _ = run(step, [Document("again", docs[3].text + " ", "t"), Document("near", docs[30].text, "t")])
    assert dropped == {"again": "exact_duplicate", "near": "near_duplicate"}


def greedy_reference(texts: list[str], threshold: float = 0.8) -> list[list[int]]:
    """Brute force, from Python sets: in order, a text goes when it is similar to an earlier text that stayed."""
    kept: list[int] = []
    groups: dict[int, list[int]] = {}
    for j, text in enumerate(texts):
        match = next((i for i in kept if jaccard(texts[i], text) >= threshold), None)
        if match is None:
            kept.append(j)
        else:
            groups.setdefault(match, [match]).append(j)
    return [groups[k] for k in sorted(groups)]


def test_near_duplicate_clusters_equal_a_brute_force_reference():
    rng = random.Random(9)
    texts, truth = [], []
    for _ in range(20):
        base = random_text(rng, 250)
        group = [len(texts)]
        texts.append(base)
        for _ in range(rng.randint(0, 3)):
            group.append(len(texts))
            texts.append(mutate(rng, base, 1))  # Jaccard >= 0.92 among the group: LSH finds such pairs
        truth.append(group)
    order = list(range(len(texts)))
    rng.shuffle(order)
    shuffled = [texts[i] for i in order]
    clusters = near_duplicate_clusters(shuffled)
    assert clusters == greedy_reference(shuffled)
    found = sorted(sorted(order[i] for i in c) for c in clusters)
    assert found == sorted(g for g in truth if len(g) > 1)


def test_a_pair_just_below_the_threshold_stays_even_when_its_signatures_agree():
    # Signatures agreeing on >= 80% of positions at a true Jaccard below 0.8 are what cost
    # precision; verify="jaccard" must keep such a pair, verify="signature" drops it.
    rng = random.Random(3)
    for _ in range(400):
        base = random_text(rng, 200)
        other = mutate(rng, base, 5)
        true = jaccard(base, other)
        hasher = MinHasher(128, 1)
        estimate = estimated_jaccard(
            hasher.signature(shingle_hashes(base, 5)), hasher.signature(shingle_hashes(other, 5))
        )
        if true < 0.8 <= estimate:
            break
    else:
        pytest.fail("no pair found whose estimate crosses the threshold")
    assert near_duplicate_clusters([base, other], DedupConfig(verify="signature", bands=16, rows=8)) == [[0, 1]]
    assert near_duplicate_clusters([base, other], DedupConfig(bands=16, rows=8)) == []


def test_exact_jaccard_of_the_kept_sets_equals_python_sets():
    rng = random.Random(4)
    for _ in range(30):
        a = random_text(rng, rng.randint(5, 300))
        b = mutate(rng, a, rng.randint(0, min(20, len(a.split())))) if rng.random() < 0.8 else random_text(rng, 50)
        ours = dedup.sorted_set_jaccard(dedup.shingle_set(a, 5), dedup.shingle_set(b, 5))
        assert ours == pytest.approx(jaccard(a, b), abs=1e-12)


def test_unverified_candidates_are_accepted_and_no_signatures_are_kept():
    docs, _, near, _ = _docs()
    index = NearDuplicateIndex(DedupConfig(verify="none", bands=14, rows=9))
    results = index.add_batch([d.text for d in docs])
    assert len(index.evidence) == 0
    flagged = {docs[i].id for i, r in enumerate(results) if r is not None and r[1] is not None}
    assert {f"near{i}" for i, _ in near} <= flagged
    assert results[-1] is None and results[-2] is None  # no words


def test_same_clusters_in_another_process():
    rng = random.Random(5)
    texts = [random_text(rng, 120) for _ in range(10)]
    texts += [mutate(rng, t, 1) for t in texts[:5]]
    here = near_duplicate_clusters(texts)
    signature = MinHasher(128, 1).signature(shingle_hashes(texts[0], 5))
    script = (
        "import json, sys; from lmsmith.data.dedup import *; texts = json.load(sys.stdin);"
        "print(json.dumps([near_duplicate_clusters(texts),"
        " MinHasher(128, 1).signature(shingle_hashes(texts[0], 5)).tolist()]))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(texts), capture_output=True, text=True, env=env, check=True
    )
    there_clusters, there_signature = json.loads(out.stdout)
    assert there_clusters == here and len(here) == 5
    assert there_signature == signature.tolist()


def test_config_checks():
    assert parse_section(DedupConfig, {"threshold": 0.9, "boilerplate": {"enabled": True}}, "dedup").boilerplate.enabled
    for raw, message in [
        ({"threshold": 1.0}, "dedup.threshold"),
        ({"bands": 4}, "go together"),
        ({"bands": 20, "rows": 10}, "at most num_perm"),
        ({"num_perm": 1}, "dedup.num_perm"),
        ({"exact": False, "near": False}, "enabled=false"),
        ({"boilerplate": {"min_docs": 1}}, "dedup.boilerplate.min_docs"),
        ({"shingle": 3}, "did you mean 'shingle_size'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_section(DedupConfig, raw, "dedup")


# ---------------------------------------------------------------------------------------------
# Boilerplate lines, two passes

HEADER = [
    "Copyright (c) 2024 Example Corporation. All rights reserved.",
    "Licensed under the Example License, Version 2.0.",
]


def _boilerplate_docs(rng):
    docs = []
    for i in range(12):
        body = "\n".join(random_text(rng, 12) for _ in range(4))
        docs.append(Document(f"prose{i}", "\n".join(HEADER) + "\nThanks!\n" + body, "t"))
    for i in range(12):
        code = "\n".join(f"# {line}" for line in HEADER) + (
            f"\nimport os\n\n\ndef main():\n    return {i}\n\n\n"
            "if __name__ == '__main__':\n    main()\n"
        )
        docs.append(Document(f"code{i}", code, "t", {"kind": "code", "language": "python"}))
    docs.append(Document("only", "\n".join(HEADER) + "\n", "t"))
    return docs


def test_boilerplate_counts_match_an_independent_count(monkeypatch):
    rng = random.Random(6)
    docs = _boilerplate_docs(rng)
    config = BoilerplateConfig(enabled=True, min_docs=10, min_chars=20)
    monkeypatch.setattr(LineFrequencyCounter, "_COMPACT_EVERY", 7)
    counter = LineFrequencyCounter(config)
    for start in range(0, len(docs), 4):  # as worker processes would hand back their batches
        batch = docs[start : start + 4]
        counter.add_counts(count_document_lines(batch, config), len(batch))
    reference = Counter(k for d in docs for k in document_line_keys(d, config))
    counter._compact()
    assert dict(zip(counter._keys.tolist(), counter._counts.tolist())) == dict(reference)
    assert counter.n_docs == len(docs)
    assert counter.frequent_lines() == {k for k, n in reference.items() if n >= 10}


def test_boilerplate_lines_go_content_and_code_statements_stay():
    rng = random.Random(7)
    docs = _boilerplate_docs(rng)
    config = BoilerplateConfig(enabled=True, min_docs=10)
    counter = LineFrequencyCounter(config)
    counter.add_documents(docs)
    assert len(counter.frequent_lines()) == 4  # two prose lines, the same two as comments
    kept, dropped, stats = run(BoilerplateRemover(config, counter.frequent_lines()), docs)
    assert dropped == {"only": "boilerplate_only"}
    prose, code = kept[0].text, kept[12].text
    assert not any(h in prose for h in HEADER) and prose.startswith("Thanks!\n")
    assert not any(h in code for h in HEADER) and "if __name__ == '__main__':\n    main()" in code
    assert stats.counters["boilerplate_lines_removed"] == 24 * 2 + 2
    # A higher bar for frequency keeps everything.
    strict = LineFrequencyCounter(BoilerplateConfig(enabled=True, min_docs=10, min_fraction=0.9))
    strict.add_documents(docs)
    assert strict.frequent_lines() == frozenset()
