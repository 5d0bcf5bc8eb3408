"""The search space of a sweep (its `sweep:` section) and the training recipe of each trial.

It reads only the recipe's configs: no Optuna, no training, no files.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmsmith.core.config import ConfigError, apply_overrides, closest_hint, parse_section
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.train import TrainConfig, plan_batch

DISTRIBUTIONS = ("log_uniform", "uniform", "int", "log_int", "choice")
SWEPT_SECTIONS = {"model": ModelConfig, "train": TrainConfig}


# ---------------------------------------------------------------------------------------------
# The search space


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter: its dotted key and where its values come from."""

    key: str  # e.g. train.lr
    kind: str  # one of DISTRIBUTIONS
    values: tuple  # (low, high) for ranges, the options for choice

    def suggest(self, trial) -> Any:
        low_high = self.values
        if self.kind == "log_uniform":
            return trial.suggest_float(self.key, *low_high, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.key, *low_high)
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.key, *low_high, log=self.kind == "log_int")
        return trial.suggest_categorical(self.key, list(self.values))

    def edges(self) -> list:
        """Values at the edges of the space, checked against the recipe before any trial runs."""
        return list(self.values)


def _field_type(section: str, name: str) -> Any:
    return typing.get_type_hints(SWEPT_SECTIONS[section])[name]


def _is_whole_number_field(tp: Any) -> bool:
    args = typing.get_args(tp)
    return tp is int or (args and int in args and float not in args)


