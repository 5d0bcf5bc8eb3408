"""Items the model may have seen in training: 13-gram overlap between an item and the model's training text.

The training text is found through the manifests, the same way `lmsmith report` finds it: a model
names the tokens it was trained on, the tokens name their curated directory (whose train split
is read); a fine-tuned model names its base (followed in turn) and its instruct data (a JSONL
file, read whole). A model whose manifests name none of these is not checked.

An item's text is what the model is shown (the question, the prompt or the messages), in
lower-case words; it is flagged when any 13 consecutive words of it appear in one training
document, as GPT-3's and lm-evaluation-harness's decontamination do. An item of fewer than 13
words cannot be flagged. Flagged is "possibly contaminated": a shared boilerplate sentence counts too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from lmsmith.core.manifest import MANIFEST
from lmsmith.exam.items import Item

N = 13


def _manifest(directory: Path) -> dict:
    try:
        return json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def training_sources(model_dir: Path, depth: int = 0) -> list[tuple[str, Path]]:
    """("curated", dir) and ("instruct", file) sources behind a model directory, its bases' included."""
    inputs = _manifest(model_dir).get("inputs") or {}
    found: list[tuple[str, Path]] = []
    tokens = (inputs.get("tokens") or {}).get("path")
    if tokens:
        data = ((_manifest(Path(tokens)).get("inputs") or {}).get("data") or {}).get("path")
        if data and (Path(data) / "train").is_dir():
            found.append(("curated", Path(data)))
    data = inputs.get("data") or {}
    if data.get("kind") == "instruct" and data.get("path") and Path(data["path"]).is_file():
        found.append(("instruct", Path(data["path"])))
    base = (inputs.get("base") or {}).get("source")
    if base and depth < 8 and Path(base).is_dir():
        found += training_sources(Path(base), depth + 1)
    return found


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def grams(text: str) -> set[str]:
    w = words(text)
    return {" ".join(w[i:i + N]) for i in range(len(w) - N + 1)}


def item_text(item: Item) -> str:
    f = item.fields
    if "question" in f:
        return f["question"]
    if isinstance(f.get("messages"), list):
        return "\n".join(str(m.get("content", "")) for m in f["messages"] if isinstance(m, dict))
    return f.get("prompt") or ""


def documents(sources: list[tuple[str, Path]]) -> Iterator[str]:
    for kind, path in sources:
        if kind == "curated":
            from lmsmith.text.curated_dir import iter_split_texts

            yield from iter_split_texts(path, "train")
        else:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    yield "\n".join(str(v) for v in row.values() if isinstance(v, str))


def flagged(items: list[Item | None], sources: list[tuple[str, Path]]) -> list[bool]:
    """Per item (file order): does any 13-gram of its text appear in a training document?"""
    owners: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if item is not None:
            for gram in grams(item_text(item)):
                owners.setdefault(gram, []).append(i)
    hits = [False] * len(items)
    if not owners:
        return hits
    for document in documents(sources):
        w = words(document)
        for k in range(len(w) - N + 1):
            for i in owners.get(" ".join(w[k:k + N]), ()):
                hits[i] = True
    return hits
