"""`lmsmith exam MODEL... --tasks TASK...`: score models on tasks a team wrote, side by side.

Every model answers the same items. The table puts models in rows and tasks in columns, each
score with its standard error and item count; with two models or more, each later model is
compared with the first on the same items (a paired test), so a difference smaller than the
noise is called that. `-o DIR` keeps every item's output and score (exam.json), a page with the
table and the items where the models disagree (exam.html), and a manifest;
`--failures FILE` writes each item a model got wrong with its answer (exam/failures.py: SQL and
exact-match failures are DPO pairs as they stand); `--json` prints the one object scripts rely on:

    {"models": {MODEL: {TASK: {"metric", "score", "stderr", "n", "item_scores": [...]}}}}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import warnings
from pathlib import Path

from lmsmith.core.atomic import write_json
from lmsmith.core.errors import UserError
from lmsmith.core.extras import require
from lmsmith.exam.failures import failures, write_failures
from lmsmith.exam.items import Task, read_task, task_files
from lmsmith.exam.models import open_model
from lmsmith.exam.page import exam_page
from lmsmith.exam.scoring import TaskResult, score_task
from lmsmith.exam.stats import paired_test
from lmsmith.schema.exam import ExamConfig

STAGE = "exam"
EXAM_JSON = "exam.json"
EXAM_HTML = "exam.html"


def finite(value):
    """NaN (a standard error of one item) as null, so the output is JSON every reader accepts."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def read_tasks(cfg: ExamConfig, quiet: bool) -> list[Task]:
    """Every task, checked before any model loads; skipped lines are named (and hidden with --quiet)."""
    tasks = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in task_files(cfg.tasks):
            tasks.append(read_task(path, cfg.limit))
    if not quiet:
        import sys

        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
    return tasks


def comparisons(results: dict[str, dict[str, TaskResult]]) -> list[dict]:
    """Each later model against the first, task by task, on the items both were scored on."""
    names = list(results)
    found = []
    for other in names[1:]:
        for task, base in results[names[0]].items():
            test = paired_test(results[other][task].item_scores, base.item_scores)
            found.append({"model": other, "against": names[0], "task": task, **test.to_dict()})
    return found


def exam_record(results: dict[str, dict[str, TaskResult]], compared: list[dict], cfg: ExamConfig) -> dict:
    """exam.json: the scripts' object, plus every item's outputs, the side metrics and the comparisons."""
    models = {model: {task: {**r.summary(), "side": r.side_summary(), "contaminated": r.contaminated_count,
                             "items": r.items}
                      for task, r in by_task.items()} for model, by_task in results.items()}
    return finite({"models": models, "comparisons": compared, "config": dataclasses.asdict(cfg)})


def script_object(results: dict[str, dict[str, TaskResult]]) -> dict:
    return finite({"models": {model: {task: r.summary() for task, r in by_task.items()}
                              for model, by_task in results.items()}})


def _cell(score, error) -> str:
    if score is None:
        return "-"
    return f"{score:.3f} ± {error:.3f}" if error is not None else f"{score:.3f}"


TABLE_SIDE = ("acc_norm", "exact_match")  # the side metrics worth a column; exam.json keeps them all


def exam_table(record: dict):
    """Models by tasks: each main metric (and side metric) with its standard error; items in the header."""
    from rich.table import Table

    models = record["models"]
    first = next(iter(models.values()))
    table = Table(title="exam: score ± standard error", title_justify="left")
    table.add_column("model")
    columns = []
    for task, summary in first.items():
        for side in (None, *[s for s in summary.get("side", {}) if s in TABLE_SIDE]):
            columns.append((task, side))
            table.add_column(f"{task} (n={summary['n']})\n{side or summary['metric']}", justify="right")
    for model, by_task in models.items():
        cells = []
        for task, side in columns:
            s = by_task[task] if side is None else by_task[task]["side"][side]
            cells.append(_cell(s["score"], s["stderr"]))
        table.add_row(model, *cells)
    return table


