"""Deduplication: exact duplicates, near duplicates (MinHash LSH), and boilerplate lines.

Exact: two documents are the same when their text is, after lowercasing and collapsing
whitespace; the first one seen stays.

Near: each document becomes the set of its word n-grams ("shingles"). MinHash keeps, for each
of `num_perm` random hash functions, the smallest hash over the set; two documents agree on a
position with probability equal to their Jaccard similarity. Locality-sensitive hashing cuts the
signature into `bands` of `rows`; documents that agree on a whole band become candidates, and
a candidate is a duplicate only when the exact Jaccard similarity of the two shingle sets reaches
`threshold` (`verify`; the MinHash estimate alone errs by +-0.035 at 0.8 with 128 hashes). A
document goes as `near_duplicate` when it is that similar to a document kept earlier.

Boilerplate: lines (licence headers, navigation, footers) that recur in many documents are
counted in a first pass (`LineFrequencyCounter`) and removed in a second (`BoilerplateRemover`).

Memory: the step keeps one 64-bit hash per distinct document, and per kept document that has
words, its shingle set (4 bytes a shingle: about as much as its text; with verify="signature"
its signature instead, 4 bytes x num_perm) plus about 12 bytes per band.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace

import numpy as np
import xxhash

from lmsmith.data.document import Document
from lmsmith.data.step import Dropped, Step, StepStats
from lmsmith.schema.curate import BoilerplateConfig, DedupConfig

_WORD = re.compile(r"\w+")
_MASK64 = (1 << 64) - 1






# ---------------------------------------------------------------------------------------------
# Choosing bands and rows






# ---------------------------------------------------------------------------------------------
# Hashing: xxhash is fast and, unlike Python's hash(), the same in every process.


def normalise_text(text: str) -> str:
    return " ".join(text.lower().split())


def exact_key(text: str) -> int:
    return xxhash.xxh3_64_intdigest(normalise_text(text).encode("utf-8", errors="replace"))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the whole 64-bit word."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.lru_cache(maxsize=64)
def _odd_multipliers(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    multipliers = rng.integers(0, 2**64, size=count, dtype=np.uint64, endpoint=False) | np.uint64(1)
    multipliers.flags.writeable = False  # shared by every caller through the cache
    return multipliers


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


_WORD_HASH_CACHES: dict[int, dict[str, int]] = {}  # seed -> word -> hash
_WORD_HASH_CACHE_LIMIT = 1 << 18  # words per seed (about 30 MB); then the cache starts afresh


def _word_hashes(words: list[str], seed: int) -> np.ndarray:
    # Word frequencies follow Zipf's law: a small cache of hashes spares most xxhash calls.
    cache = _WORD_HASH_CACHES.setdefault(seed, {})
    missing = set(words).difference(cache)
    if len(cache) + len(missing) > _WORD_HASH_CACHE_LIMIT:
        cache.clear()
    for word in missing:
        cache[word] = xxhash.xxh3_64_intdigest(word.encode(), seed)
    return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))


def shingle_hashes(text: str, size: int, seed: int = 1) -> np.ndarray:
    """64-bit hashes of the word `size`-grams of `text` (one n-gram of all words if fewer).

    Each word is hashed once; an n-gram's hash is a fixed random linear combination of its
    words' hashes (so word order matters), mixed. Empty when the text has no words.
    """
    words = words_of(text)
    if not words:
        return np.empty(0, dtype=np.uint64)
    word_hashes = _word_hashes(words, seed)
    weights = _odd_multipliers(size, seed + 0x5151)
    count = max(1, len(words) - size + 1)
    acc = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(min(size, len(words))):
            acc += word_hashes[k : k + count] * weights[k]
        return _mix64(acc)


# ---------------------------------------------------------------------------------------------
# MinHash


class MinHasher:
    """`num_perm` hash functions h(x) = (a*x + b) >> 32 over 64-bit shingle hashes (multiply-shift)."""

    _CHUNK = 1024  # shingles per block: keeps the (shingles x num_perm) block in cache

    def __init__(self, num_perm: int = 128, seed: int = 1):
        rng = np.random.default_rng([seed, num_perm])
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
        self.num_perm = num_perm

    def _hash_block(self, shingles: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            block = np.multiply.outer(shingles, self.a)
            block += self.b
        block >>= np.uint64(32)
        return block

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        """The MinHash signature (uint32, num_perm) of one non-empty set of shingle hashes."""
        out = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, len(shingles), self._CHUNK):
            np.minimum(out, self._hash_block(shingles[start : start + self._CHUNK]).min(axis=0), out=out)
        return out.astype(np.uint32)

    def signatures(self, shingle_sets: list[np.ndarray]) -> np.ndarray:
        """Signatures (n, num_perm) of many non-empty shingle sets; small sets are done together."""
        out = np.empty((len(shingle_sets), self.num_perm), dtype=np.uint32)
        i = 0
        while i < len(shingle_sets):
            if len(shingle_sets[i]) >= self._CHUNK:
                out[i] = self.signature(shingle_sets[i])
                i += 1
                continue
            j, total = i, 0
            while j < len(shingle_sets) and total + len(shingle_sets[j]) <= self._CHUNK:
                total += len(shingle_sets[j])
                j += 1
            block = self._hash_block(np.concatenate(shingle_sets[i:j]))
            starts = np.cumsum([0] + [len(s) for s in shingle_sets[i : j - 1]])
            out[i:j] = np.minimum.reduceat(block, starts, axis=0).astype(np.uint32)
            i = j
        return out


def band_keys(signatures: np.ndarray, bands: int, rows: int, seed: int = 1) -> np.ndarray:
    """One 64-bit key per (document, band): equal bands give equal keys; a band's position is part of its key."""
    n = signatures.shape[0]
    blocks = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    weights = _odd_multipliers(rows, seed + 0xB4D)
    salts = _odd_multipliers(bands, seed + 0x5A17)
    with np.errstate(over="ignore"):
        keys = (blocks * weights).sum(axis=2, dtype=np.uint64) + salts
        return _mix64(keys)


