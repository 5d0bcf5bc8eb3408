"""The Python sandbox: a model's code that loops, forks, writes outside its folder or opens a socket is
stopped, scored 0, and the exam goes on to the next item."""

from __future__ import annotations

import os
import time

from lmsmith.exam.checkers import check_python
from lmsmith.exam.items import Item
from lmsmith.exam.sandbox import run_python

PROMPT = "def f(x):\n"
TESTS = "assert f(1) == 2"


def item(tests: str = TESTS) -> Item:
    return Item("python", {"prompt": PROMPT, "tests": tests}, "t.jsonl:1")


def test_a_right_completion_passes_and_a_wrong_one_fails():
    assert check_python(item(), "    return x + 1\n") == 1.0
    assert check_python(item(), "    return x\n") == 0.0
    assert check_python(item(), "    return (\n") == 0.0  # a syntax error


def test_an_infinite_loop_is_killed_at_the_time_limit_and_the_next_item_runs():
    start = time.monotonic()
    outcome = run_python(PROMPT + "    while True:\n        pass\n" + TESTS, timeout=1.0)
    assert not outcome.passed and outcome.reason.startswith("timeout")
    assert time.monotonic() - start < 10
    assert check_python(item(), "    return x + 1\n") == 1.0


def test_a_fork_a_subprocess_and_os_system_are_refused():
    for body in ("    import os\n    os.fork()\n    return 2\n",
                 "    import subprocess\n    subprocess.run(['true'])\n    return 2\n",
                 "    import os\n    os.system('true')\n    return 2\n",
                 "    import os\n    while True:\n        os.fork()\n"):
        outcome = run_python(PROMPT + body + TESTS, timeout=5.0)
        assert not outcome.passed and "sandbox refuses" in outcome.reason, (body, outcome)


def test_writes_outside_the_scratch_folder_are_refused_and_inside_are_allowed(tmp_path):
    target = tmp_path / "escaped.txt"
    for body in (f"    open({str(target)!r}, 'w').write('x')\n    return 2\n",
                 f"    import os\n    os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)\n    return 2\n",
                 f"    import pathlib\n    pathlib.Path({str(target)!r}).write_text('x')\n    return 2\n",
                 f"    import os\n    os.remove({str(tmp_path / 'keep.txt')!r})\n    return 2\n",
                 "    open('../escaped.txt', 'w')\n    return 2\n"):
        (tmp_path / "keep.txt").write_text("mine")
        outcome = run_python(PROMPT + body + TESTS)
        assert not outcome.passed and "sandbox refuses" in outcome.reason, (body, outcome)
        assert not target.exists() and (tmp_path / "keep.txt").exists()
    inside = "    open('scratch.txt', 'w').write('ok')\n    return x + 1 if open('scratch.txt').read() == 'ok' else 0\n"
    assert run_python(PROMPT + inside + TESTS).passed


def test_no_network_and_a_memory_limit():
    network = "    import socket\n    socket.create_connection(('127.0.0.1', 9))\n    return 2\n"
    assert "sandbox refuses" in run_python(PROMPT + network + TESTS).reason
    hog = "    b = bytearray(1 << 30)\n    return 2\n"
    outcome = run_python(PROMPT + hog + TESTS, memory_mb=256)
    assert not outcome.passed and "MemoryError" in outcome.reason


def test_the_scratch_folder_is_the_working_directory_and_is_removed():
    probe = "    import os\n    print(os.getcwd(), file=open('cwd', 'w'))\n    raise SystemExit(os.getcwd())\n"
    outcome = run_python(PROMPT + probe + "f(1)")
    folder = outcome.reason.removeprefix("failed: ")
    assert "lmsmith-exam-" in folder and not os.path.exists(folder)
