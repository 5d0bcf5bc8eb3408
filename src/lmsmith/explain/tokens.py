"""How a text becomes tokens: the pieces, their ids, and for BPE the merges that built each piece.

A byte-level BPE token is the end of a chain of merges learned in training: the two most
frequent neighbouring pieces were joined first (merge #0), then the next, and so on. Undoing
the merges of one token, from its last merge down to single bytes, shows how it was built.
"""

from __future__ import annotations

import json
from functools import cached_property

from lmsmith.text.tokenizer import Tokenizer


def readable(data: bytes) -> str:
    """The text a piece stands for; bytes of a character split over several tokens as \\xNN."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"\\x{b:02x}" for b in data)


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    return readable(tokenizer.token_bytes(token_id))


def pieces(tokenizer: Tokenizer, ids: list[int]) -> list[dict]:
    """One entry per token: its position, id, the text it stands for, its length in bytes, and whether
    it is special."""
    specials = set(tokenizer.backend.get_added_tokens_decoder())
    entries = []
    for i, t in enumerate(ids):
        data = tokenizer.token_bytes(t)
        entries.append({"position": i, "id": int(t), "text": readable(data), "n_bytes": len(data),
                        "special": t in specials})
    return entries


class Merges:
    """The merge rules of a BPE tokenizer, looked up by the piece each one makes."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        model = json.loads(tokenizer.backend.to_str()).get("model") or {}
        self.vocab: dict[str, int] = model.get("vocab") or {}
        self.made_by: dict[str, tuple[str, str, int]] = {}
        if model.get("type") == "BPE":
            for rank, merge in enumerate(model.get("merges") or []):
                left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
                self.made_by.setdefault(left + right, (left, right, rank))

    @cached_property
    def is_bpe(self) -> bool:
        return bool(self.made_by)

    def tree(self, token_id: int) -> dict:
        """{id, text, merge, parts}: the merge that made the token (`merge` is its rank) and its two parts,
        down to single bytes (no parts)."""
        name = self.tokenizer.backend.id_to_token(token_id)
        return self._node(name, token_id)

    def _node(self, name: str, token_id: int | None) -> dict:
        text = token_text(self.tokenizer, token_id) if token_id is not None else name
        node = {"id": token_id, "text": text, "merge": None, "parts": []}
        if name in self.made_by and token_id not in self.tokenizer.backend.get_added_tokens_decoder():
            left, right, rank = self.made_by[name]
            node["merge"] = rank
            node["parts"] = [self._node(left, self.vocab.get(left)), self._node(right, self.vocab.get(right))]
        return node


def merge_steps(tree: dict) -> list[dict]:
    """The merges of one tree in the order training learned them: [{left, right, result, merge}]."""
    steps = []

    def walk(node: dict) -> None:
        for part in node["parts"]:
            walk(part)
        if node["parts"]:
            left, right = node["parts"]
            steps.append({"left": left["text"], "right": right["text"], "result": node["text"], "merge": node["merge"]})

    walk(tree)
    return sorted(steps, key=lambda s: s["merge"])
