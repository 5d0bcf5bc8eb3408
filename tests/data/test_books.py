"""Books, papers, Wikipedia and conversations: each kind of file is built here, then read back."""

from __future__ import annotations

import bz2
import json
import random
import zipfile

from fpdf import FPDF

from lmsmith.data.pipeline import curate
from lmsmith.data.sources.pdf import join_pages
from lmsmith.text.curated_dir import iter_split_texts
from tests.data.test_pipeline import SENTENCES
from tests.data.test_sources import read

BODY = [
    "The committee measured the river every spring and recorded the height of the water on the old mill.",
    "Careful observers noted that the current turned sharply near the rocks below the northern bridge.",
    "The archive keeps letters from the first surveyors, who walked the valley with chains and compasses.",
]


# -- PDF -----------------------------------------------------------------------------------------


class _Paper(FPDF):
    """A journal page: a running header, and the page number in the footer."""

    def header(self):
        self.set_font("Helvetica", size=9)
        self.cell(0, 8, f"Journal of Planted Tests, Vol. 3, p. {self.page_no()}", new_x="LMARGIN", new_y="NEXT")

    def footer(self):
        self.set_y(-15)
        self.set_font("Helvetica", size=9)
        self.cell(0, 8, str(self.page_no()), align="C")


def write_paper(path, pages, password=None):
    pdf = _Paper()
    for lines in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        for line in lines:
            pdf.cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    if password:
        pdf.set_encryption(owner_password="owner", user_password=password)
    pdf.output(str(path))


PAPER = [
    ["Page one opens with a careful measure-", "ment of the tides.", BODY[0]],
    ["The second page continues the argu-", "ment about the river.", BODY[1]],
    ["The third page ends the survey with", "a note on the archive.", BODY[2]],
]


def test_a_pdf_reads_as_its_pages_without_running_lines_and_with_words_mended(tmp_path):
    write_paper(tmp_path / "paper.pdf", PAPER)
    docs, skips = read([tmp_path / "paper.pdf"])
    assert skips == [] and len(docs) == 1
    text = docs[0].text
    assert "Journal of Planted Tests" not in text
    assert "measurement of the tides" in text and "argument about the river" in text
    assert all(sentence in text for sentence in BODY)
    assert not any(line.strip().isdigit() for line in text.splitlines())  # page numbers gone
    assert text.index("measurement") < text.index("argument") < text.index("archive")
    assert docs[0].meta == {"kind": "prose", "format": "pdf", "pages": 3, "path": "paper.pdf"}


def test_running_lines_go_but_body_lines_that_repeat_elsewhere_stay():
    words = ["alpha", "beta", "gamma", "delta"]
    pages = [f"Proceedings 2024, page {n}\nThe {w} part starts.\nShared sentence in the body.\nThe {w} part ends.\n{n}"
             for n, w in enumerate(words, start=1)]
    text = join_pages(pages)
    assert "Proceedings" not in text
    assert text.count("Shared sentence in the body.") == 4
    assert all(f"The {w} part starts." in text and f"The {w} part ends." in text for w in words)
    assert (join_pages(["a line ending in well-\nKnown capitals stays"])
            == "a line ending in well-\nKnown capitals stays")


def test_encrypted_and_corrupt_pdfs_are_skipped_with_their_reason(tmp_path):
    write_paper(tmp_path / "locked.pdf", PAPER[:1], password="secret")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    docs, skips = read([tmp_path])
    assert docs == []
    reasons = {s.meta["path"]: (s.reason, s.detail) for s in skips}
    assert reasons["locked.pdf"][0] == "encrypted" and "password" in reasons["locked.pdf"][1]
    assert reasons["broken.pdf"][0] == "unreadable" and "PDF" in reasons["broken.pdf"][1]


# -- EPUB ----------------------------------------------------------------------------------------


