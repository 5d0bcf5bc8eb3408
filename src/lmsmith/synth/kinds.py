"""The four kinds of data synth writes: what JSON the teacher is asked for, and the lines that JSON becomes.

Each kind's lines are in a format another verb reads as it is:

    qa, conversation   {"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "source": ...}
                       lmsmith finetune --data (instruct)
    pairs              {"prompt": ..., "chosen": ..., "rejected": ..., "source": ...}
                       lmsmith finetune --method dpo
    exam               {"question": ..., "choices": [...], "answer": INDEX, "source": ...}
                       lmsmith exam --tasks
    labels             {"text": PASSAGE, "label": "good" | "bad", "reason": ..., "source": ...}
                       lmsmith curate train-classifier

`supported_text` is the part of a line that must be backed by its passage (the answer, the
right choice, the chosen reply), or None for a kind whose lines are judgements of the passage
rather than claims drawn from it (labels); `line_text` is what duplicates are judged on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CHOICES = 4  # an exam item: the right answer and three distractors


def _text(max_chars: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_chars}


def _list_of(item: dict, most: int, least: int = 1) -> dict:
    return {"type": "array", "items": item, "minItems": least, "maxItems": most}


def _object(**properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


QUESTION_CHARS = 12  # shorter is a word or two ("Question", "Why?"), never a question a user would ask


def _described(field: dict, description: str, **more) -> dict:
    # A large model reads the description; a server that constrains decoding enforces the rest (llguidance: both).
    return {**field, "description": description, **more}


def qa_schema(n: int, chars: int) -> dict:
    question = _described(_text(chars), "a question a user of the document would ask, as a whole sentence",
                          minLength=QUESTION_CHARS)
    answer = _described(_text(chars), "the answer, taken from the document in its words")
    return _object(items=_list_of(_object(question=question, answer=answer), n))


def conversation_schema(n: int, chars: int) -> dict:
    # A conversation is at least two exchanges: a follow-up question is what makes it one.
    return _object(turns=_list_of(_object(user=_text(chars), assistant=_text(chars)), max(n, 2), least=2))


def exam_schema(n: int, chars: int) -> dict:
    item = _object(question=_text(chars), choices=_list_of(_text(chars), CHOICES, least=CHOICES),
                   answer={"type": "integer", "minimum": 0, "maximum": CHOICES - 1})
    return _object(items=_list_of(item, n))


def pairs_schema(n: int, chars: int) -> dict:
    return _object(items=_list_of(_object(question=_text(chars), chosen=_text(chars), rejected=_text(chars)), n))


LABELS = ("good", "bad")


def labels_schema(n: int, chars: int) -> dict:
    # One verdict per passage: a reason first, so a model writing left to right judges after it has looked.
    return _object(reason=_text(chars), label={"type": "string", "enum": list(LABELS)})


def _filled(*texts) -> bool:
    return all(isinstance(t, str) and t.strip() for t in texts)


def qa_lines(answer: dict, source: str, text: str) -> list[dict]:
    return [{"messages": [{"role": "user", "content": it["question"]}, {"role": "assistant", "content": it["answer"]}],
             "source": source}
            for it in answer.get("items", []) if isinstance(it, dict) and _filled(it.get("question"), it.get("answer"))]


def conversation_lines(answer: dict, source: str, text: str) -> list[dict]:
    turns = [t for t in answer.get("turns", []) if isinstance(t, dict) and _filled(t.get("user"), t.get("assistant"))]
    if len(turns) < 2:
        return []
    messages = []
    for turn in turns:
        messages += [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": turn["assistant"]}]
    return [{"messages": messages, "source": source}]


def _valid_choice_item(it) -> bool:
    if not isinstance(it, dict):
        return False
    choices, answer = it.get("choices"), it.get("answer")
    return (_filled(it.get("question")) and isinstance(choices, list) and len(choices) >= 2 and _filled(*choices)
            and isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices)
            and len(set(choices)) == len(choices))


def exam_lines(answer: dict, source: str, text: str) -> list[dict]:
    return [{"question": it["question"], "choices": it["choices"], "answer": it["answer"], "source": source}
            for it in answer.get("items", []) if _valid_choice_item(it)]


def pairs_lines(answer: dict, source: str, text: str) -> list[dict]:
    # A pair whose two answers are the same teaches nothing (finetune would drop it too).
    return [{"prompt": it["question"], "chosen": it["chosen"], "rejected": it["rejected"], "source": source}
            for it in answer.get("items", []) if isinstance(it, dict)
            and _filled(it.get("question"), it.get("chosen"), it.get("rejected")) and it["chosen"] != it["rejected"]]


def labels_lines(answer: dict, source: str, text: str) -> list[dict]:
    label = answer.get("label")
    if not (isinstance(label, str) and label.strip().lower() in LABELS and _filled(answer.get("reason"))):
        return []
    return [{"text": text, "label": label.strip().lower(), "reason": answer["reason"], "source": source}]


def _assistant_text(line: dict) -> str:
    return "\n".join(m["content"] for m in line["messages"] if m["role"] == "assistant")


def _all_messages(line: dict) -> str:
    return "\n".join(m["content"] for m in line["messages"])


@dataclass(frozen=True)
class Kind:
    name: str
    schema: Callable[[int, int], dict]  # (items per passage, longest text) -> the JSON schema of an answer
    lines: Callable[[dict, str, str], list[dict]]  # (parsed answer, passage id, passage text) -> output lines
    supported_text: Callable[[dict], str] | None  # None: nothing in a line to check against its passage
    question_text: Callable[[dict], str]
    line_text: Callable[[dict], str]


KINDS: dict[str, Kind] = {
    "qa": Kind("qa", qa_schema, qa_lines, _assistant_text, lambda line: line["messages"][0]["content"],
               _all_messages),
    "conversation": Kind("conversation", conversation_schema, conversation_lines, _assistant_text,
                         lambda line: line["messages"][0]["content"], _all_messages),
    "exam": Kind("exam", exam_schema, exam_lines, lambda line: line["choices"][line["answer"]],
                 lambda line: line["question"], lambda line: " ".join([line["question"], *line["choices"]])),
    "pairs": Kind("pairs", pairs_schema, pairs_lines, lambda line: line["chosen"], lambda line: line["prompt"],
                  lambda line: f"{line['prompt']} {line['chosen']}"),
    "labels": Kind("labels", labels_schema, labels_lines, None, lambda line: line["text"], lambda line: line["text"]),
}
