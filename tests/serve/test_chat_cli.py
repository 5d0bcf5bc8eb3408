"""`lmsmith chat` and `lmsmith generate --chat`: conversations through the model's own template."""

from __future__ import annotations

import io

import pytest
import torch

from lmsmith.cli import main
from lmsmith.model.decoding import generate
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.generate import GenerationConfig
from lmsmith.schema.serve import ChatConfig
from lmsmith.serve.chat import chat_loop
from lmsmith.text.chat_template import chat_format


@pytest.fixture(scope="module")
def loaded(chat_model_dir):
    torch.set_num_threads(1)
    model, tokenizer = load_model_dir(chat_model_dir)
    return model, tokenizer, chat_format(tokenizer, chat_model_dir)


def greedy_answer(loaded, messages, max_new_tokens):
    model, tokenizer, fmt = loaded
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0, stop=[fmt.answer_end])
    return generate(model, tokenizer, fmt.prompt(messages), config)[0]


def test_a_conversation_streams_answers_and_keeps_its_history(loaded):
    model, tokenizer, fmt = loaded
    out = io.StringIO()
    lines = ["/temp 0", "/system Add.", "1+2=", "2+2=", "/quit", "never read"]
    chat_loop(model, tokenizer, fmt, ChatConfig(max_new_tokens=6, temperature=0.9), lines, out)
    first = greedy_answer(loaded, [{"role": "system", "content": "Add."}, {"role": "user", "content": "1+2="}], 6)
    second = greedy_answer(loaded, [{"role": "system", "content": "Add."}, {"role": "user", "content": "1+2="},
                                    {"role": "assistant", "content": first}, {"role": "user", "content": "2+2="}], 6)
    text = out.getvalue()
    assert "[temperature 0]" in text and "[system message set]" in text
    assert f"model> {first}\n" in text and f"model> {second}\n" in text
    assert "never read" not in text


def test_a_compiled_chat_answers_as_the_eager_one(loaded):
    model, tokenizer, fmt = loaded
    out = io.StringIO()
    chat_loop(model, tokenizer, fmt, ChatConfig(max_new_tokens=6, temperature=0, compile=True), ["1+2=", "2+2="], out)
    first = greedy_answer(loaded, [{"role": "user", "content": "1+2="}], 6)
    second = greedy_answer(loaded, [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": first},
                                    {"role": "user", "content": "2+2="}], 6)
    assert f"model> {first}\n" in out.getvalue() and f"model> {second}\n" in out.getvalue()


def test_reset_forgets_and_a_long_conversation_drops_its_oldest_turns(loaded):
    model, tokenizer, fmt = loaded
    out = io.StringIO()
    long = "tell me more about it " * 2  # about 45 tokens with the template: two turns fill the context
    chat_loop(model, tokenizer, fmt, ChatConfig(max_new_tokens=20, temperature=0), [long, long, long, "/reset", "x"],
              out)
    text = out.getvalue()
    assert "dropped the oldest 2 message(s)" in text
    assert "[conversation cleared]" in text
    assert text.rstrip().endswith(greedy_answer(loaded, [{"role": "user", "content": "x"}], 20).rstrip())


def test_a_message_longer_than_the_context_is_refused_and_the_chat_goes_on(loaded):
    model, tokenizer, fmt = loaded
    out = io.StringIO()
    chat_loop(model, tokenizer, fmt, ChatConfig(max_new_tokens=4, temperature=0), ["word " * 200, "ok"], out)
    assert "write a shorter one" in out.getvalue() and out.getvalue().count("model> ") == 1


def test_the_chat_command_reads_piped_lines(chat_model_dir, monkeypatch, capsys, loaded):
    monkeypatch.setattr("sys.stdin", io.StringIO("1+2=\n/quit\n"))
    assert main(["chat", str(chat_model_dir), "--temperature", "0", "--max-new-tokens", "5"]) == 0
    assert f"model> {greedy_answer(loaded, [{'role': 'user', 'content': '1+2='}], 5)}\n" in capsys.readouterr().out


def test_generate_chat_renders_the_prompt_through_the_template(chat_model_dir, capsys, loaded):
    assert main(["generate", str(chat_model_dir), "--chat", "--prompt", "3+4=", "--temperature", "0",
                 "--max-new-tokens", "8", "--quiet"]) == 0
    assert capsys.readouterr().out == "3+4=\n" + greedy_answer(loaded, [{"role": "user", "content": "3+4="}], 8) + "\n"


def test_chat_with_a_model_without_a_template_is_one_clear_error(model_dir, capsys):
    assert main(["generate", str(model_dir), "--chat", "--prompt", "hi"]) == 2
    assert "no chat template" in capsys.readouterr().err
    assert main(["generate", str(model_dir), "--chat", "--template", "plain", "--prompt", "hi", "--max-new-tokens",
                 "2", "--quiet"]) == 0
