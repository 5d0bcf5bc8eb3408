"""Sources: the inputs of `lmsmith curate`, each turned into a stream of documents.

An input is a file or folder path, `hf:NAME[:CONFIG][:SPLIT]`, or `stdlib`. All are checked
when opened, before any work starts: a path that does not exist or a dataset that cannot be
found is one clear error, not a failure halfway through a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmsmith.config import ConfigError
from lmsmith.data.sources.files import FileTreeSource
from lmsmith.data.sources.hf import HfSource
from lmsmith.data.sources.kinds import FORMATS
from lmsmith.data.sources.source import Skipped, Source
from lmsmith.data.sources.stdlib import stdlib_source
from lmsmith.errors import UserError

__all__ = ["SourceConfig", "Skipped", "Source", "open_inputs"]


@dataclass
class SourceConfig:
    include: list[str] = field(default_factory=list)  # globs on paths inside folder inputs; empty: every file
    exclude: list[str] = field(default_factory=list)
    skip_hidden: bool = True  # files and folders whose names start with "."
    text_field: str = "text"  # the field of JSON records, the column of Parquet files and HF datasets
    formats: dict[str, str] = field(default_factory=dict)  # extra suffixes, e.g. {".log": "text", ".json": "code"}
    unknown_files: Literal["text", "skip"] = "text"  # files of no known suffix: read as text unless binary
    max_file_mb: float = 256.0  # single-document files above this are skipped (record files stream, no limit)
    max_docs: int | None = None  # stop after this many documents: a quick look at a big corpus

    def check(self, where: str = "sources") -> None:
        for suffix, fmt in self.formats.items():
            if not (isinstance(suffix, str) and suffix.startswith(".")):
                raise ConfigError(f"{where}.formats: key {suffix!r} must be a file suffix such as '.log'")
            if fmt not in FORMATS:
                raise ConfigError(f"{where}.formats['{suffix}']: {fmt!r} is not one of {', '.join(FORMATS)}")
        self.formats = {k.lower(): v for k, v in self.formats.items()}
        if self.max_file_mb <= 0:
            raise ConfigError(f"{where}.max_file_mb must be positive, got {self.max_file_mb}")
        if self.max_docs is not None and self.max_docs < 1:
            raise ConfigError(f"{where}.max_docs must be at least 1 (or null for no limit), got {self.max_docs}")
        if not self.text_field:
            raise ConfigError(f"{where}.text_field must name a field, e.g. text")


def open_inputs(inputs: list[str], config: SourceConfig) -> list[Source]:
    """One source per input, each checked now; raises UserError naming the first bad input."""
    if not inputs:
        raise UserError("no inputs: name files, folders, hf:DATASET or stdlib to curate")
    sources: list[Source] = []
    for spec in inputs:
        spec = str(spec)
        if spec == "stdlib":
            sources.append(stdlib_source(config))
        elif spec.startswith("hf:"):
            sources.append(HfSource(spec, config))
        else:
            path = Path(spec).expanduser()
            if not path.exists() and not path.is_symlink():
                hint = (" (for a Hugging Face dataset write hf:NAME)"
                        if "/" in spec and not spec.startswith((".", "/", "~")) else "")
                raise UserError(f"input '{spec}' does not exist: check the path{hint}")
            sources.append(FileTreeSource(spec, path, config))
    return sources
