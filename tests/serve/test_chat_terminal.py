"""`lmsmith chat` at a terminal: keys typed while an answer streams are held for the next prompt (never printed
inside the answer), and Ctrl-C stops the answer. prompt_toolkit's pipe input stands in for the keyboard."""

from __future__ import annotations

import io

import pytest
import torch

from lmsmith.model.decoding import generate
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.generate import GenerationConfig
from lmsmith.schema.serve import ChatConfig
from lmsmith.serve.chat import TerminalInput, chat_loop, describe
from lmsmith.text.chat_template import chat_format

prompt_toolkit = pytest.importorskip("prompt_toolkit")


@pytest.fixture(scope="module")
def loaded(chat_model_dir):
    torch.set_num_threads(1)
    model, tokenizer = load_model_dir(chat_model_dir)
    return model, tokenizer, chat_format(tokenizer, chat_model_dir)


@pytest.fixture
def keyboard():
    from prompt_toolkit.input import create_pipe_input

    with create_pipe_input() as pipe:
        yield pipe


def terminal(keyboard) -> TerminalInput:
    from prompt_toolkit.output import DummyOutput

    return TerminalInput(keyboard=keyboard, output=DummyOutput())


def greedy_answer(loaded, messages, max_new_tokens):
    model, tokenizer, fmt = loaded
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0, stop=[fmt.answer_end])
    return generate(model, tokenizer, fmt.prompt(messages), config)[0]


def test_keys_typed_during_an_answer_are_held_for_the_next_prompt(loaded, keyboard, capsys):
    model, tokenizer, fmt = loaded
    keys, out = terminal(keyboard), io.StringIO()
    keyboard.send_text("2+2=\rhalx\x7ff")  # typed while the first answer streams: a line, then half of one
    chat_loop(model, tokenizer, fmt, ChatConfig(max_new_tokens=6, temperature=0), ["1+2="], out, keys=keys)
    first = greedy_answer(loaded, [{"role": "user", "content": "1+2="}], 6)
    assert out.getvalue().endswith(f"model> {first}\n")
    assert "2+2=" not in out.getvalue() and "hal" not in out.getvalue()
    assert (keys.held_lines, keys.held_text) == (["2+2="], "half")

    lines = keys.lines()
    assert next(lines) == "2+2="  # the whole line is sent first, shown as if typed at the prompt
    assert capsys.readouterr().out == "you> 2+2=\n"
    keyboard.send_text(" done\r")
    assert next(lines) == "half done"  # the unfinished rest filled the next prompt
    keyboard.send_text("\x04")  # Ctrl-D
    assert list(lines) == []


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(loaded, keyboard):
    model, tokenizer, fmt = loaded
    keys, out = terminal(keyboard), io.StringIO()
    keyboard.send_text("\x03")  # Ctrl-C while the first answer streams
    chat_loop(model, tokenizer, fmt, ChatConfig(max_new_tokens=6, temperature=0), ["1+2=", "2+2="], out, keys=keys)
    first, second = out.getvalue().split("model> ")[1:]
    assert first.endswith(" [stopped]\n")
    full = greedy_answer(loaded, [{"role": "user", "content": "1+2="}], 6)
    stopped = first.removesuffix(" [stopped]\n")
    assert stopped and full.startswith(stopped) and len(stopped) < len(full)
    expected = greedy_answer(loaded, [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": stopped},
                                      {"role": "user", "content": "2+2="}], 6)
    assert second == f"{expected}\n"  # the stopped part stays in the conversation


def test_the_start_up_line_names_the_model_its_template_and_the_sampling(chat_model_dir):
    line = describe(chat_model_dir, ChatConfig(temperature=0, top_p=None, max_new_tokens=9, seed=3))
    assert line == (f"[{chat_model_dir.name} ({chat_model_dir}) · template its own (tokenizer_config.json) · "
                    "temperature 0 (greedy), at most 9 tokens an answer, seed 3]")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "hot"])
def test_temp_refuses_what_no_temperature_means(loaded, value):
    model, tokenizer, fmt = loaded
    out = io.StringIO()
    chat_loop(model, tokenizer, fmt, ChatConfig(max_new_tokens=2, temperature=0), [f"/temp {value}"], out)
    assert f"[/temp needs a finite number, 0 or more (0 is greedy), got {value!r}]" in out.getvalue()
