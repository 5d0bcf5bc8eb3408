"""The helpers every stage shares: progress bars, optional imports, JSON files, closest-key hints."""

from __future__ import annotations

import pytest
from rich.progress import BarColumn, TextColumn

from lmsmith.core.config import closest_hint
from lmsmith.core.errors import UserError
from lmsmith.core.extras import require
from lmsmith.core.json_file import read_json
from lmsmith.core.progress import progress_bar


def test_a_bar_without_a_terminal_is_disabled_and_writes_nothing(capsys):
    bar = progress_bar(TextColumn("x"), BarColumn(), quiet=False)  # pytest's stderr is not a terminal
    assert bar.disable
    with bar:
        task = bar.add_task("x", total=3)
        bar.advance(task, 3)
    assert capsys.readouterr().err == ""


def test_quiet_disables_the_bar():
    assert progress_bar(TextColumn("x"), quiet=True).disable


def test_a_missing_optional_package_names_the_extra():
    with pytest.raises(UserError, match=r"^the thing needs no_such_pkg: pip install 'lmsmith\[extra\]' \(or not\)$"):
        require("no_such_pkg.sub", extra="extra", purpose="the thing", also=" (or not)")
    assert require("json", extra="x", purpose="y").loads("{}") == {}


@pytest.mark.parametrize("text, problem", [("{", "not valid JSON"), ("[1, 2]", "not a JSON object"),
                                           (b"\xff\xfe", "not valid JSON")])
def test_a_broken_json_file_is_called_corrupted_with_the_fix(tmp_path, text, problem):
    file = tmp_path / "config.json"
    file.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError, match=f"config.json is corrupted \\({problem}\\): make it again"):
        read_json(file, fix="make it again")


def test_a_json_object_is_read(tmp_path):
    (tmp_path / "a.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "a.json", fix="") == {"a": 1}


def test_closest_hint_suggests_or_lists():
    assert closest_hint("contxt", ["context", "stride"]) == "did you mean 'context'?"
    assert closest_hint("zzz", ["context", "stride"]) == "known: context, stride"
    assert closest_hint("zzz", ["a"], "say this") == "say this"
