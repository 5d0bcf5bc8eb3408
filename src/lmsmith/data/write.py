"""The curated directory: Parquet shards per split, what was dropped, and how to read it back.

    DIR/train/part-00000.parquet ...   columns id, text, source, meta (a JSON object as text)
    DIR/val/ ...  DIR/test/ ...
    DIR/dropped/part-00000.parquet     with --keep-dropped: the same columns plus step and reason
    DIR/report.json  DIR/manifest.json

Rows are buffered and written a row group at a time, and a shard is closed once it holds
`output.shard_mb` of text, so memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lmsmith.data.document import Document
from lmsmith.schema.curate import SPLITS, OutputConfig
from lmsmith.text.curated_dir import DROPPED

_DOC_FIELDS = [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())]
DOC_SCHEMA = pa.schema(_DOC_FIELDS)
DROPPED_SCHEMA = pa.schema([*_DOC_FIELDS, ("step", pa.string()), ("reason", pa.string())])




class ShardWriter:
    """Rows of one schema into `folder/part-NNNNN.parquet`, rolling to a new file by size."""

    def __init__(self, folder: Path, schema: pa.Schema, config: OutputConfig):
        self.folder = folder
        self.schema = schema
        self.config = config
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self.docs = 0
        self.bytes = 0
        self._rows: dict[str, list] = {name: [] for name in schema.names}
        self._buffered = 0
        self._in_shard = 0
        self._writer: pq.ParquetWriter | None = None

    def add(self, row: dict, n_bytes: int) -> None:
        for name, column in self._rows.items():
            column.append(row[name])
        self._buffered += n_bytes
        self.docs += 1
        self.bytes += n_bytes
        if self._buffered >= self.config.row_group_mb * 1e6:
            self._flush()

    def _flush(self) -> None:
        if not self._rows["id"]:
            return
        if self._writer is None:
            path = self.folder / f"part-{len(self.files):05d}.parquet"
            compression = None if self.config.compression == "none" else self.config.compression
            self._writer = pq.ParquetWriter(path, self.schema, compression=compression)
            self.files.append(path)
        self._writer.write_table(pa.table(self._rows, schema=self.schema))
        self._in_shard += self._buffered
        self._rows = {name: [] for name in self.schema.names}
        self._buffered = 0
        if self._in_shard >= self.config.shard_mb * 1e6:
            self._writer.close()
            self._writer = None
            self._in_shard = 0

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def document_row(doc: Document) -> dict:
    # Keys that start with "_" are notes between steps (fingerprints, bias counts), never output.
    meta = {k: v for k, v in doc.meta.items() if not k.startswith("_")}
    return {"id": doc.id, "text": doc.text, "source": doc.source,
            "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str)}


class CurateWriter:
    """The splits (and, if asked, the dropped documents) of one curate run, under `root`."""

    def __init__(self, root: Path, config: OutputConfig, keep_dropped: bool):
        self.root = root
        self.splits = {split: ShardWriter(root / split, DOC_SCHEMA, config) for split in SPLITS}
        self.dropped = ShardWriter(root / DROPPED, DROPPED_SCHEMA, config) if keep_dropped else None

    def write(self, split: str, doc: Document) -> None:
        self.splits[split].add(document_row(doc), doc.n_bytes)

    def write_dropped(self, doc: Document, step: str, reason: str) -> None:
        if self.dropped is not None:
            self.dropped.add({**document_row(doc), "step": step, "reason": reason}, doc.n_bytes)

    def close(self) -> dict:
        """Close every shard; return docs, bytes and shard count per split."""
        writers = dict(self.splits)
        if self.dropped is not None:
            writers[DROPPED] = self.dropped
        sizes = {}
        for name, writer in writers.items():
            writer.close()
            sizes[name] = {"docs": writer.docs, "bytes": writer.bytes, "shards": len(writer.files)}
        return sizes

    def files(self) -> list[Path]:
        writers = [*self.splits.values(), *([self.dropped] if self.dropped else [])]
        return [path for writer in writers for path in writer.files]


# ---------------------------------------------------------------------------------------------
# Reading a curated directory back (the tokenizer stage starts here)




