"""`lmsmith build`: the steps of one recipe, in order, into one work directory.

Build knows no stage by name. Each stage's registry entry says where a step of it writes
(`writes`), what kind of thing it makes (`makes`) and which kind each of its inputs reads
(`Input.reads`); build derives everything from that:

    a step's inputs   the step named in its `from:`, else the files the input's own config key
                      names (finetune.data), else the output of the last earlier step that makes
                      what the input reads, else the files its fallback key names (tokenize.inputs)
    a step's folder   its stage's folder (`runs/main` for train); a step with a name of its own
                      writes the folder of that name in the same place (`runs/sft`)
    a step's key      a hash of its config and of what it reads: an earlier step's manifest, or
                      the input files (their sizes and modification times, as `make` does)

    WORKDIR/build.json   what build has done: each step's key and the fingerprint of its output
    WORKDIR/recipe.yaml  the recipe as it was resolved (defaults and overrides included)

A step is up to date when build.json holds the same key and its output's manifest is still the
one it wrote; it is then skipped. A step that runs again makes a new manifest, so every step
that reads it runs again too. A resumable step (training) that stops leaves checkpoints, and a
later build with the same key continues from the newest one instead of starting over.
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

import yaml

from lmsmith.core.atomic import write_json, write_text
from lmsmith.core.config import ConfigError, closest_hint, section_to_dict
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import manifest_or_none, read_manifest
from lmsmith.schema.recipe import Recipe, Step, classic_steps, load_recipe
from lmsmith.schema.stage import Input, Option, Stage
from lmsmith.stages import STAGE_BY_NAME

STATE = "build.json"
RESOLVED_RECIPE = "recipe.yaml"
WORKDIR_KIND = "workdir"  # an input that reads the whole work directory (the report)


@dataclass(frozen=True)
class Workdir:
    """Where each step of a build writes, from its stage's registry entry."""

    root: Path

    def folder(self, step: str, stage: str | None = None) -> Path:
        """The folder a step writes: its stage's, or for a step with a name of its own, that name beside it."""
        entry = STAGE_BY_NAME[stage or step]
        writes = Path(entry.writes)
        return self.root / (writes if step == entry.name else writes.with_name(step))

    def output(self, step: str, stage: str | None = None) -> Path:
        """The directory whose manifest.json marks the step as finished, and that later steps read."""
        return self.folder(step, stage) / STAGE_BY_NAME[stage or step].done


def default_workdir(recipe: Recipe) -> Path:
    return Path("work") / recipe.name


# ---------------------------------------------------------------------------------------------
# Fingerprints: what a step read, and what it wrote


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def input_fingerprint(spec: str) -> dict:
    """A cheap fingerprint of one input: sizes and modification times of its files, like `make`.

    The standard library is fixed for a Python installation; a Hugging Face dataset is known by
    its name only (one updated on the Hub is not noticed: `--force curate` fetches it again).
    """
    from lmsmith.data.sources.stdlib import STDLIB_INPUTS, stdlib_root

    if spec in STDLIB_INPUTS:
        return {spec: str(stdlib_root()), "python": platform.python_version()}
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


# ---------------------------------------------------------------------------------------------
# The plan: each step's stage, folder and inputs, derived from the registry's declarations


@dataclass
class PlannedStep:
    step: Step
    stage: Stage
    folder: Path
    output: Path
    inputs: dict = field(default_factory=dict)  # what the stage's run() takes
    upstream: dict[str, str] = field(default_factory=dict)  # input name -> the earlier step it reads
    given: dict[str, list[str]] = field(default_factory=dict)  # input name -> files and datasets the recipe names
    earlier: list[str] = field(default_factory=list)  # the steps before it (what a whole-workdir input reads)

    @property
    def name(self) -> str:
        return self.step.name


def named_in_recipe(spec: Input, step: Step, recipe: Recipe):
    """What the recipe names for an input (by its config key, else its fallback key); None if nothing.

    A key is looked up in the step's own section, else in the recipe's top-level one (the classic
    journey's tokenizer step reads tokenize.inputs)."""
    for dotted in (spec.key, spec.otherwise):
        if dotted is None:
            continue
        section, _, key = dotted.partition(".")
        holder = getattr(step.config, section, None) or getattr(recipe, section, None)
        value = getattr(holder, key, None) if holder is not None else None
        if value:
            return value
    return None


