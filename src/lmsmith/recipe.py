"""A recipe: one YAML file that holds the config of every stage, for `lmsmith build`.

    curate:                  # optional; without it the inputs are plain text files (see tokenize.inputs)
      inputs: [stdlib]       # files, folders, hf:NAME[:CONFIG][:SPLIT], or stdlib
      split: {val_fraction: 0.02, test_fraction: 0.02}
      ...                    # every other key is `lmsmith curate`'s config (lmsmith.data.config.CurateConfig)
    tokenizer: {kind: bpe, vocab_size: 4096, sample_mb: null}
    tokenize: {inputs: [], val_fraction: null, shard_tokens: 100000000}
    model: {...}             # lmsmith.config.ModelConfig; vocab_size comes from the tokenizer
    train: {...}             # lmsmith.train.config.TrainConfig
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
import dataclasses
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from lmsmith.config import ConfigError, ModelConfig, apply_overrides, parse_section, read_yaml, section_to_dict
from lmsmith.data.config import CurateConfig
from lmsmith.errors import UserError
from lmsmith.evaluate_split import EvalConfig
from lmsmith.generate import GenerationConfig
from lmsmith.token_shards import SHARD_TOKENS
from lmsmith.tokenizer import check_vocab_size, special_token_list
from lmsmith.train.config import TrainConfig, TrainRecipe, plan_batch

STAGES = ("curate", "tokenizer", "tokenize", "train", "eval", "generate")  # in the order build runs them
SECTIONS = ("curate", "tokenizer", "tokenize", "model", "train", "eval", "generate", "sweep")
SHIPPED = "configs"  # recipes shipped inside the package: lmsmith/configs/NAME.yaml
DEFAULT_RECIPE = "quickstart"


@dataclass
class CurateSection(CurateConfig):
    """`lmsmith curate`'s config plus what to curate."""

    inputs: list[str] = field(default_factory=list)  # files, folders, hf:NAME[:CONFIG][:SPLIT], stdlib

    def check(self, where: str = "curate") -> None:
        super().check(where)
        if not self.inputs:
            raise ConfigError(f"{where}.inputs is empty: name what to curate, e.g. {where}.inputs=[stdlib] "
                              "or a list of files, folders and hf:DATASET names")

    def curate_config(self) -> CurateConfig:
        """The section without `inputs`: the config `lmsmith curate` takes."""
        return CurateConfig(**{f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(CurateConfig)})


@dataclass
class TokenizerSection:
    kind: Literal["bpe", "char"] = "bpe"
    vocab_size: int | None = 4096  # everything included (256 bytes, special tokens); char: null keeps every character
    special_tokens: list[str] = field(default_factory=list)  # besides <|endoftext|>, which is always there
    sample_mb: float | None = None  # train on the first this many MB of the training text; null: all of it

    def check(self, where: str = "tokenizer") -> None:
        if self.kind == "bpe" and self.vocab_size is None:
            raise ConfigError(f"{where}.vocab_size is needed for a BPE tokenizer, e.g. {where}.vocab_size=4096")
        try:
            specials = special_token_list(self.special_tokens)
            if self.vocab_size is not None:
                check_vocab_size(self.vocab_size, specials)
        except UserError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if self.sample_mb is not None and not self.sample_mb > 0:
            raise ConfigError(f"{where}.sample_mb must be positive (or null for all the text), got {self.sample_mb}")


@dataclass
class TokenizeSection:
    inputs: list[str] = field(default_factory=list)  # text files and folders; only when there is no curate: section
    val_fraction: float | None = None  # text files only: the last fraction of the tokens held out (default 0.1)
    shard_tokens: int = SHARD_TOKENS

    def check(self, where: str = "tokenize") -> None:
        if self.shard_tokens < 1:
            raise ConfigError(f"{where}.shard_tokens must be at least 1, got {self.shard_tokens}")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{where}.val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")


@dataclass
class GenerateSection(GenerationConfig):
    """The samples printed at the end of a build: how to sample, and from which prompts."""

    prompts: list[str] = field(default_factory=lambda: [""])  # "" starts from scratch, as a new document would
    device: str = "auto"

    def check(self, where: str = "generate") -> None:
        super().check(where)
        if not self.prompts:
            raise ConfigError(f"{where}.prompts is empty: give at least one prompt (\"\" writes from scratch)")

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(**{f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(GenerationConfig)})


@dataclass
class Recipe:
    curate: CurateSection | None = None
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    tokenize: TokenizeSection = field(default_factory=TokenizeSection)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generate: GenerateSection = field(default_factory=GenerateSection)
    sweep: dict[str, Any] | None = None  # checked by `lmsmith sweep`
    path: Path | None = None  # the file it was read from (not a config key)

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else DEFAULT_RECIPE

    def to_dict(self) -> dict:
        """The plain-dict form, as it would be written in a recipe file (loads back to an equal Recipe)."""
        raw = {name: section_to_dict(getattr(self, name)) for name in SECTIONS if name not in ("curate", "sweep")}
        if self.curate is not None:
            raw = {"curate": section_to_dict(self.curate), **raw}
        if self.sweep is not None:
            raw["sweep"] = copy.deepcopy(self.sweep)
        return raw

    def train_recipe(self, data: str | Path, out: str | Path) -> TrainRecipe:
        """What `lmsmith train` runs for this recipe, on the tokens in `data`, into the run directory `out`."""
        return TrainRecipe(data=str(data), out=str(out), model=copy.deepcopy(self.model), train=copy.deepcopy(self.train))


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
    match = difflib.get_close_matches(Path(stem).name, shipped, n=1, cutoff=0.5)
    hint = f"did you mean '{match[0]}'?" if match else f"the shipped recipes are {', '.join(shipped)}"
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
    for key in raw:
        if key not in SECTIONS:
            match = difflib.get_close_matches(str(key), SECTIONS, n=1, cutoff=0.5)
            hint = f"did you mean '{match[0]}'?" if match else f"a recipe has the sections {', '.join(SECTIONS)}"
            raise ConfigError(f"unknown stage '{key}' in the recipe: {hint}")
    recipe = Recipe(
        curate=parse_section(CurateSection, raw["curate"], "curate") if "curate" in raw else None,
        tokenizer=parse_section(TokenizerSection, raw.get("tokenizer"), "tokenizer"),
        tokenize=parse_section(TokenizeSection, raw.get("tokenize"), "tokenize"),
        model=parse_section(ModelConfig, raw.get("model"), "model"),
        train=parse_section(TrainConfig, raw.get("train"), "train"),
        eval=parse_section(EvalConfig, raw.get("eval"), "eval"),
        generate=parse_section(GenerateSection, raw.get("generate"), "generate"),
    )
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
            raise ConfigError("tokenize.inputs is set, but the curate: section already says what the model learns from: "
                              "remove tokenize.inputs (or the curate: section to tokenize plain files)")
        if recipe.tokenize.val_fraction is not None:
            raise ConfigError("tokenize.val_fraction is for plain text files; curated data has its own val split: "
                              "remove it and set curate.split.val_fraction instead")
    else:
        if not recipe.tokenize.inputs:
            raise ConfigError("the recipe has no input: add a curate: section with inputs (e.g. curate.inputs=[stdlib]), "
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
        raise ConfigError(f"eval.context ({recipe.eval.context}) is longer than model.block_size ({recipe.model.block_size}): "
                          "lower eval.context")