def write_epub(path, chapters):
    """An EPUB whose spine order (the reading order) is the reverse of the files' names and order."""
    opf_items = "".join(f'<item id="c{i}" href="text/part{len(chapters) - i}.xhtml"'
                        ' media-type="application/xhtml+xml"/>'
                        for i in range(len(chapters)))
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        book.writestr("META-INF/container.xml", (
            '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>"))
        book.writestr("OEBPS/content.opf", (
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            f"<manifest>{opf_items}</manifest><spine>{spine}</spine></package>"))
        for i, (title, paragraphs) in reversed(list(enumerate(chapters))):
            body = "".join(f"<p>{p}</p>" for p in paragraphs)
            book.writestr(f"OEBPS/text/part{len(chapters) - i}.xhtml", (
                '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>ignored</title>'
                f"<style>p {{ margin: 0 }}</style></head><body><h1>{title}</h1>{body}</body></html>"))


def test_an_epub_reads_its_chapters_in_spine_order_without_markup(tmp_path):
    chapters = [("Chapter One", [BODY[0], "She <em>never</em> swam near the rocks."]),
                ("Chapter Two", [BODY[1]]), ("Chapter Three", [BODY[2] + " &amp; more"])]
    write_epub(tmp_path / "book.epub", chapters)
    (tmp_path / "fake.epub").write_text("this is not a zip archive")
    docs, skips = read([tmp_path])
    assert [(s.meta["path"], s.reason) for s in skips] == [("fake.epub", "unreadable")]
    assert "not a zip" in skips[0].detail
    text = docs[0].text
    assert text.index("Chapter One") < text.index("Chapter Two") < text.index("Chapter Three")
    assert "She never swam near the rocks." in text and "& more" in text
    assert "<" not in text and "margin" not in text and "ignored" not in text
    assert "Chapter One\n\n" + BODY[0] in text


# -- Wikipedia -----------------------------------------------------------------------------------


def _page(title, ns, text, redirect=False, page_id=1):
    redirect_tag = f'<redirect title="{title} (other)" />' if redirect else ""
    return (f"<page><title>{title}</title><ns>{ns}</ns><id>{page_id}</id>{redirect_tag}"
            f'<revision><id>9</id><text xml:space="preserve">{text}</text></revision></page>')


DUMP_PAGES = [
    _page("Lighthouse", 0, (
        "{{Infobox building|name=Lighthouse}}\n'''A lighthouse''' is a [[tower]] that emits [[light|a beam]]."
        "&lt;ref&gt;Smith 2001, p. 4&lt;/ref&gt;\n\n== History ==\nThe first ones burned wood.\n"
        "[[File:Lamp.jpg|thumb|A lamp]]\n[[Category:Towers]]"), page_id=1),
    _page("Beacon", 0, "#REDIRECT [[Lighthouse]]", redirect=True, page_id=2),
    _page("Talk:Lighthouse", 1, "Is this article accurate?", page_id=3),
    _page("Keeper", 0, "A '''keeper''' tends the [[lamp]] every night.", page_id=4),
]


def write_dump(path, pages, truncate_at=None):
    xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10"><siteinfo>'
           "<sitename>Wikipedia</sitename></siteinfo>" + "".join(pages) + "</mediawiki>").encode()
    data = bz2.compress(xml, compresslevel=1)  # 100 kB blocks: a cut file still holds whole blocks
    path.write_bytes(data[:truncate_at] if truncate_at else data)


def test_a_wikipedia_dump_yields_articles_as_plain_text(tmp_path):
    write_dump(tmp_path / "enwiki-latest-pages-articles.xml.bz2", DUMP_PAGES)
    docs, skips = read([tmp_path])
    assert sorted((s.meta["title"], s.reason) for s in skips) == [("Beacon", "redirect"),
                                                                   ("Talk:Lighthouse", "not_an_article")]
    texts = {d.meta["title"]: d.text for d in docs}
    assert list(texts) == ["Lighthouse", "Keeper"]
    lighthouse = texts["Lighthouse"]
    assert lighthouse.startswith("Lighthouse\n\nA lighthouse is a tower that emits a beam.")
    assert "History" in lighthouse and "The first ones burned wood." in lighthouse
    for gone in ("Infobox", "Smith 2001", "Lamp.jpg", "Category", "[[", "'''", "{{"):
        assert gone not in lighthouse
    assert texts["Keeper"] == "Keeper\n\nA keeper tends the lamp every night."
    assert docs[0].meta["format"] == "wikipedia"


def test_a_truncated_dump_keeps_what_was_read_and_says_where_it_ended(tmp_path):
    many = [_page(f"Article {i}", 0, f"Article {i} says " + " ".join(BODY), page_id=i) for i in range(1000)]
    full = tmp_path / "full.xml.bz2"
    write_dump(full, many)
    write_dump(tmp_path / "cut.xml.bz2", many, truncate_at=len(full.read_bytes()) // 2)
    full.unlink()
    docs, skips = read([tmp_path])
    assert 0 < len(docs) < 1000
    assert [s.reason for s in skips] == ["truncated"]
    assert f"after page {len(docs)}" in skips[0].detail and skips[0].meta["path"] == "cut.xml.bz2"


# -- Conversations -------------------------------------------------------------------------------


def test_conversations_become_dialogue_and_bad_ones_are_skipped_by_line(tmp_path):
    records = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                      {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]}]},
        {"conversations": [{"from": "human", "value": "What is a lighthouse?"}, {"from": "gpt", "value": "A tower."}]},
        {"messages": [{"role": "narrator", "content": "Once upon a time"}]},
        {"messages": []},
        {"text": "plain records still read as before"},
    ]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    docs, skips = read([tmp_path / "chats.jsonl"])
    assert [d.text for d in docs] == [
        "System: Be brief.\n\nUser: Hi there\n\nAssistant: Hello!",
        "User: What is a lighthouse?\n\nAssistant: A tower.",
        "plain records still read as before",
    ]
    assert docs[0].meta["kind"] == "conversation" and docs[0].meta["line"] == 1
    assert [(s.reason, s.meta["line"]) for s in skips] == [("bad_conversation", 3), ("bad_conversation", 4)]
    assert "unknown role 'narrator'" in skips[0].detail and skips[0].detail.startswith("line 3:")
    assert "no messages" in skips[1].detail


