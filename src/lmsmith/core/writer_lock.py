"""One writer at a time for an output that is built beside its target and renamed into place.

The lock is `fcntl.flock` on a hidden file beside the output (`.NAME.lmsmith.lock`): the kernel drops it when
its process ends however it ends, so a killed run never leaves a lock that must be removed by hand. It is
taken before the output is checked, so a second writer cannot pass the checks and then write over the first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from lmsmith.core.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer at a time is then the user's care
    fcntl = None


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lmsmith.lock")


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding the lock on `path`, or None when another process holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # The holder before us may have unlinked the file after we opened it: then our lock is on a dead inode.
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_lock(path)
    return fd


_HELD: set[Path] = set()  # locks this process holds: the CLI takes one for the whole command, its stage again


@contextlib.contextmanager
def writer_lock(out: str | Path, flag: str = "-o") -> Iterator[None]:
    """Hold the lock of `out` for the block; refuse at once (one line) when another process holds it.

    Where no lock file can be made (a read-only folder), nothing is locked: the output checks then say why
    nothing can be written there either."""
    out = Path(out).expanduser()
    path = lock_path(out).absolute()
    if fcntl is None or not out.parent.is_dir() or path in _HELD:
        yield
        return
    try:
        fd = _try_lock(path)
    except OSError:
        yield
        return
    if fd is None:
        raise UserError(f"another lmsmith command is writing {flag} {out} right now: wait for it to finish, "
                        f"or choose another {flag}")
    _HELD.add(path)
    try:
        yield
    finally:
        _HELD.discard(path)
        path.unlink(missing_ok=True)
        os.close(fd)
