"""The per-document steps of curation, in pipeline order: what each worker (a local process or a
Ray task) runs on its batches."""

from __future__ import annotations

from lmsmith.data.bias import BiasProbe
from lmsmith.data.classifier_step import ClassifierStep
from lmsmith.data.dedup import MinHashSigner
from lmsmith.data.exam_overlap import ExamOverlapFilter
from lmsmith.data.format import FormatStep
from lmsmith.data.pii import PiiRedactor
from lmsmith.data.quality import QualityStep
from lmsmith.data.safety import SafetyFilter
from lmsmith.data.sources.html import HtmlExtract
from lmsmith.data.step import Step
from lmsmith.schema.curate import CurateConfig


def document_steps(config: CurateConfig) -> list[Step]:
    """The per-document steps that are switched on, in pipeline order."""
    steps: list[Step] = []
    if config.html.enabled:
        steps.append(HtmlExtract(config.html))
    if config.format.enabled:
        steps.append(FormatStep(config.format))
    if config.exclude_exam:  # on the text as repaired, before anything is redacted out of it
        steps.append(ExamOverlapFilter(config.exclude_exam, config.exam_ngram))
    if config.quality.enabled:
        steps.append(QualityStep(config.quality))
    if config.classifier is not None:
        steps.append(ClassifierStep(config.classifier, config.classifier_threshold))
    if config.safety.enabled:
        steps.append(SafetyFilter(config.safety))
    if config.pii.enabled:
        steps.append(PiiRedactor(config.pii))
    if config.bias.enabled:  # counts the text as it will be written: after redaction
        steps.append(BiasProbe(config.bias))
    if config.dedup.enabled:  # the hashing half of dedup: on every core, on what the steps before it kept
        steps.append(MinHashSigner(config.dedup))
    return steps