def comparison_lines(compared: list[dict]) -> list[str]:
    lines = []
    for c in compared:
        if c["difference"] is None:
            continue
        verdict = "larger than the noise" if c["significant"] else "within the noise"
        error = f" ± {c['stderr']:.3f}" if c["stderr"] is not None else ""
        p = f", p = {c['p_value']:.3g}" if c["p_value"] is not None else ""
        lines.append(f"{c['model']} vs {c['against']} on {c['task']}: {c['difference']:+.3f}{error}{p} "
                     f"over {c['n']} items: {verdict}")
    return lines


def print_record(record: dict) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    console.print(exam_table(record))
    for line in comparison_lines(record.get("comparisons", [])) + contamination_lines(record):
        console.print(line)


def mark_contaminated(model, tasks: list[Task], results: dict[str, TaskResult], decontaminated: bool) -> None:
    """Flag items whose 13-grams are in the model's training text; with `decontaminated`, score without them."""
    from lmsmith.exam.contamination import flagged, training_sources

    path = getattr(model, "path", None)
    sources = training_sources(path) if path is not None else []
    if not sources:
        return
    hits = flagged([item for task in tasks for item in task.items], sources)
    at = 0
    for task in tasks:
        mine, at = hits[at:at + len(task.items)], at + len(task.items)
        result = results[task.name]
        result.contaminated = mine
        for k, hit in enumerate(mine):
            if hit and result.items[k] is not None:
                result.items[k]["contaminated"] = True
                if decontaminated:
                    result.item_scores[k] = None


def harness_results(model, names: list[str], cfg: ExamConfig) -> dict[str, TaskResult]:
    """lm-evaluation-harness's own tasks on `model` (wrapped as its LM class): each document's score, in order."""
    from lmsmith.exam.harness import harness_lm

    evaluator = require("lm_eval", extra="dev", package="lm-eval", purpose="--lm-eval")
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=cfg.lm_eval_include) if cfg.lm_eval_include else TaskManager()
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise UserError(f"--lm-eval {unknown[0]}: lm-evaluation-harness has no such task: check the name "
                        "(`lm_eval ls tasks`), or point exam.lm_eval_include at a folder of task YAMLs")
    found = evaluator.simple_evaluate(model=harness_lm(model), tasks=names, task_manager=manager, log_samples=True,
                                      limit=cfg.limit, random_seed=cfg.seed, numpy_random_seed=cfg.seed,
                                      torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)
    results = {}
    for name, samples in found["samples"].items():
        samples = sorted(samples, key=lambda s: s["doc_id"])
        metric = next((m for m in ("acc", "exact_match") if m in samples[0]),
                      next(k for k, v in samples[0].items() if isinstance(v, (int, float)) and k != "doc_id"))
        scores = [float(s[metric]) for s in samples]
        items = [{"where": f"lm-eval {name} doc {s['doc_id']}", "kind": "lm-eval", "score": score,
                  **{k: s[k] for k in ("acc_norm",) if k in s}} for s, score in zip(samples, scores)]
        results[f"lm-eval:{name}"] = TaskResult(f"lm-eval:{name}", metric, scores, items)
    return results


def contamination_lines(record: dict) -> list[str]:
    lines = []
    for model, by_task in record["models"].items():
        for task, r in by_task.items():
            if r.get("contaminated"):
                lines.append(f"{model} on {task}: {r['contaminated']} items possibly contaminated (13 words in a row "
                             "also in its training data); --decontaminated scores without them")
    return lines


