"""`lmsmith sweep RECIPE --trials N`: a hyperparameter search with Optuna over short training runs.

The recipe's `sweep:` section says what to search and how long each trial trains:

    sweep:
      steps: 300                  # train.steps of each trial (default: the recipe's)
      evals: 6                    # validation passes per trial; a trial can be pruned after each
      space:
        train.lr: {log_uniform: [3.0e-4, 1.0e-2]}
        train.batch_tokens: {choice: [8192, 16384]}
        train.warmup_steps: {int: [0, 100]}
        train.weight_decay: {uniform: [0.0, 0.2]}
        model.dropout: {uniform: [0.0, 0.2]}
        model.n_layer: {int: [2, 6]}

Each trial is one run of the training engine (`lmsmith train`, in a child process) with the
sampled values; its validation losses are reported to Optuna as they are written to the run's
metrics.jsonl, and the median pruner stops a trial whose loss at a step is worse than the median
of earlier trials at that step. The objective is the trial's best validation loss.

    OUT/study.db          the Optuna study (SQLite): run the same command again to continue it;
                          machines that share a database URL (--storage) share one study
    OUT/trials/STUDY/NNNN/  each trial's recipe, training log and run (metrics, best model)
    OUT/results.csv       one row per trial: its values, state, loss, steps, time
    OUT/best.yaml         the recipe with the best trial's values (train.steps as the recipe had it)
    OUT/history.png       the loss of each trial and the best so far
    OUT/importance.png    how much each hyperparameter mattered (fANOVA)
    OUT/curves.png        the validation loss of every trial during training, pruned ones included

`--trials N` is the size of the study: finished, pruned and failed trials count, so a sweep
stopped by Ctrl-C (or by its time budget) continues up to N when run again.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmsmith.atomic import write_bytes, write_json, write_text
from lmsmith.config import ConfigError, ModelConfig, apply_overrides, closest_hint, parse_section, read_yaml
from lmsmith.errors import UserError
from lmsmith.extras import require
from lmsmith.progress import progress_bar
from lmsmith.train.config import TrainConfig, plan_batch
from lmsmith.train.metrics import METRICS

DISTRIBUTIONS = ("log_uniform", "uniform", "int", "log_int", "choice")
SWEPT_SECTIONS = {"model": ModelConfig, "train": TrainConfig}
STUDY_DB, RESULTS, BEST_RECIPE = "study.db", "results.csv", "best.yaml"
PLOTS = {"history": "history.png", "importance": "importance.png", "curves": "curves.png"}
COUNTED = "counted"  # user attribute of a trial that counts towards --trials even though it failed


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


# ---------------------------------------------------------------------------------------------
# One trial: a child `lmsmith train` whose metrics.jsonl is followed as it grows


class TrialFailed(Exception):
    """A trial whose recipe did not fit or whose training stopped with an error; the sweep goes on."""


@dataclass
class TrialOutcome:
    val_losses: list[tuple[int, float]]  # (step, validation loss), in order
    seconds: float
    last_train: dict  # the last training line of metrics.jsonl
    stopped: str | None = None  # why the trial was stopped early: "pruned" or "budget"

    @property
    def best(self) -> float:
        return min(loss for _, loss in self.val_losses)


class MetricsFollower:
    """Reads the lines a running training adds to its metrics.jsonl."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = ""

    def new_records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        text = self.partial + text
        lines = text.split("\n")
        self.partial = lines.pop()  # a line still being written
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return records


