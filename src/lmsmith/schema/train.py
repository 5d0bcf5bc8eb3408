"""The training recipe: where the tokens are, where the run goes, the model's shape and how to train it.

    data: tokens/            # a directory made by `lmsmith tokenize`
    out: runs/tiny           # the run directory (default: runs/<recipe name>)
    model: {...}             # lmsmith.schema.model.ModelConfig; vocab_size comes from the tokens
    train: {...}             # TrainConfig below

A recipe for `lmsmith build` holds every stage's section in one file; `lmsmith train` reads the
four above and leaves the other stages' sections to their verbs. Everything is checked before any
work starts, including what depends on the launch (the number of ranks under torchrun).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmsmith.core.config import ConfigError, section_to_dict
from lmsmith.core.errors import UserError
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.sizing import SizingConfig, check_candidates

# Sections of a full pipeline recipe that belong to other verbs; `train` accepts and ignores them.


@dataclass
class TrainConfig:
    """How to train. Sizes are per optimizer step unless said otherwise."""

    seed: int = 1337
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | mps
    steps: int = 1000  # optimizer steps (with max_minutes: the most the budget may plan)
    max_minutes: float | None = None  # a time budget: plan the steps that fit, warmup and decay included
    # what the recipe's budget trains on the machine it was tuned on; a run that trains much less says so
    reference_tokens: int | None = None
    batch_tokens: int = 16384  # global batch: tokens per optimizer step, over all ranks and micro-batches
    micro_batch: int = 16  # sequences per forward/backward on one rank; gradient accumulation makes up the rest

    optimizer: Literal["adamw", "muon"] = "adamw"
    lr: float = 1e-3  # peak learning rate of AdamW (all parameters, or those Muon does not take)
    muon_lr: float = 0.02  # peak learning rate of Muon's hidden matrices
    muon_momentum: float = 0.95
    weight_decay: float = 0.1  # on the matrices of the blocks and an untied head; never embeddings, norms, biases
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8

    # A context curriculum: the first short_context_share of the steps train on windows of short_context
    # tokens (each row of block_size cut in pieces: the same tokens per step, cheaper attention), the rest
    # on whole rows. None: whole rows throughout. Pretraining only: fine-tuning's examples are padded to
    # their own lengths, with no rows to cut, so `lmsmith finetune` reading the same recipe ignores it.
    short_context: int | None = None
    short_context_share: float = 0.5

    # How training rows are read (lmsmith/train/data.py): epochs, each pass reading every token once in a
    # shuffled order, or windows drawn independently at random (a pass leaves about 37% unseen).
    data_order: Literal["epochs", "random"] = "epochs"

    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = 100  # linear warmup from lr/warmup_steps to lr
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly to the floor
    min_lr_ratio: float = 0.1  # the floor: the learning rate never falls below lr * min_lr_ratio

    grad_clip: float = 1.0  # largest global gradient norm; 0 turns clipping off
    max_bad_steps: int = 5  # stop after this many steps in a row with a non-finite loss or gradient

    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    compile: bool = False
    activation_checkpointing: Literal["none", "full", "every_n"] = "none"
    checkpoint_every_n: int = 2  # every_n: checkpoint blocks 0, n, 2n, ...
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun

    eval_every: int = 200  # steps between validation passes (and at the end); 0: only at the end
    eval_batches: int = 20  # micro-batches of validation windows per pass (the same windows each pass)
    early_stop_patience: int | None = None  # stop after this many evaluations without improvement
    early_stop_min_delta: float = 0.0  # an improvement must lower the validation loss by more than this

    save_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # checkpoints kept; older ones are deleted
    log_every: int = 10  # steps between lines of metrics.jsonl

    check_memory: bool = True  # refuse to start when the estimate does not fit the device
    peak_flops: float | None = None  # the device's matmul peak for MFU; None: measured at start
    tensorboard: bool = False  # write RUN/tensorboard/ (pip install 'lmsmith[tensorboard]')
    wandb: bool = False  # log to Weights & Biases (pip install 'lmsmith[wandb]')
    wandb_project: str = "lmsmith"

    def check(self, where: str = "train") -> None:
        positive = ("steps", "batch_tokens", "micro_batch", "eval_batches", "save_every", "keep_last",
                    "log_every", "max_bad_steps", "checkpoint_every_n")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name} must be 0 or more, got {getattr(self, name)}")
        if self.reference_tokens is not None and self.reference_tokens < 1:
            raise ConfigError(f"{where}.reference_tokens must be at least 1 (or null), got {self.reference_tokens}")
        for name in ("lr", "muon_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{where}.{name} must be positive, got {getattr(self, name)}")
        if self.warmup_steps >= self.steps:
            raise ConfigError(f"{where}.warmup_steps ({self.warmup_steps}) must be fewer than "
                              f"{where}.steps ({self.steps}): "
                              f"e.g. {where}.warmup_steps={max(0, self.steps // 10)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{where}.min_lr_ratio must be between 0 and 1, got {self.min_lr_ratio}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"{where}.decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0 and 0.0 <= self.muon_momentum < 1.0):
            raise ConfigError(f"{where}: beta1, beta2 and muon_momentum must be in [0, 1)")
        if self.weight_decay < 0 or self.eps <= 0 or self.grad_clip < 0:
            raise ConfigError(f"{where}: weight_decay and grad_clip must be 0 or more, eps positive")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            raise ConfigError(f"{where}.early_stop_patience must be at least 1 (or null for no early stopping)")
        if self.early_stop_patience is not None and self.eval_every == 0:
            raise ConfigError(f"{where}.early_stop_patience needs evaluations during training: set {where}.eval_every")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"{where}.max_minutes must be positive (or null for no time budget), "
                              f"got {self.max_minutes}")
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise ConfigError(f"{where}.peak_flops must be positive, got {self.peak_flops}")
        if self.short_context is not None and self.short_context < 1:
            raise ConfigError(f"{where}.short_context must be at least 1 (or null), got {self.short_context}")
        if not 0.0 < self.short_context_share < 1.0:
            raise ConfigError(f"{where}.short_context_share must be between 0 and 1, got {self.short_context_share}")


@dataclass
class TrainRecipe:
    data: str | None = None  # tokens directory
    out: str | None = None  # run directory
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sizing: SizingConfig = field(default_factory=SizingConfig)  # shapes the machine picks from (schema.sizing)


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's tokens split into ranks and micro-batches."""

    block_size: int
    micro_batch: int  # sequences per micro-batch per rank
    world_size: int
    grad_accum: int  # micro-batches per rank per step

    @property
    def rows(self) -> int:
        """Sequences per optimizer step, over all ranks."""
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def tokens(self) -> int:
        return self.rows * self.block_size


