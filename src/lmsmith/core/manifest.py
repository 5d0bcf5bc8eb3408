"""`manifest.json`: what made an output directory, from which inputs, with which config.

Every stage writes one next to its outputs and every stage checks the one of its input, so a
stale or mismatched input is refused with a message instead of producing a silently wrong model.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from lmsmith import __version__
from lmsmith.core.errors import UserError
from lmsmith.core.json_file import read_json

MANIFEST = "manifest.json"
_VERSIONED = ("torch", "tokenizers", "safetensors", "numpy", "transformers", "datasets", "pyarrow")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"lmsmith": __version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def make_manifest(stage: str, *, config: dict | None = None, inputs: dict[str, Any] | None = None,
                  counts: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> dict:
    """A manifest dict. `inputs` names what was read (with hashes), `files` hashes what was written."""
    return {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
        "inputs": inputs or {},
        "config": config or {},
        "counts": counts or {},
        "files": files or {},
    }


def manifest_or_none(directory: str | Path) -> dict | None:
    """`directory/manifest.json` as a dict; None when it is missing or unreadable (callers treat both as "none")."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def read_manifest(directory: str | Path, stage: str | tuple[str, ...] | None = None, fix: str = "") -> dict:
    """Read `directory/manifest.json`, refusing a missing, unreadable or wrong-stage manifest."""
    directory = Path(directory)
    path = directory / MANIFEST
    hint = f": {fix}" if fix else ""
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory{hint}")
    if not path.is_file():
        raise UserError(f"{directory} has no {MANIFEST}, so it was not made by lmsmith{hint}")
    manifest = read_json(path, fix=fix or "make it again with the stage that wrote it")
    stages = (stage,) if isinstance(stage, str) else stage
    if stages and manifest.get("stage") not in stages:
        raise UserError(
            f"{directory} was made by stage '{manifest.get('stage')}', "
            f"but {' or '.join(stages)} output is needed here{hint}"
        )
    return manifest


def recorded_input(directory: str | Path, manifest: dict, name: str) -> Path | None:
    """The path of input `name` that `directory`'s manifest records, found from any working folder.

    An older run records the path as it was typed (`tokens`, relative to wherever the command ran), so a
    relative path is tried as given, then against the directory and each folder above it (a run in
    runs/NAME beside tokens/ finds it); None when it is not recorded, or found nowhere."""
    recorded = ((manifest.get("inputs") or {}).get(name) or {}).get("path")
    if not recorded or str(recorded).startswith("hf:"):
        return None
    path = Path(recorded)
    if path.is_absolute() or path.exists():
        return path if path.exists() else None
    base = Path(directory).absolute()
    return next((folder / path for folder in (base, *base.parents) if (folder / path).exists()), None)
