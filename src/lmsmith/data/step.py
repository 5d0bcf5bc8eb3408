"""Steps and their counters.

A step takes a batch of documents and returns the ones it keeps (possibly changed) and the
ones it drops, each with a reason. Steps are pure functions of their config and the batch
(dedup is the exception: it remembers what it has seen), so a batch can be processed in
another process, or on another machine, and the counters merged afterwards.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lmsmith.data.document import Document


@dataclass
class StepStats:
    """What one step saw, kept and dropped (documents and bytes), by reason; plus free counters."""

    name: str
    docs_in: int = 0
    bytes_in: int = 0
    docs_kept: int = 0
    bytes_kept: int = 0
    dropped_docs: Counter = field(default_factory=Counter)  # reason -> documents
    dropped_bytes: Counter = field(default_factory=Counter)  # reason -> bytes
    counters: Counter = field(default_factory=Counter)  # e.g. redactions per kind, lines removed
    seconds: float = 0.0

    def merge(self, other: StepStats) -> None:
        self.docs_in += other.docs_in
        self.bytes_in += other.bytes_in
        self.docs_kept += other.docs_kept
        self.bytes_kept += other.bytes_kept
        self.dropped_docs.update(other.dropped_docs)
        self.dropped_bytes.update(other.dropped_bytes)
        self.counters.update(other.counters)
        self.seconds += other.seconds

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "docs_in": self.docs_in, "bytes_in": self.bytes_in,
            "docs_kept": self.docs_kept, "bytes_kept": self.bytes_kept,
            "dropped_docs": dict(self.dropped_docs), "dropped_bytes": dict(self.dropped_bytes),
            "counters": dict(self.counters), "seconds": round(self.seconds, 3),
        }


Dropped = tuple[Document, str]  # a dropped document and its reason


class Step:
    """Base class: subclasses implement `apply` (whole batch) or `decide` (one document)."""

    name = "step"

    def __call__(self, docs: list[Document], stats: StepStats) -> tuple[list[Document], list[Dropped]]:
        stats.docs_in += len(docs)
        stats.bytes_in += sum(d.n_bytes for d in docs)
        kept, dropped = self.apply(docs, stats)
        stats.docs_kept += len(kept)
        stats.bytes_kept += sum(d.n_bytes for d in kept)
        for doc, reason in dropped:
            stats.dropped_docs[reason] += 1
            stats.dropped_bytes[reason] += doc.n_bytes
        return kept, dropped

    def apply(self, docs: list[Document], stats: StepStats) -> tuple[list[Document], list[Dropped]]:
        kept, dropped = [], []
        for doc in docs:
            reason = self.decide(doc, stats)
            if reason is None:
                kept.append(doc)
            else:
                dropped.append((doc, reason))
        return kept, dropped

    def decide(self, doc: Document, stats: StepStats) -> str | None:
        """Return None to keep `doc` (a step may change doc.text in place), or a drop reason."""
        raise NotImplementedError
