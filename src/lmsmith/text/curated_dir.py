"""Reading a curated directory: the shards of each split, as `lmsmith curate` lays them out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lmsmith.core.errors import UserError
from lmsmith.core.manifest import read_manifest
from lmsmith.schema.curate import SPLITS

DROPPED = "dropped"


def split_files(curated_dir: str | Path, split: str = "train") -> list[Path]:
    """The Parquet shards of one split, as listed in the directory's curate manifest."""
    curated_dir = Path(curated_dir)
    manifest = read_manifest(curated_dir, "curate", fix="make it with `lmsmith curate INPUTS -o DIR`")
    if split not in (*SPLITS, DROPPED):
        raise UserError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    names = sorted(name for name in manifest.get("files", {}) if name.startswith(f"{split}/"))
    missing = [name for name in names if not (curated_dir / name).is_file()]
    if missing:
        raise UserError(f"{curated_dir / missing[0]} is missing: the curated directory is incomplete, curate again")
    return [curated_dir / name for name in names]


def iter_split_texts(curated_dir: str | Path, split: str = "train", batch_rows: int = 1024) -> Iterator[str]:
    """Every text of one split of a curated directory, shard by shard, in stored order."""
    for path in split_files(curated_dir, split):
        yield from _shard_texts(path, batch_rows)


def _shard_texts(path: Path, batch_rows: int) -> Iterator[str]:
    """The texts of one Parquet shard; a garbage, truncated or unreadable shard is one line naming it."""
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["text"]):
            yield from batch.column(0).to_pylist()
    except (pa.ArrowException, OSError, KeyError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path} is not a readable Parquet shard ({reason}): the curated directory is damaged, "
                        "curate again") from None
