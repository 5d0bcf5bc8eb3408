"""`lmsmith curate train-classifier LABELS.jsonl -o DIR`: train the learned quality filter on labelled documents.

Each line is {"text": ..., "label": ...}; a label is good (1, true, "good", "keep", "high") or bad
(0, false, "bad", "drop", "low"). A share of the lines (`classifier.held_out`, chosen by a hash of the
text, so the same lines every run) is kept out of training; precision and recall of "good" on it
are printed and stored in the manifest. A file with one class only is refused: there is nothing
to tell apart.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from lmsmith.core.config import section_to_dict
from lmsmith.core.errors import UserError, cannot_read
from lmsmith.core.manifest import file_sha256
from lmsmith.core.output import stage_directory, write_manifest
from lmsmith.data.quality_classifier import STAGE, QualityClassifier, vectorizer
from lmsmith.schema.classifier import ClassifierConfig

GOOD = (1, True, "1", "good", "keep", "high")
BAD = (0, False, "0", "bad", "drop", "low")


def _label(value, where: str) -> int:
    key = value.lower() if isinstance(value, str) else value
    if key in GOOD:
        return 1
    if key in BAD:
        return 0
    raise UserError(f"{where}: label {value!r} is neither good (1, true, good, keep, high) nor bad "
                    "(0, false, bad, drop, low)")


def read_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """The texts and 0/1 labels of a labels file, refusing a malformed line by its number."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (give a JSONL file of {{\"text\", \"label\"}} lines)") from None
    except OSError as exc:
        raise cannot_read(path, exc) from None
    texts, labels = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{where}: not JSON (each line is {{\"text\": ..., \"label\": ...}})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or "label" not in obj:
            raise UserError(f"{where}: each line is {{\"text\": ..., \"label\": ...}}")
        texts.append(obj["text"])
        labels.append(_label(obj["label"], where))
    y = np.array(labels, dtype=np.int64)
    if len(set(labels)) < 2:
        only = "good" if labels and labels[0] == 1 else "bad"
        raise UserError(f"{path}: every label is {only}{' (or the file is empty)' if not labels else ''}: "
                        "a classifier needs good and bad examples")
    return texts, y


def held_out_mask(texts: list[str], share: float, seed: int) -> np.ndarray:
    draws = [int.from_bytes(hashlib.sha256(f"{seed}:{t}".encode()).digest()[:8], "big") / 2 ** 64 for t in texts]
    return np.array(draws) < share


def precision_recall(predicted: np.ndarray, truth: np.ndarray) -> dict:
    true_positive = int(np.sum(predicted & (truth == 1)))
    kept, good = int(predicted.sum()), int((truth == 1).sum())
    return {"lines": len(truth), "precision": round(true_positive / kept, 4) if kept else None,
            "recall": round(true_positive / good, 4) if good else None,
            "accuracy": round(float(np.mean(predicted == (truth == 1))), 4) if len(truth) else None}


def fit(texts: list[str], labels: np.ndarray, cfg: ClassifierConfig) -> QualityClassifier:
    from sklearn.linear_model import LogisticRegression

    features = vectorizer(cfg.features, cfg.ngrams).transform(texts)
    model = LogisticRegression(C=cfg.regularization, max_iter=1000, random_state=cfg.seed).fit(features, labels)
    return QualityClassifier(cfg.features, cfg.ngrams, model.coef_[0], model.intercept_[0])


def run(config, inputs: dict, out: str | Path, *, quiet: bool = False) -> dict:
    cfg: ClassifierConfig = config.classifier
    labels_file = inputs["labels"]
    texts, labels = read_labels(labels_file)
    held = held_out_mask(texts, cfg.held_out, cfg.seed)
    train = ~held
    if len(set(labels[train].tolist())) < 2:
        raise UserError(f"{labels_file}: the training share holds one class only: give more lines of each label")
    classifier = fit([t for t, h in zip(texts, held) if not h], labels[train], cfg)
    scores = classifier.scores([t for t, h in zip(texts, held) if h]) if held.any() else np.empty(0)
    metrics = precision_recall(scores >= 0.5, labels[held])
    with stage_directory(out, STAGE, reads=[labels_file]) as tmp:
        classifier.save(tmp, metrics)
        manifest = write_manifest(tmp, STAGE, config=section_to_dict(cfg),
                                  inputs={"labels": {"path": str(labels_file), "sha256": file_sha256(labels_file)}},
                                  counts={"lines": len(texts), "trained_on": int(train.sum()), "held_out": metrics})
    if not quiet:
        print(f"classifier: trained on {int(train.sum())} lines; on {metrics['lines']} held-out lines precision "
              f"{metrics['precision']}, recall {metrics['recall']} (threshold 0.5)", file=sys.stderr)
    return manifest
