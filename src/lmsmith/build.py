"""`lmsmith build`: every stage of one recipe, in order, into one work directory.

    WORKDIR/data/        curate       the inputs, cleaned, deduplicated, split into train/val/test
    WORKDIR/tokenizer/   tokenizer    trained on the train split
    WORKDIR/tokens/      tokenize     every split as token shards
    WORKDIR/runs/main/   train        checkpoints, metrics.jsonl, the final model in model/
    WORKDIR/eval/        eval         loss, perplexity and bits per byte on the held-out split
    WORKDIR/samples/     generate     a few texts the model wrote
    WORKDIR/build.json   what build has done: each stage's key and the fingerprint of its output
    WORKDIR/recipe.yaml  the recipe as it was resolved (defaults and overrides included)

A stage's key is a hash of its config and of what it reads: the inputs (their sizes and
modification times, as `make` does) or the manifest of the stage before it. A stage is up to
date when build.json holds the same key and its output's manifest is still the one it wrote;
it is then skipped. A stage that runs again makes a new manifest, so everything after it runs
again too. Training that stops (Ctrl-C, a crash) leaves checkpoints, and a later build with
the same key resumes from the newest one instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml

from lmsmith.core.atomic import write_json, write_text
from lmsmith.core.config import section_to_dict
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import manifest_or_none, read_manifest
from lmsmith.schema.recipe import Recipe, build_stage_names
from lmsmith.schema.train import plan_batch

STATE = "build.json"
RESOLVED_RECIPE = "recipe.yaml"
RESULT, SAMPLES = "result.json", "samples.json"


@dataclass(frozen=True)
class Workdir:
    """Where each stage of a build writes."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def run(self) -> Path:
        return self.root / "runs" / "main"

    @property
    def model(self) -> Path:
        return self.run / "model"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def output(self, stage: str) -> Path:
        """The directory whose manifest.json marks the stage as finished."""
        return {"curate": self.data, "tokenizer": self.tokenizer, "tokenize": self.tokens, "train": self.model,
                "eval": self.eval, "generate": self.samples}[stage]


def default_workdir(recipe: Recipe) -> Path:
    return Path("work") / recipe.name


# ---------------------------------------------------------------------------------------------
# Fingerprints: what a stage read, and what it wrote


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def input_fingerprint(spec: str) -> dict:
    """A cheap fingerprint of one input: sizes and modification times of its files, like `make`.

    The standard library is fixed for a Python installation; a Hugging Face dataset is known by
    its name only (one updated on the Hub is not noticed: `--force curate` fetches it again).
    """
    if spec == "stdlib":
        from lmsmith.data.sources.stdlib import stdlib_root

        return {"stdlib": str(stdlib_root()), "python": platform.python_version()}
    if spec.startswith("hf:"):
        return {"hf": spec}
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"input '{spec}' does not exist: check the path in the recipe (or its override)")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return {"path": str(path.resolve()), "files": len(files), "stat_sha256": _digest(stats)}


def output_fingerprint(directory: Path) -> str | None:
    """A hash of the manifest a stage wrote (its creation time left out); None when there is none."""
    manifest = manifest_or_none(directory)
    if manifest is None:
        return None
    manifest.pop("created", None)
    return _digest(manifest)


def stage_reads(stage: str, recipe: Recipe, work: Workdir) -> dict:
    """Everything a stage's output depends on: its config, and fingerprints of what it reads."""
    if stage == "curate":
        return {"curate": section_to_dict(recipe.curate),
                "inputs": [input_fingerprint(i) for i in recipe.curate.inputs]}
    if stage in ("tokenizer", "tokenize"):
        data = (output_fingerprint(work.data) if recipe.curate is not None
                else [input_fingerprint(i) for i in recipe.tokenize.inputs])
        reads = {stage: section_to_dict(getattr(recipe, stage)), "data": data}
        if stage == "tokenize":
            reads["tokenizer"] = output_fingerprint(work.tokenizer)
        return reads
    if stage == "train":
        return {"model": section_to_dict(recipe.model), "train": section_to_dict(recipe.train),
                "tokens": output_fingerprint(work.tokens)}
    # eval and generate read the trained model (and eval the tokens of its split)
    return {stage: section_to_dict(getattr(recipe, stage)), "model": output_fingerprint(work.model),
            "tokens": output_fingerprint(work.tokens) if stage == "eval" else None}


def stage_key(stage: str, recipe: Recipe, work: Workdir) -> str:
    return _digest({"stage": stage, **stage_reads(stage, recipe, work)})


