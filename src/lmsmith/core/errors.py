"""The one exception type a user ever sees.

Anything the user can fix (a bad path, a bad config value, a model directory that does not
fit) raises `UserError`. The CLI prints its message on one line and exits with code 2; every
other exception is a bug in lmsmith and keeps its traceback.
"""

import re

_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


class UserError(Exception):
    """A mistake in the user's input, with a message that names the problem and the fix."""

    exit_code = 2


def cannot_read(path, exc: OSError) -> UserError:
    """The UserError for a file that exists but cannot be read (permissions, an I/O error)."""
    if isinstance(exc, PermissionError):
        return UserError(f"cannot read {path} (permission denied): fix its permissions (e.g. chmod u+r)")
    return UserError(f"cannot read {path} ({exc.strerror or exc}): check the file and the disk it is on")


def check_readable(path) -> None:
    """Open `path` once from Python: the Rust readers (safetensors, tokenizers) misreport permission errors."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise cannot_read(path, exc) from None


def is_disk_full(exc: BaseException) -> bool:
    """An OSError with ENOSPC/EDQUOT, or a SafetensorError wrapping one ("... (os error 28)")."""
    import errno

    text = str(exc)
    if isinstance(exc, OSError) and exc.errno is None and _SHORT_WRITE.search(text):
        return True  # numpy's tofile reports a short write without errno: on a regular file, that is a full disk
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return any(f"(os error {n})" in text for n in (errno.ENOSPC, errno.EDQUOT)) or "No space left on device" in text


# The errno values that say "this place may not be written" rather than "lmsmith has a bug".
_UNWRITABLE = {"EROFS": "a read-only file system", "EACCES": "permission denied", "EPERM": "operation not permitted"}


def is_unwritable(exc: BaseException) -> bool:
    """An OSError about a path the user may not write (read-only file system, permissions)."""
    import errno

    codes = {getattr(errno, name) for name in _UNWRITABLE}
    return isinstance(exc, OSError) and exc.errno in codes and bool(exc.filename)


def cannot_write(exc: OSError) -> UserError:
    """The UserError for a file-system refusal met while working, naming the path."""
    import errno

    if exc.errno == errno.EROFS:
        return UserError(f"cannot write {exc.filename} (a read-only file system): choose an output on a "
                         "file system you may write to")
    why = _UNWRITABLE.get(errno.errorcode.get(exc.errno, ""), exc.strerror or "refused")
    return UserError(f"cannot use {exc.filename} ({why}): fix its permissions, or choose another output")
