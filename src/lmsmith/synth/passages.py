"""The team's documents as passages: the unit a teacher is asked about, each with a stable id and hash.

A passage's hash is of its text alone, so an item keyed by (hash, kind) survives a rerun in which
files were renamed or reordered, and a rerun asks again only about passages whose text changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmsmith.core.errors import UserError, cannot_read
from lmsmith.core.manifest import MANIFEST


@dataclass(frozen=True)
class Passage:
    id: str  # "DOCUMENT#N": where it came from, for a person reading an item
    text: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]


def _curated_documents(directory: Path) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq

    from lmsmith.text.curated_dir import split_files

    for path in split_files(directory, "train"):
        for batch in pq.ParquetFile(path).iter_batches(columns=["id", "text"]):
            yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())


def _file_documents(inputs: list[str], exclude: list[str]) -> Iterator[tuple[str, str]]:
    from lmsmith.text.tokenizer import TextFiles

    for file in TextFiles(inputs, exclude=exclude).files:
        try:
            text = file.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise cannot_read(file.path, exc) from None
        yield str(file.path), text


def read_documents(inputs: list[str], exclude: list[str] = ()) -> Iterator[tuple[str, str]]:
    """(id, text) of every document: a curated directory's train split, or each text file whole."""
    if not inputs:
        raise UserError("no documents given: name a curated directory, or text files and folders")
    curated = [Path(p) for p in inputs if (Path(p) / MANIFEST).is_file()]
    if curated and len(inputs) > 1:
        raise UserError(f"{curated[0]} is a curated directory: give it on its own, or only text files and folders")
    if curated:
        yield from _curated_documents(curated[0])
    else:
        yield from _file_documents(inputs, list(exclude))


def split_passages(doc_id: str, text: str, max_chars: int) -> list[Passage]:
    """Cut a document at paragraph breaks into passages of at most `max_chars` (a longer paragraph is cut hard)."""
    pieces: list[str] = []
    current = ""
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        if current and len(current) + 2 + len(paragraph) > max_chars:
            pieces.append(current)  # before any piece of this paragraph: the document's order is kept
            current = ""
        while len(paragraph) > max_chars:
            pieces.append(paragraph[:max_chars])
            paragraph = paragraph[max_chars:]
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        pieces.append(current)
    return [Passage(f"{doc_id}#{n}", piece) for n, piece in enumerate(pieces)]


def passages_of(inputs: list[str], max_chars: int, min_chars: int,
                exclude: list[str] = ()) -> tuple[list[Passage], int]:
    """Every long-enough passage in document order, without repeats, and how many were too short."""
    kept, seen, short = [], set(), 0
    for doc_id, text in read_documents(inputs, exclude):
        for passage in split_passages(doc_id, text, max_chars):
            if len(passage.text) < min_chars:
                short += 1
            elif passage.hash not in seen:
                seen.add(passage.hash)
                kept.append(passage)
    return kept, short