def run_trial(recipe_file: Path, run_dir: Path, log_file: Path, on_val_loss: Callable[[int, float], bool],
              deadline: float | None, poll_seconds: float = 0.2) -> TrialOutcome:
    """Train `recipe_file` in a child process; stop it when `on_val_loss` says so or at the deadline."""
    follower = MetricsFollower(run_dir / METRICS)
    outcome = TrialOutcome([], 0.0, {})
    started = time.perf_counter()
    command = [sys.executable, "-m", "lmsmith", "train", "--config", str(recipe_file), "--quiet"]
    with open(log_file, "w", encoding="utf-8") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            while True:
                finished = child.poll() is not None
                for record in follower.new_records():
                    if "val_loss" in record and isinstance(record["val_loss"], (int, float)):
                        outcome.val_losses.append((record["step"], float(record["val_loss"])))
                        if (
                            outcome.stopped is None
                            and not finished
                            and on_val_loss(record["step"], float(record["val_loss"]))
                        ):
                            outcome.stopped = "pruned"
                    elif "loss" in record:
                        outcome.last_train = record
                if outcome.stopped is None and deadline is not None and time.time() > deadline and not finished:
                    outcome.stopped = "budget"
                if finished:
                    break
                if outcome.stopped is not None:
                    stop_child(child)
                    continue  # read what it wrote before it stopped
                time.sleep(poll_seconds)
        finally:
            if child.poll() is None:  # Ctrl-C or an error here: never leave a training behind
                stop_child(child)
    outcome.seconds = time.perf_counter() - started
    if outcome.stopped is None and child.returncode != 0:
        raise TrialFailed(last_error_line(log_file, child.returncode))
    if not outcome.val_losses and outcome.stopped is None:
        raise TrialFailed(f"training wrote no validation loss to {run_dir / METRICS}")
    return outcome


def stop_child(child: subprocess.Popen, grace_seconds: float = 30.0) -> None:
    """SIGTERM (training checkpoints and stops at the end of its step), then SIGKILL if it hangs."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def last_error_line(log_file: Path, returncode: int) -> str:
    text = log_file.read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    detail = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"training exited with code {returncode}: {detail} (log: {log_file})"


def tidy_trial_run(run_dir: Path) -> None:
    """Keep a trial's metrics, config and best model; its checkpoints were only for resuming."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / "model", ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The study


def _optuna():
    optuna = require("optuna", extra="sweep", purpose="lmsmith sweep")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_study(storage_url: str, study_name: str, base: dict, config: SweepConfig):
    """Create or load the study, with a sampler and a pruner set up for this run of the sweep."""
    optuna = _optuna()
    try:
        # A heartbeat marks each running trial alive; one whose process died (power cut, kill -9)
        # is failed by the next trial any machine starts, so a shared study never waits on it.
        storage = optuna.storages.RDBStorage(storage_url, heartbeat_interval=30, grace_period=120)
    except Exception as exc:  # SQLAlchemy's errors for a bad URL or an unreachable server
        raise UserError(f"cannot open the study storage {storage_url!r} ({type(exc).__name__}: {exc}): "
                        "check --storage (e.g. sqlite:///sweep.db or postgresql://user@host/db)") from None
    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize", load_if_exists=True)
    # A resumed sweep with a seed must not replay the random trials it already ran: offset the seed.
    seed = None if config.seed is None else config.seed + len(study.trials)
    study.sampler = optuna.samplers.TPESampler(n_startup_trials=config.startup_trials, seed=seed, multivariate=True)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials, n_warmup_steps=0)
    fingerprint = json.dumps({"model": base.get("model"), "train": base.get("train")}, sort_keys=True, default=str)
    recorded = study.user_attrs.get("recipe")
    if recorded is None:
        study.set_user_attr("recipe", fingerprint)
    elif recorded != fingerprint:
        raise UserError(f"study '{study_name}' in {storage_url} was started from a recipe with other model: or train: "
                        "settings: continue it with that recipe, or start a new study with --study-name NAME")
    return study


