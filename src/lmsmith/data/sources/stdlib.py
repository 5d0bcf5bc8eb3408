"""`stdlib`: the running Python's standard-library source, lmsmith's embedded default corpus.

Real code with real docstrings, licence headers, author e-mail addresses, files that do not
parse on purpose (tests of the parser), legacy encodings and duplicated files: every step of
the pipeline has something to do on it, and every machine with Python has it.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from lmsmith.data.sources.files import FileTreeSource

# Installed packages and build artefacts live inside the standard-library folder but are not of it.
STDLIB_EXCLUDE = ["site-packages/*", "dist-packages/*", "lib-dynload/*", "config-*"]


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_source(config) -> FileTreeSource:
    return FileTreeSource("stdlib", stdlib_root(), config, label="stdlib", include=["*.py"], exclude=STDLIB_EXCLUDE)
