"""Instruction data: JSONL examples -> token ids with the loss only on the answers -> batches.

One example per line, either

    {"prompt": "...", "response": "..."}
    {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}

Each example is rendered by a chat template (see templates.py) into segments, each segment is
encoded on its own, and the targets of tokens outside the assistant's answers are -100, which
the model's cross-entropy skips: prompt tokens carry exactly zero loss.

Batches come in two layouts:

    padding   one example per row, rows padded to the longest in the batch. Attention is
              causal, so padding after an example never changes what the example sees: the
              loss is exactly that of each example alone.
    packing   examples laid end to end in rows of the full context, so no compute is spent on
              padding. Targets stay exact: each example brings its own inputs and targets,
              so no position is trained to predict a token of another example. Attention,
              however, is NOT cut at the borders: a token may attend to the examples before
              it in the row. This is the usual trade-off of packed fine-tuning; use padding
              where that matters.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmsmith.core.errors import UserError
from lmsmith.model.transformer import IGNORE_INDEX
from lmsmith.text.chat_template import ROLES, TRAINED_ROLE, ChatTemplate

FORMAT_HINT = ('each line must be {"prompt": "...", "response": "..."} or '
               '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}')


@dataclass(frozen=True)
class Example:
    """One conversation, as (role, content) messages; `line` is where it came from."""

    messages: tuple[tuple[str, str], ...]
    line: int = 0

    @property
    def prompt_messages(self) -> list[tuple[str, str]]:
        """Everything before the last answer: what a model is given to answer."""
        last = max(i for i, (role, _) in enumerate(self.messages) if role == TRAINED_ROLE)
        return list(self.messages[:last])

    @property
    def answer(self) -> str:
        return [content for role, content in self.messages if role == TRAINED_ROLE][-1]


# ---------------------------------------------------------------------------------------------
# Reading and checking


def _string_field(obj: dict, key: str, where: str) -> str:
    if key not in obj:
        raise UserError(f"{where}: missing field '{key}': {FORMAT_HINT}")
    value = obj[key]
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{key}' must be text, got {type(value).__name__} {json.dumps(value)[:40]}")
    return value


def parse_example(obj: Any, where: str, line: int = 0) -> Example:
    """Check one decoded JSON line and turn it into an Example; `where` prefixes every message."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}: {FORMAT_HINT}")
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise UserError(f"{where}: field 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
        parsed = []
        for i, message in enumerate(messages):
            at = f"{where}, messages[{i}]"
            if not isinstance(message, dict):
                raise UserError(f"{at}: expected an object with 'role' and 'content', got {type(message).__name__}")
            role, content = _string_field(message, "role", at), _string_field(message, "content", at)
            if role not in ROLES:
                raise UserError(f"{at}: unknown role '{role}': use one of {', '.join(ROLES)}")
            if role == TRAINED_ROLE and not content.strip():
                raise UserError(f"{at}: the assistant's content is empty: "
                                "give the answer to learn, or drop the message")
            parsed.append((role, content))
        if not any(role == TRAINED_ROLE for role, _ in parsed):
            raise UserError(f"{where}: the conversation has no assistant message, so there is nothing to learn: "
                            "add the answer as {\"role\": \"assistant\", \"content\": \"...\"}")
        return Example(tuple(parsed), line)
    if "prompt" not in obj and "response" not in obj:
        raise UserError(f"{where}: missing fields 'prompt' and 'response' "
                        f"(found {', '.join(map(repr, obj)) or 'none'}): {FORMAT_HINT}")
    prompt, response = _string_field(obj, "prompt", where), _string_field(obj, "response", where)
    if not response.strip():
        raise UserError(f"{where}: the response is empty: give the answer to learn, or remove the line")
    return Example((("user", prompt), (TRAINED_ROLE, response)), line)


def json_lines(path: str | Path, what: str, hint: str) -> Iterator[tuple[Any, str, int]]:
    """(decoded object, "FILE line N", N) for each non-blank line of a JSONL file; a line that is not
    JSON, or a file that is missing or not UTF-8, is refused naming the line or the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist or is not a file: give a .jsonl file")
    try:
        with open(path, encoding="utf-8") as f:
            for number, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                where = f"{path} line {number}"
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}): {hint}") from None
                yield obj, where, number
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}): convert it to UTF-8") from None


def read_jsonl(path: str | Path) -> list[Example]:
    """Every example of a JSONL file; the first bad line is refused with its line number."""
    examples = [parse_example(obj, where, number) for obj, where, number in
                json_lines(path, "instruction data", FORMAT_HINT)]
    if not examples:
        raise UserError(f"{path} holds no examples: {FORMAT_HINT}")
    return examples


def split_examples(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A shuffled train/validation split; at least one example on each side when there are two or more."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    if val_fraction <= 0 or len(order) < 2:
        return order, []
    n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
    return order[n_val:], order[:n_val]


# ---------------------------------------------------------------------------------------------
# Tokens and targets


@dataclass
class TokenizedExample:
    inputs: torch.Tensor  # (T,) token ids fed to the model
    targets: torch.Tensor  # (T,) the next token at each position, or -100 where no loss is taken
    truncated: bool = False


def encode_segments(segments, tokenizer) -> tuple[list[int], list[bool]]:
    """Token ids of the segments, each encoded on its own, and which ids are trained."""
    ids: list[int] = []
    trained: list[bool] = []
    for segment in segments:
        piece = tokenizer.encode(segment.text)
        ids += piece
        trained += [segment.trained] * len(piece)
    return ids, trained


def tokenize_example(example: Example, template: ChatTemplate, tokenizer, max_tokens: int) -> TokenizedExample | None:
    """Inputs and targets of one example, cut to `max_tokens` positions; None if no answer token fits."""
    ids, trained = encode_segments(template.render(list(example.messages), tokenizer.eot_token), tokenizer)
    inputs = ids[:-1]
    targets = [t if keep else IGNORE_INDEX for t, keep in zip(ids[1:], trained[1:])]
    truncated = len(inputs) > max_tokens
    inputs, targets = inputs[:max_tokens], targets[:max_tokens]
    if all(t == IGNORE_INDEX for t in targets):
        return None
    return TokenizedExample(torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long), truncated)


@dataclass
class TokenizedSet:
    examples: list[TokenizedExample]
    dropped: int  # examples whose answer lay wholly beyond the context
    truncated: int  # examples cut at the context, part of the answer kept

    @property
    def trained_tokens(self) -> int:
        return sum(int((e.targets != IGNORE_INDEX).sum()) for e in self.examples)


def tokenize_examples(examples: list[Example], template: ChatTemplate, tokenizer, max_tokens: int,
                      what: str) -> TokenizedSet:
    result, dropped = [], 0
    for example in examples:
        tokenized = tokenize_example(example, template, tokenizer, max_tokens)
        if tokenized is None:
            dropped += 1
        else:
            result.append(tokenized)
    if examples and not result:
        raise UserError(f"every {what} example's prompt fills the whole context of {max_tokens} tokens, so no answer "
                        "token is left to learn: shorten the prompts or start from a model with a longer context")
    return TokenizedSet(result, dropped, sum(e.truncated for e in result))


# ---------------------------------------------------------------------------------------------
# Batches


def pad_batch(examples: list[TokenizedExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One example per row, right-padded to the longest; padded positions carry no loss."""
    length = max(len(e.inputs) for e in examples)
    inputs = torch.full((len(examples), length), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        inputs[row, :len(e.inputs)] = e.inputs
        targets[row, :len(e.targets)] = e.targets
    return inputs, targets


def pack_examples(examples: list[TokenizedExample], length: int) -> list[TokenizedExample]:
    """Examples laid end to end, in the order given, into rows of at most `length` positions.

    An example that does not fit in what is left of a row starts the next one, so no example is
    split over two rows.
    """
    rows: list[list[TokenizedExample]] = [[]]
    used = 0
    for e in examples:
        if used + len(e.inputs) > length and rows[-1]:
            rows.append([])
            used = 0
        rows[-1].append(e)
        used += len(e.inputs)
    return [TokenizedExample(torch.cat([e.inputs for e in row]), torch.cat([e.targets for e in row]))
            for row in rows if row]


class InstructBatches:
    """The micro-batches of each training step for one rank, in the form the training engine reads.

    The items are the examples (padding) or rows of packed examples (packing). Step k takes the
    next `plan.rows` items of an endless sequence of epochs, each epoch a fresh shuffle of all
    items, so what a step sees is a pure function of (seed, step): a resumed run sees the same
    batches as one that never stopped. Rank r takes its own consecutive slice of the step's rows.
    """

    def __init__(self, data: TokenizedSet, plan, seed: int, rank: int, device, pad_id: int, packing: bool = False):
        if not data.examples:
            raise UserError("no training examples are left: give more data, or a smaller validation fraction")
        if packing:
            shuffled = [data.examples[i] for i in _permutation(len(data.examples), seed, -1)]
            self.items = pack_examples(shuffled, plan.block_size)
        else:
            self.items = list(data.examples)
        self.plan, self.seed, self.rank, self.device, self.pad_id = plan, seed, rank, torch.device(device), pad_id
        self.seconds = 0.0  # the engine reports the share of time spent on data
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            self._orders = {epoch: _permutation(len(self.items), self.seed, epoch)}  # one epoch at a time in memory
        return self._orders[epoch]

    def step_items(self, step: int) -> list[list[int]]:
        """This rank's item numbers for `step`, as grad_accum lists of micro_batch."""
        n, per_rank = len(self.items), self.plan.micro_batch * self.plan.grad_accum
        first = step * self.plan.rows + self.rank * per_rank
        mine = [self._order(p // n)[p % n] for p in range(first, first + per_rank)]
        return [mine[i:i + self.plan.micro_batch] for i in range(0, per_rank, self.plan.micro_batch)]

    def micro_batches(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for chosen in self.step_items(step):
            started = time.perf_counter()
            inputs, targets = pad_batch([self.items[i] for i in chosen], self.pad_id)
            batch = inputs.to(self.device), targets.to(self.device)
            self.seconds += time.perf_counter() - started
            yield batch

    def epochs(self, steps_done: int) -> float:
        """Passes over the training items so far."""
        return steps_done * self.plan.rows / len(self.items)


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}/{epoch}").shuffle(order)
    return order


class InstructEvalBatches:
    """Every validation example once, in order, padded (the loss must not depend on packing).

    Under several ranks each rank scores all of them: the engine averages the ranks' losses, and
    validation sets for fine-tuning are small.
    """

    def __init__(self, data: TokenizedSet, micro_batch: int, device, pad_id: int):
        self.batches = [pad_batch(data.examples[i:i + micro_batch], pad_id)
                        for i in range(0, len(data.examples), micro_batch)]
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for inputs, targets in self.batches:
            yield inputs.to(self.device), targets.to(self.device)