def provider_of(spec: Input, planned: PlannedStep, done: list[PlannedStep]) -> PlannedStep | str | None:
    """The earlier step an input reads, or the path `from:` gives it; None when there is neither.

    `from: STEP` feeds every input that STEP makes the kind of; `from: PATH` feeds the stage's main
    input (its first that reads an earlier step); `from: {INPUT: STEP or PATH}` names each input.
    """
    sources = planned.step.sources
    explicit = spec.name in sources
    main = spec is next(i for i in planned.stage.inputs if i.reads)
    named = sources.get(spec.name, sources.get("*"))
    earlier = {p.name: p for p in done}
    if named in earlier:
        if earlier[named].stage.makes == spec.reads:
            return earlier[named]
        if explicit:
            raise ConfigError(f"steps.{planned.name}.from: {spec.name} reads a {spec.reads}, but step "
                              f"'{named}' makes a {earlier[named].stage.makes or 'nothing later steps read'}")
    elif named is not None and (explicit or main):
        return named  # a path, given as the input (check_sources has checked that it exists)
    return next((p for p in reversed(done) if p.stage.makes == spec.reads), None)


def own_key_filled(spec: Input, planned: PlannedStep) -> bool:
    """Whether the step fills the input's own config key (`finetune.data: FILE`)."""
    if spec.key is None:
        return False
    section, _, key = spec.key.partition(".")
    return bool(getattr(getattr(planned.step.config, section, None), key, None))


def given_by_from(spec: Input, planned: PlannedStep, source: PlannedStep | str) -> bool:
    """Whether `from:` is what chose this source (not the fallback to the last step of the kind)."""
    sources = planned.step.sources
    name = source.name if isinstance(source, PlannedStep) else source
    return spec.name in sources or sources.get("*") == name


def resolve_inputs(planned: PlannedStep, done: list[PlannedStep], recipe: Recipe, root: Path) -> None:
    """Fill `planned.inputs`: earlier steps' outputs, or what the recipe names, for each input of its stage."""
    step, stage = planned.step, planned.stage
    for spec in stage.inputs:
        source = provider_of(spec, planned, done) if spec.reads else None
        if source is not None and own_key_filled(spec, planned) and not given_by_from(spec, planned, source):
            source = None  # the step's own `finetune.data: FILE` wins over an earlier synth step
        if spec.reads == WORKDIR_KIND:
            planned.inputs[spec.name] = str(root.resolve())
        elif isinstance(source, PlannedStep):
            planned.upstream[spec.name] = source.name
            path = str(source.output.resolve())
            planned.inputs[spec.name] = [path] if spec.many else path
        elif (value := source or named_in_recipe(spec, step, recipe)) is not None:
            specs = list(value) if isinstance(value, list) else [value]
            planned.given[spec.name] = specs
            planned.inputs[spec.name] = specs if spec.many else specs[0]
        elif spec.required and spec.reads:
            raise ConfigError(missing_input(planned, spec))
    unknown = set(step.sources) - {i.name for i in stage.inputs} - {"*"}
    if unknown:
        raise ConfigError(f"steps.{planned.name}.from: stage {stage.name} has no input {sorted(unknown)[0]} "
                          f"(its inputs are {', '.join(i.name for i in stage.inputs)})")


def missing_input(planned: PlannedStep, spec: Input) -> str:
    makers = sorted(s.name for s in STAGE_BY_NAME.values() if s.makes == spec.reads and s.writes)
    return (f"step '{planned.name}' reads a {spec.reads} ({spec.name}), but no step before it makes one: "
            f"add a {' or '.join(makers)} step before it, or name one with steps.{planned.name}.from")


def check_sources(recipe: Recipe) -> None:
    """Every `from:` names an earlier step, a path that exists or an hf:NAME; a later step would be a cycle."""
    order = [step.name for step in recipe.steps]
    for n, step in enumerate(recipe.steps):
        for target in step.sources.values():
            if target in order[n:]:
                raise ConfigError(f"steps.{step.name}.from: '{target}' does not come before '{step.name}': "
                                  "steps run in the order written, and each reads only earlier steps; "
                                  f"move '{target}' up, or read another step")
            if target not in order and not target.startswith("hf:") and not Path(target).expanduser().exists():
                hint = closest_hint(target, order[:n], "the steps before it are " + ", ".join(order[:n]))
                raise ConfigError(f"steps.{step.name}.from: '{target}' is neither an earlier step nor a path "
                                  f"that exists (nor hf:NAME): {hint}")


