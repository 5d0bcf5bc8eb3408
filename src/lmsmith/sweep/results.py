"""The results of a sweep: a table, results.csv and the best recipe, read from the study's trials."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml

from lmsmith.core.atomic import write_text
from lmsmith.schema.sweep import best_recipe_dict

RESULTS, BEST_RECIPE = "results.csv", "best.yaml"
COUNTED = "counted"  # user attribute of a trial that counts towards --trials even though it failed


def describe(values: dict) -> str:
    return "(" + ", ".join(f"{k}={format_value(v)}" for k, v in values.items()) + ")"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Results: a table, a CSV, the best recipe


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
