"""The Optuna study of a sweep: its objective (one trial), the sweep driver and the `lmsmith sweep` stage."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from lmsmith.build import build, default_workdir
from lmsmith.core.atomic import write_json, write_text
from lmsmith.core.config import ConfigError, apply_overrides, parse_section, read_yaml
from lmsmith.core.errors import UserError
from lmsmith.core.extras import require
from lmsmith.core.progress import progress_bar
from lmsmith.schema.recipe import find_recipe, load_recipe
from lmsmith.schema.stage import Flag, Input, Option, Stage
from lmsmith.schema.sweep import SweepConfig, SweepPlan, check_space_edges, check_trial_recipe
from lmsmith.stages import STAGE_BY_NAME
from lmsmith.sweep.plots import PLOTS, write_plots
from lmsmith.sweep.results import (
    BEST_RECIPE,
    COUNTED,
    RESULTS,
    describe,
    print_results,
    trial_rows,
    write_best_recipe,
    write_results_csv,
)
from lmsmith.sweep.trials import TrialFailed, run_trial, tidy_trial_run

STUDY_DB = "study.db"


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



# ---------------------------------------------------------------------------------------------
# The command


def load_sweep_recipe(recipe_arg: str | None, overrides: list[str]):
    """The build recipe, its sweep section checked, and the recipe as written (plus overrides)."""
    recipe = load_recipe(recipe_arg, overrides, STAGE_BY_NAME)
    if recipe.sweep is None:
        raise ConfigError(f"{recipe.path or recipe.name} has no sweep: section: add one with a space, e.g. "
                          "sweep: {space: {train.lr: {log_uniform: [1.0e-4, 1.0e-2]}}}")
    as_written = apply_overrides(read_yaml(find_recipe(recipe_arg)), overrides)
    return recipe, parse_section(SweepConfig, recipe.sweep, "sweep"), as_written


def prepare_tokens(recipe, data: str | None, workdir: str | None, quiet: bool) -> Path:
    """The tokens every trial trains on: --data, or the recipe's stages up to tokenize (as build makes them)."""
    if data is not None:
        from lmsmith.text.tokens_dir import open_tokens_dir

        open_tokens_dir(data)  # refuse a wrong directory before the first trial
        return Path(data).resolve()
    root = Path(workdir) if workdir is not None else default_workdir(recipe)
    result = build(recipe, root, until="tokenize", quiet=quiet)
    return result.steps[-1].output.resolve()


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
    from lmsmith.core.output import check_output

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
        from lmsmith.core.manifest import make_manifest

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


SWEEP = Stage(
    "sweep", "search hyperparameters with Optuna: short training runs, median pruning",
    sections={"sweep": SweepConfig}, run=run, load_config=load_config, output="optional", config_input="recipe",
    inputs=(Input("recipe", "recipe YAML with a sweep: section (or a shipped recipe's name)", required=False,
                  metavar="RECIPE"),),
    flags=(Flag("--trials", "sweep.trials", "trials in the study, counting those of earlier runs"),
           Flag("--budget-minutes", "sweep.budget_minutes", "stop after this many minutes; run again to continue")),
    options=(Option("--storage", "Optuna storage shared by machines, e.g. postgresql://host/db", metavar="URL"),
             Option("--study-name", "the study's name in the storage (default: the recipe's name)"),
             Option("--data", "train every trial on these tokens instead of building them", metavar="TOKENS_DIR"),
             Option("--workdir", "where the recipe's data stages are built (default: work/NAME)")),
    output_help="sweep directory: study, trials, results, best recipe, plots (default: sweeps/NAME)",
)
