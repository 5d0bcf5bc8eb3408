"""The prompts a teacher gets: Jinja templates, one per kind, shipped in lmsmith/configs/synth/ and replaceable.

A template sees `passage` (the text), `n` (items asked for) and `max_chars` (the longest text
allowed); the verify template sees `passage`, `question` and `answer`. Templates run in Jinja's
sandbox with undefined names refused, so a misspelt variable in a user's template is one clear
error before any request, not a prompt with a hole in it.
"""

from __future__ import annotations

from pathlib import Path

from lmsmith.core.errors import UserError, cannot_read

SHIPPED = Path(__file__).resolve().parent.parent / "configs" / "synth"
VERIFY = "verify"


def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


def template_source(name: str, path: str | None = None) -> tuple[str, str]:
    """(text of the template, where it came from): the user's file, or the shipped one for `name`."""
    file = Path(path) if path is not None else SHIPPED / f"{name}.jinja"
    if path is not None and not file.is_file():
        raise UserError(f"--prompt {path} is not a file: give a Jinja template (see {SHIPPED / (name + '.jinja')})")
    try:
        return file.read_text(encoding="utf-8"), str(file)
    except OSError as exc:
        raise cannot_read(file, exc) from None


class PromptTemplate:
    """One compiled template; `render(**values)` is the user message sent to the teacher."""

    def __init__(self, name: str, path: str | None = None):
        from jinja2 import TemplateError

        self.text, self.where = template_source(name, path)
        try:
            self.template = _environment().from_string(self.text)
        except TemplateError as exc:
            raise UserError(f"{self.where}: not a valid Jinja template ({exc})") from None

    def render(self, **values) -> str:
        from jinja2 import TemplateError

        try:
            return self.template.render(**values)
        except TemplateError as exc:
            raise UserError(f"{self.where}: {exc} (a template sees {', '.join(sorted(values))})") from None
