"""RL's batches: each step's prompts, a group of sampled completions of each, their rewards and advantages.

    prompts of rollout k     rl.prompts items, in a shuffled order that is a function of (seed, epoch)
    sample                   every prompt rl.group times, in ONE call of generate's batched KV-cache
                             decoder, at rl.temperature, with a seed that is a function of (seed, k)
    score                    each completion's text by the reward (rl_tasks.Reward)
    advantages               against the group's mean (rl_loss.group_advantages)
    rows                     prompt + completion, the loss on the completion's tokens (its end token
                             included: stopping is learned too), in micro-batches for the engine

Rollout k serves the steps k * U .. k * U + U - 1 (U = rl.updates_per_batch). With U > 1 the
sampling policy's log-probabilities are kept for the clipped ratio, and the rollout is written to
RUN/rollouts/, because a run resumed in the middle of those steps no longer has the weights that
sampled it; a rollout is deleted once no checkpoint left in the run could resume inside it.
Everything random is a function of the seed and the step, so a resumed run samples exactly what
the uninterrupted one did.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmsmith.core.atomic import atomic_path
from lmsmith.core.errors import UserError
from lmsmith.finetune.lora import adapters_off
from lmsmith.finetune.rl_loss import RolloutRows, group_advantages, token_logps
from lmsmith.finetune.rl_tasks import Reward, RlPrompts
from lmsmith.model.decoding import generate_tokens
from lmsmith.model.transformer import IGNORE_INDEX
from lmsmith.schema.finetune import RlConfig
from lmsmith.schema.generate import GenerationConfig
from lmsmith.schema.train import BatchPlan

ROLLOUTS = "rollouts"


def prune_rollouts(folder: Path, run_dir: Path, updates_per_batch: int) -> None:
    """Delete the rollouts that no checkpoint of the run needs: those before the oldest one's rollout."""
    from lmsmith.train.checkpoint import checkpoint_dirs

    steps = [int(d.name.rsplit("-", 1)[1]) for d in checkpoint_dirs(run_dir)]
    needed = min(steps, default=0) // updates_per_batch
    for path in folder.glob("rollout-*.safetensors"):
        if int(path.stem.rsplit("-", 1)[1]) < needed:
            path.unlink(missing_ok=True)


def rollout_bytes(config, rows: int, length: int, micro_batch: int) -> float:
    """What a rollout holds at its peak beyond the weights: the decoder's KV cache and logits for every row,
    then the log-probability passes over a micro-batch (its logits and their log-softmax, in fp32)."""
    cache = 2 * config.n_layer * rows * length * config.kv_heads * config.head_dim * 4
    return cache + 2 * rows * config.vocab_size * 4 + 2 * micro_batch * length * config.vocab_size * 4


def check_rollouts_fit(model, rl: RlConfig, prompt_length: int, micro_batch: int, device,
                       reference_copy: bool) -> None:
    """Refuse, before any sampling, rollouts of rl.prompts x rl.group completions that the device cannot hold."""
    from lmsmith.train.memory import GiB, available_memory

    rows, length = rl.prompts * rl.group, prompt_length + rl.max_new_tokens
    parameters = sum(p.numel() for p in model.parameters())
    # weights, gradients and AdamW's two moments (at most), a frozen reference copy, and the rollout itself
    needed = (16 + (4 if reference_copy else 0)) * parameters + rollout_bytes(model.config, rows, length,
                                                                              min(micro_batch, rows))
    available = available_memory(torch.device(device))
    if available is not None and needed > available:
        raise UserError(f"RL's rollouts of rl.prompts x rl.group = {rl.prompts} x {rl.group} = {rows} completions of "
                        f"up to {length} tokens need about {needed / GiB:.1f} GiB with the model, but {device} has "
                        f"{available / GiB:.1f} GiB free: lower rl.group, rl.prompts or rl.max_new_tokens")


def rollout_prompts(n_items: int, per_rollout: int, seed: int, index: int) -> list[int]:
    """The items of rollout `index`: consecutive places in one shuffled order of the items per epoch."""
    places = range(index * per_rollout, (index + 1) * per_rollout)
    orders: dict[int, np.ndarray] = {}
    picked = []
    for place in places:
        epoch = place // n_items
        if epoch not in orders:
            orders[epoch] = np.random.default_rng([seed, 7, epoch]).permutation(n_items)
        picked.append(int(orders[epoch][place % n_items]))
    return picked


