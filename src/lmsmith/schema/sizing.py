"""The `sizing:` section: shapes a time-budgeted run may take, of which the machine picks one.

    sizing:
      tokens_per_parameter: 1.0       # a larger shape is worth it once the budget trains this many tokens per parameter
      candidates:                     # smallest first; each sets model.* and train.* keys
        - {model.n_embd: 128, model.n_head: 2, train.batch_tokens: 2048, train.micro_batch: 8}
        - {model.n_embd: 192, model.n_head: 3, train.batch_tokens: 8192, train.micro_batch: 32}

In minutes, the best model is the one whose size suits the tokens the machine can push through it:
a larger model learns more per token but gets fewer tokens, and on a slow CPU the few it gets are
not enough to train it. So a run with `train.max_minutes` and candidates times a couple of real
steps of each on the device itself and takes the largest whose budget trains at least
`tokens_per_parameter` tokens for each of its parameters (lmsmith.train.sizing).

A candidate's keys replace the recipe's own; keys given on the command line (`model.n_layer=4`)
replace a candidate's, so what the user says always wins. Without a time budget, or with
`sizing.candidates=[]`, the recipe's own shape trains as written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from lmsmith.core.config import ConfigError

SIZED_SECTIONS = ("model", "train")


@dataclass
class SizingConfig:
    candidates: list[dict[str, Any]] = field(default_factory=list)  # {"model.n_embd": 128, ...} each, smallest first
    tokens_per_parameter: float = 1.0  # the tokens per parameter that make a larger candidate worth it
    probe_steps: int = 3  # timed steps per candidate, after one untimed step

    def check(self, where: str = "sizing") -> None:
        if not (math.isfinite(self.tokens_per_parameter) and self.tokens_per_parameter > 0):
            raise ConfigError(f"{where}.tokens_per_parameter must be a positive number, "
                              f"got {self.tokens_per_parameter}")
        if self.probe_steps < 1:
            raise ConfigError(f"{where}.probe_steps must be at least 1, got {self.probe_steps}")
        for number, candidate in enumerate(self.candidates, 1):
            check_candidate(candidate, f"{where}.candidates[{number}]")


def check_candidate(candidate, where: str) -> None:
    """A candidate is a mapping of dotted model.* and train.* keys (their values are checked when applied)."""
    if not isinstance(candidate, dict) or not candidate:
        raise ConfigError(f"{where} must be a mapping of model.* and train.* keys to values, "
                          f"e.g. {{model.n_embd: 128, train.batch_tokens: 2048}}; got {candidate!r}")
    for key in candidate:
        section, _, name = str(key).partition(".")
        if section not in SIZED_SECTIONS or not name:
            raise ConfigError(f"{where}: {key} is not a model.* or train.* key: a candidate sets the model's shape "
                              "and how it trains, e.g. model.n_embd or train.batch_tokens")


def apply_candidate(model, train, candidate: dict):
    """(model, train) with the candidate's keys set; each section checked again as a whole."""
    from lmsmith.core.config import parse_section

    sections = {"model": dataclasses.asdict(model), "train": dataclasses.asdict(train)}
    for key, value in candidate.items():
        section, _, name = key.partition(".")
        sections[section][name] = value
    return (parse_section(type(model), sections["model"], "model"),
            parse_section(type(train), sections["train"], "train"))


def check_candidates(model, train, sizing: SizingConfig, also=None) -> None:
    """Each candidate applied to the recipe's sections (each checked as a whole, then by `also(model, train)`):
    a bad one is refused before any work, not minutes later when the machine happens to pick it."""
    for number, candidate in enumerate(sizing.candidates, 1):
        try:
            applied = apply_candidate(model, train, candidate)
            if also is not None:
                also(*applied)
        except ConfigError as exc:
            raise ConfigError(f"sizing.candidates[{number}] {candidate}: {exc}") from None


def pin_user_keys(raw: dict, overrides: list[str]) -> dict:
    """`raw` with each command-line model.*/train.* override also set in every candidate that names its key.

    A candidate replaces the recipe's keys, so without this a user's `model.n_embd=256` would be
    replaced in turn by whichever candidate the machine picked."""
    sizing = raw.get("sizing")
    if not isinstance(sizing, dict) or not isinstance(sizing.get("candidates"), list):
        return raw
    given = {}
    for item in overrides:
        key, _, _ = item.partition("=")
        section, _, name = key.partition(".")
        if section in SIZED_SECTIONS and name and "." not in name:
            given[key] = raw.get(section, {}).get(name)  # the value as apply_overrides parsed it
    candidates = [{**c, **{k: v for k, v in given.items() if k in c}} if isinstance(c, dict) else c
                  for c in sizing["candidates"]]
    return {**raw, "sizing": {**sizing, "candidates": candidates}}
