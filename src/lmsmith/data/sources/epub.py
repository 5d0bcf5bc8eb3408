"""EPUB books become one document each: the chapters in reading order, markup stripped.

An EPUB is a zip archive. `META-INF/container.xml` names the package file (OPF); its manifest
maps ids to files and its spine lists the ids in reading order, which is not the order of the
files in the archive nor of their names.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from xml.etree import ElementTree

from lmsmith.data.document import Document
from lmsmith.data.sources.markup import markup_text
from lmsmith.data.sources.source import Skipped, document_id

_CONTAINER = "META-INF/container.xml"


class NotAnEpub(Exception):
    """The archive lacks what every EPUB has."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _package_path(book: zipfile.ZipFile) -> str:
    root = ElementTree.fromstring(book.read(_CONTAINER))
    for element in root.iter():
        if _local(element.tag) == "rootfile" and element.get("full-path"):
            return element.get("full-path")
    raise NotAnEpub(f"{_CONTAINER} names no package file")


def spine_files(book: zipfile.ZipFile) -> list[str]:
    """The archive paths of the book's content documents, in reading order."""
    package = _package_path(book)
    root = ElementTree.fromstring(book.read(package))
    base = posixpath.dirname(package)
    manifest = {item.get("id"): item.get("href") for item in root.iter() if _local(item.tag) == "item"}
    order = [ref.get("idref") for ref in root.iter() if _local(ref.tag) == "itemref" and ref.get("linear") != "no"]
    missing = [idref for idref in order if idref not in manifest]
    if missing:
        raise NotAnEpub(f"the spine names {missing[0]!r}, which the manifest lacks")
    return [posixpath.normpath(posixpath.join(base, manifest[idref])) for idref in order]


def epub_items(file: Path | IO[bytes], *, source: str, rel: str, size: int) -> Iterator[Document | Skipped]:
    meta = {"path": rel}
    try:
        with zipfile.ZipFile(file) as book:
            chapters = [markup_text(book.read(name).decode("utf-8", errors="replace")) for name in spine_files(book)]
    except zipfile.BadZipFile:
        yield Skipped(source, "unreadable", size, "not an EPUB: the file is not a zip archive", meta)
        return
    except (KeyError, NotAnEpub, ElementTree.ParseError, OSError) as exc:
        yield Skipped(source, "unreadable", size, f"not a readable EPUB ({type(exc).__name__}: {exc})", meta)
        return
    text = "\n\n".join(chapter for chapter in chapters if chapter)
    if not text:
        yield Skipped(source, "empty", size, "the book has no text", meta)
        return
    yield Document(document_id(source, rel), text, source,
                   {"kind": "prose", "format": "epub", "chapters": len(chapters), **meta})
