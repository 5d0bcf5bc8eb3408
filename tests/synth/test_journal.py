"""The journal and the passages: a line torn by a kill is cut off and asked again; passages are cut at paragraphs."""

from __future__ import annotations

from lmsmith.synth.journal import JOURNAL, Entry, Journal
from lmsmith.synth.passages import split_passages


def test_a_torn_last_line_is_cut_off_and_the_whole_lines_kept(tmp_path):
    journal = Journal.open(tmp_path)
    journal.add(Entry("qa:a", "doc#0", [{"messages": [], "source": "doc#0"}], 10, True))
    journal.add(Entry("qa:b", "doc#1", [], 7, False))
    whole = (tmp_path / JOURNAL).read_bytes()
    (tmp_path / JOURNAL).write_bytes(whole + b'{"key": "qa:c", "passage": "doc#2", "li')
    again = Journal.open(tmp_path)
    assert sorted(again.entries) == ["qa:a", "qa:b"] and (again.items, again.tokens) == (1, 17)
    assert (tmp_path / JOURNAL).read_bytes() == whole


def test_passages_are_cut_at_paragraph_breaks_and_a_long_paragraph_hard():
    text = "one " * 30 + "\n\n" + "two " * 30 + "\n\n" + "x" * 250
    passages = split_passages("doc", text, 200)
    assert [len(p.text) <= 200 for p in passages] == [True] * len(passages)
    assert passages[0].text.startswith("one") and passages[1].text.startswith("two")
    assert [p.id for p in passages] == [f"doc#{i}" for i in range(len(passages))]
    assert split_passages("other", text, 200)[0].hash == passages[0].hash  # the hash is of the text alone
