"""Files and folders: walk, filter by globs, and read each file by its kind.

Prose, HTML and code files are one document each, and so are PDF papers and EPUB books. JSON
lines, JSON and Parquet files are one document per record (a conversation record becomes
dialogue text), a Wikipedia XML dump one per article. Any of them may be gzip-, zstd- or
bzip2-compressed. A file that cannot be
read (binary, empty, too large, unreadable, undecodable) is skipped with that reason.
"""

from __future__ import annotations

import bz2
import fnmatch
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import zstandard

from lmsmith.core.input_files import special_kind, storable_name
from lmsmith.core.manifest import file_sha256
from lmsmith.data.document import Document
from lmsmith.data.sources.decode import SNIFF_BYTES, NotText, decode_text, looks_binary, python_source_encoding
from lmsmith.data.sources.epub import epub_items
from lmsmith.data.sources.kinds import classify, split_compression
from lmsmith.data.sources.pdf import pdf_items
from lmsmith.data.sources.records import json_items, jsonl_items, parquet_items
from lmsmith.data.sources.source import ContentDigest, Skipped, Source, document_id
from lmsmith.data.sources.wikipedia import dump_items, looks_like_dump

# Folders that hold tool state, never corpus text.
# What a damaged file or stream raises: ValueError for a truncated stream, zlib.error for bad gzip data.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError)

SKIPPED_FOLDERS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".tox", ".mypy_cache",
                   ".pytest_cache", ".ipynb_checkpoints"}


