"""A recipe: one YAML file that says what `lmsmith build` makes, as a list of named steps.

The classic recipe has one section per stage and runs the classic journey, curate (when there is
a `curate:` section) -> tokenizer -> tokenize -> train -> eval -> generate -> report -> explain:

    curate:                  # optional; without it the inputs are plain text files (see tokenize.inputs)
      inputs: [stdlib]       # files, folders, hf:NAME[:CONFIG][:SPLIT], or stdlib
      split: {val_fraction: 0.02, test_fraction: 0.02}
    tokenizer: {kind: bpe, vocab_size: 4096, sample_mb: null}
    tokenize: {inputs: [], val_fraction: null, shard_tokens: 100000000}
    model: {...}             # lmsmith.schema.model.ModelConfig; vocab_size comes from the tokenizer
    train: {...}             # lmsmith.schema.train.TrainConfig
    eval: {split: test, context: null, stride: null, batch_size: 8, device: auto, precision: fp32}
    generate: {prompts: ["def "], max_new_tokens: 100, temperature: 0.8, top_k: 50, seed: 0, device: auto}
    sweep: {...}             # optional; read by `lmsmith sweep`, ignored by build

A recipe with `steps:` runs exactly the steps it lists, in order, each a registered stage:

    steps:
      curate: {inputs: [stdlib]}       # a step named after its stage; bare keys are its own section
      tokenizer: {vocab_size: 2048}
      tokenize: {}
      base:                            # a name of its own ...
        stage: train                   # ... and the stage it runs
        model: {n_layer: 4}            # the stage's sections, each written out
        train: {steps: 300}
      sft:
        stage: finetune
        from: base                     # where its inputs come from (default: the last step that makes them)
        finetune: {data: "{recipe_dir}/sql/train.jsonl"}

`{recipe_dir}` in a text value stands for the folder of the recipe file (a shipped recipe's data
travels with it). Everything is checked when the recipe is loaded, before any work; which
sections a stage reads comes from the registry, handed to `recipe_from_dict` by its caller.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lmsmith.core.config import ConfigError, apply_overrides, closest_hint, parse_section, read_yaml, section_to_dict
from lmsmith.core.errors import UserError
from lmsmith.schema.curate import CurateConfig
from lmsmith.schema.evaluate import EvalConfig
from lmsmith.schema.generate import GenerateConfig
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.sections import SECTIONS, STEPS_KEY
from lmsmith.schema.sizing import SizingConfig, check_candidates, pin_user_keys
from lmsmith.schema.stage import Stage, config_from_sections
from lmsmith.schema.text import TokenizeConfig, TokenizerConfig
from lmsmith.schema.train import TrainConfig, plan_batch

SHIPPED = "configs"  # recipes shipped inside the package: lmsmith/configs/NAME.yaml
DEFAULT_RECIPE = "quickstart"
CLASSIC_SECTIONS = ("tokenizer", "tokenize", "model", "train", "sizing", "eval", "generate")
STEP_KEYS = ("stage", "from")  # the keys of a step besides its sections
RECIPE_DIR = "{recipe_dir}"


@dataclass
class Step:
    """One step of a build: a registered stage, its checked config, and where its inputs come from."""

    name: str
    stage: str
    config: Any  # what the stage's `run` takes: one checked dataclass per section it reads
    sources: dict[str, str] = field(default_factory=dict)  # input name (or "*": every input) -> earlier step
    written: dict = field(default_factory=dict)  # the step as written (sections resolved), for recipe.yaml


@dataclass
class Recipe:
    curate: CurateConfig | None = None
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sizing: SizingConfig = field(default_factory=SizingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    sweep: dict[str, Any] | None = None  # checked by `lmsmith sweep`
    steps: list[Step] = field(default_factory=list)  # the journey `lmsmith build` runs, in order
    written_steps: bool = False  # the file has `steps:` (else the steps are the classic journey's)
    path: Path | None = None  # the file it was read from (not a config key)

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else DEFAULT_RECIPE

    def to_dict(self) -> dict:
        """The plain-dict form, as it would be written in a recipe file (loads back to an equal Recipe)."""
        if self.written_steps:
            raw = {STEPS_KEY: {step.name: copy.deepcopy(step.written) for step in self.steps}}
        else:
            raw = {name: section_to_dict(getattr(self, name)) for name in CLASSIC_SECTIONS}
            if self.curate is not None:
                raw = {"curate": section_to_dict(self.curate), **raw}
        if self.sweep is not None:
            raw["sweep"] = copy.deepcopy(self.sweep)
        return raw


# ---------------------------------------------------------------------------------------------
# Reading


def shipped_recipes() -> list[str]:
    """Names of the recipes inside the package (`lmsmith build NAME` finds them)."""
    folder = resources.files("lmsmith") / SHIPPED
    return sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def find_recipe(name_or_path: str | Path | None) -> Path:
    """A recipe file: a path, or the name of a shipped recipe (None: the quickstart)."""
    if name_or_path is None:
        name_or_path = DEFAULT_RECIPE
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    stem = text[:-len(".yaml")] if text.endswith(".yaml") else text
    shipped = shipped_recipes()
    if "/" not in stem and "\\" not in stem and stem in shipped:
        return Path(str(resources.files("lmsmith") / SHIPPED / f"{stem}.yaml"))
    hint = closest_hint(Path(stem).name, shipped, f"the shipped recipes are {', '.join(shipped)}")
    raise UserError(f"recipe {name_or_path} does not exist: give a YAML file or a shipped recipe name ({hint})")


def load_recipe(name_or_path: str | Path | None = None, overrides: list[str] = (),
                stages: Mapping[str, Stage] | None = None) -> Recipe:
    """Read and check a recipe (a path or a shipped recipe's name) plus `section.key=value` overrides.

    `stages` is the registry (name -> Stage), needed to read a recipe with `steps:`.
    """
    path = find_recipe(name_or_path)
    raw = pin_user_keys(apply_overrides(read_yaml(path), list(overrides)), list(overrides))
    recipe = recipe_from_dict(with_recipe_dir(raw, path.resolve().parent), stages)
    recipe.path = path
    return recipe


def with_recipe_dir(value: Any, folder: Path) -> Any:
    """`{recipe_dir}` in every text value replaced by the recipe's folder."""
    if isinstance(value, str):
        return value.replace(RECIPE_DIR, str(folder))
    if isinstance(value, dict):
        return {k: with_recipe_dir(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [with_recipe_dir(v, folder) for v in value]
    return value


def recipe_from_dict(raw: dict, stages: Mapping[str, Stage] | None = None) -> Recipe:
    """A checked Recipe from the plain dict of a recipe file."""
    sections = (*SECTIONS, STEPS_KEY)
    for key in raw:
        if key not in sections:
            hint = closest_hint(key, sections, f"a recipe has the sections {', '.join(sections)}")
            raise ConfigError(f"unknown stage '{key}' in the recipe: {hint}")
    sweep = raw.get("sweep")
    if sweep is not None and not isinstance(sweep, dict):
        raise ConfigError(f"sweep: expected a mapping of keys to values, got {sweep!r}")
    if STEPS_KEY in raw:
        return stepped_recipe(raw, stages, sweep)
    recipe = Recipe(
        curate=parse_section(CurateConfig, raw["curate"], "curate") if "curate" in raw else None,
        tokenizer=parse_section(TokenizerConfig, raw.get("tokenizer"), "tokenizer"),
        tokenize=parse_section(TokenizeConfig, raw.get("tokenize"), "tokenize"),
        model=parse_section(ModelConfig, raw.get("model"), "model"),
        train=parse_section(TrainConfig, raw.get("train"), "train"),
        sizing=parse_section(SizingConfig, raw.get("sizing"), "sizing"),
        eval=parse_section(EvalConfig, raw.get("eval"), "eval"),
        generate=parse_section(GenerateConfig, raw.get("generate"), "generate"),
        sweep=sweep,
    )
    if recipe.curate is not None and not recipe.curate.inputs:
        raise ConfigError("curate.inputs is empty: name what to curate, e.g. curate.inputs=[stdlib] "
                          "or a list of files, folders and hf:DATASET names")
    check_stages_fit(recipe)
    if stages is not None:
        recipe.steps = classic_steps(recipe, stages)
    return recipe


def classic_steps(recipe: Recipe, stages: Mapping[str, Stage]) -> list[Step]:
    """The classic journey: each stage marked in_build, reading the recipe's top-level sections.

    A stage whose own section the recipe may leave out (curate) is left out with it; a section the
    classic recipe does not hold (explain:, read by `lmsmith explain --config`) takes its defaults.
    """
    steps = []
    for stage in stages.values():
        if not stage.in_build or getattr(recipe, stage.own_section or "", True) is None:
            continue
        config = SimpleNamespace(**{section: getattr(recipe, section, None) or SECTIONS[section]()
                                    for section in stage.sections})
        steps.append(Step(stage.name, stage.name, config))
    return steps


# ---------------------------------------------------------------------------------------------
# Recipes with steps:


def stepped_recipe(raw: dict, stages: Mapping[str, Stage] | None, sweep: dict | None) -> Recipe:
    """A recipe that lists its steps; its top-level sections may only be `sweep:`."""
    if stages is None:
        raise ConfigError("this recipe lists steps: only `lmsmith build` runs it")  # a bug if reached from a verb
    others = [key for key in raw if key not in (STEPS_KEY, "sweep")]
    if others:
        raise ConfigError(f"the recipe has steps:, so its {others[0]}: section belongs inside a step: "
                          f"write it under the step that reads it (steps.NAME.{others[0]})")
    written = raw[STEPS_KEY]
    if not isinstance(written, dict) or not written:
        raise ConfigError("steps: expected a mapping of step names to their settings, e.g. "
                          "steps: {curate: {inputs: [stdlib]}, tokenizer: {}, ...}")
    steps = [parse_step(str(name), body, stages) for name, body in written.items()]
    return Recipe(steps=steps, written_steps=True, sweep=sweep)


def parse_step(name: str, body: Any, stages: Mapping[str, Stage]) -> Step:
    """One step: its stage (`stage:`, default its name), `from:`, and the stage's sections."""
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise ConfigError(f"steps.{name}: expected a mapping of settings, got {body!r}")
    stage_name = body.get("stage", name)
    stage = stages.get(stage_name) if isinstance(stage_name, str) else None
    if stage is None or stage.writes is None:
        steppable = sorted(s.name for s in stages.values() if s.writes is not None)
        hint = closest_hint(str(stage_name), steppable, f"the stages a step can run are {', '.join(steppable)}")
        named = "its name" if "stage" not in body else "stage:"
        raise ConfigError(f"steps.{name}: '{stage_name}' ({named}) is not a stage a step can run: {hint}")
    sections = {k: v for k, v in body.items() if k not in STEP_KEYS}
    if sections and not any(k in stage.sections for k in sections):
        sections = {stage.own_section: sections}  # bare keys: the stage's own section
    for key in sections:
        if key not in stage.sections:
            raise ConfigError(f"steps.{name}.{key}: stage {stage.name} reads the sections "
                              f"{', '.join(stage.sections)} (and stage:, from:), not {key}")
    try:
        config = config_from_sections(stage, copy.deepcopy(sections))
    except ConfigError as exc:
        raise ConfigError(f"steps.{name}: {exc}") from None
    written = {"stage": stage.name, **({"from": body["from"]} if "from" in body else {}),
               **{section: section_to_dict(getattr(config, section)) for section in stage.sections}}
    return Step(name, stage.name, config, step_sources(name, body.get("from")), written)


def step_sources(name: str, given: Any) -> dict[str, str]:
    """`from: STEP` (every input that STEP can feed) or `from: {INPUT: STEP, ...}`."""
    if given is None:
        return {}
    if isinstance(given, str):
        return {"*": given}
    if isinstance(given, dict) and all(isinstance(v, str) for v in given.values()):
        return {str(k): v for k, v in given.items()}
    raise ConfigError(f"steps.{name}.from: expected a step's name or a mapping of inputs to step names, "
                      f"got {given!r}")


# ---------------------------------------------------------------------------------------------
# What no single section can check alone


def check_stages_fit(recipe: Recipe) -> None:
    """That each stage of the classic journey will have its input."""
    if recipe.curate is not None:
        if recipe.tokenize.inputs:
            raise ConfigError("tokenize.inputs is set, "
                              "but the curate: section already says what the model learns from: "
                              "remove tokenize.inputs (or the curate: section to tokenize plain files)")
        if recipe.tokenize.val_fraction is not None:
            raise ConfigError("tokenize.val_fraction is for plain text files; curated data has its own val split: "
                              "remove it and set curate.split.val_fraction instead")
    else:
        if not recipe.tokenize.inputs:
            raise ConfigError("the recipe has no input: "
                              "add a curate: section with inputs (e.g. curate.inputs=[stdlib]), "
                              "or name plain text files with tokenize.inputs=[FILE]")
        named = [i for i in recipe.tokenize.inputs if i.split(":")[0] in ("stdlib", "hf")]
        if named:
            raise ConfigError(f"tokenize.inputs: {named[0]} must be curated first: add a curate: section with "
                              f"inputs [{named[0]}] and remove tokenize.inputs")
        if recipe.eval.split == "test":
            raise ConfigError("eval.split is test, but plain text files are only split into train and val: "
                              "set eval.split=val, or add a curate: section (which holds out a test split)")
    check_candidates(recipe.model, recipe.train, recipe.sizing,
                     also=lambda model, train: plan_batch(train, model.block_size, world_size=1))
    if recipe.model.vocab_size is not None and recipe.tokenizer.vocab_size is not None \
            and recipe.model.vocab_size < recipe.tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size ({recipe.model.vocab_size}) is smaller than tokenizer.vocab_size "
                          f"({recipe.tokenizer.vocab_size}): remove model.vocab_size to take the tokenizer's")
    plan_batch(recipe.train, recipe.model.block_size, world_size=1)  # build checks again for its --nproc-per-node
    if recipe.eval.context is not None and recipe.eval.context > recipe.model.block_size:
        raise ConfigError(f"eval.context ({recipe.eval.context}) is longer than "
                          f"model.block_size ({recipe.model.block_size}): "
                          "lower eval.context")
