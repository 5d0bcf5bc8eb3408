"""The learned quality filter: hashed word n-grams and a logistic regression (scikit-learn), stored as plain arrays.

scikit-learn's HashingVectorizer is stateless, so a classifier is wholly its settings (classifier.json)
and its weights (weights.npy): loading it needs no pickle, which keeps the rule "nothing untrusted is
unpickled" for a classifier directory that came from someone else.

Why scikit-learn and not fastText: its wheels install cleanly on every Python lmsmith supports and
with NumPy 2, while fasttext-wheel's last release (0.9.2, 2023) breaks under NumPy 2 at predict time;
on the labelled sets this is meant for (hundreds to tens of thousands of documents) a linear model on
hashed n-grams trains in seconds on a CPU, as fastText does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmsmith.core.errors import UserError
from lmsmith.core.extras import require
from lmsmith.core.manifest import read_manifest

SETTINGS = "classifier.json"
WEIGHTS = "weights.npy"
STAGE = "curate-classifier"


def vectorizer(features: int, ngrams: int):
    feature_extraction = require("sklearn.feature_extraction.text", extra="quality", package="scikit-learn",
                                 purpose="the learned quality classifier")
    return feature_extraction.HashingVectorizer(n_features=features, ngram_range=(1, ngrams), alternate_sign=False,
                                                norm="l2", lowercase=True)


class QualityClassifier:
    """P(good) of each text: sigmoid(weights . hashed n-grams + bias)."""

    def __init__(self, features: int, ngrams: int, weights: np.ndarray, bias: float):
        self.features, self.ngrams = features, ngrams
        self.weights, self.bias = weights.astype(np.float32), float(bias)
        self._vectorizer = None

    def scores(self, texts: list[str]) -> np.ndarray:
        if self._vectorizer is None:  # built where it is used: a worker process gets the arrays, not the object
            self._vectorizer = vectorizer(self.features, self.ngrams)
        logits = self._vectorizer.transform(texts) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))

    def __getstate__(self):
        return {**self.__dict__, "_vectorizer": None}

    def save(self, directory: Path, metrics: dict) -> None:
        from lmsmith.core.atomic import write_bytes, write_json

        write_json(directory / SETTINGS, {"features": self.features, "ngrams": self.ngrams, "bias": self.bias,
                                          "held_out": metrics})
        import io

        buffer = io.BytesIO()
        np.save(buffer, self.weights, allow_pickle=False)
        write_bytes(directory / WEIGHTS, buffer.getvalue())


def load_classifier(directory: str | Path) -> QualityClassifier:
    """A classifier directory made by `lmsmith curate train-classifier`, checked by its manifest."""
    directory = Path(directory).expanduser()
    read_manifest(directory, STAGE, fix="make one with `lmsmith curate train-classifier LABELS.jsonl -o DIR`")
    try:
        settings = json.loads((directory / SETTINGS).read_text(encoding="utf-8"))
        weights = np.load(directory / WEIGHTS, allow_pickle=False)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise UserError(f"{directory}: the classifier is unreadable ({exc}): train it again") from None
    if weights.shape != (settings["features"],):
        raise UserError(f"{directory}: {WEIGHTS} holds {weights.shape} weights, not {settings['features']}: "
                        "train it again")
    return QualityClassifier(settings["features"], settings["ngrams"], weights, settings["bias"])