# -- All four in one run -------------------------------------------------------------------------


def test_curate_reads_books_papers_wikipedia_and_chats_in_one_run(tmp_path):
    sentences = iter(random.Random(1).sample(SENTENCES, len(SENTENCES)))

    def prose(n):  # sentences not used before, so that no document repeats itself
        return [next(sentences) for _ in range(n)]

    write_paper(tmp_path / "paper.pdf", [prose(4), prose(4)])
    write_epub(tmp_path / "book.epub", [("One", prose(4)), ("Two", prose(4))])
    write_dump(tmp_path / "wiki.xml.bz2", [_page("Survey", 0, " ".join(prose(6)))])
    chat = {"messages": [{"role": "user", "content": " ".join(prose(3))},
                         {"role": "assistant", "content": " ".join(prose(3))}]}
    (tmp_path / "chats.jsonl").write_text(json.dumps(chat) + "\n")
    (tmp_path / "bad.epub").write_bytes(b"not a zip")
    report = curate([tmp_path / n for n in ("paper.pdf", "book.epub", "wiki.xml.bz2", "chats.jsonl", "bad.epub")],
                    tmp_path / "out", {"split": {"val_fraction": 0, "test_fraction": 0}, "dedup": {"enabled": False}},
                    quiet=True, workers=1)
    texts = list(iter_split_texts(tmp_path / "out", "train"))
    assert len(texts) == 4
    assert [i["reason"] for i in report["read_issues"]] == ["unreadable"]
