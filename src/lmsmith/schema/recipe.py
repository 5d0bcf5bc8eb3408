"""A recipe: one YAML file that holds the config of every stage, for `lmsmith build`.

    curate:                  # optional; without it the inputs are plain text files (see tokenize.inputs)
      inputs: [stdlib]       # files, folders, hf:NAME[:CONFIG][:SPLIT], or stdlib
      split: {val_fraction: 0.02, test_fraction: 0.02}
      ...                    # every other key is `lmsmith curate`'s config (lmsmith.schema.curate.CurateConfig)
    tokenizer: {kind: bpe, vocab_size: 4096, sample_mb: null}
    tokenize: {inputs: [], val_fraction: null, shard_tokens: 100000000}
    model: {...}             # lmsmith.schema.model.ModelConfig; vocab_size comes from the tokenizer
    train: {...}             # lmsmith.schema.train.TrainConfig
    eval: {split: test, context: null, stride: null, batch_size: 8, device: auto, precision: fp32}
    generate: {prompts: ["def "], max_new_tokens: 100, temperature: 0.8, top_k: 50, seed: 0, device: auto}
    sweep: {...}             # optional; read by `lmsmith sweep`, ignored by build

Every section is optional and takes its defaults when left out, except that something must name
the inputs: `curate.inputs`, or `tokenize.inputs` (text files and folders) when there is no
`curate:` section. A training recipe for `lmsmith train` (data, out, model, train) is made from
a recipe by `train_recipe`. Everything is checked when the recipe is loaded, before any work.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lmsmith.core.config import ConfigError, apply_overrides, closest_hint, parse_section, read_yaml, section_to_dict
from lmsmith.core.errors import UserError
from lmsmith.schema.curate import CurateConfig
from lmsmith.schema.evaluate import EvalConfig
from lmsmith.schema.generate import GenerateConfig
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.text import TokenizeConfig, TokenizerConfig
from lmsmith.schema.train import TrainConfig, TrainRecipe, plan_batch

SHIPPED = "configs"  # recipes shipped inside the package: lmsmith/configs/NAME.yaml
DEFAULT_RECIPE = "quickstart"


def build_stage_names() -> tuple[str, ...]:
    """The stages `lmsmith build` runs, in order (from the registry)."""
    from lmsmith.stages import BUILD_STAGES

    return tuple(s.name for s in BUILD_STAGES)


def recipe_sections() -> tuple[str, ...]:
    """The sections a recipe may hold: every section a stage reads (from the registry)."""
    from lmsmith.stages import all_sections

    return tuple(all_sections())


@dataclass
class Recipe:
    curate: CurateConfig | None = None
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    sweep: dict[str, Any] | None = None  # checked by `lmsmith sweep`
    init: Any = None  # `lmsmith init`'s seed; build's train stage makes its own model
    finetune: dict[str, Any] | None = None  # read by `lmsmith finetune --config`, not by build
    export: dict[str, Any] | None = None  # read by `lmsmith export --config`, not by build
    serve: dict[str, Any] | None = None  # read by `lmsmith serve --config`, not by build
    chat: dict[str, Any] | None = None  # read by `lmsmith chat --config`, not by build
    explain: dict[str, Any] | None = None  # read by `lmsmith explain --config`; build's first look uses defaults
    path: Path | None = None  # the file it was read from (not a config key)

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else DEFAULT_RECIPE

    def to_dict(self) -> dict:
        """The plain-dict form, as it would be written in a recipe file (loads back to an equal Recipe)."""
        raw = {name: section_to_dict(getattr(self, name))
               for name in ("tokenizer", "tokenize", "model", "train", "eval", "generate")}
        if self.curate is not None:
            raw = {"curate": section_to_dict(self.curate), **raw}
        if self.sweep is not None:
            raw["sweep"] = copy.deepcopy(self.sweep)
        return raw

    def train_recipe(self, data: str | Path, out: str | Path) -> TrainRecipe:
        """What `lmsmith train` runs for this recipe, on the tokens in `data`, into the run directory `out`."""
        return TrainRecipe(data=str(data), out=str(out),
                           model=copy.deepcopy(self.model), train=copy.deepcopy(self.train))


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


def load_recipe(name_or_path: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """Read and check a recipe (a path or a shipped recipe's name) plus `section.key=value` overrides."""
    path = find_recipe(name_or_path)
    raw = apply_overrides(read_yaml(path), list(overrides))
    recipe = recipe_from_dict(raw)
    recipe.path = path
    return recipe


def recipe_from_dict(raw: dict) -> Recipe:
    """A checked Recipe from the plain dict of a recipe file."""
    sections = recipe_sections()
    for key in raw:
        if key not in sections:
            hint = closest_hint(key, sections, f"a recipe has the sections {', '.join(sections)}")
            raise ConfigError(f"unknown stage '{key}' in the recipe: {hint}")
    recipe = Recipe(
        curate=parse_section(CurateConfig, raw["curate"], "curate") if "curate" in raw else None,
        tokenizer=parse_section(TokenizerConfig, raw.get("tokenizer"), "tokenizer"),
        tokenize=parse_section(TokenizeConfig, raw.get("tokenize"), "tokenize"),
        model=parse_section(ModelConfig, raw.get("model"), "model"),
        train=parse_section(TrainConfig, raw.get("train"), "train"),
        eval=parse_section(EvalConfig, raw.get("eval"), "eval"),
        generate=parse_section(GenerateConfig, raw.get("generate"), "generate"),
    )
    if recipe.curate is not None and not recipe.curate.inputs:
        raise ConfigError("curate.inputs is empty: name what to curate, e.g. curate.inputs=[stdlib] "
                          "or a list of files, folders and hf:DATASET names")
    sweep = raw.get("sweep")
    if sweep is not None and not isinstance(sweep, dict):
        raise ConfigError(f"sweep: expected a mapping of keys to values, got {sweep!r}")
    recipe.sweep = sweep
    check_stages_fit(recipe)
    return recipe


def check_stages_fit(recipe: Recipe) -> None:
    """What no single section can check alone: that each stage will have its input."""
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
        named = [i for i in recipe.tokenize.inputs if i == "stdlib" or i.startswith("hf:")]
        if named:
            raise ConfigError(f"tokenize.inputs: {named[0]} must be curated first: add a curate: section with "
                              f"inputs [{named[0]}] and remove tokenize.inputs")
        if recipe.eval.split == "test":
            raise ConfigError("eval.split is test, but plain text files are only split into train and val: "
                              "set eval.split=val, or add a curate: section (which holds out a test split)")
    if recipe.model.vocab_size is not None and recipe.tokenizer.vocab_size is not None \
            and recipe.model.vocab_size < recipe.tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size ({recipe.model.vocab_size}) is smaller than tokenizer.vocab_size "
                          f"({recipe.tokenizer.vocab_size}): remove model.vocab_size to take the tokenizer's")
    plan_batch(recipe.train, recipe.model.block_size, world_size=1)  # build checks again for its --nproc-per-node
    if recipe.eval.context is not None and recipe.eval.context > recipe.model.block_size:
        raise ConfigError(f"eval.context ({recipe.eval.context}) is longer than "
                          f"model.block_size ({recipe.model.block_size}): "
                          "lower eval.context")
