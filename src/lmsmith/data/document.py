"""The unit of curation: one document and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    id: str  # stable across runs: derived from the source and position, never random
    text: str
    source: str  # e.g. "stdlib", "file:/path/to/x.md", "hf:roneneldan/TinyStories"
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"kind": "code", "language": "python", "path": ...}

    @property
    def n_bytes(self) -> int:
        return len(self.text.encode("utf-8", errors="replace"))