def counted_trials(study) -> int:
    """Trials that count towards --trials: finished, pruned, or failed for a reason of their own."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.user_attrs.get(COUNTED)))


@dataclass
class SweepResult:
    out: Path
    study_name: str
    storage: str
    trials: int  # trials in the study that count
    best: dict | None  # number, value, params of the best trial
    files: dict[str, Path]


class Objective:
    """One trial: sample, write the trial's recipe, train in a child process, report, prune."""

    def __init__(self, plan: SweepPlan, trials_dir: Path, deadline: float | None, say: Callable[[str], None]):
        self.plan, self.trials_dir, self.deadline, self.say = plan, trials_dir, deadline, say

    def __call__(self, trial) -> float:
        optuna = _optuna()
        values = {dim.key: dim.suggest(trial) for dim in self.plan.dimensions}
        trial_dir = self.trials_dir / f"{trial.number:04d}"
        if trial_dir.exists():  # left by a study of the same name that was deleted from the storage
            shutil.rmtree(trial_dir)
        trial_dir.mkdir(parents=True)
        raw = self.plan.trial_train_dict(values, trial_dir / "run")
        trial.set_user_attr("dir", str(trial_dir))
        try:
            check_trial_recipe(raw)
        except ConfigError as exc:
            raise self.failed(trial, values, f"the sampled values do not fit together: {exc}") from None
        recipe_file = trial_dir / "recipe.yaml"
        write_text(recipe_file, yaml.safe_dump(raw, sort_keys=False))
        steps = raw["train"]["steps"]
        warmup_step = self.plan.config.prune_warmup * steps

        def on_val_loss(step: int, loss: float) -> bool:
            if not math.isfinite(loss):
                return True
            trial.report(loss, step)
            return warmup_step <= step < steps and trial.should_prune()  # the last evaluation is the result

        try:
            outcome = run_trial(recipe_file, trial_dir / "run", trial_dir / "train.log", on_val_loss, self.deadline)
        except TrialFailed as exc:
            raise self.failed(trial, values, str(exc)) from None
        finally:
            tidy_trial_run(trial_dir / "run")
        reached = outcome.val_losses[-1][0] if outcome.val_losses else 0
        trial.set_user_attr("steps", reached)
        trial.set_user_attr("seconds", round(outcome.seconds, 1))
        trial.set_user_attr("tokens_per_s", outcome.last_train.get("tokens_per_s"))
        if outcome.stopped is not None:
            trial.set_user_attr("stopped", outcome.stopped)
            why = "pruned" if outcome.stopped == "pruned" else "stopped at the time budget"
            last = f"val loss {outcome.val_losses[-1][1]:.4f} " if outcome.val_losses else ""
            self.say(
                f"trial {trial.number}: {why} at step {reached} ({last}after {outcome.seconds:.0f} s) "
                f"{describe(values)}"
            )
            raise optuna.TrialPruned(why)
        best = outcome.best
        if not math.isfinite(best):
            raise self.failed(trial, values, "the validation loss is not finite (training diverged)")
        self.say(f"trial {trial.number}: val loss {best:.4f} in {outcome.seconds:.0f} s {describe(values)}")
        return best

    def failed(self, trial, values: dict, why: str) -> TrialFailed:
        """A failure that counts towards --trials (unlike Ctrl-C), recorded with its reason."""
        trial.set_user_attr(COUNTED, True)
        trial.set_user_attr("error", why)
        self.say(f"trial {trial.number}: failed: {why} {describe(values)}")
        return TrialFailed(why)


def describe(values: dict) -> str:
    return "(" + ", ".join(f"{k}={format_value(v)}" for k, v in values.items()) + ")"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Results: a table, a CSV, the best recipe, plots


