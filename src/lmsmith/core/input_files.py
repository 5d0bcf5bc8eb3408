"""What may be read as an input file: a regular file, readable, reached by a link that leads somewhere.

A FIFO blocks its reader until someone writes, and a device such as /dev/zero never ends: either hangs a
stage forever, so they are refused (given as the input) or skipped (met inside an input folder) before
anything opens them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lmsmith.core.errors import UserError

_KINDS = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISSOCK: "a socket"}


def special_kind(path: Path) -> str | None:
    """What `path` is when it is not a regular file or a folder ("a FIFO (named pipe)", ...), else None.

    Links are followed, so a `.pdf` that links to /dev/zero is a character device."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or unreadable: the caller's own checks say so
    return next((name for test, name in _KINDS.items() if test(mode)), None)


def check_input_path(path: Path, what: str = "input") -> None:
    """Refuse an input path that cannot be read as a file or folder, naming it: a dangling link, a special
    file, a file without read permission."""
    shown = os.fsdecode(path)
    if path.is_symlink() and not path.exists():
        raise UserError(f"{what} {shown} is a link to nothing ({os.readlink(path)}): point it at a file or folder")
    kind = special_kind(path)
    if kind is not None:
        raise UserError(f"{what} {shown} is {kind}, not a file: reading it could wait forever; give a regular file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} {shown} cannot be read (permission denied): fix its permissions (e.g. chmod u+r)")


def storable_name(name: str | os.PathLike) -> str:
    """A file name as UTF-8 text can hold it: bytes that are not UTF-8 (Python keeps them as lone surrogates)
    become U+FFFD, so the name can be stored in Parquet or JSON and printed."""
    return os.fsencode(name).decode("utf-8", "replace")
