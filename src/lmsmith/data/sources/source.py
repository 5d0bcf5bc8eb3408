"""What every source has in common: a stream of documents and skips, and a fingerprint.

A source reads one input (a folder, a file, a Hugging Face dataset, the standard library) and
yields `Document`s. What it cannot turn into a document (a binary file, an empty file, a
malformed JSON line) it yields as a `Skipped` with a reason, so the run goes on and the report
counts it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lmsmith.data.document import Document


@dataclass
class Skipped:
    """Input that did not become a document, with the reason and where it was."""

    source: str
    reason: str  # e.g. "binary", "empty", "malformed_json"
    n_bytes: int
    detail: str = ""  # one line for a person, e.g. "Expecting value: column 1"
    meta: dict[str, Any] = field(default_factory=dict)  # path, line
    text: str = ""  # the raw record for malformed lines, so --keep-dropped can show it

    def as_document(self) -> Document:
        locator = f"{self.meta.get('path', '')}:{self.meta.get('line', '')}"
        return Document(document_id(self.source, locator), self.text, self.source,
                        {**self.meta, "detail": self.detail})


def document_id(source: str, locator: str) -> str:
    """A stable id from where a document came from: same input, same id, on every run."""
    return hashlib.blake2b(f"{source}\x00{locator}".encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class Source:
    """One input. Subclasses yield documents and skips from `items` and say what they read."""

    spec: str  # the input as the user wrote it

    def total_bytes(self) -> int | None:
        """Bytes this source will read, if known up front (for the progress bar)."""
        return None

    def items(self) -> Iterator[Document | Skipped]:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """What was read, with a content hash, for the manifest; complete once `items` is exhausted."""
        raise NotImplementedError


class ContentDigest:
    """A running hash over (name, content-hash) pairs, in reading order."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.count = 0

    def add(self, name: str, content_sha256: str) -> None:
        self._digest.update(f"{name}\x00{content_sha256}\n".encode("utf-8", "surrogatepass"))
        self.count += 1

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
