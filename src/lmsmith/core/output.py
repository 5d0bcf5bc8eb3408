"""The one way a stage writes its output directory.

Every stage writes through here, so one set of rules decides what may be replaced:

- a new path, an empty directory, or an earlier output of the same stage may be written;
- never a plain file, a dangling link, the stage's own input or a folder that contains it;
- never a folder of the user's own files (no manifest, or a manifest of another stage);
- never an earlier output into which the user has since put files of their own: they would be lost;
- an output that holds a trained model (a model directory, a training or fine-tuning run) is
  replaced only with `--force`, because training it again may cost hours.

An atomic output is built under a hidden temporary name beside its target and renamed into
place when whole (`lmsmith.core.atomic.atomic_directory`), with its `manifest.json` written last.
Temporary folders left by a stage that was killed mid-write are removed on the next run.
Long-lived outputs (a training run that resumes) are written in place under a lock file, so
two runs cannot mix their checkpoints in one directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lmsmith.core.atomic import atomic_directory, leftover_owner, write_json
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import MANIFEST, file_sha256, make_manifest, manifest_or_none
from lmsmith.core.writer_lock import writer_lock

# Stages whose output holds a trained model: replacing one needs --force.
TRAINED = ("model", "train", "finetune")
LOCK = ".lock"


def _unlisted_files(directory: Path, manifest: dict) -> list[str]:
    """Files in an earlier output that its manifest does not list: put there by someone else."""
    listed = set(manifest.get("files") or {})
    if not listed:  # an output whose manifest lists no files (a run directory): nothing to compare
        return []
    own = {MANIFEST, LOCK}
    found = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel not in listed and path.name not in own and not rel.startswith("."):
            found.append(rel)
    return found


def check_output(out: str | Path, stage: str | tuple[str, ...], reads: Iterable[str | Path] = (),
                 force: bool = False, flag: str = "-o") -> None:
    """Refuse an output directory that may not be written (one line: what is wrong and the fix).

    `stage` names the stage (or stages) whose earlier output may be replaced; `reads` are the
    paths the stage reads, which the output must neither be nor contain.
    """
    out = Path(out).expanduser()
    stages = (stage,) if isinstance(stage, str) else tuple(stage)
    check_utf8_name(out, flag)
    if out.is_symlink() and not out.exists():
        raise UserError(
            f"{flag} {out} is a link to nothing ({os.readlink(out)}): remove the link or choose another {flag}"
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file, not a directory: choose a new directory path for {flag}")
    check_writable(out, flag)
    target = out.resolve()
    for source in reads:
        if str(source).startswith("hf:") or str(source) == "stdlib" or not Path(source).expanduser().exists():
            continue
        resolved = Path(source).expanduser().resolve()
        if resolved == target or resolved.is_relative_to(target):
            raise UserError(f"{flag} {out} would replace the input {source}: choose an output outside the inputs")
    if not out.is_dir() or not any(p.name != LOCK for p in out.iterdir()):
        return
    keep = f"{out} is kept as it is"
    manifest = manifest_or_none(out)
    if manifest is None:
        raise UserError(
            f"{out} already holds files that lmsmith did not make: choose a new directory for {flag}; {keep}"
        )
    made_by = manifest.get("stage")
    if made_by not in stages:
        raise UserError(f"{out} holds the output of stage '{made_by}', not of {' or '.join(stages)}: "
                        f"choose another {flag}; {keep}")
    unlisted = _unlisted_files(out, manifest)
    if unlisted:
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        raise UserError(f"{out} holds {unlisted[0]}{more}, which the {made_by} stage did not write: move it away "
                        f"or choose another {flag}; {keep}")
    untrained = made_by == "model" and (manifest.get("config") or {}).get("made_by") == "init"
    if made_by in TRAINED and not untrained and not force:
        raise UserError(f"{out} already holds a trained model: add --force to replace it, or choose another {flag}")


def check_utf8_name(out: Path, flag: str = "-o") -> None:
    """Refuse an output path that is not UTF-8 text: manifests, Parquet metadata and the reports name their
    output, and none of them can hold bytes that are not text."""
    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(out).decode("utf-8", "backslashreplace")
        raise UserError(f"{flag} {shown} is not a UTF-8 name: choose a name made of text") from None


def check_writable(out: Path, flag: str = "-o") -> None:
    """Refuse, before any work, an output that cannot be written: the nearest folder above it that exists must
    take writes, and so must an existing output folder (a rerun replaces or resumes it). os.access knows
    read-only file systems even for root. A file is replaced by renaming, so only its folder matters."""
    absolute = out.absolute()
    targets = [next((p for p in absolute.parents if p.exists()), None)]
    if out.is_dir():
        targets.append(out)
    for target in targets:
        if target is not None and not os.access(target, os.W_OK | os.X_OK):
            what = "it" if target == out else f"the folder {target}"
            raise UserError(f"{flag} {out} cannot be written: {what} is read-only (or not yours): "
                            f"choose another {flag}, or make it writable")


def remove_leftovers(out: str | Path) -> None:
    """Delete the hidden temporary folders and backups a killed run left beside `out`
    (`.NAME.lmsmith-PID-*.tmp` or `.old`, see lmsmith.core.atomic), only those of a process that is gone:
    a user's own `.NAME.old` and the work in progress of a live run are kept."""
    out = Path(out).expanduser()
    parent = out.parent
    if not parent.is_dir():
        return
    for path in parent.glob(f".{out.name}.lmsmith-*"):
        pid = leftover_owner(path, out.name)
        if pid is None or (pid != os.getpid() and _pid_alive(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def stage_directory(out: str | Path, stage: str | tuple[str, ...], reads: Iterable[str | Path] = (),
                    force: bool = False, flag: str = "-o") -> Iterator[Path]:
    """Lock `out` against a second writer, check it, then yield an empty temporary directory that replaces it
    as a whole on success."""
    check_output(out, stage, reads, force=force, flag=flag)  # first alone: a refused -o makes no lock file
    with writer_lock(out, flag):
        check_output(out, stage, reads, force=force, flag=flag)  # again under the lock: another may have finished
        remove_leftovers(out)
        with atomic_directory(Path(out).expanduser()) as tmp:
            yield tmp


def write_manifest(directory: Path, stage: str, *, config: dict | None = None, inputs: dict[str, Any] | None = None,
                   counts: dict[str, Any] | None = None, hashed: dict[str, str] | None = None, **extra: Any) -> dict:
    """Write `directory/manifest.json`, listing every file the stage wrote there with its hash; return it.

    `hashed` holds hashes the stage already computed while writing (token shards), so big files are
    not read a second time.
    """
    hashed = hashed or {}
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name not in (MANIFEST, LOCK):
            name = path.relative_to(directory).as_posix()
            files[name] = hashed.get(name) or file_sha256(path)
    manifest = make_manifest(stage, config=config, inputs=inputs, counts=counts, files=files)
    manifest.update(extra)
    write_json(directory / MANIFEST, manifest)
    return manifest


def input_record(directory: str | Path) -> dict:
    """How a manifest names a directory it read: its path and the hash of that directory's manifest."""
    directory = Path(directory)
    return {"path": str(directory), "manifest_sha256": file_sha256(directory / MANIFEST)}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def directory_lock(directory: str | Path, what: str = "run") -> Iterator[None]:
    """Hold `directory/.lock` while a long-lived output is written in place (one writer at a time).

    A lock whose process is gone (killed, crashed) is taken over; a live one is refused.
    """
    directory = Path(directory)
    check_writable(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = None
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                raise UserError(f"another {what} (process {pid}) is writing to {directory}: wait for it to finish, "
                                "or choose another -o") from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        break
    else:
        raise UserError(f"could not take the lock {lock}: remove it if no run is writing to {directory}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(directory.iterdir()):  # refused before writing anything: leave no trace
            directory.rmdir()


def check_replaceable(out: str | Path, stage: str | tuple[str, ...], source: str | Path | None = None,
                      force: bool = False) -> None:
    """The shared output rules (`check_output`) for a stage that reads `source`."""
    check_output(out, stage, reads=[source] if source is not None else [], force=force)
