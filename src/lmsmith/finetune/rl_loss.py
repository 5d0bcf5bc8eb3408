"""RL's objective: group-relative advantages and the clipped policy-gradient loss (GRPO's shape).

For a prompt, G completions are sampled and scored, rewards r_1..r_G. Each completion's advantage
is its reward against the group's mean (the baseline needs no value model):

    A_i = r_i - mean(r)                      (rl.scale_std: divided by std(r) + 1e-4, std with n - 1)

For each completion token t of completion i, with log-probabilities logp under the policy now,
old under the policy that sampled it, and ref under the starting model:

    ratio  = exp(logp - old)
    pg     = -min(ratio A_i, clip(ratio, 1 - eps, 1 + eps) A_i)
    kl     = exp(ref - logp) - (ref - logp) - 1           (an unbiased, never negative estimate of KL)
    loss_t = pg + beta kl

A completion's loss is the mean over its tokens; the step's loss is the mean over completions.
On-policy (rl.updates_per_batch 1) `old` is the policy itself, detached: the ratio is exactly 1 and
the gradient is the plain policy gradient A_i grad logp. Only completion tokens carry loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lmsmith.model.transformer import IGNORE_INDEX

STD_EPS = 1e-4  # keeps a group whose rewards barely differ from blowing its advantages up (TRL's GRPO)


def group_advantages(rewards: torch.Tensor, scale_std: bool) -> torch.Tensor:
    """(prompts, group) rewards -> advantages of the same shape, each against its own group."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_std:
        centred = centred / (rewards.std(dim=1, keepdim=True) + STD_EPS)
    return centred


def token_logps(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p of each target token given the ones before it, (rows, positions); 0 where nothing is trained."""
    logits = model(inputs).logits.float()
    picked = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * (targets != IGNORE_INDEX)


class RolloutRows(NamedTuple):
    """One micro-batch of completions, as the engine hands it to the objective (inputs first)."""

    inputs: torch.Tensor  # (rows, positions): prompt and completion, right-padded
    targets: torch.Tensor  # the next tokens; IGNORE_INDEX on the prompt and the padding
    advantages: torch.Tensor  # (rows,)
    old_logps: torch.Tensor | None  # the sampling policy's, when it differs from the policy (updates_per_batch > 1)
    ref_logps: torch.Tensor | None  # the starting model's, when rl.kl > 0
    share: float  # rows here / rows in the step x micro-batches in the step: the mean over micro-batches is exact
    stats: dict[str, torch.Tensor]  # what the rollout measured (reward, lengths), logged beside the loss


def policy_objective(clip: float, kl_weight: float) -> Callable:
    """The engine's objective for `--mode rl`: (model, RolloutRows) -> (loss, statistics)."""

    def objective(model, rows: RolloutRows):
        logps = token_logps(model, rows.inputs, rows.targets)
        mask = (rows.targets != IGNORE_INDEX).to(logps.dtype)
        old = rows.old_logps if rows.old_logps is not None else logps.detach()
        ratio = torch.exp(logps - old)
        advantage = rows.advantages.to(logps.dtype)[:, None]
        per_token = -torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
        stats = dict(rows.stats)
        if rows.ref_logps is not None:
            delta = rows.ref_logps - logps
            kl = torch.exp(delta) - delta - 1
            per_token = per_token + kl_weight * kl
            stats["kl"] = ((kl * mask).sum() / mask.sum().clamp(min=1)).detach()
        per_row = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        stats["clipped"] = (((ratio - 1).abs() > clip).to(logps.dtype) * mask).sum().detach() / mask.sum().clamp(
            min=1)
        return per_row.mean() * rows.share, stats

    return objective
