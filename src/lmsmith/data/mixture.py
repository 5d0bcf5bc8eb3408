"""Mixtures: a weight per input, applied to the train split as it is written.

`weight: 3` writes each train document of a small, precious input three times; `0.5` writes half
of a big one. A fractional part is drawn per document from a hash of its id, so the same documents
are chosen on every run and on every engine. Weights act after dedup (copies made before it would
be removed again as exact duplicates) and only on train: val and test measure, they are not fed.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import xxhash

from lmsmith.core.errors import UserError
from lmsmith.data.document import Document


def _place(spec: str) -> str:
    """What a document's `source` starts with when it came from this input."""
    if spec == "stdlib" or spec.startswith("hf:"):
        return spec
    return str(Path(spec).expanduser().resolve())


def _document_place(source: str) -> str:
    return str(Path(source[len("file:"):]).resolve()) if source.startswith("file:") else source


class Mixture:
    def __init__(self, weights: dict[str, float], inputs: list[str]):
        unknown = [key for key in weights if key not in inputs]
        if unknown:
            raise UserError(f"curate.mixture names '{unknown[0]}', which is not an input: the inputs are "
                            f"{', '.join(inputs)}")
        self.weights = {spec: float(weights.get(spec, 1.0)) for spec in inputs}
        if not any(self.weights.values()):
            raise UserError("curate.mixture gives every input weight 0: nothing would be trained on")
        # Longest place first: an input inside another input's folder claims its own documents.
        self.places = sorted(((_place(spec), spec) for spec in inputs), key=lambda p: -len(p[0]))
        self.before: Counter = Counter()
        self.written: Counter = Counter()

    def input_of(self, doc: Document) -> str:
        place = _document_place(doc.source)
        for prefix, spec in self.places:
            inside = place.startswith(prefix.rstrip("/") + "/") if prefix.startswith("/") else place.startswith(prefix)
            if place == prefix or inside:
                return spec
        return self.places[-1][1]  # a source named otherwise than its input (none today): the shortest, the widest

    def copies(self, doc: Document) -> int:
        """How many times this train document is written, and the counts of the report."""
        spec = self.input_of(doc)
        weight = self.weights[spec]
        whole, fraction = math.floor(weight), weight - math.floor(weight)
        draw = xxhash.xxh3_64_intdigest(doc.id.encode("utf-8")) / 2 ** 64
        n = whole + (1 if draw < fraction else 0)
        self.before[spec] += 1
        self.written[spec] += n
        return n

    def report(self) -> dict:
        """The mixture as planned (each input's weight times its documents) and as written, as shares of train."""
        planned = {spec: self.weights[spec] * self.before[spec] for spec in self.weights}
        total_planned, total_written = sum(planned.values()), sum(self.written.values())
        return {spec: {"weight": self.weights[spec], "train_docs_read": self.before[spec],
                       "train_docs_written": self.written[spec],
                       "share_planned": round(planned[spec] / total_planned, 4) if total_planned else None,
                       "share_written": round(self.written[spec] / total_written, 4) if total_written else None}
                for spec in self.weights}
