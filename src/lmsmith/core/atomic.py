"""Atomic writes: a crash at any moment leaves either the old file or the new one, never half.

Every file lmsmith writes goes through here: write to a temporary name in the same directory,
fsync, then rename over the target (rename is atomic on POSIX and Windows within one volume).
Whole directories are built under a temporary name and renamed into place the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _leftover_prefix(target: Path) -> str:
    # Every temporary name beside a target carries "lmsmith-PID-": a later run removes only such names, and only
    # those of a process that is gone, never a user's own `.out.old` nor another live run's work in progress.
    return f".{target.name}.lmsmith-{os.getpid()}-"


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.lmsmith-(?P<pid>\d+)-[0-9a-z_]+\.(?:tmp|old)")


def leftover_owner(path: Path, target_name: str) -> int | None:
    """The process id that made `path` as a temporary or backup of `target_name`, or None if lmsmith did not."""
    match = _LEFTOVER.fullmatch(path.name)
    return int(match["pid"]) if match and match["name"] == target_name else None


def _fsync_directory(path: Path) -> None:
    # The rename itself lives in the directory entry; without this a power cut can lose it.
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    # The only way to read the umask is to set it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, mode: int) -> None:
    """Give a temporary file or folder the permissions an ordinary open()/mkdir() would have: mkstemp and
    mkdtemp make them private (0600/0700), which would keep a model from another user or a container."""
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success fsync it and rename it onto `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_leftover_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _as_if_created(tmp, 0o666)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_directory(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces `target` as a whole.

    An existing `target` is moved aside first and deleted only after the new one is in place,
    so at every moment one complete directory exists under the name or its backup.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_leftover_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        _as_if_created(tmp, 0o777)
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file() and not path.is_symlink():
                _as_if_created(path, 0o666)  # some writers (safetensors) make private files too
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())
        backup = None
        if target.exists():
            backup = target.with_name(f"{_leftover_prefix(target)}{tmp.name.rsplit('-', 1)[-1][:-4]}.old")
            os.replace(target, backup)
        os.replace(tmp, target)
        _fsync_directory(target.parent)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