class BuildState:
    """build.json: for each stage, the key it ran with and the fingerprint of what it wrote."""

    def __init__(self, work: Workdir):
        self.path = work.root / STATE
        self.stages: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.stages = json.loads(self.path.read_text(encoding="utf-8")).get("stages", {})
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                self.stages = {}  # a damaged record only costs a rebuild

    def up_to_date(self, stage: str, key: str, output: Path) -> bool:
        record = self.stages.get(stage, {})
        return (record.get("key") == key and record.get("output") is not None
                and record["output"] == output_fingerprint(output))

    def started(self, stage: str) -> str | None:
        """The key of an unfinished run of the stage (training resumes only with the same key)."""
        record = self.stages.get(stage, {})
        return record.get("key") if record.get("output") is None else None

    def record(self, stage: str, key: str, output: Path | None, seconds: float | None = None) -> None:
        self.stages[stage] = {"key": key, "output": output_fingerprint(output) if output is not None else None,
                              "seconds": None if seconds is None else round(seconds, 1)}
        write_json(self.path, {"stages": self.stages})


def check_workdir(work: Workdir) -> None:
    """A build writes only into a new directory or one an earlier build made."""
    root = work.root
    if root.is_file():
        raise UserError(f"-o {root} is a file: give a directory for the build")
    if root.is_dir() and any(root.iterdir()) and not (root / STATE).is_file():
        raise UserError(f"{root} already holds files that no build made (it has no {STATE}): "
                        "choose a new directory with -o; it is kept as it is")


# ---------------------------------------------------------------------------------------------
# The stages


def stage_config_of(recipe: Recipe, stage) -> SimpleNamespace:
    """The sections of the recipe that a stage reads, as that stage's config."""
    return SimpleNamespace(**{name: getattr(recipe, name) for name in stage.sections})


def stage_inputs(name: str, recipe: Recipe, work: Workdir) -> dict:
    """What each stage reads inside a work directory: the output of the stage before it."""
    data = [str(work.data)] if recipe.curate is not None else list(recipe.tokenize.inputs)
    return {
        "curate": {"sources": list(recipe.curate.inputs) if recipe.curate is not None else []},
        "tokenizer": {"data": data},
        "tokenize": {"data": data, "tokenizer": str(work.tokenizer)},
        "eval": {"model": str(work.model), "data": str(work.tokens)},
        "generate": {"model": str(work.model)},
    }[name]


def run_stage(name: str, recipe: Recipe, work: Workdir, quiet: bool) -> None:
    """One stage of the build: the same function its verb calls, on the work directory's paths."""
    from lmsmith.stages import stage_named

    stage = stage_named(name)
    stage.run(stage_config_of(recipe, stage), stage_inputs(name, recipe, work), work.output(name), quiet=quiet)


def run_train(recipe: Recipe, work: Workdir, quiet: bool, resume: bool, nproc_per_node: int) -> None:
    from lmsmith.schema.train import recipe_to_dict

    train_recipe = recipe.train_recipe(work.tokens.resolve(), work.run.resolve())
    if not resume:
        remove_run(work.run)
    if nproc_per_node == 1:
        from lmsmith.stages import stage_named

        stage = stage_named("train")
        stage.run(stage_config_of(recipe, stage), {"tokens": str(work.tokens.resolve())}, work.run.resolve(),
                  quiet=quiet, resume="auto" if resume else None)
        return
    # Many processes: torchrun starts them, each runs `lmsmith train` on the resolved training recipe.
    recipe_file = work.root / "train.yaml"
    write_text(recipe_file, yaml.safe_dump(recipe_to_dict(train_recipe), sort_keys=False))
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
                "-m", "lmsmith", "train", "--config", str(recipe_file), "--resume", "auto"]
               + (["--quiet"] if quiet else []))
    finished = subprocess.run(command)
    if finished.returncode == 130 or finished.returncode == -2:
        raise KeyboardInterrupt
    if finished.returncode != 0:
        raise UserError(f"training under torchrun failed (exit code {finished.returncode}); "
                        "the messages above say why. "
                        "Fix it and run the same build again: training resumes from its last checkpoint")


def remove_run(run: Path) -> None:
    """Delete a run this build made earlier (its config changed, or --force train), never anything else."""
    if not run.exists():
        return
    read_manifest(run, "train", fix=f"{run} is not a training run; move it away and build again")
    shutil.rmtree(run)


# ---------------------------------------------------------------------------------------------
# The build


@dataclass
class BuildResult:
    workdir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def eval(self) -> dict | None:
        path = Workdir(self.workdir).eval / RESULT
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    @property
    def samples(self) -> list[dict] | None:
        path = Workdir(self.workdir).samples / SAMPLES
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def stages_of(recipe: Recipe, until: str | None = None) -> list[str]:
    """The stages this recipe runs, in order (no curate without a curate: section), up to `until`."""
    names = build_stage_names()
    stages = [s for s in names if s != "curate" or recipe.curate is not None]
    if until is not None:
        if until not in names:
            raise UserError(f"--until {until}: not a stage; the stages are {', '.join(names)}")
        if until not in stages:
            raise UserError(f"--until {until}: this recipe has no {until} stage (it has {', '.join(stages)})")
        stages = stages[:stages.index(until) + 1]
    return stages