# ---------------------------------------------------------------------------------------------
# LSH index with clusters


class _Buckets:
    """Band key -> documents filed under it, in sorted numpy arrays (12 bytes an entry); recent
    additions wait in a dict and are merged in bulk."""

    MERGE_AT = 1 << 16  # recent entries that trigger a merge (or an eighth of the merged ones, if more)

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.docs = np.empty(0, dtype=np.int32)
        self.recent: dict[int, list[int]] = {}
        self.n_recent = 0

    def ranges(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each key, the slice of the merged arrays that holds it (lo == hi: none)."""
        return np.searchsorted(self.keys, keys, "left"), np.searchsorted(self.keys, keys, "right")

    def add(self, key: int, doc: int) -> None:
        self.recent.setdefault(key, []).append(doc)
        self.n_recent += 1

    def merge_if_due(self) -> None:
        # Merging costs a copy of the arrays, so wait until the dict holds a fair share of them.
        if self.n_recent < max(self.MERGE_AT, len(self.keys) // 8):
            return
        new_keys = np.fromiter((k for k, ds in self.recent.items() for _ in ds), dtype=np.uint64, count=self.n_recent)
        new_docs = np.fromiter((d for ds in self.recent.values() for d in ds), dtype=np.int32, count=self.n_recent)
        order = np.argsort(new_keys, kind="stable")
        new_keys, new_docs = new_keys[order], new_docs[order]
        at = np.searchsorted(self.keys, new_keys, "right")
        self.keys = np.insert(self.keys, at, new_keys)
        self.docs = np.insert(self.docs, at, new_docs)
        self.recent, self.n_recent = {}, 0


class _ArrayList:
    """Variable-length uint32 arrays appended one after another into one growing buffer (no per-array object)."""

    def __init__(self) -> None:
        self.data = np.empty(1 << 16, dtype=np.uint32)
        self.ends: list[int] = []

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def n_values(self) -> int:
        return self.ends[-1] if self.ends else 0

    def append(self, values: np.ndarray) -> int:
        """Store `values`; returns its slot number."""
        start = self.n_values
        needed = start + len(values)
        if needed > len(self.data):
            grown = np.empty(max(needed, 2 * len(self.data)), dtype=np.uint32)
            grown[:start] = self.data[:start]
            self.data = grown
        self.data[start:needed] = values
        self.ends.append(needed)
        return len(self.ends) - 1

    def __getitem__(self, slot: int) -> np.ndarray:
        return self.data[(self.ends[slot - 1] if slot else 0) : self.ends[slot]]


def sorted_set_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| for two sorted arrays of distinct values."""
    if len(a) > len(b):
        a, b = b, a
    if not len(a):
        return 1.0 if not len(b) else 0.0
    at = np.minimum(np.searchsorted(b, a), len(b) - 1)
    shared = int(np.count_nonzero(b[at] == a))
    return shared / (len(a) + len(b) - shared)


class NearDuplicateIndex:
    """Streams documents through MinHash LSH; a document is a near duplicate when it is similar
    enough to a document kept earlier that shares a band with it.

    Only kept documents are filed under their band keys and compared against: what is judged a
    duplicate is always judged against something that is in the output, chains (A ~ B ~ C with
    C far from A) cannot drop a document for its likeness to one that was itself dropped, and
    the outcome is a function of the documents' order alone, which another executor can
    reproduce from the candidate pairs (see `resolve_near_duplicates`).

    How a candidate is confirmed (`verify`): "jaccard" compares the two shingle sets exactly, so
    the kept evidence is each kept document's set of shingle hashes (4 bytes a shingle, about
    the size of its text); "signature" the share of MinHash positions that agree (its standard
    error at 0.8 is 0.035 with 128 hashes, which is why pairs at 0.75 slipped through); "none"
    takes every candidate.
    """

    def __init__(self, config: DedupConfig):
        self.config = config
        self.bands, self.rows = config.bands_rows()
        self.hasher = MinHasher(config.num_perm, config.seed)
        self.buckets = _Buckets()  # band key -> slots of kept documents
        self.evidence = _ArrayList()  # slot -> shingle set or signature of a kept document
        self.kept_docs: list[int] = []  # slot -> document number
        self.duplicate_of: dict[int, int] = {}  # document number -> the kept document it duplicates
        self.n_docs = 0
        self.n_candidates = 0
        self.n_rejected = 0

    def add_batch(self, texts: list[str]) -> list[tuple[int, int | None] | None]:
        """Per text: (document number, the kept document it duplicates or None), or None without words."""
        return self.add_fingerprints(fingerprints(texts, self.config, self.hasher))

    def add_fingerprints(self, prints: list[Fingerprint]) -> list[tuple[int, int | None] | None]:
        """`add_batch` for fingerprints computed elsewhere (in the worker processes)."""
        present = [i for i, p in enumerate(prints) if p.signature is not None]
        results: list[tuple[int, int | None] | None] = [None] * len(prints)
        if not present:
            return results
        keys = band_keys(np.stack([prints[i].signature for i in present]), self.bands, self.rows, self.config.seed)
        lo, hi = self.buckets.ranges(keys)
        keys_list = keys.tolist()
        for row, i in enumerate(present):
            node = self.n_docs
            self.n_docs += 1
            slots = self._bucket_members(keys_list[row], lo[row], hi[row])
            match = self._first_match(prints[i], slots)
            if match is None:
                self._file(node, prints[i], keys_list[row])
            else:
                self.duplicate_of[node] = self.kept_docs[match]
            results[i] = (node, None if match is None else self.kept_docs[match])
        self.buckets.merge_if_due()
        return results

    def _bucket_members(self, keys: list[int], lo: np.ndarray, hi: np.ndarray) -> list[int]:
        slots: set[int] = set()
        for key, start, end in zip(keys, lo.tolist(), hi.tolist()):
            if end > start:
                slots.update(self.buckets.docs[start:end].tolist())
            slots.update(self.buckets.recent.get(key, ()))
        return sorted(slots)

    def _evidence_of(self, fingerprint: Fingerprint) -> np.ndarray:
        return fingerprint.shingles if self.config.verify == "jaccard" else fingerprint.signature

    def _first_match(self, fingerprint: Fingerprint, slots: list[int]) -> int | None:
        """The earliest kept candidate that is similar enough, or None."""
        if not slots:
            return None
        self.n_candidates += len(slots)
        if self.config.verify == "none":
            return slots[0]
        evidence = self._evidence_of(fingerprint)
        if self.config.verify == "jaccard":
            similar = [sorted_set_jaccard(self.evidence[s], evidence) >= self.config.threshold for s in slots]
        else:
            agree = (np.stack([self.evidence[s] for s in slots]) == evidence).mean(axis=1)
            similar = (agree >= self.config.threshold).tolist()
        self.n_rejected += len(slots) - sum(similar)
        return next((s for s, ok in zip(slots, similar) if ok), None)

    def _file(self, node: int, fingerprint: Fingerprint, keys: list[int]) -> None:
        slot = len(self.kept_docs)
        self.kept_docs.append(node)
        if self.config.verify != "none":
            self.evidence.append(self._evidence_of(fingerprint))
        for key in keys:
            self.buckets.add(key, slot)

    def clusters(self) -> list[list[int]]:
        """Every kept document that others duplicate, with them: sorted lists of document numbers."""
        groups: dict[int, list[int]] = {}
        for node, kept in self.duplicate_of.items():
            groups.setdefault(kept, [kept]).append(node)
        return [sorted(groups[k]) for k in sorted(groups)]


def resolve_near_duplicates(n_docs: int, similar_pairs: list[tuple[int, int]]) -> dict[int, int]:
    """Document -> the kept document it duplicates, from all similar candidate pairs (i < j).

    The rule `NearDuplicateIndex` applies while streaming, applied afterwards: in document
    order, a document goes when it is similar to an earlier document that stayed.
    """
    earlier: dict[int, list[int]] = {}
    for i, j in similar_pairs:
        earlier.setdefault(j, []).append(i)
    duplicate_of: dict[int, int] = {}
    for j in sorted(earlier):
        kept = [i for i in sorted(earlier[j]) if i not in duplicate_of]
        if kept:
            duplicate_of[j] = kept[0]
    return duplicate_of


@dataclass
class Fingerprint:
    """What dedup needs of a document, computed where the document is (a worker process)."""

    exact: int  # exact_key of the text
    signature: np.ndarray | None = None  # MinHash (uint32, num_perm); None without words or without near dedup
    shingles: np.ndarray | None = None  # sorted distinct 32-bit shingle hashes, for verify="jaccard"


def shingle_set(text: str, size: int, seed: int = 1) -> np.ndarray:
    """The sorted distinct shingle hashes of `text`, cut to 32 bits.

    32 bits keep the set about the size of the text; two distinct shingles of a pair share a
    hash with probability 2^-32, so the Jaccard similarity computed from these sets is the
    exact one except with odds of about (shingles in the pair)^2 / 2^33 that it is off by one
    shingle (1e-4 for two documents of 1,000 words).
    """
    return _distinct32(shingle_hashes(text, size, seed))


def _distinct32(hashes: np.ndarray) -> np.ndarray:
    return np.unique(hashes.astype(np.uint32))


def fingerprints(texts: list[str], config: DedupConfig, hasher: MinHasher | None = None) -> list[Fingerprint]:
    """Each text's exact key and, for near dedup, its MinHash signature (and shingle set when verified exactly)."""
    out = [Fingerprint(exact_key(t)) for t in texts]
    if not config.near:
        return out
    hasher = hasher or MinHasher(config.num_perm, config.seed)
    hashes = [shingle_hashes(t, config.shingle_size, config.seed) for t in texts]
    present = [i for i, h in enumerate(hashes) if len(h)]
    if present:
        for i, signature in zip(present, hasher.signatures([hashes[i] for i in present])):
            out[i].signature = signature
            if config.verify == "jaccard":
                out[i].shingles = _distinct32(hashes[i])
    return out


def minhash_signatures(
    texts: list[str], config: DedupConfig, hasher: MinHasher | None = None
) -> list[np.ndarray | None]:
    """Each text's MinHash signature, or None for a text without words."""
    return [f.signature for f in fingerprints(texts, replace(config, near=True, verify="none"), hasher)]


def near_duplicate_clusters(texts: list[str], config: DedupConfig | None = None) -> list[list[int]]:
    """Clusters (lists of indices into `texts`, two or more each): a kept text and the texts that duplicate it."""
    config = config or DedupConfig()
    index = NearDuplicateIndex(config)
    node_to_text: list[int] = []
    for start in range(0, len(texts), 1024):
        for offset, result in enumerate(index.add_batch(texts[start : start + 1024])):
            if result is not None:
                node_to_text.append(start + offset)
    return [[node_to_text[n] for n in cluster] for cluster in index.clusters()]


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The Jaccard similarity two MinHash signatures estimate: the share of positions that agree."""
    return float(np.mean(a == b))


# ---------------------------------------------------------------------------------------------
# The dedup step


FINGERPRINT_KEY = "_dedup_fingerprint"  # in Document.meta, from MinHashSigner to Deduplicator only


class MinHashSigner(Step):
    """Puts each document's `Fingerprint` in its meta, so that the hashing runs with the other
    per-document steps in the worker processes; `Deduplicator` takes it out again. It runs last
    of them, on what they kept."""

    name = "minhash"

    def __init__(self, config: DedupConfig | None = None):
        self.config = config or DedupConfig()
        self.hasher = MinHasher(self.config.num_perm, self.config.seed)

    def apply(self, docs: list[Document], stats: StepStats) -> tuple[list[Document], list[Dropped]]:
        for doc, fingerprint in zip(docs, fingerprints([doc.text for doc in docs], self.config, self.hasher)):
            doc.meta[FINGERPRINT_KEY] = fingerprint
        return docs, []


class Deduplicator(Step):
    """Drops exact duplicates, then near duplicates; remembers what it kept across batches.

    Stateful, so it runs in one process (the main one) over the batches in order.
    """

    name = "dedup"

    def __init__(self, config: DedupConfig | None = None):
        self.config = config or DedupConfig()
        self.exact_seen: set[int] = set()
        self.exact_groups: set[int] = set()  # keys that had a duplicate, for the cluster count
        self.near = NearDuplicateIndex(self.config) if self.config.near else None
        self.near_roots: set[int] = set()  # kept documents that others duplicate

    def apply(self, docs: list[Document], stats: StepStats) -> tuple[list[Document], list[Dropped]]:
        prints = self._fingerprints(docs)
        kept, dropped = (self._drop_exact(docs, prints, stats) if self.config.exact else (list(docs), []))
        if self.near is not None and kept:
            kept, near_dropped = self._drop_near(kept, prints, stats)
            dropped += near_dropped
        return kept, dropped

    def _fingerprints(self, docs: list[Document]) -> dict[int, Fingerprint]:
        """id(doc) -> its Fingerprint: taken from MinHashSigner's meta, or computed here."""
        out, missing = {}, []
        for doc in docs:
            given = doc.meta.pop(FINGERPRINT_KEY, None)
            if isinstance(given, Fingerprint) and self._fits(given):
                out[id(doc)] = given
            else:
                missing.append(doc)
        if missing:
            hasher = self.near.hasher if self.near is not None else None
            for doc, fingerprint in zip(missing, fingerprints([doc.text for doc in missing], self.config, hasher)):
                out[id(doc)] = fingerprint
        return out

    def _fits(self, fingerprint: Fingerprint) -> bool:
        """Whether a fingerprint made elsewhere was made with this config's settings."""
        if self.near is None or fingerprint.signature is None:
            return self.near is None or fingerprint.shingles is None
        return len(fingerprint.signature) == self.config.num_perm and (
            self.config.verify != "jaccard" or fingerprint.shingles is not None)

    def _drop_exact(self, docs: list[Document], prints: dict, stats: StepStats) -> tuple[list[Document], list[Dropped]]:
        kept, dropped = [], []
        for doc in docs:
            key = prints[id(doc)].exact
            if key in self.exact_seen:
                dropped.append((doc, "exact_duplicate"))
                if key not in self.exact_groups:
                    self.exact_groups.add(key)
                    stats.counters["exact_duplicate_clusters"] += 1
            else:
                self.exact_seen.add(key)
                kept.append(doc)
        return kept, dropped

    def _drop_near(self, docs: list[Document], prints: dict, stats: StepStats) -> tuple[list[Document], list[Dropped]]:
        before = (self.near.n_candidates, self.near.n_rejected)
        results = self.near.add_fingerprints([prints[id(doc)] for doc in docs])
        stats.counters["near_duplicate_candidates"] += self.near.n_candidates - before[0]
        stats.counters["near_duplicate_candidates_rejected"] += self.near.n_rejected - before[1]
        kept, dropped = [], []
        for doc, result in zip(docs, results):
            if result is None or result[1] is None:
                kept.append(doc)
                continue
            dropped.append((doc, "near_duplicate"))
            if result[1] not in self.near_roots:
                self.near_roots.add(result[1])
                stats.counters["near_duplicate_clusters"] += 1
        return kept, dropped


# ---------------------------------------------------------------------------------------------
# Boilerplate lines, in two passes: count (anywhere, per batch), then remove.

_COMMENT_START = re.compile(r"\s*(?:#(?![!\w])|//|/\*|\*|--|;;|%|<!--|\"\"\"|''')")


def _line_is_eligible(line: str, is_code: bool, min_chars: int) -> bool:
    stripped = line.strip()
    if len(stripped) < min_chars:
        return False
    # In code only comments may go: a repeated statement is still part of the program.
    return not is_code or bool(_COMMENT_START.match(line))


def _line_key(line: str) -> int:
    return xxhash.xxh3_64_intdigest(" ".join(line.split()).encode("utf-8", errors="replace"))


def document_line_keys(doc: Document, config: BoilerplateConfig) -> set[int]:
    """Hashes of the distinct lines of `doc` that boilerplate removal may look at."""
    is_code = doc.meta.get("kind") == "code"
    return {_line_key(line) for line in doc.text.split("\n") if _line_is_eligible(line, is_code, config.min_chars)}


def count_document_lines(docs: list[Document], config: BoilerplateConfig) -> np.ndarray:
    """First pass, per batch (any process): each document's distinct line hashes, concatenated."""
    keys = [k for doc in docs for k in document_line_keys(doc, config)]
    return np.array(keys, dtype=np.uint64)


class LineFrequencyCounter:
    """In how many documents each line occurs, over the whole corpus (16 bytes per distinct line)."""

    _COMPACT_EVERY = 1 << 21

    def __init__(self, config: BoilerplateConfig | None = None):
        self.config = config or BoilerplateConfig()
        self.n_docs = 0
        self._keys = np.empty(0, dtype=np.uint64)
        self._counts = np.empty(0, dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._n_pending = 0

    def add_documents(self, docs: list[Document]) -> None:
        self.add_counts(count_document_lines(docs, self.config), len(docs))

    def add_counts(self, line_keys: np.ndarray, n_docs: int) -> None:
        """Merge what `count_document_lines` returned for a batch of `n_docs` documents."""
        self.n_docs += n_docs
        self._pending.append(line_keys)
        self._n_pending += len(line_keys)
        if self._n_pending >= self._COMPACT_EVERY:
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        fresh = np.concatenate(self._pending)
        keys = np.concatenate([self._keys, fresh])
        counts = np.concatenate([self._counts, np.ones(len(fresh), dtype=np.int64)])
        self._keys, inverse = np.unique(keys, return_inverse=True)
        self._counts = np.bincount(inverse.ravel(), weights=counts, minlength=len(self._keys)).astype(np.int64)
        self._pending, self._n_pending = [], 0

    def min_count(self) -> int:
        return max(self.config.min_docs, math.ceil(self.config.min_fraction * self.n_docs))

    def frequent_lines(self) -> frozenset[int]:
        """Hashes of the lines that occur in enough documents to count as boilerplate."""
        self._compact()
        return frozenset(self._keys[self._counts >= self.min_count()].tolist())


class BoilerplateRemover(Step):
    """Second pass: removes the lines `LineFrequencyCounter` found frequent; drops documents left empty."""

    name = "boilerplate"

    def __init__(self, config: BoilerplateConfig, frequent_lines: frozenset[int]):
        self.config = config
        self.frequent_lines = frequent_lines

    def decide(self, doc: Document, stats: StepStats) -> str | None:
        if not self.frequent_lines:
            return None
        is_code = doc.meta.get("kind") == "code"
        lines = doc.text.split("\n")
        kept = [
            line for line in lines
            if not (_line_is_eligible(line, is_code, self.config.min_chars) and _line_key(line) in self.frequent_lines)
        ]
        if len(kept) == len(lines):
            return None
        stats.counters["boilerplate_lines_removed"] += len(lines) - len(kept)
        doc.text = "\n".join(kept)
        return None if doc.text.strip() else "boilerplate_only"
