"""RL's data and reward: prompts in the exam's task format, and how a completion of one is scored.

    {"prompt" | "messages", "answer" | "regex"}     generation: exact match, or the regex found in it
    {"prompt" | "messages", "schema"}                JSON valid against the schema
    {"prompt" | "messages", "sql", "db"}             the query returns the reference query's rows
    {"prompt", "tests"}                              the completed code passes the tests

Each item's reward is its kind's exam checker (1.0 right, 0.0 wrong), the very function `lmsmith exam`
scores it with. With `rl.reward=module:function` (or `path/to/file.py:function`) that function scores
every item instead, as function(item, completion) -> float with the line's object as the item, so a
line then needs only its prompt. Multiple-choice items are scored by likelihood, not generated, so
they have no completion to reward: they are counted and left out, as are lines with no prompt.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmsmith.core.errors import UserError
from lmsmith.exam import checkers
from lmsmith.exam.items import CHOICE, Item, check_item, item_kind
from lmsmith.exam.models import Prompt
from lmsmith.finetune.instruct_data import json_lines

CUSTOM = "custom"  # an item that only rl.reward can score
RL_HINT = ('write one exam item per line: {"prompt": ..., "answer" | "regex" | "schema" | "sql"+"db" | "tests": ...}, '
           "or give rl.reward=module:function to score lines that hold only a prompt")


@dataclass
class RlItems:
    items: list[Item]
    not_checkable: int  # lines with no prompt, or no way to check a completion of it (multiple choice)


def rl_item(fields: dict, where: str, folder: Path, custom_reward: bool) -> Item | None:
    """The line as an exam item with a prompt to complete, or None when nothing could score a completion."""
    if not isinstance(fields, dict) or not (isinstance(fields.get("prompt"), str)
                                            or isinstance(fields.get("messages"), list)):
        return None
    try:
        kind = item_kind(fields, where)
    except UserError:
        kind = CUSTOM
    if kind == CHOICE or (kind == CUSTOM and not custom_reward):
        return None
    item = Item(kind, fields, where)
    if kind != CUSTOM:
        check_item(item, folder)  # resolves the database or schema file it names, refusing a missing one
    return item


def read_rl_items(path: str | Path, custom_reward: bool) -> RlItems:
    """The items of a JSONL task file that RL can reward; a file with none is refused."""
    path = Path(path)
    items, skipped = [], 0
    for fields, where, _ in json_lines(path, "RL data", RL_HINT):
        item = rl_item(fields, where, path.parent, custom_reward)
        if item is None:
            skipped += 1
        else:
            items.append(item)
    if not items:
        raise UserError(f"{path} holds no checkable item ({skipped} line(s) without a prompt and a way to check "
                        f"its completion): {RL_HINT}")
    return RlItems(items, skipped)


def exam_prompt(item: Item) -> Prompt:
    return Prompt(item.fields.get("prompt"), item.fields.get("messages"))


# ---------------------------------------------------------------------------------------------
# The reward


def load_reward_function(spec: str) -> Callable:
    """The function named by `module:function` or `path/to/file.py:function`; one line when it is not there."""
    module_name, _, name = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            location = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if location is None or not Path(module_name).is_file():
                raise ImportError(f"no file {module_name}")
            module = importlib.util.module_from_spec(location)
            location.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:  # a missing module, or one that fails as it is imported: the user's to fix
        raise UserError(f"rl.reward: cannot import {module_name} ({type(exc).__name__}: {exc}): give an importable "
                        "module:function or path/to/file.py:function") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"rl.reward: {module_name} has no function {name}: give module:function")
    return function


class Reward:
    """The reward of one completion: rl.reward's function if given, else the item's exam checker."""

    def __init__(self, spec: str | None):
        self.name = spec or "the exam's checkers"
        self.function = load_reward_function(spec) if spec else None

    def __call__(self, item: Item, completion: str) -> float:
        if self.function is None:
            return checkers.checker(item.kind)(item, completion)
        try:
            value = self.function(item.fields, completion)
        except Exception as exc:  # the user's function failed: name it, and where, instead of a traceback
            raise UserError(f"rl.reward {self.name} raised {type(exc).__name__} ({exc}) on {item.where}: "
                            "fix the function (the last checkpoint is kept; the same command resumes)") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"rl.reward {self.name} returned {value!r} on {item.where}: it must return a finite "
                            "number (the last checkpoint is kept; the same command resumes)")
        return float(value)


# ---------------------------------------------------------------------------------------------
# Prompts as the exam writes them, and the held-out score


def exam_model(model, tokenizer, template: str, max_new_tokens: int, batch_size: int = 16):
    """The exam's view of the model being trained: prompts in the fine-tuning template, greedy answers."""
    from lmsmith.exam.models import LocalModel
    from lmsmith.schema.exam import ExamConfig

    config = ExamConfig(template=template, chat=True, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        device=str(next(model.parameters()).device))
    return LocalModel("fine-tuning", config, loaded=(model, tokenizer))


