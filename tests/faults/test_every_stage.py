"""Each fault class, on every stage that writes (the table in stages.py): one line and exit code 2, nothing
half-written, nothing lost, no hang; or, where the fault is the machine's (a killed run), the same command
recovers and leaves no hidden temporary folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from stages import STAGES

from lmsmith.cli import main
from lmsmith.core.writer_lock import lock_path

ROWS = pytest.mark.parametrize("row", STAGES, ids=lambda r: r.name)
NOT_UTF8 = b"out-caf\xff".decode("utf-8", "surrogateescape")  # how Python hands over a name that is not UTF-8


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Fail the test, rather than hang the suite, if the command blocks (a FIFO read, an endless device)."""
    def give_up(*_):
        raise TimeoutError(f"the command did not finish in {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    with no_hang():
        code = main(argv)
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(word in lines[0] for word in words), lines[0]


def hidden_leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


def snapshot(path: Path) -> dict[str, bytes]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files}


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# -- read-only and unwritable outputs --------------------------------------------------------------------------


@ROWS
def test_an_output_inside_a_read_only_folder_is_one_line(row, made, tmp_path, capsys, make_read_only):
    folder = tmp_path / "read-only"
    folder.mkdir()
    make_read_only(folder)
    out = folder / row.out_name
    assert_refused(*run(row.argv(made, out), capsys), "read-only")
    assert not out.exists()


@ROWS
def test_a_rerun_over_an_earlier_output_made_read_only_is_one_line_and_keeps_it(row, made, outputs, tmp_path,
                                                                               capsys, make_read_only):
    out = tmp_path / "earlier" / row.out_name
    out.parent.mkdir()
    copy = shutil.copytree if outputs[row.name].is_dir() else shutil.copyfile
    copy(outputs[row.name], out)
    before = snapshot(out)
    make_read_only(out if out.is_dir() else out.parent)
    assert_refused(*run([*row.argv(made, out), *row.rerun], capsys), "read-only")
    assert snapshot(out) == before


@ROWS
def test_a_dangling_link_as_output_is_one_line_and_stays_as_it_is(row, made, tmp_path, capsys):
    out = tmp_path / row.out_name
    out.symlink_to(tmp_path / "nowhere" / "target")
    assert_refused(*run(row.argv(made, out), capsys), "link to nothing")
    assert out.is_symlink() and not (tmp_path / "nowhere").exists()


@ROWS
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(row, made, full_disk, capsys):
    out = full_disk / row.out_name
    code, err = run(row.argv(made, out), capsys)
    if code == 0:  # it fitted
        return
    assert_refused(code, err, "disk", "full")
    assert not out.exists() or row.in_place
    assert hidden_leftovers(out) == []


# -- special files and links as input --------------------------------------------------------------------------

SPECIAL = {
    "fifo": lambda path: os.mkfifo(path),
    "link to /dev/zero": lambda path: path.symlink_to("/dev/zero"),
    "dangling link": lambda path: path.symlink_to(path.with_name("gone")),
}


@ROWS
@pytest.mark.parametrize("kind", SPECIAL, ids=SPECIAL.keys())
def test_a_special_file_as_input_is_one_line_and_never_hangs(row, kind, made, tmp_path, capsys):
    given = tmp_path / "input.pdf"
    SPECIAL[kind](given)
    out = tmp_path / row.out_name
    assert_refused(*run(row.argv(made, out, given), capsys), str(given))
    assert not out.exists()


@pytest.mark.parametrize("kind", SPECIAL, ids=SPECIAL.keys())
def test_a_special_file_inside_a_folder_is_skipped_by_curate_and_named_by_the_tokenizer(kind, made, tmp_path,
                                                                                       capsys):
    folder = tmp_path / "corpus"
    shutil.copytree(made["corpus"], folder)
    SPECIAL[kind](folder / "odd.pdf")
    code, err = run(["curate", str(folder), "-o", str(tmp_path / "data"), "--workers", "1", "--quiet"], capsys)
    assert code == 0 and (tmp_path / "data" / "manifest.json").is_file(), err
    assert_refused(*run(["tokenizer", "train", str(folder), "-o", str(tmp_path / "tok")], capsys),
                   str(folder / "odd.pdf"))


# -- names that are not UTF-8 ----------------------------------------------------------------------------------


@ROWS
def test_an_output_name_that_is_not_utf8_is_one_line(row, made, tmp_path, capsys):
    out = tmp_path / f"{NOT_UTF8}{Path(row.out_name).suffix}"
    assert_refused(*run(row.argv(made, out), capsys), "is not a UTF-8 name")
    assert not out.exists()


def test_an_input_file_name_that_is_not_utf8_is_curated(made, tmp_path, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copyfile(made["corpus"] / "textwrap.py", folder / f"{NOT_UTF8}.py")
    code, err = run(["curate", str(folder), "-o", str(tmp_path / "data"), "--workers", "1", "--quiet"], capsys)
    assert code == 0, err


# -- interrupted runs ------------------------------------------------------------------------------------------


def plant_leftovers(row, out: Path) -> None:
    """What a run killed mid-write leaves: its hidden temporary folder, its lock (of a process now gone)."""
    pid = dead_pid()
    if row.in_place:
        out.mkdir()
        (out / ".lock").write_text(f"{pid} 2026-01-01T00:00:00\n")
        return
    partial = out.with_name(f".{out.name}.lmsmith-{pid}-k1lled.tmp")
    if out.suffix:  # a single file (export) is written under a temporary file name
        partial.write_bytes(b"\0" * 100)
    else:
        partial.mkdir()
        (partial / "half-written").write_bytes(b"\0" * 100)
    lock_path(out).write_text("")


@ROWS
def test_a_killed_run_is_recovered_by_the_same_command_and_leaves_nothing_hidden(row, made, tmp_path, capsys):
    out = tmp_path / row.out_name
    plant_leftovers(row, out)
    users = [out.with_name(f".{out.name}.old"), out.with_name(f".{out.name}.tmp")]  # the user's own, alike named
    for path in users:
        path.write_text("mine")
    code, err = run([*row.argv(made, out), *row.rerun], capsys)
    assert code == 0, err
    assert hidden_leftovers(out) == sorted(p.name for p in users)
    assert all(p.read_text() == "mine" for p in users)
    if out.is_dir():
        assert (out / "manifest.json").is_file() and not (out / ".lock").exists()


# -- concurrent writers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def another_writer(row, out: Path):
    """A live process holding `out` as a running lmsmith command would: the lock beside it (and, for a run
    written in place, out/.lock naming it)."""
    lock = lock_path(out)
    holder = subprocess.Popen(["flock", "--nonblock", str(lock), "sleep", "60"])
    try:
        for _ in range(100):
            if lock.exists():
                break
            time.sleep(0.05)
        time.sleep(0.1)  # the file appears just before flock(2) takes it
        if row.in_place:
            out.mkdir()
            (out / ".lock").write_text(f"{holder.pid} 2026-01-01T00:00:00\n")
        yield
    finally:
        holder.kill()
        holder.wait()


@ROWS
def test_a_second_writer_into_one_output_is_refused_in_one_line(row, made, tmp_path, capsys):
    if shutil.which("flock") is None:
        pytest.skip("needs util-linux flock to hold the lock from another process")
    out = tmp_path / row.out_name
    with another_writer(row, out):
        assert_refused(*run(row.argv(made, out), capsys), "writing")
    assert not (out / "manifest.json").exists() and not (out.is_file())