def sampling_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, 8, index]).generate_state(1)[0])


def sample_completions(model, prompts: list[list[int]], group: int, config: GenerationConfig, end_id: int,
                       vocab_size: int) -> list[list[int]]:
    """`group` completions of each prompt (prompt-major), all drawn in one batched decode; each ends with
    `end_id` when the model wrote it within config.max_new_tokens."""
    rows = [ids for ids in prompts for _ in range(group)]
    completions: list[list[int]] = [[] for _ in rows]
    was_training = model.training
    model.eval()  # no dropout while sampling: the completions are the policy's own
    try:
        for step in generate_tokens(model, rows, config, eot_id=end_id, vocab_size=vocab_size):
            for row, token in enumerate(step):
                if token is not None:
                    completions[row].append(token)
    finally:
        model.train(was_training)
    return completions


def completion_text(tokenizer, tokens: list[int], end_id: int, stops: list[str]) -> str:
    """What the reward reads: the completion without its end token, cut before a stop string."""
    text = tokenizer.decode(tokens[:-1] if tokens and tokens[-1] == end_id else tokens)
    for stop in stops:
        text = text.split(stop, 1)[0]
    return text


def completion_rows(prompts: list[list[int]], completions: list[list[int]],
                    pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of prompt + completion per row, right-padded; only completion tokens are targets."""
    sequences = [p + c for p, c in zip(prompts, completions)]
    length = max(len(s) for s in sequences) - 1
    inputs = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    targets = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt, sequence) in enumerate(zip(prompts, sequences)):
        inputs[row, :len(sequence) - 1] = torch.tensor(sequence[:-1])
        answer = sequence[len(prompt):]
        targets[row, len(prompt) - 1:len(sequence) - 1] = torch.tensor(answer, dtype=torch.long)
    return inputs, targets


def rollout_stats(rewards: torch.Tensor, completions: list[list[int]]) -> dict[str, float]:
    """What a step logs of its rollout: the mean reward, the share of groups where some completion earned a
    reward, the share whose completions differ in reward (only those teach anything), the completions' length."""
    mixed = rewards.max(dim=1).values > rewards.min(dim=1).values
    return {"reward": round(float(rewards.mean()), 5),
            "groups_rewarded": round(float((rewards > 0).any(dim=1).double().mean()), 5),
            "groups_mixed": round(float(mixed.double().mean()), 5),
            "completion_tokens": round(sum(map(len, completions)) / len(completions), 3)}


@dataclass
class Rollout:
    index: int
    inputs: torch.Tensor
    targets: torch.Tensor
    advantages: torch.Tensor
    old_logps: torch.Tensor | None
    ref_logps: torch.Tensor | None
    stats: dict[str, float]


def rollout_path(folder: Path, index: int) -> Path:
    return folder / f"rollout-{index:06d}.safetensors"


def save_rollout(folder: Path, rollout: Rollout) -> None:
    from safetensors.torch import save_file

    tensors = {name: getattr(rollout, name).contiguous() for name in
               ("inputs", "targets", "advantages", "old_logps", "ref_logps") if getattr(rollout, name) is not None}
    with atomic_path(rollout_path(folder, rollout.index)) as tmp:
        save_file(tensors, str(tmp), metadata={"index": str(rollout.index), "stats": json.dumps(rollout.stats)})


def load_rollout(folder: Path, index: int) -> Rollout | None:
    """Rollout `index` as a run saved it, or None when it has not."""
    from safetensors import safe_open

    path = rollout_path(folder, index)
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    return Rollout(index, tensors["inputs"], tensors["targets"], tensors["advantages"], tensors.get("old_logps"),
                   tensors.get("ref_logps"), json.loads(metadata["stats"]))


class RolloutBatches:
    """The engine's batches for --mode rl (the protocol of train.data.TrainBatches): the micro-batches of
    step s are the completions of rollout s // rl.updates_per_batch, sampled from the policy being trained."""

    def __init__(self, policy, prompts: RlPrompts, reward: Reward, rl: RlConfig, micro_batch: int, seed: int,
                 device, precision, tokenizer, reference=None, run_dir: Path | None = None):
        self.policy, self.prompts, self.items, self.reward = policy, prompts, prompts.items, reward
        self.rl, self.seed, self.precision, self.tokenizer = rl, seed, precision, tokenizer
        self.reference = reference  # a frozen copy of the start (full fine-tuning); None: the adapters off (LoRA)
        self.device = torch.device(device)
        self.run_dir = run_dir
        self.store = run_dir / ROLLOUTS if run_dir is not None and rl.updates_per_batch > 1 else None
        rows = rl.prompts * rl.group
        micro = min(micro_batch, rows)
        self.plan = BatchPlan(policy.config.block_size, micro, 1, math.ceil(rows / micro))
        self.seconds = 0.0  # the engine's data share: here the time spent sampling and scoring
        self._current: Rollout | None = None

    def epochs(self, steps_done: int) -> float:
        return math.ceil(steps_done / self.rl.updates_per_batch) * self.rl.prompts / len(self.items)

    def micro_batches(self, step: int) -> Iterator[RolloutRows]:
        rollout = self.rollout(step // self.rl.updates_per_batch)
        rows = rollout.inputs.size(0)
        stats = {name: torch.tensor(value) for name, value in rollout.stats.items()}
        for first in range(0, rows, self.plan.micro_batch):
            part = slice(first, first + self.plan.micro_batch)
            size = rollout.inputs[part].size(0)
            yield RolloutRows(*(None if t is None else t[part].to(self.device) for t in (
                rollout.inputs, rollout.targets, rollout.advantages, rollout.old_logps, rollout.ref_logps)),
                share=self.plan.grad_accum * size / rows, stats=stats)

    def rollout(self, index: int) -> Rollout:
        """Rollout `index`: the one in memory, the one a killed run saved, or a new one."""
        if self._current is not None and self._current.index == index:
            self._current.stats["rollout_s"] = 0.0  # reused: this step sampled nothing
            return self._current
        started = time.perf_counter()
        rollout = load_rollout(self.store, index) if self.store is not None else None
        if rollout is None:
            rollout = self.sample(index)
            if self.store is not None:
                save_rollout(self.store, rollout)
                prune_rollouts(self.store, self.run_dir, self.rl.updates_per_batch)
        rollout.stats["rollout_s"] = round(time.perf_counter() - started, 3)
        self.seconds += time.perf_counter() - started
        self._current = rollout
        return rollout

    def sample(self, index: int) -> Rollout:
        rl = self.rl
        chosen = rollout_prompts(len(self.items), rl.prompts, self.seed, index)
        prompts, end_id = self.prompts, self.prompts.end_id
        config = GenerationConfig(max_new_tokens=rl.max_new_tokens, temperature=rl.temperature,
                                  seed=sampling_seed(self.seed, index))
        completions = sample_completions(self.policy, [prompts.ids[i] for i in chosen], rl.group, config, end_id,
                                         self.tokenizer.vocab_size)
        owners = [i for i in chosen for _ in range(rl.group)]
        texts = [completion_text(self.tokenizer, c, end_id, prompts.stops[i]) for i, c in zip(owners, completions)]
        rewards = torch.tensor([self.reward(self.items[i], text) for i, text in zip(owners, texts)],
                               dtype=torch.float64).view(rl.prompts, rl.group)
        advantages = group_advantages(rewards, rl.scale_std).view(-1).float()
        inputs, targets = completion_rows([prompts.ids[i] for i in owners], completions, self.tokenizer.eot_id)
        old = self.logps(self.policy, inputs, targets) if rl.updates_per_batch > 1 else None
        ref = self.reference_logps(inputs, targets) if rl.kl > 0 else None
        return Rollout(index, inputs, targets, advantages, old, ref, rollout_stats(rewards, completions))

    @torch.no_grad()
    def logps(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token log-probabilities in the precision training computes them in, in micro-batches, on the CPU."""
        was_training = model.training
        model.eval()
        parts = []
        try:
            for first in range(0, inputs.size(0), self.plan.micro_batch):
                part = slice(first, first + self.plan.micro_batch)
                with self.precision.autocast():
                    parts.append(token_logps(model, inputs[part].to(self.device), targets[part].to(self.device)).cpu())
        finally:
            model.train(was_training)
        return torch.cat(parts)

    def reference_logps(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.reference is not None:
            return self.logps(self.reference, inputs, targets)
        with adapters_off(self.policy):
            return self.logps(self.policy, inputs, targets)
