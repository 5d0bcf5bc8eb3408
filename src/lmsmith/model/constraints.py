"""Constrained decoding: a token mask per row and step that holds the output to a JSON schema, a regex
or a grammar.

    Constraint (what a request asks for) --Grammars.compile--> a grammar checked against the vocabulary
      --Grammars.matcher--> a Matcher per output: it knows which tokens may come next and follows the
      tokens chosen; apply_masks sets every other token's logit to -inf, row by row, inside the batch,
      so constrained and free rows decode together in one forward pass.

The library is llguidance. Measured on this project's 2-core CPU (benchmarks/constrained.py: a
16,000-token BPE vocabulary, a schema of nested objects, enums, arrays and required fields, one thread),
a mask plus an accepted token cost per row and step:

    library        1 row      32 rows (per row)   compiling the schema
    xgrammar        9.7 us      5.9 us             0.04 s
    llguidance     54.6 us     69.0 us             0.29 s
    outlines-core  95.6 us     70.0 us             0.25 s

xgrammar is the fastest, but its JSON strings take raw control characters (a byte-fallback token
<0x0C> inside a string), which RFC 8259 forbids and json.loads refuses: 18 of 20 outputs of the tiny
random test model failed to parse. llguidance's JSON is strict (20 of 20 parse), and its 55-70 us per
row is under 1% of a decode step of the benchmark's model, so it is the one used. Its grammar dialect
is Lark (llguidance's own, with JSON-schema and regex terminals), which is what `guided_grammar` takes.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import numpy as np
import torch

from lmsmith.core.errors import UserError
from lmsmith.core.extras import require

MAX_SOURCE_CHARS = 32_768  # the longest schema (as JSON text), regex or grammar one request may give
MAX_GRAMMAR_SYMBOLS = 50_000  # llguidance's measure of a compiled grammar's size (its default is 500,000)
KINDS = ("json_object", "json_schema", "regex", "grammar")
# Compact JSON: with free whitespace a weak model can fill max_tokens with blanks, and every blank is a token
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


class ConstraintError(UserError):
    """A schema, regex or grammar that is too large or that the library cannot compile."""


@dataclass(frozen=True)
class Constraint:
    """What an output must match: any JSON object, a JSON schema (as JSON text), a regex, or a Lark grammar."""

    kind: str
    source: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConstraintError(f"unknown constraint {self.kind!r}: use one of {', '.join(KINDS)}")
        if len(self.source) > MAX_SOURCE_CHARS:
            raise ConstraintError(f"the {self.describe()} is {len(self.source)} characters long; "
                                  f"at most {MAX_SOURCE_CHARS} are allowed")

    @classmethod
    def json_schema(cls, schema: dict) -> Constraint:
        return cls("json_schema", json.dumps(schema, ensure_ascii=False))

    def describe(self) -> str:
        return {"json_object": "JSON object", "json_schema": "JSON schema"}.get(self.kind, self.kind)


def _llguidance():
    return require("llguidance", extra="serve", purpose="constrained decoding (a JSON schema, regex or grammar)")


class _Vocabulary:
    """What llguidance's TokenizerWrapper reads of a tokenizer: each token's bytes, the specials, encode."""

    def __init__(self, tokenizer, vocab_size: int):
        specials = set(tokenizer.backend.get_added_tokens_decoder())
        self.eos_token_id = tokenizer.eot_id
        self.bos_token_id = None
        self.special_token_ids = sorted(i for i in specials if i < vocab_size)
        # llguidance marks a special token by a leading 0xFF byte (never in UTF-8 text), so no text spells one
        self.tokens = [b"\xff" + tokenizer.token_bytes(i) if i in specials else tokenizer.token_bytes(i)
                       for i in range(vocab_size)]
        self._encode = tokenizer.encode

    def __call__(self, text: str) -> list[int]:
        return self._encode(text)


class Grammars:
    """Compiles constraints against one tokenizer's vocabulary (safe to call from any thread)."""

    def __init__(self, tokenizer, vocab_size: int | None = None):
        llg = _llguidance()
        self.vocab_size = vocab_size or tokenizer.vocab_size
        self.eot_id = tokenizer.eot_id
        self.tokenizer = llg.LLTokenizer(llg.TokenizerWrapper(_Vocabulary(tokenizer, self.vocab_size)))
        self.limits = llg.LLParserLimits(max_grammar_size=MAX_GRAMMAR_SYMBOLS, verbose_errors=False)
        self.lock = threading.Lock()

    def compile(self, constraint: Constraint) -> str:
        """The grammar, checked; a ConstraintError naming the problem if the library refuses it."""
        llg = _llguidance()
        try:
            if constraint.kind == "json_object":
                grammar = llg.LLMatcher.grammar_from_json_schema({"type": "object"}, JSON_OPTIONS)
            elif constraint.kind == "json_schema":
                grammar = llg.LLMatcher.grammar_from_json_schema(constraint.source, JSON_OPTIONS)
            elif constraint.kind == "regex":
                grammar = llg.LLMatcher.grammar_from_regex(constraint.source)
            else:
                grammar = llg.LLMatcher.grammar_from_lark(constraint.source)
        except (ValueError, TypeError) as exc:
            raise ConstraintError(f"the {constraint.describe()} cannot be compiled: {_first_line(exc)}") from None
        with self.lock:
            problem = llg.LLMatcher.validate_grammar(grammar, self.tokenizer, limits=self.limits)
        if problem and not problem.startswith("WARNING"):
            raise ConstraintError(f"the {constraint.describe()} cannot be compiled: {_first_line(problem)}")
        return grammar

    def matches(self, grammar: str, text: str) -> bool:
        """Whether the whole of `text` is a complete match of the grammar (to check what a model wrote freely)."""
        llg = _llguidance()
        with self.lock:
            matcher = llg.LLMatcher(self.tokenizer, grammar, log_level=0, limits=self.limits)
            tokens = self.tokenizer.tokenize_str(text)
        return matcher.consume_tokens(tokens) and matcher.is_accepting()

    def matcher(self, grammar: str, stop_ids) -> Matcher:
        llg = _llguidance()
        with self.lock:
            matcher = llg.LLMatcher(self.tokenizer, grammar, log_level=0, limits=self.limits)
        if matcher.is_error():
            raise ConstraintError(f"the grammar cannot be compiled: {_first_line(matcher.get_error())}")
        return Matcher(matcher, self.eot_id, frozenset(stop_ids) - {self.eot_id})