def plan(recipe: Recipe, work: Workdir) -> list[PlannedStep]:
    """Each step with its folder and inputs; refuses, before any work, a graph that cannot run."""
    check_sources(recipe)
    done: list[PlannedStep] = []
    folders: dict[Path, str] = {}
    for step in recipe.steps:
        stage = STAGE_BY_NAME[step.stage]
        folder = work.folder(step.name, step.stage)
        clash = next((other for path, other in folders.items()
                      if path == folder or path in folder.parents or folder in path.parents), None)
        if clash is not None:
            raise ConfigError(f"steps '{clash}' and '{step.name}' would both write {folder}: "
                              f"give '{step.name}' a name of its own")
        folders[folder] = step.name
        planned = PlannedStep(step, stage, folder, work.output(step.name, step.stage), earlier=[p.name for p in done])
        resolve_inputs(planned, done, recipe, work.root)
        done.append(planned)
    return done


def step_key(planned: PlannedStep, records: dict[str, dict]) -> str:
    """A hash of everything a step's output depends on: its sections and fingerprints of what it reads."""
    reads: dict = {"stage": planned.stage.name,
                   **{name: section_to_dict(getattr(planned.step.config, name)) for name in planned.stage.sections}}
    for name, source in planned.upstream.items():
        reads[name] = records.get(source, {}).get("output")
    for name, specs in planned.given.items():
        reads[name] = [input_fingerprint(spec) for spec in specs]
    if any(spec.reads == WORKDIR_KIND for spec in planned.stage.inputs):
        reads["workdir"] = {step: records.get(step, {}).get("output") for step in planned.earlier}
    return _digest(reads)


class BuildState:
    """build.json: for each step, the key it ran with and the fingerprint of what it wrote."""

    def __init__(self, work: Workdir):
        self.path = work.root / STATE
        self.stages: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.stages = json.loads(self.path.read_text(encoding="utf-8")).get("stages", {})
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                self.stages = {}  # a damaged record only costs a rebuild

    def claim(self) -> None:
        """Mark the directory as a build's before its first step writes anything, so a build killed during
        that step is continued by the same command, not refused as a folder of someone else's files."""
        if not self.path.is_file():
            write_json(self.path, {"stages": self.stages})

    def up_to_date(self, step: str, key: str, output: Path) -> bool:
        record = self.stages.get(step, {})
        return (record.get("key") == key and record.get("output") is not None
                and record["output"] == output_fingerprint(output))

    def started(self, step: str) -> str | None:
        """The key of an unfinished run of the step (a resumable step continues only with the same key)."""
        record = self.stages.get(step, {})
        return record.get("key") if record.get("output") is None else None

    def record(self, step: str, key: str, output: Path | None, seconds: float | None = None) -> None:
        self.stages[step] = {"key": key, "output": output_fingerprint(output) if output is not None else None,
                             "seconds": None if seconds is None else round(seconds, 1)}
        write_json(self.path, {"stages": self.stages})


def check_workdir(work: Workdir) -> None:
    """A build writes only into a new directory or one an earlier build made."""
    root = work.root
    if root.is_symlink() and not root.exists():
        raise UserError(f"-o {root} is a link to nothing: remove the link or choose another -o")
    if root.is_file():
        raise UserError(f"-o {root} is a file: give a directory for the build")
    if root.is_dir() and any(root.iterdir()) and not (root / STATE).is_file():
        raise UserError(f"{root} already holds files that no build made (it has no {STATE}): "
                        "choose a new directory with -o; it is kept as it is")


# ---------------------------------------------------------------------------------------------
# Running one step


def remove_earlier_output(planned: PlannedStep) -> None:
    """Delete what this step wrote before (its settings changed, or --force), never anything else."""
    folder = planned.folder
    if not folder.exists():
        return
    read_manifest(folder, planned.stage.name, fix=f"{folder} is not a {planned.stage.name} output; "
                                                  "move it away and build again")
    shutil.rmtree(folder)


def command_line(planned: PlannedStep, config_file: Path, quiet: bool) -> list[str]:
    """The `lmsmith VERB ...` line that runs the step as a process of its own (under torchrun)."""
    line = list(planned.stage.words)
    for spec in planned.stage.inputs:
        value = planned.inputs.get(spec.name)
        values = value if isinstance(value, list) else [value] if value is not None else []
        for item in values:
            line += [item] if spec.flag is None else [spec.flag.split("/")[-1], item]
    line += ["--config", str(config_file), "-o", str(planned.folder.resolve())]
    if planned.stage.resumable:
        line += ["--resume", "auto"]
    return line + (["--quiet"] if quiet else [])


