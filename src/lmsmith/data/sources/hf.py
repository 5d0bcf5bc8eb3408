"""Hugging Face datasets, `hf:NAME[:CONFIG][:SPLIT]`, streamed row by row with `datasets`.

NAME is a Hub dataset id (streamed, nothing downloaded up front) or a local folder: one saved
with `Dataset.save_to_disk`, or one of data files (Parquet, JSON lines, CSV) that `datasets`
reads with its packaged builders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from lmsmith.data.document import Document
from lmsmith.data.sources.source import Skipped, Source, document_id
from lmsmith.errors import UserError


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`hf:NAME[:CONFIG][:SPLIT]` -> (NAME, CONFIG or None, SPLIT or None)."""
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise UserError(f"'{spec}' is not a dataset spec: write hf:NAME, hf:NAME:CONFIG or hf:NAME:CONFIG:SPLIT")
    name, config, split = (parts + [None, None])[:3]
    return name, config or None, split or None


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


class HfSource(Source):
    """Rows of one split of a Hugging Face dataset; the text is in `sources.text_field`."""

    def __init__(self, spec: str, config):
        self.spec = spec
        self.name, self.config_name, self.split = parse_hf_spec(spec)
        self.field = config.text_field
        self.rows = 0
        self.dataset = self._open()
        self._check_field()

    def _open(self) -> Any:
        import datasets

        local = Path(self.name).expanduser()
        split = self.split or "train"
        try:
            if local.is_dir() and _is_saved_dataset(local):
                loaded = datasets.load_from_disk(str(local))
                if isinstance(loaded, datasets.DatasetDict):
                    if split not in loaded:
                        raise UserError(f"{self.spec}: no split '{split}' (splits: {', '.join(loaded)}): name one as hf:NAME:CONFIG:SPLIT")
                    loaded = loaded[split]
                return loaded
            return datasets.load_dataset(str(local) if local.is_dir() else self.name, self.config_name,
                                         split=split, streaming=True)
        except UserError:
            raise
        except (OSError, ValueError) as exc:
            # Not found, not reachable (ConnectionError and DatasetNotFoundError are OSErrors), or a
            # config or split that does not exist (ValueError).
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(
                f"{self.spec}: cannot open this dataset ({first}): check the name, config and split, "
                "or that the Hub can be reached"
            ) from None

    def _check_field(self) -> None:
        features = getattr(self.dataset, "features", None)
        if features is not None and self.field not in features:
            raise UserError(
                f"{self.spec} has no column '{self.field}' (columns: {', '.join(list(features)[:8])}): "
                "set sources.text_field"
            )

    def items(self) -> Iterator[Document | Skipped]:
        source = f"hf:{self.name}"
        for row, record in enumerate(self.dataset):
            self.rows = row + 1
            text = record.get(self.field)
            meta = {"row": row}
            if not isinstance(text, str) or not text.strip():
                yield Skipped(source, "empty", len(text.encode()) if isinstance(text, str) else 0,
                              f"row {row}: column '{self.field}' holds no text", meta)
                continue
            url = record.get("url")
            if isinstance(url, str):
                meta["url"] = url
            yield Document(document_id(self.spec, str(row)), text, source, {"kind": "prose", **meta})

    def fingerprint(self) -> dict:
        info = {"kind": "hf", "name": self.name, "config": self.config_name, "split": self.split or "train",
                "rows": self.rows}
        fingerprint = getattr(self.dataset, "_fingerprint", None)
        if fingerprint:
            info["fingerprint"] = fingerprint
        return info
