"""`stdlib`: the running Python's standard-library source, lmsmith's embedded default corpus.

Real code with real docstrings, licence headers, author e-mail addresses, files that do not
parse on purpose (tests of the parser), legacy encodings and duplicated files: every step of
the pipeline has something to do on it, and every machine with Python has it.

Two inputs name it:

    stdlib            every module, its test suite included (about 31 MB on CPython 3.11)
    stdlib:no-tests   the library a programmer reads and writes (about 10 MB): without the test
                      suite (about 19 MB of `assertEqual`, byte literals and deliberately broken
                      code) and without generated data (codec tables, pydoc's topic strings).
                      A small model trained on it writes code more like the code people write.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from lmsmith.data.sources.files import FileTreeSource

# Installed packages and build artefacts live inside the standard-library folder but are not of it.
STDLIB_EXCLUDE = ["site-packages/*", "dist-packages/*", "lib-dynload/*", "config-*"]
TEST_SUITES = ["test/*", "*/test/*", "*/tests/*", "*/idle_test/*", "test_*.py", "*_test.py"]
GENERATED = ["encodings/*", "pydoc_data/*"]  # character-map tables and one module of escaped documentation
STDLIB_INPUTS = {"stdlib": STDLIB_EXCLUDE, "stdlib:no-tests": STDLIB_EXCLUDE + TEST_SUITES + GENERATED}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_source(config, spec: str = "stdlib") -> FileTreeSource:
    return FileTreeSource(spec, stdlib_root(), config, label=spec, include=["*.py"], exclude=STDLIB_INPUTS[spec])