def forced_stages(stages: list[str], force: Iterable[str]) -> set[str]:
    """The stages to redo: each one named, and every stage after it, which reads its output."""
    forced: set[str] = set()
    for name in force:
        if name not in build_stage_names():
            raise UserError(f"--force {name}: not a stage; the stages are {', '.join(build_stage_names())}")
        if name not in stages:
            raise UserError(f"--force {name}: this recipe has no {name} stage to redo (it has {', '.join(stages)})")
        forced.update(stages[stages.index(name):])
    return forced


def check_inputs(recipe: Recipe) -> None:
    """Every input path exists, before any stage starts."""
    for spec in (recipe.curate.inputs if recipe.curate is not None else recipe.tokenize.inputs):
        input_fingerprint(spec)


def build(recipe: Recipe, workdir: str | Path | None = None, *, force: Iterable[str] = (), until: str | None = None,
          nproc_per_node: int = 1, quiet: bool = False, say: Callable[[str], None] | None = None) -> BuildResult:
    """Run the recipe's stages that are not up to date; returns what ran and what was skipped."""
    work = Workdir(Path(workdir) if workdir is not None else default_workdir(recipe))
    stages = stages_of(recipe, until)
    redo = forced_stages(stages, force)
    if nproc_per_node < 1:
        raise UserError(f"--nproc-per-node must be at least 1, got {nproc_per_node}")
    plan_batch(recipe.train, recipe.model.block_size, nproc_per_node)  # before any stage starts
    check_workdir(work)
    check_inputs(recipe)
    say = say or (lambda text: None if quiet else print(text, flush=True))
    work.root.mkdir(parents=True, exist_ok=True)
    write_text(work.root / RESOLVED_RECIPE, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    state = BuildState(work)
    result = BuildResult(work.root)
    started = time.perf_counter()
    for stage in stages:
        key = stage_key(stage, recipe, work)
        output = work.output(stage)
        if stage not in redo and state.up_to_date(stage, key, output):
            say(f"[{stage}] up to date: {output}")
            result.skipped.append(stage)
            continue
        say(f"[{stage}] running -> {output}")
        stage_started = time.perf_counter()
        try:
            if stage == "train":
                resume = stage not in redo and state.started(stage) == key
                state.record(stage, key, None)
                run_train(recipe, work, quiet, resume, nproc_per_node)
            else:
                run_stage(stage, recipe, work, quiet)
        except KeyboardInterrupt:
            again = "training continues from its last checkpoint" if stage == "train" else "finished stages are kept"
            say(f"[{stage}] stopped. Run the same build again to continue ({again}).")
            raise
        state.record(stage, key, output, time.perf_counter() - stage_started)
        say(f"[{stage}] done in {time.perf_counter() - stage_started:.1f} s")
        result.ran.append(stage)
    result.seconds = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------------------------------
# The command line


def print_outcome(result: BuildResult, console=None) -> None:
    """The held-out scores and the samples, whether they were made now or by an earlier build."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = console or Console(highlight=False)
    scored = result.eval
    if scored is not None:
        from lmsmith.evaluate.heldout import SplitEval, eval_table
        from lmsmith.model.scoring import EvalResult

        fields = {k: scored[k] for k in EvalResult.__dataclass_fields__}
        console.print(eval_table(SplitEval(scored["model"], scored["data"], scored["split"], EvalResult(**fields))))
    for sample in result.samples or []:
        body = Text(sample["prompt"], style="bold")
        body.append(sample["text"])
        console.print(Panel(body, title=f"prompt {sample['prompt']!r}" if sample["prompt"] else "from scratch",
                            title_align="left", expand=False))
    ran = ", ".join(result.ran) or "nothing"
    console.print(f"built {result.workdir} in {result.seconds:.0f} s (ran: {ran}"
                  + (f"; kept: {', '.join(result.skipped)}" if result.skipped else "") + ")")


def train_for_minutes(recipe: Recipe, minutes: float) -> None:
    """`--minutes N`: a time budget replaces the recipe's train.steps (the budget plans the steps)."""
    from lmsmith.train.budget import UNCAPPED

    if not minutes > 0:
        raise UserError(f"--minutes must be positive, got {minutes:g}")
    recipe.train.max_minutes, recipe.train.steps = minutes, UNCAPPED


def load_config(stage, recipe_file, overrides: list[str], flags: dict):
    """A build's config is its recipe: a file or a shipped recipe's name, plus overrides."""
    from lmsmith.schema.recipe import load_recipe

    return load_recipe(recipe_file, list(overrides))


def run(config: Recipe, inputs: dict, out: str | Path | None = None, *, quiet: bool = False, force: list[str] = (),
        until: str | None = None, nproc_per_node: int = 1, minutes: float | None = None) -> dict:
    """`lmsmith build`: the recipe's stages that are not up to date, then the scores and samples."""
    if minutes is not None:
        train_for_minutes(config, minutes)
    result = build(config, out, force=force or (), until=until, nproc_per_node=nproc_per_node, quiet=quiet)
    print_outcome(result)
    from lmsmith.explain.first_look import first_look

    for page in first_look(result.workdir, result.samples, redo=bool(result.ran)):
        print(f"open {page}")
    return {"stage": "build", "ran": result.ran, "kept": result.skipped}
