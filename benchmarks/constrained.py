"""Per-token overhead of constrained decoding on a CPU: llguidance, xgrammar and outlines-core.

Why this exists: `response_format` (model/constraints.py) needs a token mask per row and step
from an established library; this measures what each one adds to a decode step, so the choice
is made by numbers (the docstring of model/constraints.py cites them).

A byte-level BPE tokenizer is trained here on Python's own standard library sources (so the
vocabulary has real merges, `--vocab` of them), one JSON schema (nested objects, enums, arrays,
required fields) is compiled by each library, and `--rows` matchers (1 and 32) walk the same
valid JSON document token by token: per step, every row's mask is computed and its token
consumed. Reported per library and batch: compile seconds, and microseconds per step for the
whole batch (mask + consume, what the engine would add to each decode step), one JSON line each.

    python benchmarks/constrained.py [--vocab 16000]
"""

from __future__ import annotations

import argparse
import json
import sysconfig
import time
from pathlib import Path

import torch

from lmsmith.text.tokenizer import train_bpe

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "status": {"enum": ["open", "closed", "pending"]},
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "sku": {"type": "string", "maxLength": 12}, "qty": {"type": "integer"}},
            "required": ["sku", "qty"], "additionalProperties": False}, "maxItems": 4},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                     "zip": {"type": "string", "maxLength": 10}},
                    "required": ["city"], "additionalProperties": False},
    },
    "required": ["name", "status", "items", "address"],
    "additionalProperties": False,
}
DOCUMENT = {"name": "Ada Lovelace", "status": "open", "items": [{"sku": "A-100", "qty": 2}, {"sku": "B-7", "qty": 10}],
            "address": {"city": "London", "zip": "NW1"}}


def tokenizer_of(vocab: int):
    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    texts = (p.read_text(encoding="utf-8", errors="replace") for p in sources)
    return train_bpe(texts, vocab, show_progress=False)


def vocabulary(tokenizer) -> list[bytes]:
    return [tokenizer.token_bytes(i) for i in range(tokenizer.vocab_size)]


def bench_llguidance(tokenizer, tokens: list[int], rows: int) -> tuple[float, float]:
    import llguidance
    import llguidance.torch

    from lmsmith.model.constraints import Constraint, Grammars

    started = time.perf_counter()
    grammars = Grammars(tokenizer)
    grammar = grammars.compile(Constraint.json_schema(SCHEMA))
    matchers = [llguidance.LLMatcher(grammars.tokenizer, grammar) for _ in range(rows)]
    compiled = time.perf_counter() - started
    mask = llguidance.torch.allocate_token_bitmask(rows, tokenizer.vocab_size)
    executor = llguidance.LLExecutor()
    started = time.perf_counter()
    for token in tokens:
        llguidance.torch.fill_next_token_bitmask_par(executor, [(m, i) for i, m in enumerate(matchers)], mask)
        for m in matchers:
            assert m.consume_token(token), m.get_error()
    return compiled, (time.perf_counter() - started) / len(tokens)


def bench_xgrammar(tokenizer, tokens: list[int], rows: int) -> tuple[float, float]:
    import xgrammar

    started = time.perf_counter()
    info = xgrammar.TokenizerInfo(vocabulary(tokenizer), vocab_type=xgrammar.VocabType.RAW,
                                  vocab_size=tokenizer.vocab_size, stop_token_ids=[tokenizer.eot_id])
    compiled_grammar = xgrammar.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA), any_whitespace=False,
                                                                                  separators=(",", ":"))
    matchers = [xgrammar.GrammarMatcher(compiled_grammar) for _ in range(rows)]
    compiled = time.perf_counter() - started
    mask = xgrammar.allocate_token_bitmask(rows, tokenizer.vocab_size)
    started = time.perf_counter()
    for token in tokens:
        for i, m in enumerate(matchers):
            m.fill_next_token_bitmask(mask, i)
        for m in matchers:
            assert m.accept_token(token)
    return compiled, (time.perf_counter() - started) / len(tokens)


def bench_outlines(tokenizer, tokens: list[int], rows: int) -> tuple[float, float]:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    started = time.perf_counter()
    pieces: dict[bytes, list[int]] = {}
    for i, piece in enumerate(vocabulary(tokenizer)):
        if i != tokenizer.eot_id:
            pieces.setdefault(piece, []).append(i)
    index = Index(build_regex_from_schema(json.dumps(SCHEMA)), Vocabulary(tokenizer.eot_id, pieces))
    guides = [Guide(index) for _ in range(rows)]
    compiled = time.perf_counter() - started
    mask = torch.zeros(rows, (tokenizer.vocab_size + 31) // 32, dtype=torch.int32)
    started = time.perf_counter()
    for token in tokens:
        for i, g in enumerate(guides):
            g.write_mask_into(mask[i].data_ptr(), mask[i].numel(), mask.element_size())
        for g in guides:
            g.advance(token)
    return compiled, (time.perf_counter() - started) / len(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=16000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = tokenizer_of(args.vocab)
    tokens = tokenizer.encode(json.dumps(DOCUMENT, separators=(",", ":")))
    for name, bench in (("llguidance", bench_llguidance), ("xgrammar", bench_xgrammar),
                        ("outlines-core", bench_outlines)):
        for rows in (1, 32):
            try:
                compiled, per_step = bench(tokenizer, tokens, rows)
                print(json.dumps({"library": name, "rows": rows, "vocab": tokenizer.vocab_size,
                                  "tokens": len(tokens), "compile_s": round(compiled, 3),
                                  "us_per_step": round(per_step * 1e6, 1),
                                  "us_per_row_token": round(per_step * 1e6 / rows, 1)}), flush=True)
            except Exception as exc:  # one library failing must not hide the others' numbers
                print(json.dumps({"library": name, "rows": rows, "error": f"{type(exc).__name__}: {exc}"}),
                      flush=True)


if __name__ == "__main__":
    main()