def _number_from_text(value: Any) -> Any:
    """YAML 1.1 reads 1e-4 (no dot) as text; a user writing it in a range means the number."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def parse_dimension(key: str, spec: Any, where: str) -> Dimension:
    """One entry of `sweep.space`, with its key and range checked."""
    section, _, name = key.partition(".")
    known = [
        f"{s}.{f.name}" for s, cls in SWEPT_SECTIONS.items() for f in dataclasses.fields(cls) if f.name != "preset"
    ]
    if key not in known:
        hint = closest_hint(
            key, known, "keys are model.* and train.* settings, e.g. train.lr or model.n_layer", cutoff=0.6
        )
        raise ConfigError(f"{where}: unknown key '{key}': {hint}")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}.{key}: give one distribution, e.g. {{log_uniform: [1.0e-4, 1.0e-2]}} "
                          f"(one of {', '.join(DISTRIBUTIONS)})")
    (kind, values), = spec.items()
    if isinstance(values, list):
        values = [_number_from_text(v) for v in values]
    if kind not in DISTRIBUTIONS:
        hint = closest_hint(kind, DISTRIBUTIONS, f"use one of {', '.join(DISTRIBUTIONS)}")
        raise ConfigError(f"{where}.{key}: unknown distribution '{kind}': {hint}")
    here = f"{where}.{key}.{kind}"
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{here}: give a non-empty list of values, e.g. [8192, 16384]")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{here}: the values {values} repeat one: list each once")
        return Dimension(key, kind, tuple(values))
    numbers = isinstance(values, list) and len(values) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not numbers:
        raise ConfigError(f"{here}: give [low, high], two numbers, got {values!r}")
    low, high = values
    if not low < high:
        raise ConfigError(f"{here}: the range [{low}, {high}] is empty: give [low, high] with low < high "
                          f"(for a fixed value, set {key} in the recipe and leave it out of the space)")
    if kind in ("log_uniform", "log_int") and low <= 0:
        raise ConfigError(f"{here}: a log range must be above 0, got [{low}, {high}]: raise the low end or use uniform")
    whole = _is_whole_number_field(_field_type(section, name))
    if kind in ("int", "log_int") and not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{here}: the ends of an int range must be whole numbers, got [{low}, {high}]")
    if whole and kind in ("uniform", "log_uniform"):
        raise ConfigError(
            f"{here}: {key} is a whole number: use {{int: [{math.ceil(low)}, {math.floor(high)}]}} or choice"
        )
    numeric = whole or _field_type(section, name) is float or float in typing.get_args(_field_type(section, name))
    if not numeric:
        raise ConfigError(f"{here}: {key} is not a number: use choice")
    return Dimension(key, kind, (low, high))


@dataclass
class SweepConfig:
    """The `sweep:` section of a recipe."""

    space: dict[str, Any] = field(default_factory=dict)  # dotted key -> {distribution: values}
    trials: int = 20  # the size of the study (--trials)
    budget_minutes: float | None = None  # stop starting trials after this long (--budget-minutes)
    steps: int | None = None  # train.steps of each trial; None: the recipe's
    evals: int = 5  # validation passes per trial, evenly spaced; a trial can be pruned after each
    startup_trials: int = 5  # trials sampled at random (and never pruned) before TPE and the pruner start
    prune_warmup: float = 0.25  # no pruning in this first fraction of a trial's steps
    seed: int | None = None  # the sampler's seed (None: a different search each time)

    def check(self, where: str = "sweep") -> None:
        if not self.space:
            raise ConfigError(f"{where}.space is empty: name what to search, e.g. "
                              f"{where}.space: {{train.lr: {{log_uniform: [1.0e-4, 1.0e-2]}}}}")
        for name in ("trials", "evals"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be at least 1, got {getattr(self, name)}")
        if self.startup_trials < 0:
            raise ConfigError(f"{where}.startup_trials must be 0 or more, got {self.startup_trials}")
        if self.steps is not None and self.steps < 2:
            raise ConfigError(f"{where}.steps must be at least 2, got {self.steps}")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ConfigError(f"{where}.budget_minutes must be positive, got {self.budget_minutes}")
        if not 0.0 <= self.prune_warmup < 1.0:
            raise ConfigError(f"{where}.prune_warmup must be in [0, 1), got {self.prune_warmup}")
        self.dimensions()

    def dimensions(self) -> list[Dimension]:
        return [parse_dimension(str(key), spec, "sweep.space") for key, spec in self.space.items()]


# ---------------------------------------------------------------------------------------------
# From a recipe to one trial's training recipe


@dataclass
class SweepPlan:
    """Everything a trial needs that does not depend on the sampled values."""

    base: dict  # the recipe as a plain dict (sweep section removed)
    config: SweepConfig
    dimensions: list[Dimension]
    data: Path  # the tokens directory every trial trains on

    def trial_train_dict(self, values: dict[str, Any], out: Path) -> dict:
        """The training recipe (data, out, model, train) of one trial as a plain dict."""
        raw = {
            "data": str(self.data),
            "out": str(out),
            "model": copy.deepcopy(self.base.get("model") or {}),
            "train": copy.deepcopy(self.base.get("train") or {}),
        }
        raw = apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in values.items()])
        train = raw["train"]
        steps = self.config.steps or train.get("steps", TrainConfig.steps)
        train["steps"] = steps
        train["max_minutes"] = None  # trials compare at equal steps: a time budget would give each its own
        train["eval_every"] = max(1, steps // self.config.evals)
        train["save_every"] = steps  # a trial is never resumed: one checkpoint, at the end
        train["keep_last"] = 1
        train["early_stop_patience"] = None
        return raw


def check_trial_recipe(raw: dict) -> None:
    """Check a trial's training recipe the way `lmsmith train` will, without touching any file."""
    model = parse_section(ModelConfig, raw["model"], "model")
    train = parse_section(TrainConfig, raw["train"], "train")
    plan_batch(train, model.block_size, 1)


def check_space_edges(plan: SweepPlan) -> None:
    """Each value at the edge of the space, alone, must make a recipe that trains."""
    for dim in plan.dimensions:
        for value in dim.edges():
            raw = plan.trial_train_dict({dim.key: value}, Path("unused"))
            try:
                check_trial_recipe(raw)
            except ConfigError as exc:
                raise ConfigError(f"sweep.space.{dim.key}: the value {value!r} does not fit the recipe ({exc}): "
                                  "narrow the range, or change the recipe") from None


def best_recipe_dict(recipe_raw: dict, values: dict[str, Any]) -> dict:
    """The recipe with the best values written in, its sweep section dropped."""
    raw = {k: copy.deepcopy(v) for k, v in recipe_raw.items() if k != "sweep"}
    return apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in values.items()])