def trial_state(trial) -> str:
    """complete, pruned, budget (stopped at the time budget), failed, interrupted or running."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return "failed" if trial.user_attrs.get(COUNTED) else "interrupted"
    return trial.user_attrs.get("stopped") or trial.state.name.lower()


def trial_rows(study, keys: list[str]) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({
            "trial": t.number, "state": trial_state(t),
            "val_loss": t.value, "steps": t.user_attrs.get("steps"), "seconds": t.user_attrs.get("seconds"),
            **{k: t.params.get(k) for k in keys}, "note": t.user_attrs.get("error", ""),
        })
    return rows


def write_results_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buffer.getvalue())


def print_results(rows: list[dict], keys: list[str], best_number: int | None, console) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="lmsmith sweep", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # Column titles without the section when that stays unambiguous: the table must fit a terminal.
    short = [k.split(".", 1)[1] for k in keys]
    titles = short if len(set(short)) == len(short) else keys
    for name in ("trial", "state", "val loss", "steps", "s", *titles):
        table.add_column(name, justify="left" if name == "state" else "right")
    ranked = sorted(
        rows, key=lambda r: (r["val_loss"] is None, r["val_loss"] if r["val_loss"] is not None else 0, r["trial"])
    )
    for row in ranked:
        style = "bold green" if row["trial"] == best_number else None
        loss = f"{row['val_loss']:.4f}" if row["val_loss"] is not None else "-"
        table.add_row(str(row["trial"]), row["state"], loss, str(row["steps"] or "-"),
                      f"{row['seconds']:.0f}" if row["seconds"] is not None else "-",
                      *(format_value(row[k]) if row[k] is not None else "-" for k in keys), style=style)
    console.print(table)


def write_best_recipe(
    path: Path, recipe_raw: dict, best, study_name: str, recipe_path: Path | None, steps: int
) -> None:
    raw = best_recipe_dict(recipe_raw, best.params)
    source = str(recipe_path) if recipe_path is not None else "the default recipe"
    header = (f"# The best of study '{study_name}' (lmsmith sweep {source}): trial {best.number}, "
              f"validation loss {best.value:.4f} after {steps} steps.\n"
              f"# train.steps is the recipe's own; the trials were shorter. Train it with: lmsmith build {path}\n")
    write_text(path, header + yaml.safe_dump(raw, sort_keys=False))


def save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


def write_plots(study, out: Path) -> dict[str, Path]:
    """The PNG plots; a plot that needs more finished trials than there are is left out."""
    try:
        import matplotlib
    except ImportError:  # the study and the best recipe are what matter; say how to get the plots
        return {}
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_plots

    written = {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    varied = {k for t in complete for k in t.params if len({repr(u.params.get(k)) for u in complete}) > 1}
    makers = {
        "history": (
            lambda: optuna_plots.plot_optimization_history(study, target_name="validation loss"),
            len(complete) >= 1,
        ),
        "importance": (lambda: optuna_plots.plot_param_importances(study, target_name="validation loss"),
                       len(complete) >= 2 and varied),
        "curves": (lambda: plot_curves(study), any(t.intermediate_values for t in study.get_trials(deepcopy=False))),
    }
    for name, (make, possible) in makers.items():
        if not possible:
            continue
        ax = make()
        fig = ax.figure
        save_figure(fig, out / PLOTS[name])
        plt.close(fig)
        written[name] = out / PLOTS[name]
    return written


def plot_curves(study):
    """Validation loss against step for every trial: finished ones solid, pruned ones dashed."""
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    fig, ax = plt.subplots(figsize=(7, 4.2))
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    best = study.best_trial.number if any(t.state == TrialState.COMPLETE for t in trials) else None
    for t in trials:
        steps = sorted(t.intermediate_values)
        losses = [t.intermediate_values[s] for s in steps]
        if t.number == best:
            ax.plot(
                steps, losses, color="tab:green", linewidth=2.2, marker="o", markersize=3,
                label=f"best (trial {t.number})", zorder=3,
            )
        elif t.state == TrialState.PRUNED:
            ax.plot(steps, losses, color="tab:red", alpha=0.6, linestyle="--", linewidth=1, marker="x", markersize=5)
        else:
            ax.plot(steps, losses, color="tab:blue", alpha=0.6, linewidth=1)
    ax.plot([], [], color="tab:blue", label="finished")
    ax.plot([], [], color="tab:red", linestyle="--", marker="x", label="pruned")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats per token)")
    ax.set_title("Validation loss of each trial")
    ax.grid(alpha=0.3)
    ax.legend()
    values = [v for t in trials for v in t.intermediate_values.values() if math.isfinite(v)]
    last = [t.intermediate_values[max(t.intermediate_values)] for t in trials]
    last = [v for v in last if math.isfinite(v)]
    if values and last:  # first evaluations sit far above the rest: show down from where each trial ended
        low, high = min(values), max(last)
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.25 * (high - low + 1e-9))
    return ax


# ---------------------------------------------------------------------------------------------
# The command


def load_sweep_recipe(recipe_arg: str | None, overrides: list[str]):
    """The build recipe, its sweep section checked, and the recipe as written (plus overrides)."""
    from lmsmith.recipe import find_recipe, load_recipe

    recipe = load_recipe(recipe_arg, overrides)
    if recipe.sweep is None:
        raise ConfigError(f"{recipe.path or recipe.name} has no sweep: section: add one with a space, e.g. "
                          "sweep: {space: {train.lr: {log_uniform: [1.0e-4, 1.0e-2]}}}")
    as_written = apply_overrides(read_yaml(find_recipe(recipe_arg)), overrides)
    return recipe, parse_section(SweepConfig, recipe.sweep, "sweep"), as_written


def prepare_tokens(recipe, data: str | None, workdir: str | None, quiet: bool) -> Path:
    """The tokens every trial trains on: --data, or the recipe's stages up to tokenize (as build makes them)."""
    if data is not None:
        from lmsmith.tokens_dir import open_tokens_dir

        open_tokens_dir(data)  # refuse a wrong directory before the first trial
        return Path(data).resolve()
    from lmsmith.build import Workdir, build, default_workdir

    root = Path(workdir) if workdir is not None else default_workdir(recipe)
    build(recipe, root, until="tokenize", quiet=quiet)
    return Workdir(root).tokens.resolve()


