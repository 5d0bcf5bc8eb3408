"""Technical prose survives the quality rules; planted junk does not (on real Python documentation)."""

from __future__ import annotations

import pytest

from lmsmith.data.quality import prose_reason
from lmsmith.data.technical import looks_technical, prose_of
from lmsmith.data.technical_heldout import heldout_rates, planted_junk, technical_documents
from lmsmith.schema.curate import ProseQualityConfig

GOPHER_ONLY = ProseQualityConfig(set_aside_blocks=False, technical_repetition_factor=1.0)


@pytest.fixture(scope="module")
def rates():
    return heldout_rates()


def test_technical_documentation_is_kept_and_every_planted_junk_document_dropped(rates):
    for kind, result in rates["technical"].items():
        assert result["docs"] > 0, kind
        assert result["kept"] >= 0.95, (kind, result)
    for kind, result in rates["junk"].items():
        assert result["dropped"] == 1.0, (kind, result)
    # the held-out set is big enough to mean something
    assert rates["technical"]["manual"]["docs"] >= 50 and rates["technical"]["api_reference"]["docs"] >= 200


def test_the_technical_rules_only_ever_keep_more():
    docs = [text for kind in technical_documents().values() for _, text in kind][::3]  # a third: time
    docs += [text for texts in planted_junk(10).values() for text in texts]
    for text in docs:
        if prose_reason(text, GOPHER_ONLY) is None:
            assert prose_reason(text, ProseQualityConfig()) is None


def test_code_lines_and_table_borders_are_set_aside_and_hanging_indents_are_not():
    text = "\n".join([
        "Use the function like this:",
        "",
        "   >>> total = add(1, 2)",
        "   x = [1, 2, 3]",
        "+-------+--------+",
        "| name  | value  |",
        "+=======+========+",
        "Footnote (1) says something about the licence and",
        "    the terms under which it is given to everyone.",
        "0.9.0    1991-1995    CWI    yes",
    ])
    prose, left_out = prose_of(text)
    assert prose.split("\n") == ["Use the function like this:", "", "  name    value   ",
                                 "Footnote (1) says something about the licence and",
                                 "    the terms under which it is given to everyone."]
    assert left_out == 6  # two code lines, two borders, the table row read as cells, one row of columns
    assert looks_technical("Call ``loads()`` with `s`, then json_object_hook.", 0)
    assert not looks_technical("A plain sentence about the sea and the sky, nothing more.", 0)


def test_junk_laid_out_as_a_table_is_still_junk():
    soup = "\n".join("    " + " ".join(["$$$", "#@!", "%%", "&&", "**"]) for _ in range(40))
    assert prose_reason("A short line of prose to open.\n" + soup, ProseQualityConfig()) is not None
