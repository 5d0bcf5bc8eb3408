"""HTML pages become their main text, extracted by trafilatura (menus, footers and ads dropped).

Extraction is a step rather than part of reading because it is the slowest thing done to a
page: as a step it runs in the worker processes with the other per-document steps.
"""

from __future__ import annotations

from lmsmith.data.document import Document
from lmsmith.data.step import Step, StepStats
from lmsmith.schema.curate import HtmlConfig


class HtmlExtract(Step):
    """Replace an HTML document's markup by its main text; drop pages with none (`no_main_text`)."""

    name = "html"

    def __init__(self, config: HtmlConfig | None = None):
        self.config = config or HtmlConfig()

    def decide(self, doc: Document, stats: StepStats) -> str | None:
        if doc.meta.get("kind") != "html":
            return None
        import trafilatura

        text = trafilatura.extract(
            doc.text, include_tables=self.config.include_tables, include_comments=self.config.include_comments,
            favor_precision=self.config.favor_precision, deduplicate=False, with_metadata=False,
        )
        if not text or not text.strip():
            return "no_main_text"
        stats.counters["pages_extracted"] += 1
        doc.text = text
        doc.meta["kind"] = "prose"
        doc.meta["format"] = "html"
        return None
