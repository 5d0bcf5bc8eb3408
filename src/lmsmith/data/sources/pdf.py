"""PDF files (papers, manuals) become one document each: the pages' text, joined.

pypdf extracts each page's text. Running headers and footers (a journal's name, a page number)
repeat on every page and would teach the model nothing but interrupt every page, so lines that
open or close most pages, with their digits set aside, are removed. A word hyphenated across a
line or page end is joined again when both halves are lowercase letters ("exam-" + "ple").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lmsmith.data.document import Document
from lmsmith.data.sources.source import Skipped, document_id

_EDGE_LINES = 2  # lines at the top and at the bottom of a page that may be a running header or footer
_PAGE_NUMBER = re.compile(r"(?i)^\s*(?:page\s*)?[-–—(]?\s*\d{1,4}\s*[-–—)]?\s*(?:(?:of|/)\s*\d{1,4})?\s*$")
_DIGITS = re.compile(r"\d+")
_HYPHENATED = re.compile(r"([a-z])-\n\n?([a-z])")


def _edge_key(line: str) -> str:
    """A header line with its page number set aside: "Journal of X, p. 4" and "... p. 5" match."""
    return _DIGITS.sub("#", " ".join(line.split()).lower())


def _edges(lines: list[str]) -> dict[int, tuple[str, int]]:
    """The first and last few non-empty lines of a page: line index -> its place ("top", 0), ("bottom", 1), ...

    A running line keeps its place on every page; a body line that happens to open two pages rarely does.
    """
    filled = [i for i, line in enumerate(lines) if line.strip()]
    places = {i: ("bottom", k) for k, i in enumerate(reversed(filled[-_EDGE_LINES:]))}
    places.update({i: ("top", k) for k, i in enumerate(filled[:_EDGE_LINES])})
    return places


def remove_running_lines(pages: list[str]) -> list[str]:
    """Drop page numbers, and header and footer lines that open or close most pages at the same place."""
    split = [page.splitlines() for page in pages]
    keyed = [{i: (place, _edge_key(lines[i])) for i, place in _edges(lines).items()} for lines in split]
    counts = Counter(key for page in keyed for key in set(page.values()))
    min_pages = max(2, (len(pages) + 1) // 2)
    out = []
    for lines, edges in zip(split, keyed):
        drop = {i for i, key in edges.items() if _PAGE_NUMBER.match(lines[i]) or counts[key] >= min_pages}
        out.append("\n".join(line for i, line in enumerate(lines) if i not in drop))
    return out


def join_pages(pages: list[str]) -> str:
    """The pages as one text: running lines removed, pages apart by a blank line, hyphenation mended."""
    text = "\n\n".join(page.strip() for page in remove_running_lines(pages) if page.strip())
    return _HYPHENATED.sub(r"\1\2", text)


def pdf_items(file: Path | IO[bytes], *, source: str, rel: str, size: int) -> Iterator[Document | Skipped]:
    """The PDF `file` as one document; a page that cannot be read is skipped with its number."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    meta = {"path": rel}
    try:
        reader = PdfReader(file)
        if reader.is_encrypted and not reader.decrypt(""):
            yield Skipped(
                source, "encrypted", size, "the PDF needs a password: decrypt it first (qpdf --decrypt)", meta
            )
            return
        pages = reader.pages
        n_pages = len(pages)
    except (PyPdfError, OSError, ValueError, KeyError, TypeError) as exc:
        yield Skipped(source, "unreadable", size, f"not a readable PDF ({type(exc).__name__}: {exc})", meta)
        return
    texts = []
    for number in range(n_pages):
        try:
            texts.append(pages[number].extract_text() or "")
        except Exception as exc:  # pypdf raises many types on a damaged page; the other pages still count
            yield Skipped(source, "unreadable_page", 0, f"page {number + 1}: {type(exc).__name__}: {exc}",
                          {**meta, "page": number + 1})
    text = join_pages(texts)
    if not text.strip():
        yield Skipped(source, "empty", size, "no text in the PDF (a scan needs OCR first)", meta)
        return
    yield Document(document_id(source, rel), text, source, {"kind": "prose", "format": "pdf", "pages": n_pages, **meta})