def _first_line(problem) -> str:
    text = str(problem).strip()
    return text.splitlines()[0] if text else type(problem).__name__


class Matcher:
    """One output's place in its grammar: the tokens allowed next, and the tokens taken so far.

    llguidance knows one end token (the tokenizer's end-of-text); a chat answer also ends at its
    template's end marker (<|im_end|>), so those `other_stops` are allowed wherever the end is, and
    taking one counts as taking the end.
    """

    def __init__(self, matcher, eot_id: int, other_stops: frozenset[int]):
        self.matcher = matcher
        self.eot_id = eot_id
        self.other_stops = sorted(other_stops)

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed tokens into row `row` of an int32 bitmask (one bit per token)."""
        view = bitmask[row]
        self.matcher.unsafe_compute_mask_ptr(view.data_ptr(), view.numel() * view.element_size())
        if self.other_stops and view[self.eot_id // 32] >> (self.eot_id % 32) & 1:
            for token in self.other_stops:
                view[token // 32] |= 1 << (token % 32)

    def accept(self, token: int) -> bool:
        """Follow a chosen token; False if the grammar does not allow it."""
        return self.matcher.consume_token(self.eot_id if token in self.other_stops else token)

    @property
    def finished(self) -> bool:
        """The grammar is complete and nothing may follow (the end token was taken, or only it could come)."""
        return self.matcher.is_stopped()


def apply_masks(logits: torch.Tensor, matchers: list[Matcher | None]) -> None:
    """Set to -inf, in place, the logits (rows, V) of every token that row i's matcher forbids; rows
    without a matcher are left as they are."""
    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return
    vocab = logits.size(1)
    bitmask = torch.zeros(len(rows), (vocab + 31) // 32, dtype=torch.int32)
    for j, i in enumerate(rows):
        matchers[i].fill(bitmask, j)
    # numpy's unpackbits: a hundredth of the time of shifting the bits out with torch ops (timed at 8k tokens)
    forbidden = np.ones((logits.size(0), vocab), dtype=bool)
    forbidden[rows] = np.unpackbits(bitmask.numpy().view(np.uint8), axis=1, bitorder="little")[:, :vocab] == 0
    forbidden[[i for i in range(logits.size(0)) if matchers[i] is None]] = False
    logits.masked_fill_(torch.from_numpy(forbidden).to(logits.device), float("-inf"))
