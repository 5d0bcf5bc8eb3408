"""Hugging Face datasets, `hf:NAME[:CONFIG][:SPLIT]`, streamed row by row with `datasets`.

NAME is a Hub dataset id (streamed, nothing downloaded up front) or a local folder: one saved
with `Dataset.save_to_disk`, or one of data files (Parquet, JSON lines, CSV) that `datasets`
reads with its packaged builders.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmsmith.core.errors import UserError
from lmsmith.data.document import Document
from lmsmith.data.sources.source import Skipped, Source, document_id


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`hf:NAME[:CONFIG][:SPLIT]` -> (NAME, CONFIG or None, SPLIT or None)."""
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise UserError(f"'{spec}' is not a dataset spec: write hf:NAME, hf:NAME:CONFIG or hf:NAME:CONFIG:SPLIT")
    name, config, split = (parts + [None, None])[:3]
    return name, config or None, split or None


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


_TRUE = ("1", "ON", "YES", "TRUE")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def offline_requested() -> bool:
    """HF_HUB_OFFLINE (or the older HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE) as set now, not at import."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").upper() in _TRUE for name in names)


def hub_host() -> tuple[str, int]:
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = 5.0) -> bool:
    """One quick TCP connection to the Hub, no retries. Behind a proxy it cannot tell, and says yes."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.create_connection(hub_host(), timeout=timeout).close()
    except OSError:  # no network, no name resolution, a firewall
        return False
    return True


@contextlib.contextmanager
def _hub_access(offline: bool):
    """Silence the Hub clients' warnings (a retry line each); offline, let them use only the local cache."""
    import datasets
    from huggingface_hub import constants

    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "datasets", "fsspec")]
    levels = [logger.level for logger in loggers]
    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        if offline:  # both libraries read the variable once, at import: set what they consult now
            datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


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
        # A Hub name with no way to the Hub would be retried for half a minute, a warning line each time:
        # find out with one quick connection, and then use only the local cache.
        why_offline = None
        if offline_requested():
            why_offline = "HF_HUB_OFFLINE is set"
        elif not local.is_dir() and not hub_reachable():
            why_offline = f"{hub_host()[0]} cannot be reached"
        try:
            with _hub_access(offline=why_offline is not None):
                return self._load(datasets, local, split)
        except UserError:
            raise
        except ConnectionError as exc:
            if why_offline is None:
                raise UserError(f"{self.spec}: cannot open this dataset (the Hugging Face Hub did not answer: "
                                f"{_first_line(exc)}): check the network and run again") from None
            raise UserError(
                f"{self.spec}: cannot open this dataset: it could not be reached ({why_offline}) and is not in the "
                f"local cache: check the name and the network, or download it first (`hf download --repo-type dataset "
                f"{self.name} --local-dir DIR`) and give hf:DIR"
            ) from None
        except (OSError, ValueError) as exc:
            # Not found (DatasetNotFoundError is an OSError), or a config or split that does not exist (ValueError).
            raise UserError(
                f"{self.spec}: cannot open this dataset ({_first_line(exc)}): check the name, config and split, "
                "or that the Hub can be reached"
            ) from None

    def _load(self, datasets, local: Path, split: str) -> Any:
        if local.is_dir() and _is_saved_dataset(local):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise UserError(f"{self.spec}: no split '{split}' (splits: {', '.join(loaded)}): "
                                    "name one as hf:NAME:CONFIG:SPLIT")
                loaded = loaded[split]
            return loaded
        return datasets.load_dataset(str(local) if local.is_dir() else self.name, self.config_name,
                                     split=split, streaming=True)

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
