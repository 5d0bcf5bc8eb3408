"""The curation step of the learned quality filter: score every document, keep those at or above the threshold."""

from __future__ import annotations

from lmsmith.data.document import Document
from lmsmith.data.quality_classifier import load_classifier
from lmsmith.data.step import Dropped, Step, StepStats

REASON = "low_quality_score"
SCORE_KEY = "quality_score"


class ClassifierStep(Step):
    name = "classifier"

    def __init__(self, directory: str, threshold: float):
        self.classifier = load_classifier(directory)
        self.threshold = threshold

    def apply(self, docs: list[Document], stats: StepStats) -> tuple[list[Document], list[Dropped]]:
        # A whole batch at once: one sparse matrix product instead of one per document.
        scores = self.classifier.scores([doc.text for doc in docs]) if docs else []
        kept, dropped = [], []
        for doc, score in zip(docs, scores):
            doc.meta[SCORE_KEY] = round(float(score), 4)
            if score >= self.threshold:
                kept.append(doc)
            else:
                dropped.append((doc, REASON))
        return kept, dropped
