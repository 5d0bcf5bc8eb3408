"""Reading the small JSON files every directory holds (manifest, config, tokenizer config).

One rule for all of them: a file that cannot be read says so (permissions, I/O); a file that is
not a JSON object says it is corrupted, naming the file and the fix. Nothing downstream ever sees
half a dict or a list where an object belongs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmsmith.core.errors import UserError, cannot_read


def read_json(file: str | Path, fix: str) -> dict[str, Any]:
    """The JSON object in `file`; a UserError ending in `fix` when it is unreadable or not an object."""
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{file} is corrupted (not valid JSON): {fix}") from None
    except OSError as exc:
        raise cannot_read(file, exc) from None
    if not isinstance(data, dict):
        raise UserError(f"{file} is corrupted (not a JSON object): {fix}")
    return data