@dataclass
class RlPrompts:
    """The training items whose prompt leaves room for a completion, as the tokens the rollouts continue."""

    items: list[Item]
    ids: list[list[int]]  # each item's prompt, rendered exactly as `lmsmith exam --chat --template` renders it
    stops: list[list[str]]  # the exam's stop strings of each (the template's end of an answer, as text)
    end_id: int  # the token that ends a completion: the template's end of an answer if it is one token, else eot
    dropped: int  # items whose prompt leaves fewer than rl.max_new_tokens of the context


def rl_prompts(items: list[Item], model, tokenizer, template: str, max_new_tokens: int, where: str) -> RlPrompts:
    """Render the prompts the way the exam asks them, so that the completions trained on are the answers it reads."""
    asking = exam_model(model, tokenizer, template, max_new_tokens=1)
    rendered = [asking.render(exam_prompt(item)) for item in items]
    ids = [tokenizer.encode(text) for text, _ in rendered]
    block = model.config.block_size
    fits = [i for i, prompt in enumerate(ids) if len(prompt) + max_new_tokens <= block]
    if not fits:
        raise UserError(f"no prompt of {where} leaves rl.max_new_tokens={max_new_tokens} tokens of the context of "
                        f"{block}: lower rl.max_new_tokens or shorten the prompts")
    stops = [rendered[i][1] for i in fits]
    end = tokenizer.encode(stops[0][0]) if stops[0] else []
    return RlPrompts([items[i] for i in fits], [ids[i] for i in fits], stops,
                     end[0] if len(end) == 1 else tokenizer.eot_id, len(items) - len(fits))


class HeldOutExam:
    """Validation for --mode rl: greedy answers to the held-out items (the exam's own generation), each
    scored by the reward. Its loss is 1 - pass@1, so the engine's best model is the one that passes most.
    (With a reward function that is not 0/1, "pass@1" is the mean reward; one held-out item has stderr 0.)"""

    def __init__(self, items: list[Item], reward: Reward, tokenizer, template: str, max_new_tokens: int,
                 batch_size: int):
        self.items, self.reward, self.tokenizer, self.template = items, reward, tokenizer, template
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, model) -> tuple[float, dict[str, float]]:
        from lmsmith.exam.stats import mean, stderr

        was_training = model.training
        model.eval()
        try:
            asking = exam_model(model, self.tokenizer, self.template, self.max_new_tokens, self.batch_size)
            answers = asking.answers([exam_prompt(item) for item in self.items])
        finally:
            model.train(was_training)
        scores = [self.reward(item, given[0]) for item, given in zip(self.items, answers)]
        error = stderr(scores)
        return 1.0 - mean(scores), {"pass_at_1": round(mean(scores), 5),
                                    "pass_at_1_stderr": round(error, 5) if math.isfinite(error) else 0.0}
