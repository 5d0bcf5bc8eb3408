"""Instruction data: checked line by line, the loss only on answers, padding and packing with exact targets."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lmsmith.core.errors import UserError
from lmsmith.finetune.instruct_data import (
    Example,
    InstructBatches,
    InstructEvalBatches,
    pack_examples,
    pad_batch,
    read_jsonl,
    split_examples,
    tokenize_example,
    tokenize_examples,
)
from lmsmith.model.transformer import IGNORE_INDEX
from lmsmith.schema.train import BatchPlan
from lmsmith.text.chat_template import get_template


def write_lines(path, lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return str(path)


def test_both_formats_are_read_and_blank_lines_skipped(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        {"prompt": "a?", "response": "b"},
        "",
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                      {"role": "assistant", "content": "r"}]},
    ])
    first, second = read_jsonl(path)
    assert first == Example((("user", "a?"), ("assistant", "b")), line=1)
    assert second.line == 3 and second.prompt_messages == [("system", "s"), ("user", "q")] and second.answer == "r"


BAD_LINES = {
    "missing field": ({"prompt": "p"}, "line 2: missing field 'response'"),
    "neither format": ({"question": "p", "answer": "a"},
                       "line 2: missing fields 'prompt' and 'response' (found 'question', 'answer')"),
    "wrong type": ({"prompt": "p", "response": 42}, "line 2: field 'response' must be text, got int"),
    "empty response": ({"prompt": "p", "response": "  "}, "line 2: the response is empty"),
    "unknown role": ({"messages": [{"role": "human", "content": "hi"}]},
                     "line 2, messages[0]: unknown role 'human': use one of system, user, assistant"),
    "no answer": ({"messages": [{"role": "user", "content": "hi"}]},
                  "line 2: the conversation has no assistant message"),
    "bad content": ({"messages": [{"role": "user", "content": ["hi"]}]},
                    "line 2, messages[0]: field 'content' must be text, got list"),
    "not json": ('{"prompt": "p", "response": ', "line 2: not valid JSON"),
    "not an object": ('["p", "r"]', "line 2: expected a JSON object, got list"),
}


@pytest.mark.parametrize("bad,message", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_bad_lines_are_refused_with_their_line_number(tmp_path, bad, message):
    path = write_lines(tmp_path / "d.jsonl", [{"prompt": "fine", "response": "ok"}, bad])
    with pytest.raises(UserError) as info:
        read_jsonl(path)
    assert message in str(info.value)
    assert str(info.value).startswith(path)


def test_prompt_tokens_carry_zero_loss(char_tokenizer, make_model):
    template = get_template("plain")
    example = Example((("user", "What is two and two?"), ("assistant", "four")))
    tokenized = tokenize_example(example, template, char_tokenizer, max_tokens=64)
    answer_ids = char_tokenizer.encode("four") + [char_tokenizer.eot_id]
    scored = tokenized.targets[tokenized.targets != IGNORE_INDEX].tolist()
    assert scored == answer_ids  # exactly the answer and its end marker are targets
    n = len(tokenized.inputs)
    assert (tokenized.targets[:n - len(answer_ids)] == IGNORE_INDEX).all()

    model = make_model(char_tokenizer.vocab_size)
    logits = model(tokenized.inputs[None]).logits.detach().requires_grad_(True)
    loss = F.cross_entropy(logits[0], tokenized.targets, ignore_index=IGNORE_INDEX)
    loss.backward()
    prompt_positions = tokenized.targets == IGNORE_INDEX
    assert torch.count_nonzero(logits.grad[0][prompt_positions]) == 0
    assert torch.count_nonzero(logits.grad[0][~prompt_positions]) > 0
    # and the loss is the float64 mean log-loss of the answer tokens alone
    log_probs = logits.detach()[0].double().log_softmax(-1)
    reference = -log_probs[~prompt_positions].gather(1, tokenized.targets[~prompt_positions, None]).mean()
    torch.testing.assert_close(loss.double(), reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model(tokenized.inputs[None], tokenized.targets[None]).loss.double(), reference,
                               rtol=1e-5, atol=1e-5)


def test_only_assistant_turns_are_trained_in_a_chat(char_tokenizer):
    chat = Example((("user", "hi"), ("assistant", "hello"), ("user", "bye"), ("assistant", "ciao")))
    tokenized = tokenize_example(chat, get_template("raw"), char_tokenizer, max_tokens=64)
    scored = [t for t in tokenized.targets.tolist() if t != IGNORE_INDEX]
    eot = char_tokenizer.eot_id
    assert scored == char_tokenizer.encode("hello") + [eot] + char_tokenizer.encode("ciao") + [eot]


def test_long_examples_are_cut_and_answerless_ones_dropped(char_tokenizer):
    template = get_template("raw")
    fits = Example((("user", "q"), ("assistant", "a long answer")))
    no_room = Example((("user", "x" * 40), ("assistant", "y")))
    data = tokenize_examples([fits, no_room], template, char_tokenizer, max_tokens=8, what="training")
    assert data.dropped == 1 and data.truncated == 1 and len(data.examples) == 1
    assert len(data.examples[0].inputs) == 8
    with pytest.raises(UserError, match="no answer token is left"):
        tokenize_examples([no_room], template, char_tokenizer, max_tokens=8, what="training")


def tokenized_set(char_tokenizer, n=12):
    examples = [Example((("user", f"question {i}" + "?" * (i % 5)), ("assistant", f"answer {i * 7}")))
                for i in range(n)]
    return tokenize_examples(examples, get_template("plain"), char_tokenizer, max_tokens=64, what="training")


def test_padding_gives_each_example_its_own_loss(char_tokenizer, make_model):
    data = tokenized_set(char_tokenizer)
    model = make_model(char_tokenizer.vocab_size)
    inputs, targets = pad_batch(data.examples[:5], pad_id=char_tokenizer.eot_id)
    logits = model(inputs).logits
    for row, e in enumerate(data.examples[:5]):
        alone = model(e.inputs[None]).logits[0]
        torch.testing.assert_close(logits[row, :len(e.inputs)], alone, rtol=1e-5, atol=1e-5)
    lengths = [len(e.inputs) for e in data.examples[:5]]
    for row, n in enumerate(lengths):
        assert (targets[row, n:] == IGNORE_INDEX).all()


def test_packing_keeps_every_example_whole_with_its_own_targets(char_tokenizer):
    data = tokenized_set(char_tokenizer)
    rows = pack_examples(data.examples, length=128)
    assert all(len(r.inputs) <= 128 for r in rows) and len(rows) < len(data.examples)
    # Reading the rows back in order gives exactly the examples' inputs and targets, each in one row.
    at = 0
    for row in rows:
        position = 0
        while at < len(data.examples) and position + len(data.examples[at].inputs) <= len(row.inputs):
            e = data.examples[at]
            n = len(e.inputs)
            assert row.inputs[position:position + n].tolist() == e.inputs.tolist()
            assert row.targets[position:position + n].tolist() == e.targets.tolist()
            position, at = position + n, at + 1
        assert position == len(row.inputs)
    assert at == len(data.examples)
    assert sum(int((r.targets != IGNORE_INDEX).sum()) for r in rows) == data.trained_tokens


@pytest.mark.parametrize("packing", [False, True])
def test_steps_are_a_pure_function_of_the_step_and_cover_every_item_each_epoch(char_tokenizer, packing):
    data = tokenized_set(char_tokenizer)
    plan = BatchPlan(block_size=64, micro_batch=2, world_size=1, grad_accum=2)
    stream = InstructBatches(data, plan, seed=3, rank=0, device="cpu", pad_id=0, packing=packing)
    n = len(stream.items)
    steps = -(-n // plan.rows)
    seen = [i for step in range(steps) for micro in stream.step_items(step) for i in micro][:n]
    assert sorted(seen) == list(range(n))  # the first epoch takes every item once
    for step in range(steps):
        for inputs, targets in stream.micro_batches(step):
            assert inputs.shape[0] == 2 and inputs.shape == targets.shape
    again = InstructBatches(data, plan, seed=3, rank=0, device="cpu", pad_id=0, packing=packing)
    for step in (5, 1, 5):  # any order: resuming at step 5 sees what step 5 saw
        for (a, b), (c, d) in zip(stream.micro_batches(step), again.micro_batches(step)):
            assert torch.equal(a, c) and torch.equal(b, d)
    assert stream.epochs(steps) >= 1.0


def test_ranks_take_disjoint_slices_of_the_same_rows(char_tokenizer):
    data = tokenized_set(char_tokenizer)
    one = InstructBatches(data, BatchPlan(64, 2, 1, 2), seed=0, rank=0, device="cpu", pad_id=0)
    two = [InstructBatches(data, BatchPlan(64, 2, 2, 1), seed=0, rank=r, device="cpu", pad_id=0) for r in range(2)]
    for step in range(4):
        single = [i for micro in one.step_items(step) for i in micro]
        split = [i for stream in two for micro in stream.step_items(step) for i in micro]
        assert single == split


def test_split_and_validation_batches(char_tokenizer):
    examples = [Example((("user", str(i)), ("assistant", "x"))) for i in range(20)]
    train, val = split_examples(examples, 0.1, seed=0)
    assert len(val) == 2 and len(train) == 18 and set(train).isdisjoint(val)
    data = tokenized_set(char_tokenizer, n=5)
    batches = list(InstructEvalBatches(data, micro_batch=2, device="cpu", pad_id=0))
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    assert sum(int((t != IGNORE_INDEX).sum()) for _, t in batches) == data.trained_tokens