def run_under_torchrun(planned: PlannedStep, work: Workdir, quiet: bool, nproc_per_node: int) -> None:
    """N processes under torchrun, each running the step's verb on the step's resolved config."""
    config_file = work.root / f"{planned.name}.yaml"
    sections = {name: section_to_dict(getattr(planned.step.config, name)) for name in planned.stage.sections}
    write_text(config_file, yaml.safe_dump(sections, sort_keys=False))
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
                "-m", "lmsmith", *command_line(planned, config_file, quiet)])
    finished = subprocess.run(command)
    if finished.returncode == 130 or finished.returncode == -2:
        raise KeyboardInterrupt
    if finished.returncode != 0:
        raise UserError(f"the {planned.name} step under torchrun failed (exit code {finished.returncode}); "
                        "the messages above say why. "
                        "Fix it and run the same build again: it resumes from its last checkpoint")


def run_step(planned: PlannedStep, work: Workdir, quiet: bool, resume: bool, nproc_per_node: int) -> None:
    """One step: the same function its verb calls, on the work directory's paths."""
    stage = planned.stage
    if stage.torchrun and nproc_per_node > 1:
        run_under_torchrun(planned, work, quiet, nproc_per_node)
        return
    options = {"resume": "auto" if resume else None} if stage.resumable else {}
    if stage.writes_model:
        options["force"] = True  # the folder is this build's own earlier output of the same step
    stage.run(planned.step.config, planned.inputs, planned.folder.resolve(), quiet=quiet, **options)


# ---------------------------------------------------------------------------------------------
# The build


@dataclass
class BuildResult:
    workdir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    steps: list[PlannedStep] = field(default_factory=list)


def steps_until(steps: list[PlannedStep], until: str | None) -> list[PlannedStep]:
    """The steps this build runs, in order, up to `until`."""
    names = [p.name for p in steps]
    if until is None:
        return steps
    if until not in names:
        raise UserError(f"--until {until}: not a step; the steps are {', '.join(names)}")
    return steps[:names.index(until) + 1]


def forced_steps(steps: list[PlannedStep], force: Iterable[str], all_names: list[str]) -> set[str]:
    """The steps to redo: each one named, and every later step that reads it, directly or not."""
    forced: set[str] = set()
    names = [p.name for p in steps]
    for name in force:
        if name not in all_names:
            raise UserError(f"--force {name}: not a step; the steps are {', '.join(all_names)}")
        if name not in names:
            raise UserError(f"--force {name}: the build stops before {name} (--until): nothing to redo")
        forced.add(name)
    for planned in steps:
        reads_forced = set(planned.upstream.values()) & forced
        reads_all = any(spec.reads == WORKDIR_KIND for spec in planned.stage.inputs)
        if reads_forced or (reads_all and forced):
            forced.add(planned.name)
    return forced


def check_steps(steps: list[PlannedStep], nproc_per_node: int) -> None:
    """What only a stage's own code can check (the batch on N processes, ...), before any step starts."""
    for planned in steps:
        if planned.stage.check_step is not None:
            try:
                planned.stage.check_step(planned.step.config, nproc_per_node)
            except ConfigError as exc:
                where = "" if planned.name == planned.stage.name or str(exc).startswith("steps.") else \
                    f"steps.{planned.name}: "
                raise ConfigError(f"{where}{exc}") from None


