"""The default install carries everything its modules import.

A package installed by hand on a developer's machine can hide a missing dependency; CI builds a
brand-new environment, and these tests import every module and run the third-party paths that
have broken on a fresh install before (lxml.html.clean moving out of lxml broke HTML extraction).
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import lmsmith


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(lmsmith.__path__, prefix="lmsmith.")
                  if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", all_modules())
def test_every_module_imports_on_the_default_install(name):
    importlib.import_module(name)


def test_html_main_text_extraction_works_on_the_default_install():
    import trafilatura

    page = ("<html><head><title>t</title></head><body><nav>menu menu</nav><article><p>"
            + "The tokenizer turns text into pieces that the model reads one at a time. " * 8
            + "</p></article></body></html>")
    text = trafilatura.extract(page)
    assert text is not None and "tokenizer turns text into pieces" in text
    import justext  # trafilatura falls back to it; it imports lxml.html.clean

    assert justext.get_stoplist("English")
