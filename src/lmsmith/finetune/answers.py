"""Does the model give the right answers? Greedy answers to held-out prompts, scored by exact match.

Loss says how likely the right answer is; exact match says whether the model, asked the
question, writes exactly that answer. For tasks with one right answer (a lookup, a SQL query
for a question) it is the number a user cares about.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmsmith.finetune.instruct_data import Example
from lmsmith.model.decoding import generate
from lmsmith.schema.generate import GenerationConfig
from lmsmith.text.chat_template import ChatTemplate


@dataclass
class Answer:
    prompt: str
    expected: str
    got: str

    @property
    def correct(self) -> bool:
        return self.got.strip() == self.expected.strip()


def greedy_answers(model, tokenizer, template: ChatTemplate, examples: list[Example],
                   max_new_tokens: int | None = None, batch_size: int = 32) -> list[Answer]:
    """Each example's prompt, rendered by `template`, answered greedily up to the template's end marker."""
    eot = tokenizer.eot_token
    end = template.answer_end(eot)
    stop = [end] if end and end != eot else []
    prompts = [template.prompt(e.prompt_messages, eot) for e in examples]
    if max_new_tokens is None:
        max_new_tokens = max(len(tokenizer.encode(e.answer)) for e in examples) + 4
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, stop=stop)
    was_training = model.training
    model.eval()
    answers = []
    try:
        for first in range(0, len(examples), batch_size):
            chunk = slice(first, first + batch_size)
            with torch.no_grad():
                texts = generate(model, tokenizer, prompts[chunk], config)
            answers += [Answer(p, e.answer, t) for p, e, t in zip(prompts[chunk], examples[chunk], texts)]
    finally:
        model.train(was_training)
    return answers


def exact_match(answers: list[Answer]) -> float:
    """The fraction of answers equal to the expected one (surrounding whitespace ignored)."""
    return sum(a.correct for a in answers) / len(answers) if answers else float("nan")
