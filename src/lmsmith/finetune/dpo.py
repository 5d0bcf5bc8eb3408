"""Preference tuning's objective: DPO against a cached reference, or reference-free SimPO.

For a pair, let c and r be the policy's log-probabilities of the chosen and rejected answers
(summed over the answer's tokens only), and c0, r0 the same under the reference model:

    sigmoid (DPO)   rewards  beta (c - c0), beta (r - r0);   loss  -log sigmoid(reward_c - reward_r)
    simpo           rewards  beta c / |c|, beta r / |r|      loss  -log sigmoid(reward_c - reward_r - gamma)

At the first step the policy is the reference, so DPO's loss is log 2. The reference's log-
probabilities are computed once, before training, with the starting model (for LoRA that is the
base with its adapter still zero, that is, off), so no second model is held while training. The
statistics logged beside the loss follow TRL's names: rewards of the chosen and rejected answers,
their margin, and how often the chosen one is ahead (preference accuracy).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmsmith.finetune.preferences import TokenizedPair, pair_batch
from lmsmith.model.transformer import IGNORE_INDEX


def answer_logps(model, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed log-probability of its target tokens (the answer), and how many there are."""
    logits = model(inputs).logits.float()
    counted = targets != IGNORE_INDEX
    picked = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * counted).sum(-1), counted.sum(-1)


def preference_objective(loss_kind: str, beta: float, gamma: float) -> Callable:
    """The engine's objective for `--mode dpo`: (model, (inputs, targets, reference)) -> (loss, statistics)."""

    def objective(model, batch):
        inputs, targets, reference = batch
        logps, lengths = answer_logps(model, inputs, targets)
        n = inputs.size(0) // 2
        if loss_kind == "simpo":
            rewards = beta * logps / lengths.clamp(min=1)
            margin_target = gamma
        else:
            rewards = beta * (logps - reference.to(logps.dtype))
            margin_target = 0.0
        chosen, rejected = rewards[:n], rewards[n:]
        loss = -F.logsigmoid(chosen - rejected - margin_target).mean()
        stats = {"rewards_chosen": chosen.detach().mean(), "rewards_rejected": rejected.detach().mean(),
                 "reward_margin": (chosen - rejected).detach().mean(),
                 "preference_accuracy": (chosen > rejected).float().mean()}
        return loss, stats

    return objective


@torch.no_grad()
def cache_reference(model, pairs: list[TokenizedPair], micro_batch: int, device, pad_id: int, precision) -> None:
    """Store the model's log-probabilities of each pair's answers in the pair (before any training step),
    in the precision training computes them in, so that the first step's loss is exactly log 2."""
    was_training = model.training
    model.eval()
    for i in range(0, len(pairs), micro_batch):
        chunk = pairs[i:i + micro_batch]
        inputs, targets, _ = pair_batch(chunk, pad_id)
        with precision.autocast():
            logps, _ = answer_logps(model, inputs.to(device), targets.to(device))
        for pair, chosen, rejected in zip(chunk, logps[:len(chunk)].tolist(), logps[len(chunk):].tolist()):
            pair.reference = (chosen, rejected)
    model.train(was_training)
