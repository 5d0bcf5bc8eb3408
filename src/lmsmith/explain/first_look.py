"""The first look a build gives by itself: its report, and an explanation of one of its samples.

After `lmsmith build` a learner opens two pages without running anything else:

    WORKDIR/report/report.html     how the model learned (lmsmith report)
    WORKDIR/explain/index.html     inside the model, on the first sample it wrote (lmsmith explain)
"""

from __future__ import annotations

import sys
from pathlib import Path

from lmsmith.core.errors import UserError
from lmsmith.core.manifest import MANIFEST

SAMPLE_TOKENS = 40  # the explained sample is cut to this many tokens: a heatmap stays readable


def sample_text(samples: list[dict] | None, tokenizer) -> str | None:
    """The first sample (its prompt and what the model wrote), cut to SAMPLE_TOKENS tokens."""
    for sample in samples or []:
        text = str(sample.get("prompt", "")) + str(sample.get("text", ""))
        ids = tokenizer.encode(text, what="the sample")[:SAMPLE_TOKENS]
        if ids:
            return tokenizer.decode(ids)
    return None


def explain_sample(workdir: Path, samples: list[dict] | None) -> Path | None:
    """Write WORKDIR/explain for the first sample; returns its index.html (None without a sample)."""
    from lmsmith.explain.explanation import explain_text
    from lmsmith.explain.stage import INDEX, load, recipe_temperature, write_explanation
    from lmsmith.schema.explain import ExplainConfig

    model_dir = workdir / "runs" / "main" / "model"
    model, tokenizer, model_dir = load(model_dir, "cpu")
    text = sample_text(samples, tokenizer)
    if text is None:
        return None
    result = explain_text(model, tokenizer, text, ExplainConfig(), model_dir, recipe_temperature(model_dir))
    out = workdir / "explain"
    write_explanation(result, out, model_dir, reads=[model_dir])
    return out / INDEX


def first_look(workdir: Path, samples: list[dict] | None, redo: bool) -> list[Path]:
    """Write (when `redo` or missing) and return the pages to open; a build that stopped before training has none.

    A page that cannot be drawn is said on stderr, not raised: the build itself has succeeded.
    """
    from lmsmith.report.page import REPORT_HTML, write_report

    if not (workdir / "runs" / "main" / "model" / MANIFEST).is_file():
        return []
    pages = []
    report, explanation = workdir / "report" / REPORT_HTML, workdir / "explain" / "index.html"
    try:
        pages.append(write_report(workdir) if redo or not report.is_file() else report)
        written = explain_sample(workdir, samples) if redo or not explanation.is_file() else explanation
        pages += [written] if written is not None else []
    except UserError as exc:
        print(f"error: the build is done, but its pages could not be written: {exc}", file=sys.stderr)
    return pages
