"""Is an answer right? One checker per kind of generated item, each `check(item, output) -> score`.

A score is 1.0 (right) or 0.0 (wrong); a checker never raises on a bad answer, because a model's
wrong output is a result, not an error. The same functions can be the rewards of RL.

Normalisation for exact match (generation items): surrounding whitespace is dropped and every run
of whitespace inside becomes one space; with `ignore_case`, case is ignored too. A `regex` item
is right when the pattern matches somewhere in the (unnormalised) output (re.search).

Multiple-choice items are not generated: `choice_scores` reads the log-likelihood of each choice.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections import Counter
from functools import partial
from pathlib import Path

from lmsmith.exam.items import CHOICE, GENERATION, JSON, PYTHON, SQL, Item
from lmsmith.exam.sandbox import run_python


def normalise(text: str, ignore_case: bool = False) -> str:
    text = " ".join(text.split())
    return text.casefold() if ignore_case else text


def check_generation(item: Item, output: str, ignore_case: bool = False) -> float:
    if "regex" in item.fields:
        flags = re.IGNORECASE if ignore_case else 0
        return float(re.search(item.fields["regex"], output, flags) is not None)
    return float(normalise(output, ignore_case) == normalise(item.fields["answer"], ignore_case))


def json_payload(output: str) -> str:
    """The JSON in an answer: the whole text, or the body of a ```json fence a chat model wraps it in."""
    fenced = re.search(r"```(?:json)?\s*\n(.*?)```", output, re.DOTALL)
    return fenced.group(1) if fenced else output


def check_json(item: Item, output: str) -> float:
    import jsonschema

    try:
        value = json.loads(json_payload(output))
        jsonschema.validate(value, item.fields["schema"])
    except (ValueError, jsonschema.ValidationError):
        return 0.0
    except jsonschema.SchemaError as exc:  # the task's mistake, not the model's: say so once per item
        from lmsmith.core.errors import UserError

        raise UserError(f"{item.where}: the item's JSON schema is invalid ({exc.message}): fix \"schema\"") from None
    return 1.0


def sql_rows(db: str | Path, query: str) -> list[tuple] | None:
    """The rows of `query` on a read-only connection to the SQLite file `db`; None when it fails.

    mode=ro makes SQLite itself refuse any write, so a model's DELETE cannot change the database
    the next item is scored on; one statement only (sqlite3 refuses several in execute).
    """
    uri = f"{Path(db).resolve().as_uri()}?mode=ro"
    connection = None
    try:
        connection = sqlite3.connect(uri, uri=True)
        connection.execute("PRAGMA query_only = ON")
        return connection.execute(query.strip()).fetchall()
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
        return None
    finally:
        if connection is not None:
            connection.close()


def ordered(query: str) -> bool:
    """Whether the order of a query's rows is part of its answer: an ORDER BY in its outermost select."""
    depth, text = 0, re.sub(r"'(?:[^']|'')*'", "''", query)  # string literals cannot hold the keyword
    for token in re.findall(r"\(|\)|\border\s+by\b", text, re.IGNORECASE):
        depth += {"(": 1, ")": -1}.get(token, 0)
        if token not in "()" and depth == 0:
            return True
    return False


def _comparable(row: tuple) -> tuple:
    # 2.0 and 2 are the same answer; float sums may differ in the last bits between equivalent queries.
    return tuple(round(v, 9) if isinstance(v, float) else v for v in row)


def check_sql(item: Item, output: str) -> float:
    """Right when the output's rows equal the reference's, as a multiset (in order if the reference orders).

    Execution accuracy's known blind spot (as in Spider's): when the reference returns no rows, any
    query that also returns none counts as right. exam.json keeps `reference_rows` for each item so
    such items can be told apart.
    """
    query = sql_payload(output)
    expected = sql_rows(item.fields["db"], item.fields["sql"])
    if expected is None:
        from lmsmith.core.errors import UserError

        raise UserError(f"{item.where}: the reference \"sql\" fails on {item.fields['db']}: fix the query")
    got = sql_rows(item.fields["db"], query) if query else None
    if got is None:
        return 0.0
    got, expected = [_comparable(r) for r in got], [_comparable(r) for r in expected]
    if ordered(item.fields["sql"]):
        return float(got == expected)
    return float(Counter(got) == Counter(expected))


def sql_payload(output: str) -> str:
    """The query in an answer: the body of a ```sql fence if there is one, else the whole text."""
    fenced = re.search(r"```(?:sql)?\s*\n(.*?)```", output, re.DOTALL | re.IGNORECASE)
    return (fenced.group(1) if fenced else output).strip()


def check_python(item: Item, output: str, timeout: float = 5.0, memory_mb: int = 512) -> float:
    """HumanEval's check: the prompt, the completion and the tests run as one program that must exit cleanly."""
    program = item.fields["prompt"] + output + "\n\n" + item.fields["tests"] + "\n"
    return float(run_python(program, timeout=timeout, memory_mb=memory_mb).passed)


def checker(kind: str, *, ignore_case: bool = False, timeout: float = 5.0, memory_mb: int = 512):
    """The `check(item, output) -> score` of a kind of generated item, with the exam's settings bound."""
    return {GENERATION: partial(check_generation, ignore_case=ignore_case), JSON: check_json, SQL: check_sql,
            PYTHON: partial(check_python, timeout=timeout, memory_mb=memory_mb)}[kind]


def choice_scores(item: Item, loglikelihoods: list[float]) -> dict[str, float]:
    """acc, acc_norm and acc_bytes of one multiple-choice item, as lm-evaluation-harness defines them.

    acc: the likeliest choice is the answer. acc_norm: the likeliest per character of the choice's
    text (the harness's `len(choice)`); acc_bytes: per UTF-8 byte. Ties go to the first choice (argmax).
    """
    assert item.kind == CHOICE
    choices, gold = item.fields["choices"], item.fields["answer"]

    def best(values: list[float]) -> int:
        return max(range(len(values)), key=lambda i: (values[i], -i))

    per_char = [ll / max(len(c), 1) for ll, c in zip(loglikelihoods, choices)]
    per_byte = [ll / max(len(c.encode("utf-8")), 1) for ll, c in zip(loglikelihoods, choices)]
    return {"acc": float(best(loglikelihoods) == gold), "acc_norm": float(best(per_char) == gold),
            "acc_bytes": float(best(per_byte) == gold)}


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples of which c passed (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), computed as a product so large n does not overflow."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