def build(recipe: Recipe, workdir: str | Path | None = None, *, force: Iterable[str] = (), until: str | None = None,
          nproc_per_node: int = 1, quiet: bool = False, say: Callable[[str], None] | None = None) -> BuildResult:
    """Run the recipe's steps that are not up to date; returns what ran and what was skipped."""
    work = Workdir(Path(workdir) if workdir is not None else default_workdir(recipe))
    if not recipe.steps:  # read without the registry: the classic journey
        recipe.steps = classic_steps(recipe, STAGE_BY_NAME)
    all_steps = plan(recipe, work)
    steps = steps_until(all_steps, until)
    redo = forced_steps(steps, force, [p.name for p in all_steps])
    if nproc_per_node < 1:
        raise UserError(f"--nproc-per-node must be at least 1, got {nproc_per_node}")
    check_steps(steps, nproc_per_node)
    check_workdir(work)
    for planned in steps:  # every input file exists, before any step starts
        for specs in planned.given.values():
            for spec in specs:
                input_fingerprint(spec)
    say = say or (lambda text: None if quiet else print(text, flush=True))
    work.root.mkdir(parents=True, exist_ok=True)
    state = BuildState(work)
    state.claim()
    write_text(work.root / RESOLVED_RECIPE, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    result = BuildResult(work.root, steps=steps)
    started = time.perf_counter()
    for planned in steps:
        run_if_needed(planned, state, redo, result, work, quiet, nproc_per_node, say)
    result.seconds = time.perf_counter() - started
    return result


def run_if_needed(planned: PlannedStep, state: BuildState, redo: set[str], result: BuildResult, work: Workdir,
                  quiet: bool, nproc_per_node: int, say: Callable[[str], None]) -> None:
    """Skip the step when it is up to date; else run it and record its key and output."""
    name, output = planned.name, planned.output
    key = step_key(planned, state.stages)
    if name not in redo and state.up_to_date(name, key, output):
        say(f"[{name}] up to date: {output}")
        result.skipped.append(name)
        return
    say(f"[{name}] running -> {output}")
    stage_started = time.perf_counter()
    resume = False
    if planned.stage.resumable:
        resume = name not in redo and state.started(name) == key
        state.record(name, key, None)
        if not resume:
            remove_earlier_output(planned)
    try:
        run_step(planned, work, quiet, resume, nproc_per_node)
    except KeyboardInterrupt:
        again = ("it continues from its last checkpoint" if planned.stage.resumable
                 else "finished stages are kept")
        say(f"[{name}] stopped. Run the same build again to continue ({again}).")
        raise
    state.record(name, key, output, time.perf_counter() - stage_started)
    say(f"[{name}] done in {time.perf_counter() - stage_started:.1f} s")
    result.ran.append(name)


# ---------------------------------------------------------------------------------------------
# The command line


def print_outcome(result: BuildResult) -> None:
    """What each finished step made (scores, samples, pages), whether made now or by an earlier build."""
    for planned in result.steps:
        if planned.stage.show is not None and (planned.output / "manifest.json").is_file():
            planned.stage.show(planned.folder)
    ran = ", ".join(result.ran) or "nothing"
    print(f"built {result.workdir} in {result.seconds:.0f} s (ran: {ran}"
          + (f"; kept: {', '.join(result.skipped)}" if result.skipped else "") + ")", flush=True)


def train_for_minutes(recipe: Recipe, minutes: float) -> None:
    """`--minutes N`: a time budget replaces train.steps of every pretraining step (the budget plans the steps)."""
    from lmsmith.train.budget import UNCAPPED

    if not minutes > 0:
        raise UserError(f"--minutes must be positive, got {minutes:g}")
    for step in recipe.steps:
        if STAGE_BY_NAME[step.stage].own_section == "train":
            step.config.train.max_minutes, step.config.train.steps = minutes, UNCAPPED


def load_config(stage, recipe_file, overrides: list[str], flags: dict):
    """A build's config is its recipe: a file or a shipped recipe's name, plus overrides."""
    return load_recipe(recipe_file, list(overrides), STAGE_BY_NAME)


def run(config: Recipe, inputs: dict, out: str | Path | None = None, *, quiet: bool = False, force: list[str] = (),
        until: str | None = None, nproc_per_node: int = 1, minutes: float | None = None) -> dict:
    """`lmsmith build`: the recipe's steps that are not up to date, then what each one made."""
    if minutes is not None:
        train_for_minutes(config, minutes)
    result = build(config, out, force=force or (), until=until, nproc_per_node=nproc_per_node, quiet=quiet)
    print_outcome(result)  # what the build is for: shown with --quiet too
    return {"stage": "build", "ran": result.ran, "kept": result.skipped}


BUILD = Stage(
    "build", "run every step of a recipe: curate, tokenizer, tokenize, train, eval, samples, and any others it lists",
    sections={}, run=run, load_config=load_config, output="optional", config_input="recipe",
    inputs=(Input("recipe", "recipe YAML or the name of a shipped recipe (default: quickstart)", required=False,
                  metavar="RECIPE"),),
    options=(Option("--force", "redo this step and the ones that read it even if up to date (repeatable)",
                    metavar="STEP", repeat=True),
             Option("--until", "stop after this step", metavar="STEP"),
             Option("--nproc-per-node", "train with N processes under torchrun (e.g. one per GPU)", metavar="N",
                    type=int, default=1),
             Option("--minutes", "train for N minutes: the steps that fit are planned (train.steps is ignored)",
                    metavar="N", type=float)),
    output_help="work directory (default: work/RECIPE_NAME)",
)
