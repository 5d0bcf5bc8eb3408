"""Files of many records: JSON lines, JSON arrays and Parquet, one document per record.

These stream record by record (JSON arrays excepted), so a file far larger than memory reads
fine. A record that cannot be read is skipped with its line (or row) number and the reason.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from typing import IO, Any

from lmsmith.data.document import Document
from lmsmith.data.sources.conversations import BadConversation, conversation_turns, render_conversation
from lmsmith.data.sources.source import Skipped, document_id

_RAW_KEPT = 2000  # characters of a malformed record kept for --keep-dropped


def _raw_text(raw: bytes) -> str:
    return raw[:_RAW_KEPT].decode("utf-8", errors="replace").rstrip("\r\n")


def _record_document(record: Any, *, field: str, source: str, meta: dict, locator: str,
                     n_bytes: int) -> Document | Skipped:
    if not isinstance(record, dict):
        return Skipped(source, "not_a_record", n_bytes, f"expected a JSON object, got {type(record).__name__}", meta)
    text = record.get(field)
    if text is None:
        conversation = _conversation_document(record, source=source, meta=meta, locator=locator, n_bytes=n_bytes)
        if conversation is not None:
            return conversation
    if not isinstance(text, str):
        detail = f"no text field '{field}'" if text is None else f"field '{field}' is {type(text).__name__}, not text"
        fields = ", ".join(sorted(map(str, record))[:8])
        return Skipped(source, "missing_field", n_bytes, f"{detail} (fields: {fields}); set sources.text_field", meta)
    if not text.strip():
        return Skipped(source, "empty", n_bytes, f"field '{field}' is empty", meta)
    url = record.get("url")
    extra = {"url": url} if isinstance(url, str) else {}
    return Document(document_id(source, locator), text, source, {"kind": "prose", **meta, **extra})


def _conversation_document(record: dict, *, source: str, meta: dict, locator: str,
                           n_bytes: int) -> Document | Skipped | None:
    """A {"messages": [...]} or {"conversations": [...]} record as dialogue text; None for other records."""
    where = f"line {meta['line']}: " if "line" in meta else f"record {meta['record']}: " if "record" in meta else ""
    try:
        turns = conversation_turns(record)
        if turns is None:
            return None
        text = render_conversation(turns)
    except BadConversation as exc:
        return Skipped(source, "bad_conversation", n_bytes, f"{where}{exc}", meta)
    return Document(document_id(source, locator), text, source,
                    {"kind": "conversation", "turns": len(turns), **meta})


def jsonl_items(stream: IO[bytes], *, source: str, path: str, field: str,
                digest: hashlib._Hash) -> Iterator[Document | Skipped]:
    """One document per line of a JSON-lines stream; bad lines are skipped with their number."""
    for number, raw in enumerate(stream, start=1):
        digest.update(raw)
        if not raw.strip():
            continue
        meta = {"path": path, "line": number}
        try:
            record = json.loads(raw)
        except UnicodeDecodeError as exc:
            yield Skipped(source, "malformed_json", len(raw), f"line {number}: not UTF-8 ({exc.reason})", meta,
                          _raw_text(raw))
            continue
        except json.JSONDecodeError as exc:
            yield Skipped(source, "malformed_json", len(raw), f"line {number}: {exc.msg} at column {exc.colno}", meta,
                          _raw_text(raw))
            continue
        yield _record_document(record, field=field, source=source, meta=meta, locator=str(number), n_bytes=len(raw))


def json_items(data: bytes, *, source: str, path: str, field: str) -> Iterator[Document | Skipped]:
    """A JSON file: an array of records, one record, or JSON lines saved under a .json name."""
    try:
        value = json.loads(data)
    except UnicodeDecodeError as exc:
        yield Skipped(source, "malformed_json", len(data), f"not UTF-8 ({exc.reason})", {"path": path})
        return
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several values, one per line: JSON lines
            yield from jsonl_items(io.BytesIO(data), source=source, path=path, field=field, digest=hashlib.sha256())
            return
        yield Skipped(source, "malformed_json", len(data), f"line {exc.lineno}: {exc.msg} at column {exc.colno}",
                      {"path": path, "line": exc.lineno}, _raw_text(data))
        return
    records = value if isinstance(value, list) else [value]
    for index, record in enumerate(records):
        n_bytes = len(json.dumps(record, ensure_ascii=False).encode()) if len(records) > 1 else len(data)
        yield _record_document(record, field=field, source=source, meta={"path": path, "record": index},
                               locator=str(index), n_bytes=n_bytes)


def parquet_items(file: Any, *, source: str, path: str, field: str,
                  batch_rows: int = 1024) -> Iterator[Document | Skipped]:
    """One document per row of a Parquet file's text column, read in row batches."""
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        yield Skipped(source, "unreadable", 0, f"not a Parquet file ({type(exc).__name__}: {exc})", {"path": path})
        return
    names = reader.schema_arrow.names
    if field not in names:
        yield Skipped(source, "missing_field", 0,
                      f"no column '{field}' (columns: {', '.join(names[:8])}); set sources.text_field", {"path": path})
        return
    row = 0
    for batch in reader.iter_batches(batch_size=batch_rows, columns=[field]):
        for text in batch.column(0).to_pylist():
            meta = {"path": path, "row": row}
            if not isinstance(text, str) or not text.strip():
                reason = "empty" if text is None or isinstance(text, str) else "missing_field"
                yield Skipped(source, reason, len(text) if isinstance(text, str) else 0,
                              f"row {row}: column '{field}' holds no text", meta)
            else:
                yield Document(document_id(source, str(row)), text, source, {"kind": "prose", **meta})
            row += 1