@contextlib.contextmanager
def exam_progress(total: int, quiet: bool):
    """A bar over (model, task) pairs, naming the last one scored; nothing with --quiet or without a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from lmsmith.core.progress import progress_bar

    bar = progress_bar(TextColumn("[bold]exam"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                       TimeRemainingColumn(), quiet=quiet)
    task = bar.add_task("", total=total)
    bar.start()
    try:
        yield lambda done: bar.update(task, advance=1, description=done)
    finally:
        bar.stop()


def write_output(out: Path, record: dict, cfg: ExamConfig, models: list[str], local: list[str],
                 tasks: list[Task]) -> None:
    """exam.json, exam.html and the manifest, replacing `out` as a whole."""
    from lmsmith.core.output import input_record, stage_directory, write_manifest

    with stage_directory(out, STAGE, reads=local + [str(t.path) for t in tasks]) as tmp:
        write_json(tmp / EXAM_JSON, record)
        (tmp / EXAM_HTML).write_text(exam_page(record, comparison_lines(record["comparisons"])), encoding="utf-8")
        counts = {f"{m} {t}": {"score": r["score"], "n": r["n"]} for m, by in record["models"].items()
                  for t, r in by.items()}
        write_manifest(tmp, STAGE, config=dataclasses.asdict(cfg), counts=counts,
                       inputs={"models": [input_record(m) if Path(m, "manifest.json").is_file() else {"path": m}
                                          for m in local] + [{"url": m} for m in models if m not in local],
                               "tasks": [{"path": str(t.path)} for t in tasks]})


def check_failures_path(path: str | None, tasks: list[Task]) -> None:
    """Refuse a --failures file that would overwrite a folder or a task, before any model is scored."""
    if not path:
        return
    if Path(path).is_dir():
        raise UserError(f"--failures {path} is a folder: give the JSONL file to write the failed items to")
    if any(Path(path).resolve() == t.path.resolve() for t in tasks):
        raise UserError(f"--failures {path} is one of the tasks: give another file to write the failed items to")


def run(config, inputs: dict, out: str | Path | None = None, *, quiet: bool = False, as_json: bool = False,
        decontaminated: bool = False) -> dict:
    """The exam stage: every model in `inputs["models"]` on every task of `config.exam.tasks`."""
    from lmsmith.core.output import check_output

    cfg: ExamConfig = config.exam
    cfg.check("exam")
    models = list(inputs["models"])
    if not cfg.tasks and not cfg.lm_eval and len(models) > 1:  # `lmsmith exam MODEL TASK...`
        models, cfg.tasks = models[:1], models[1:]
    twice = next((m for m in models if models.count(m) > 1), None)
    if twice:
        raise UserError(f"the model {twice} is named twice: name each model once")
    harness_tasks = [name for given in cfg.lm_eval for name in given.split(",") if name]
    tasks = read_tasks(cfg, quiet or as_json) if cfg.tasks or not harness_tasks else []
    local = [m for m in models if not m.startswith(("http://", "https://"))]
    if out is not None:  # refuse a bad -o before minutes of scoring
        check_output(out, STAGE, reads=local + [str(t.path) for t in tasks])
    check_failures_path(cfg.failures, tasks)
    results: dict[str, dict[str, TaskResult]] = {}
    with exam_progress(len(models) * len(tasks), quiet or as_json) as advance:
        for name in models:
            model = open_model(name, cfg)
            results[name] = {}
            for task in tasks:
                results[name][task.name] = score_task(model, task, cfg)
                advance(f"{name}: {task.name}")
            mark_contaminated(model, tasks, results[name], decontaminated)
            if harness_tasks:
                results[name].update(harness_results(model, harness_tasks, cfg))
    record = exam_record(results, comparisons(results), cfg)
    if cfg.failures:
        write_failures(cfg.failures, failures(results, tasks))
    if out is not None:
        write_output(Path(out), record, cfg, models, local, tasks)
    if as_json:
        print(json.dumps(script_object(results)))
    else:
        print_record(record)
    return record


def show(out: Path) -> None:
    """The table a finished exam step wrote, as `lmsmith exam` prints it (at the end of a build)."""
    print_record(json.loads((Path(out) / EXAM_JSON).read_text(encoding="utf-8")))
