"""Wikipedia XML dumps (`*-pages-articles.xml`, also .bz2): one document per article, as plain text.

The dump is read as a stream (a full one is tens of gigabytes), page by page. Redirects and
pages outside the article namespace (talk, user, templates, categories) are skipped with that
reason. Wikitext becomes plain text with mwparserfromhell: link text stays, templates,
references, images and category links go.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO
from xml.etree import ElementTree

from lmsmith.data.document import Document
from lmsmith.data.sources.source import Skipped, document_id

_HIDDEN_LINKS = ("file:", "image:", "category:", "media:")  # link prefixes that are not running text
_HIDDEN_TAGS = {"ref", "gallery", "math", "timeline", "score", "syntaxhighlight", "references"}
_BLANK_RUN = re.compile(r"\n{3,}")


def looks_like_dump(sample: bytes) -> bool:
    return b"<mediawiki" in sample[:4096]


def wikitext_to_text(wikitext: str) -> str:
    """Plain text of an article's wikitext."""
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext)
    for link in code.filter_wikilinks(recursive=False):
        if str(link.title).strip().lower().startswith(_HIDDEN_LINKS):
            _remove(code, link)
    for tag in code.filter_tags(recursive=False):
        if str(tag.tag).strip().lower() in _HIDDEN_TAGS:
            _remove(code, tag)
    text = code.strip_code(normalize=True, collapse=True)
    return _BLANK_RUN.sub("\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()


def _remove(code, node) -> None:
    try:
        code.remove(node)
    except ValueError:  # already gone with an enclosing node
        pass


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _page_fields(page: ElementTree.Element) -> dict:
    fields = {"redirect": False}
    for element in page.iter():
        name = _local(element.tag)
        if name in ("title", "ns", "id") and name not in fields:
            fields[name] = element.text or ""
        elif name == "redirect":
            fields["redirect"] = True
        elif name == "text":
            fields["text"] = element.text or ""
    return fields


def dump_items(stream: IO[bytes], *, source: str, path: str) -> Iterator[Document | Skipped]:
    """The articles of a dump stream; a damaged or truncated stream ends the file with its reason."""
    pages = 0
    try:
        for _, element in ElementTree.iterparse(stream, events=("end",)):
            if _local(element.tag) != "page":
                continue
            pages += 1
            yield _page_item(_page_fields(element), source=source, path=path)
            element.clear()  # a dump is too big to keep: free each page once read
    except (ElementTree.ParseError, EOFError, OSError, ValueError) as exc:
        yield Skipped(source, "truncated", 0, f"after page {pages}: {type(exc).__name__}: {exc}",
                      {"path": path, "page": pages + 1})


def _page_item(fields: dict, *, source: str, path: str) -> Document | Skipped:
    title = fields.get("title", "")
    meta = {"path": path, "title": title}
    raw = fields.get("text", "")
    n_bytes = len(raw.encode())
    if fields.get("ns", "0").strip() != "0":
        return Skipped(source, "not_an_article", n_bytes, f"'{title}' is in namespace {fields.get('ns')}", meta)
    if fields["redirect"] or raw.lstrip().lower().startswith("#redirect"):
        return Skipped(source, "redirect", n_bytes, f"'{title}' is a redirect", meta)
    text = wikitext_to_text(raw)
    if not text:
        return Skipped(source, "empty", n_bytes, f"'{title}' has no text", meta)
    return Document(document_id(source, f"{path}:{fields.get('id') or title}"), f"{title}\n\n{text}", source,
                    {"kind": "prose", "format": "wikipedia", **meta})
