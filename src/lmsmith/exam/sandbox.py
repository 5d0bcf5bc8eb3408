"""Running a model's Python against its tests, as HumanEval does: in another process, boxed in.

The code runs in a fresh interpreter (`python -I -B`, no environment, no user site) whose working
directory is an empty scratch folder, deleted afterwards. Before the code runs, the child:

- caps its memory (RLIMIT_AS), its CPU seconds and the size of any file it writes (resource.setrlimit);
- installs an audit hook (PEP 578), which cannot be removed, that refuses new processes (fork,
  exec, spawn, subprocess, os.system), sockets (no network), loading C libraries through ctypes,
  and any write, delete, rename or permission change outside the scratch folder.

The parent kills the whole process group at the wall-clock limit. Whatever goes wrong (an
exception, a refused operation, a timeout, running out of memory) the item scores 0 and the
exam goes on. This keeps honest mistakes of a model in; it is not a jail for hostile code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Run by the child before the model's code (read from stdin); argv: scratch dir, memory bytes, cpu seconds.
_GUARD = r"""
import os, resource, sys
scratch, memory, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 24, 1 << 24))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
_BLOCKED = ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.kill", "os.killpg",
            "subprocess.Popen", "pty.spawn", "socket.__new__", "socket.connect", "socket.bind",
            "socket.getaddrinfo", "ctypes.dlopen", "ctypes.cdata", "ctypes.dlsym")
_CHANGES = {"os.remove": 0, "os.rename": 0, "os.mkdir": 0, "os.rmdir": 0, "os.chmod": 0, "os.chown": 0,
            "os.link": 1, "os.symlink": 1, "os.truncate": 0, "shutil.rmtree": 0, "os.utime": 0}
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def _inside(path):
    if isinstance(path, int):
        return True  # an open descriptor: the open that made it was checked
    real = os.path.realpath(os.fsdecode(path))
    return real == scratch or real.startswith(scratch + os.sep)
def _guard(event, args):
    if event in _BLOCKED or event.startswith("os.exec") or event.startswith("os.posix_spawn"):
        raise PermissionError(f"the exam's sandbox refuses {event}")
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE
        if writes and path is not None and not _inside(path):
            raise PermissionError(f"the exam's sandbox refuses writing {path} outside its scratch folder")
    elif event in _CHANGES and args and args[_CHANGES[event]] is not None and not _inside(args[_CHANGES[event]]):
        raise PermissionError(f"the exam's sandbox refuses {event} on {args[_CHANGES[event]]}")
source = sys.stdin.read()
sys.addaudithook(_guard)
exec(compile(source, "<exam>", "exec"), {"__name__": "__main__"})
"""


@dataclass
class Outcome:
    passed: bool
    reason: str  # "passed", "failed: ...", "timeout", ...


def run_python(program: str, timeout: float = 5.0, memory_mb: int = 512) -> Outcome:
    """Run `program` in a boxed child process; passed means it exited 0 within the limits."""
    scratch = os.path.realpath(tempfile.mkdtemp(prefix="lmsmith-exam-"))
    command = [sys.executable, "-I", "-B", "-c", _GUARD, scratch, str(memory_mb << 20), str(int(timeout) + 1)]
    try:
        child = subprocess.Popen(command, cwd=scratch, env={}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = child.communicate(program.encode("utf-8"), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            return Outcome(False, f"timeout after {timeout:g} s")
        finally:
            _kill_group(child)  # anything it left running (it could not fork, but be sure)
        if child.returncode == 0:
            return Outcome(True, "passed")
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {child.returncode}"]
        return Outcome(False, f"failed: {last[0][:200]}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()
