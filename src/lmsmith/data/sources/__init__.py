"""Sources: the inputs of `lmsmith curate`, each turned into a stream of documents.

An input is a file or folder path, `hf:NAME[:CONFIG][:SPLIT]`, or `stdlib`. All are checked
when opened, before any work starts: a path that does not exist or a dataset that cannot be
found is one clear error, not a failure halfway through a run.
"""

from __future__ import annotations

from pathlib import Path

from lmsmith.core.errors import UserError
from lmsmith.core.input_files import check_input_path
from lmsmith.data.sources.files import FileTreeSource
from lmsmith.data.sources.hf import HfSource
from lmsmith.data.sources.source import Skipped, Source
from lmsmith.data.sources.stdlib import STDLIB_INPUTS, stdlib_source
from lmsmith.schema.curate import SourceConfig

__all__ = ["SourceConfig", "Skipped", "Source", "open_inputs"]




def open_inputs(inputs: list[str], config: SourceConfig) -> list[Source]:
    """One source per input, each checked now; raises UserError naming the first bad input."""
    if not inputs:
        raise UserError("no inputs: name files, folders, hf:DATASET, stdlib or stdlib:no-tests to curate")
    sources: list[Source] = []
    for spec in inputs:
        spec = str(spec)
        if spec in STDLIB_INPUTS:
            sources.append(stdlib_source(config, spec))
        elif spec.startswith("hf:"):
            sources.append(HfSource(spec, config))
        else:
            path = Path(spec).expanduser()
            if not path.exists() and not path.is_symlink():
                hint = (" (for a Hugging Face dataset write hf:NAME)"
                        if "/" in spec and not spec.startswith((".", "/", "~")) else "")
                raise UserError(f"input '{spec}' does not exist: check the path{hint}")
            check_input_path(path)
            sources.append(FileTreeSource(spec, path, config))
    return sources