def matches_any(rel: str, patterns: list[str]) -> bool:
    """fnmatch against the relative path and the file name; `*` crosses folders (`test/*`)."""
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def open_decompressed(path: Path, compression: str | None) -> IO[bytes]:
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bz2":
        return bz2.open(path, "rb")
    if compression == "zstd":
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _read_capped(stream: IO[bytes], limit: int) -> bytes:
    """Up to limit+1 bytes: one more than allowed tells the caller the file is too large."""
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(1 << 22, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class FileTreeSource(Source):
    """A file or a folder (searched recursively), filtered by include/exclude globs."""

    def __init__(self, spec: str, root: Path, config, *, label: str | None = None,
                 include: list[str] = (), exclude: list[str] = ()):
        self.spec = spec
        self.root = root
        self.config = config
        self.label = label  # documents' source; None: "file:" + the path
        self.include = [*include]
        self.exclude = [*exclude]
        self.digest = ContentDigest()
        self._files: list[tuple[Path, str]] | None = None

    # -- which files ------------------------------------------------------------------------

    def files(self) -> list[tuple[Path, str]]:
        """(path, path relative to the input) for every file to read, in a stable order."""
        if self._files is None:
            self._files = list(self._walk())
        return self._files

    def _walk(self) -> Iterator[tuple[Path, str]]:
        if not self.root.is_dir():
            yield self.root, self.root.name
            return
        cfg = self.config
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = sorted(
                d for d in dirs if d not in SKIPPED_FOLDERS and not (cfg.skip_hidden and d.startswith("."))
            )
            base = Path(folder)
            rel_folder = base.relative_to(self.root).as_posix()
            for name in sorted(names):
                if cfg.skip_hidden and name.startswith("."):
                    continue
                rel = name if rel_folder == "." else f"{rel_folder}/{name}"
                if self.include and not matches_any(rel, self.include):
                    continue
                if cfg.include and not matches_any(rel, cfg.include):
                    continue
                if matches_any(rel, self.exclude) or matches_any(rel, cfg.exclude):
                    continue
                yield base / name, rel

    def total_bytes(self) -> int:
        total = 0
        for path, _ in self.files():
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    def fingerprint(self) -> dict:
        return {"kind": self.label if (self.label or "").startswith("stdlib") else "files", "path": str(self.root),
                "files": self.digest.count, "sha256": self.digest.hexdigest()}

    # -- reading ----------------------------------------------------------------------------

    def items(self) -> Iterator[Document | Skipped]:
        for path, rel in self.files():
            yield from self._file_items(path, rel)

    def _source_name(self, path: Path) -> str:
        return self.label or f"file:{storable_name(path)}"

    def _file_items(self, path: Path, rel: str) -> Iterator[Document | Skipped]:
        source = self._source_name(path)
        inner_name, compression = split_compression(path.name)
        fmt, flavour = classify(inner_name, self.config.formats)
        rel = storable_name(rel)  # a name with bytes that are not UTF-8 is recorded, not a crash
        meta = {"path": rel}
        kind = special_kind(path)
        if kind is not None:  # a FIFO would block and a device never end: skip before opening it
            yield Skipped(source, "special_file", 0, f"{kind}, not a file", meta)
            self.digest.add(rel, "-")
            return
        try:
            size = path.stat().st_size
            if fmt in ("jsonl", "parquet"):
                yield from self._record_file_items(path, fmt, compression, source, rel)
                return
            if fmt in ("pdf", "epub"):
                yield from self._book_items(path, fmt, compression, source, rel)
                return
            if fmt == "wikipedia" or (flavour == "xml" and self._is_dump(path, compression)):
                yield from self._dump_items(path, compression, source, rel)
                return
            if fmt is None and self.config.unknown_files == "skip":
                yield Skipped(source, "unsupported_type", size, f"no reader for '{inner_name}'", meta)
                self.digest.add(rel, "-")
                return
            limit = int(self.config.max_file_mb * 1e6)
            with open_decompressed(path, compression) as stream:
                data = stream.read(SNIFF_BYTES)
                binary = looks_binary(data)
                if data and not binary:  # a binary file is not read past its first bytes
                    data += _read_capped(stream, limit - len(data))
        except _READ_ERRORS as exc:
            yield Skipped(source, "unreadable", 0, f"{type(exc).__name__}: {exc}", meta)
            return
        self.digest.add(rel, hashlib.sha256(data).hexdigest())
        if not data:
            yield Skipped(source, "empty", 0, "the file is empty", meta)
        elif binary:
            yield Skipped(source, "binary", size, "binary content", meta)
        elif len(data) > limit:
            yield Skipped(source, "too_large", size, f"over sources.max_file_mb={self.config.max_file_mb:g}", meta)
        elif fmt == "json":
            yield from json_items(data, source=source, path=rel, field=self.config.text_field)
        else:
            yield self._single_document(data, fmt or "text", flavour, source, rel)

    def _single_document(self, data: bytes, fmt: str, flavour: str | None, source: str, rel: str) -> Document | Skipped:
        meta: dict = {"path": rel}
        declared = python_source_encoding(data) if flavour == "python" else None
        try:
            text, encoding = decode_text(data, declared)
        except NotText:
            return Skipped(source, "binary", len(data), "no text encoding fits", meta)
        if encoding not in ("utf-8", "ascii"):
            meta["encoding"] = encoding
        if fmt == "code":
            meta.update(kind="code", language=flavour)
        elif fmt == "html":
            meta.update(kind="html")
        else:
            meta.update(kind="prose", format=flavour or "text")
        return Document(document_id(source, rel), text, source, meta)

    def _book_items(self, path: Path, fmt: str, compression: str | None, source: str,
                    rel: str) -> Iterator[Document | Skipped]:
        """A PDF or EPUB: their libraries read a seekable file, so a compressed one is unpacked in memory."""
        self.digest.add(rel, file_sha256(path))
        file = path
        if compression:
            with open_decompressed(path, compression) as stream:
                file = io.BytesIO(_read_capped(stream, int(self.config.max_file_mb * 1e6)))
        reader = pdf_items if fmt == "pdf" else epub_items
        yield from reader(file, source=source, rel=rel, size=path.stat().st_size)

    @staticmethod
    def _is_dump(path: Path, compression: str | None) -> bool:
        with open_decompressed(path, compression) as stream:
            return looks_like_dump(stream.read(4096))

    def _dump_items(self, path: Path, compression: str | None, source: str, rel: str) -> Iterator[Document | Skipped]:
        self.digest.add(rel, file_sha256(path))
        with open_decompressed(path, compression) as stream:
            yield from dump_items(stream, source=source, path=rel)

    def _record_file_items(self, path: Path, fmt: str, compression: str | None, source: str,
                           rel: str) -> Iterator[Document | Skipped]:
        field = self.config.text_field
        if fmt == "parquet":
            if compression:
                with open_decompressed(path, compression) as stream:
                    file = io.BytesIO(stream.read())
            else:
                file = str(path)
            self.digest.add(rel, file_sha256(path))
            yield from parquet_items(file, source=source, path=rel, field=field)
            return
        digest = hashlib.sha256()
        with open_decompressed(path, compression) as stream:
            sample = stream.peek(SNIFF_BYTES)[:SNIFF_BYTES] if hasattr(stream, "peek") else b""
            if looks_binary(sample):
                yield Skipped(source, "binary", path.stat().st_size, "binary content", {"path": rel})
                return
            yield from jsonl_items(stream, source=source, path=rel, field=field, digest=digest)
        self.digest.add(rel, digest.hexdigest())

