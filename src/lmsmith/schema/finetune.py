"""What a fine-tuning run does, as typed config: the `finetune:` section of a recipe.

The training itself (learning rate, steps, batch size, precision, evaluation and early
stopping) is the training engine's own `train:` section, with defaults suited to fine-tuning;
the `finetune:` section only chooses what data flows in and which parameters learn.

    finetune:
      mode: instruct
      method: lora
      template: chatml
      lora: {rank: 16, alpha: 32, targets: [attn.qkv, attn.proj]}
    train:
      lr: 5.0e-4
      steps: 300

On the command line, `lora.rank=16` and `template=chatml` set keys of the finetune section,
`train.lr=1e-4` keys of the train section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from lmsmith.core.config import ConfigError, parse_section
from lmsmith.schema.train import TrainConfig

DEFAULT_LORA_TARGETS = ["attn.qkv", "attn.proj", "ffn.fc", "ffn.proj"]


@dataclass
class LoRAConfig:
    rank: int = 8  # the rank r of the update B A; the adapter has r * (in + out) numbers per layer
    alpha: float = 16.0  # the update is scaled by alpha / rank, so changing rank keeps its size
    dropout: float = 0.0  # dropout on the adapter's input only
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))  # layer names or patterns

    def check(self, where: str = "lora") -> None:
        if self.rank < 1:
            raise ConfigError(f"{where}.rank must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"{where}.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ConfigError(f"{where}.targets is empty: name layers to adapt, e.g. {DEFAULT_LORA_TARGETS}")


@dataclass
class FreezeConfig:
    """For full fine-tuning: parts of the model that keep their weights."""

    embeddings: bool = False  # the token embedding (and a head tied to it) and learned positions
    blocks: int = 0  # the first N transformer blocks

    def check(self, where: str = "freeze") -> None:
        if self.blocks < 0:
            raise ConfigError(f"{where}.blocks must be 0 or more, got {self.blocks}")


@dataclass
class DpoConfig:
    """Preference tuning (--mode dpo): pairs of a better and a worse answer to the same prompt."""

    # sigmoid: DPO (Rafailov et al. 2023) against the starting model's log-probabilities, computed once;
    # simpo: SimPO (Meng et al. 2024), reference-free, on length-normalised log-probabilities
    loss: Literal["sigmoid", "simpo"] = "sigmoid"
    beta: float = 0.1  # how far from the reference the policy may move (sigmoid); the reward scale (simpo: ~2)
    gamma: float = 0.5  # simpo: the margin the chosen answer's reward must clear; not used by sigmoid

    def check(self, where: str = "dpo") -> None:
        if not self.beta > 0 or not math.isfinite(self.beta):
            raise ConfigError(f"{where}.beta must be a positive number, got {self.beta}")
        if not math.isfinite(self.gamma) or self.gamma < 0:
            raise ConfigError(f"{where}.gamma must be 0 or more, got {self.gamma}")


@dataclass
class RlConfig:
    """Reinforcement learning from checkable rewards (--mode rl): the exam's items, their checkers the reward."""

    group: int = 4  # completions sampled per prompt; their mean reward is each one's baseline
    prompts: int = 4  # prompts per step (the step trains on prompts x group completions)
    temperature: float = 1.0  # of the sampled completions
    max_new_tokens: int = 32  # the longest completion; prompt plus completion must fit the model's context
    scale_std: bool = False  # divide each group's advantages by the group's standard deviation (GRPO)
    kl: float = 0.02  # weight of the KL penalty to the starting model (0: no reference is kept)
    updates_per_batch: int = 1  # optimizer steps on each batch of rollouts (above 1: the clipped ratio applies)
    clip: float = 0.2  # the ratio to the rollout's policy is kept within 1 +- clip
    reward: str | None = None  # module:function (or file.py:function) scoring (item, completion) -> float

    def check(self, where: str = "rl") -> None:
        if self.group < 2:
            raise ConfigError(f"{where}.group must be at least 2 (a group's mean reward is the baseline of each of "
                              f"its completions, so one completion has nothing to compare with), got {self.group}")
        if self.prompts < 1:
            raise ConfigError(f"{where}.prompts must be at least 1, got {self.prompts}")
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ConfigError(f"{where}.temperature must be positive (sampling, not greedy), got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"{where}.max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not math.isfinite(self.kl) or self.kl < 0:
            raise ConfigError(f"{where}.kl must be 0 (off) or more, got {self.kl}")
        if self.updates_per_batch < 1:
            raise ConfigError(f"{where}.updates_per_batch must be at least 1, got {self.updates_per_batch}")
        if not 0 < self.clip < 1:
            raise ConfigError(f"{where}.clip must be in (0, 1), got {self.clip}")
        if self.reward is not None and ":" not in self.reward:
            raise ConfigError(f"{where}.reward must be module:function (or path/to/file.py:function), "
                              f"got {self.reward!r}")


@dataclass
class FinetuneConfig:
    # answers to prompts (instruct), more pretraining on domain text (continue), preference pairs (dpo),
    # or reinforcement learning against checkable rewards (rl)
    mode: Literal["instruct", "continue", "dpo", "rl"] = "instruct"
    method: Literal["full", "lora"] = "full"
    template: str = "plain"  # chat template for instruct data: chatml, plain or raw
    packing: bool = False  # instruct: pack examples into full rows (faster; attention crosses examples)
    val_fraction: float = 0.1  # held out from the domain data when it has no validation split
    data: str | None = None  # the domain data (--data): a JSONL file for instruct; text, a curated or tokens dir
    val_data: str | None = None  # a separate domain validation set (same kind as --data)
    # general text (files, curated or tokens dir) whose loss before and after is reported
    general_val: str | None = None
    general_val_tokens: int = 65536  # at most this many tokens of it are scored
    restore_best: bool = True  # end with the weights of the best validation, not those of the last step
    exact_match: int = 0  # instruct: answer this many validation prompts greedily before and after, and score them
    exam: str | None = None  # instruct: an exam task file or folder (lmsmith exam) scored before and after
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    rl: RlConfig = field(default_factory=RlConfig)

    def check(self, where: str = "finetune") -> None:
        if self.exact_match < 0:
            raise ConfigError(f"{where}.exact_match must be 0 (off) or a number of prompts, got {self.exact_match}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{where}.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.general_val_tokens < 2:
            raise ConfigError(f"{where}.general_val_tokens must be at least 2, got {self.general_val_tokens}")
        if self.method == "lora" and (self.freeze.embeddings or self.freeze.blocks):
            raise ConfigError(f"{where}.freeze applies to full fine-tuning; LoRA already freezes every base weight: "
                              "drop the freeze settings or use method full")
        if self.mode == "continue" and self.packing:
            raise ConfigError(f"{where}.packing is for instruct data; continued pretraining always fills whole rows")
        if self.mode == "dpo" and self.packing:
            raise ConfigError(f"{where}.packing is for instruct data; a preference pair is scored as whole answers")
        if self.mode == "rl" and self.packing:
            raise ConfigError(f"{where}.packing is for instruct data; RL trains on its own sampled completions")


# Training defaults for fine-tuning: short runs, a gentle learning rate (the weights are already
# good), no weight decay (it would pull the weights towards zero, not towards the base model),
# frequent validation with early stopping, and one checkpoint kept.
FINETUNE_TRAIN_DEFAULTS = dict(
    steps=300, warmup_steps=10, lr=1e-4, weight_decay=0.0, schedule="cosine", min_lr_ratio=0.1,
    micro_batch=8, eval_every=25, eval_batches=8, early_stop_patience=4, save_every=1000, keep_last=1, log_every=10,
)
LORA_LEARNING_RATE = 1e-3  # adapters start at zero and are small: they take a larger step


@dataclass
class FinetuneRecipe:
    finetune: FinetuneConfig
    train: TrainConfig
    batch_tokens_given: bool  # False: one micro-batch of full rows per step, set once the model's context is known


MODES_NAMED_AS_METHODS = ("dpo", "rl")  # `--method dpo|rl`, as the issue and TRL users write it, means the mode


def route_method_to_mode(section: dict | None) -> dict | None:
    """finetune.method dpo or rl is the mode of that name (the method, full or LoRA, keeps its default)."""
    if not isinstance(section, dict) or section.get("method") not in MODES_NAMED_AS_METHODS:
        return section
    mode = section["method"]
    if section.get("mode") not in (None, mode):
        raise ConfigError(f"finetune.method {mode} names the mode, but finetune.mode is {section['mode']}: "
                          "give one of them (and finetune.method full or lora for what learns)")
    return {**{k: v for k, v in section.items() if k != "method"}, "mode": mode}


def finetune_from_sections(raw: dict) -> FinetuneRecipe:
    """The finetune and train sections, with fine-tuning's own training defaults under what was written.

    Fine-tuning starts from a trained model, so its training defaults differ from pretraining's
    (FINETUNE_TRAIN_DEFAULTS); LoRA's adapters start at zero and take a larger learning rate.
    """
    config = parse_section(FinetuneConfig, route_method_to_mode(raw.get("finetune")), "finetune")
    train_raw = raw.get("train") or {}
    if not isinstance(train_raw, dict):
        raise ConfigError(f"train: expected a mapping of keys to values, got {train_raw!r}")
    defaults = dict(FINETUNE_TRAIN_DEFAULTS,
                    lr=LORA_LEARNING_RATE if config.method == "lora" else FINETUNE_TRAIN_DEFAULTS["lr"])
    steps = train_raw.get("steps")
    if isinstance(steps, int) and "warmup_steps" not in train_raw:
        defaults["warmup_steps"] = min(defaults["warmup_steps"], max(0, steps // 10))
    train = parse_section(TrainConfig, {**defaults, **train_raw}, "train")
    return FinetuneRecipe(config, train, "batch_tokens" in train_raw)