def sweep(recipe_arg: str | None, overrides: list[str] = (), *, trials: int | None = None,
          budget_minutes: float | None = None, out: str | None = None, storage: str | None = None,
          study_name: str | None = None, data: str | None = None, workdir: str | None = None,
          quiet: bool = False) -> SweepResult:
    """Run (or continue) a study until it holds `trials` trials or the time budget is spent."""
    from rich.console import Console

    recipe, config, as_written = load_sweep_recipe(recipe_arg, list(overrides))
    if trials is not None:
        config.trials = trials
    if budget_minutes is not None:
        config.budget_minutes = budget_minutes
    config.check()
    out_dir = Path(out) if out is not None else Path("sweeps") / recipe.name
    from lmsmith.output import check_output

    check_output(out_dir, "sweep")  # never over a folder of the user's own results.csv or best.yaml
    base = {k: v for k, v in recipe.to_dict().items() if k != "sweep"}
    plan = SweepPlan(base, config, config.dimensions(), Path("."))
    check_space_edges(plan)  # before any data is prepared: a bad space costs nothing
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # a log file: no reason to squeeze the results table into 80 columns
        console = Console(stderr=True, highlight=False, soft_wrap=True, width=160)
    say = (lambda text: None) if quiet else (lambda text: console.print(text, markup=False))

    plan.data = prepare_tokens(recipe, data, workdir, quiet)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "manifest.json").is_file():  # marks the directory as a sweep's, so later runs may continue it
        from lmsmith.manifest import make_manifest

        write_json(
            out_dir / "manifest.json", make_manifest("sweep", config={"recipe": str(recipe.path or recipe.name)})
        )
    storage_url = storage or f"sqlite:///{(out_dir / STUDY_DB).resolve()}"
    name = study_name or recipe.name
    study = open_study(storage_url, name, base, config)
    done_before = counted_trials(study)
    remaining = config.trials - done_before

    def finish() -> SweepResult:
        return finish_sweep(study, plan, out_dir, storage_url, as_written, recipe.path, quiet, console)

    if remaining <= 0:
        say(f"study '{name}' already holds {done_before} trials (--trials {config.trials}): raise --trials to run more")
        return finish()
    budget_s = 60 * config.budget_minutes if config.budget_minutes else None
    steps = plan.trial_train_dict({}, Path("unused"))["train"]["steps"]
    say(f"sweep '{name}': {remaining} trial(s) of {steps} steps each"
        + (f" ({done_before} already in the study)" if done_before else "")
        + (f", at most {config.budget_minutes:g} minutes" if budget_s else "") + f"; storage {storage_url}")

    with SweepProgress(config.trials, done_before, quiet) as progress:
        def after_trial(study, _trial) -> None:
            counted = counted_trials(study)
            progress.update(counted)
            if counted >= config.trials:  # machines sharing the study stop together at --trials
                study.stop()

        objective = Objective(plan, out_dir / "trials" / name, time.time() + budget_s if budget_s else None, say)
        try:
            study.optimize(
                objective, n_trials=remaining, timeout=budget_s, callbacks=[after_trial], catch=(TrialFailed,)
            )
        except KeyboardInterrupt:
            progress.stop()
            say("stopped: the finished trials are kept in the study; run the same command again to continue it")
            finish()
            raise
    return finish()