def plan_batch(train: TrainConfig, block_size: int, world_size: int) -> BatchPlan:
    """Split `train.batch_tokens` into micro-batches on `world_size` ranks, refusing a remainder."""
    per_micro = train.micro_batch * block_size * world_size
    if train.batch_tokens % per_micro:
        lower = max(per_micro, train.batch_tokens // per_micro * per_micro)
        ranks = f" x {world_size} ranks" if world_size > 1 else ""
        raise ConfigError(
            f"train.batch_tokens={train.batch_tokens} does not divide into micro-batches of "
            f"{train.micro_batch} x {block_size} tokens{ranks} = {per_micro}: "
            f"use train.batch_tokens={lower} or {lower + per_micro}, or change train.micro_batch"
        )
    return BatchPlan(block_size, train.micro_batch, world_size, train.batch_tokens // per_micro)


def launch_world_size() -> int:
    """The number of ranks torchrun is starting (1 without torchrun), known before joining the group."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def train_recipe_of(config, data: str | Path | None = None, out: str | Path | None = None) -> TrainRecipe:
    """What `lmsmith train` runs: its config's model and train sections, on the tokens in `data` (or the
    config file's `data:`), into `out` (or its `out:`, else runs/run); checked before any work."""
    data = data or getattr(config, "data", None)
    if data is None:
        raise UserError("no tokens directory: lmsmith train TOKENS_DIR -o RUN (make one with `lmsmith tokenize`)")
    out = out or getattr(config, "out", None) or Path("runs") / "run"
    recipe = TrainRecipe(data=str(data), out=str(out), model=config.model, train=config.train,
                         sizing=getattr(config, "sizing", None) or SizingConfig())
    check_recipe(recipe)
    return recipe


def check_recipe(recipe: TrainRecipe) -> None:
    """What no single section can check alone: the batch fits the world, the short context the block,
    and the optimizer the sharding."""
    check_shape(recipe.model, recipe.train)
    check_candidates(recipe.model, recipe.train, recipe.sizing, also=check_shape)
    if recipe.train.optimizer == "muon" and recipe.train.parallel == "fsdp" and launch_world_size() > 1:
        raise ConfigError("train.optimizer=muon needs whole matrices, but parallel=fsdp shards them across ranks: "
                          "use train.parallel=ddp with Muon, or train.optimizer=adamw with FSDP")


def check_shape(model: ModelConfig, train: TrainConfig) -> None:
    """The recipe's shape, or a sizing candidate's: its batch divides over the world into rows of
    block_size, and those rows into short windows."""
    plan_batch(train, model.block_size, launch_world_size())
    check_short_context(train, model)


def check_short_context(train: TrainConfig, model: ModelConfig) -> None:
    """Rows of block_size tokens are cut into whole windows of short_context tokens."""
    short, block = train.short_context, model.block_size
    if short is not None and (short >= block or block % short):
        raise ConfigError(f"train.short_context ({short}) must divide model.block_size ({block}) and be smaller: "
                          f"e.g. train.short_context={block // 2}")


def recipe_to_dict(recipe: TrainRecipe) -> dict:
    return section_to_dict(recipe)


def run_summary(manifest: dict) -> str:
    """What a finished run trained, and, when the recipe names what it trains on the machine it was tuned
    on and this run trained much less, that and what to do: a learner who sees a poor model learns why."""
    counts, train = manifest.get("counts", {}), manifest.get("config", {}).get("train", {})
    tokens, steps = counts.get("tokens") or 0, counts.get("steps") or 0
    line = (f"trained {tokens / 1e6:.2f}M tokens in {steps} steps ({counts.get('precision', '?')} on "
            f"{counts.get('device', '?')}, {counts.get('seconds', 0):.0f} s)")
    reference = train.get("reference_tokens")
    if reference and tokens < 0.9 * reference:
        minutes = train.get("max_minutes")
        more = (f"lmsmith build --minutes {minutes * reference / max(tokens, 1):.0f} would train about as much here"
                if minutes else "raise train.steps to train more")
        line += (f": {tokens / reference:.0%} of the {reference / 1e6:.2f}M tokens this recipe trains on the "
                 f"machine it was tuned on, so expect a weaker model; {more}")
    return line
