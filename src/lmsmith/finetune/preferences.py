"""Preference pairs for `--mode dpo`: a prompt, a better answer and a worse one.

    {"prompt": "...", "chosen": "...", "rejected": "..."}
    {"messages": [{"role": "user", "content": "..."}, ...], "chosen": "...", "rejected": "..."}

Each side is the prompt's conversation with that answer as the assistant's last message, rendered
through the chat template exactly as instruct fine-tuning renders it, so only the answer's tokens
(and its end marker) count. A batch holds the chosen sides of its pairs first, then the rejected
sides in the same order, with the reference model's log-probability of each (computed once, before
training, by finetune/dpo.py), so one forward pass scores both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from lmsmith.core.errors import UserError
from lmsmith.finetune.instruct_data import (
    Example,
    InstructBatches,
    TokenizedExample,
    json_lines,
    pad_batch,
    parse_example,
    tokenize_example,
)
from lmsmith.text.chat_template import TRAINED_ROLE, ChatTemplate

PAIR_HINT = ('each line must be {"prompt": "...", "chosen": "...", "rejected": "..."} or '
             '{"messages": [...], "chosen": "...", "rejected": "..."}')


@dataclass(frozen=True)
class PreferencePair:
    chosen: Example  # the conversation ending with the better answer
    rejected: Example  # the same conversation ending with the worse one
    line: int = 0


def side(obj: dict, answer: str, where: str, line: int) -> Example:
    """One side of a pair as an instruct example: the prompt (or messages) with `answer` last."""
    if "messages" in obj:
        messages = obj["messages"] if isinstance(obj["messages"], list) else None
        if messages is None:
            raise UserError(f"{where}: field 'messages' must be a list of {{\"role\", \"content\"}} objects")
        return parse_example({"messages": [*messages, {"role": TRAINED_ROLE, "content": answer}]}, where, line)
    if "prompt" not in obj:
        raise UserError(f"{where}: missing field 'prompt' (or 'messages'): {PAIR_HINT}")
    return parse_example({"prompt": obj["prompt"], "response": answer}, where, line)


def parse_pair(obj, where: str, line: int) -> PreferencePair:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}: {PAIR_HINT}")
    for key in ("chosen", "rejected"):
        if not isinstance(obj.get(key), str):
            found = "missing" if key not in obj else f"not text ({type(obj[key]).__name__})"
            raise UserError(f"{where}: field '{key}' is {found}: {PAIR_HINT}")
    return PreferencePair(side(obj, obj["chosen"], where, line), side(obj, obj["rejected"], where, line), line)


@dataclass
class PairFile:
    pairs: list[PreferencePair]
    identical: int  # pairs whose chosen answer equals the rejected one: nothing to prefer, dropped


def read_pairs(path: str | Path) -> PairFile:
    """Every pair of a JSONL file; a malformed line is refused with its line number."""
    pairs, identical = [], 0
    for obj, where, number in json_lines(path, "preference data", PAIR_HINT):
        pair = parse_pair(obj, where, number)
        if pair.chosen.answer == pair.rejected.answer:
            identical += 1
        else:
            pairs.append(pair)
    if not pairs:
        raise UserError(f"{path} holds no usable pair ({identical} with chosen equal to rejected): {PAIR_HINT}")
    return PairFile(pairs, identical)


# ---------------------------------------------------------------------------------------------
# Tokens and batches


@dataclass
class TokenizedPair:
    chosen: TokenizedExample
    rejected: TokenizedExample
    reference: tuple[float, float] = (0.0, 0.0)  # the reference model's log-probabilities of the two answers

    @property
    def inputs(self) -> torch.Tensor:  # what the ordering code of InstructBatches measures items by
        return self.chosen.inputs


def tokenize_pairs(pairs: list[PreferencePair], template: ChatTemplate, tokenizer, max_tokens: int,
                   what: str) -> tuple[list[TokenizedPair], int]:
    """Both sides of each pair as tokens; a pair whose either answer lies wholly past the context is dropped."""
    kept, dropped = [], 0
    for pair in pairs:
        chosen = tokenize_example(pair.chosen, template, tokenizer, max_tokens)
        rejected = tokenize_example(pair.rejected, template, tokenizer, max_tokens)
        if chosen is None or rejected is None:
            dropped += 1
        else:
            kept.append(TokenizedPair(chosen, rejected))
    if pairs and not kept:
        raise UserError(f"every {what} pair's prompt fills the whole context of {max_tokens} tokens, so no answer "
                        "token is left to compare: shorten the prompts or start from a model with a longer context")
    return kept, dropped


def pair_batch(pairs: list[TokenizedPair], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, reference log-probabilities): the chosen sides' rows first, then the rejected sides'."""
    inputs, targets = pad_batch([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    reference = torch.tensor([p.reference[0] for p in pairs] + [p.reference[1] for p in pairs], dtype=torch.float32)
    return inputs, targets, reference


class PreferenceBatches(InstructBatches):
    """The training pairs of each step, in the same resumable order as instruct examples (a pure
    function of the seed and the step); a micro-batch of n pairs is 2n rows."""

    def micro_batches(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for chosen in self.step_items(step):
            started = time.perf_counter()
            batch = tuple(t.to(self.device) for t in pair_batch([self.items[i] for i in chosen], self.pad_id))
            self.seconds += time.perf_counter() - started
            yield batch


class PreferenceEvalBatches:
    """Every validation pair once, in order."""

    def __init__(self, pairs: list[TokenizedPair], micro_batch: int, device, pad_id: int):
        self.pairs, self.micro_batch, self.pad_id = pairs, micro_batch, pad_id
        self.device = torch.device(device)

    def __len__(self) -> int:
        return (len(self.pairs) + self.micro_batch - 1) // self.micro_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.pairs), self.micro_batch):
            yield tuple(t.to(self.device) for t in pair_batch(self.pairs[i:i + self.micro_batch], self.pad_id))