class SweepProgress:
    """A bar of the study's trials with elapsed time and ETA."""

    def __init__(self, total: int, done: int, quiet: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = progress_bar(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("trials"),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), quiet=quiet,
                                transient=False)
        self.task = self.bar.add_task("sweep", total=total, completed=done)

    def __enter__(self) -> SweepProgress:
        self.bar.start()
        return self

    def update(self, done: int) -> None:
        self.bar.update(self.task, completed=done)

    def stop(self) -> None:
        self.bar.stop()

    def __exit__(self, *exc) -> None:
        self.stop()


def finish_sweep(study, plan: SweepPlan, out_dir: Path, storage_url: str, as_written: dict,
                 recipe_path: Path | None, quiet: bool, console) -> SweepResult:
    """Write the results, the best recipe and the plots; print the table."""
    from optuna.trial import TrialState

    keys = [dim.key for dim in plan.dimensions]
    rows = trial_rows(study, keys)
    files = {"study": out_dir / STUDY_DB} if (out_dir / STUDY_DB).is_file() else {}
    write_results_csv(out_dir / RESULTS, rows)
    files["results"] = out_dir / RESULTS
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        best_trial = study.best_trial
        best = {"number": best_trial.number, "value": best_trial.value, "params": dict(best_trial.params)}
        write_best_recipe(out_dir / BEST_RECIPE, as_written, best_trial, study.study_name, recipe_path,
                          best_trial.user_attrs.get("steps") or 0)
        files["best"] = out_dir / BEST_RECIPE
    files.update(write_plots(study, out_dir))
    if not quiet:
        print_results(rows, keys, best["number"] if best else None, console)
        if best:
            console.print(f"best: trial {best['number']}, val loss {best['value']:.4f} {describe(best['params'])}; "
                          f"recipe written to {files['best']}", markup=False)
        else:
            console.print("no trial finished yet, so there is no best recipe: run the sweep again to continue it")
        plots = ", ".join(str(p) for k, p in files.items() if k in PLOTS)
        if plots:
            console.print(f"plots: {plots}", markup=False)
        elif importlib.util.find_spec("matplotlib") is None:
            console.print("no plots: they need matplotlib (pip install 'lmsmith[sweep]')", markup=False)
    return SweepResult(out_dir, study.study_name, storage_url, counted_trials(study), best, files)


def load_config(stage, recipe_file, overrides: list[str], flags: dict):
    """A sweep reads its recipe (the positional input) itself; the flags and overrides go with it."""
    return {"recipe": recipe_file, "overrides": list(overrides), **{k.split(".", 1)[1]: v for k, v in flags.items()}}


def run(config: dict, inputs: dict, out: str | Path | None = None, *, quiet: bool = False, storage: str | None = None,
        study_name: str | None = None, data: str | None = None, workdir: str | None = None) -> dict:
    """The sweep stage: run (or continue) a study; returns what it found."""
    result = sweep(config["recipe"], config["overrides"], trials=config.get("trials"),
                   budget_minutes=config.get("budget_minutes"), out=out, storage=storage, study_name=study_name,
                   data=data, workdir=workdir, quiet=quiet)
    return {"stage": "sweep", "study": result.study_name, "trials": result.trials}
