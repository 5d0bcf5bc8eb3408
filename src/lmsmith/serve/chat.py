"""`lmsmith chat`: a conversation with a model in the terminal, each answer streamed as it is written.

The whole conversation is rendered through the model's chat template before every answer, so
the model sees exactly what it was fine-tuned on. When the conversation outgrows the context,
the oldest turns are dropped (the system message is kept) and a note says so.

    /reset          forget the conversation (the system message stays)
    /system TEXT    set the system message (empty: none)
    /temp X         sampling temperature (0: greedy)
    /quit           leave (Ctrl-D too)

At a terminal, lines are edited with prompt_toolkit (history with the arrow keys). While an answer
streams, the terminal does not echo: what is typed then is held and appears at the next prompt
(a line ended with Enter is sent when the answer ends), so it never lands inside the answer; Ctrl-C
stops the answer (the part written so far stays in the conversation).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from lmsmith.core.errors import UserError
from lmsmith.schema.serve import ChatConfig

HELP = "commands: /reset, /system TEXT, /temp X, /quit"




class Conversation:
    """The messages so far, and the prompt that asks for the next answer within the context."""

    def __init__(self, chat_format, tokenizer, context: int, system: str | None):
        self.format, self.tokenizer, self.context = chat_format, tokenizer, context
        self.system = system
        self.turns: list[dict] = []

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def prompt(self, max_new_tokens: int) -> tuple[list[int], int]:
        """Token ids of the prompt for the next answer, and how many old messages had to go to fit it."""
        dropped = 0
        while True:
            ids = self.tokenizer.encode(self.format.prompt(self.messages()))
            if len(ids) + max_new_tokens <= self.context or len(self.turns) < 3:
                break
            del self.turns[:2]  # the oldest question and its answer; the new question is always kept
            dropped += 2
        if len(ids) >= self.context:
            self.turns.pop()
            raise UserError(f"that message is {len(ids)} tokens with the template, but the model's context is "
                            f"{self.context}: write a shorter one")
        return ids, dropped


class ReplyCancelled(Exception):
    """Ctrl-C was typed while an answer streamed."""


def chat_loop(model, tokenizer, chat_format, cfg: ChatConfig, lines: Iterable[str], out=None, keys=None) -> None:
    """Read messages and commands from `lines`, stream each answer to `out`.

    `keys` (a TerminalInput) holds what is typed while an answer streams, and stops the answer on Ctrl-C."""
    out = out or sys.stdout
    decoder = None
    if cfg.compile:
        from lmsmith.model.compiled_decode import CompiledDecoder

        decoder = CompiledDecoder(model)
        write(out, "[--compile: the first answer pauses while the decode step compiles, tens of seconds]\n")
    conversation = Conversation(chat_format, tokenizer, model.config.block_size, cfg.system)
    generation = cfg.generation()
    stop = [chat_format.answer_end] if chat_format.answer_end else []
    write(out, f"{HELP}\n")
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            if not command(line, conversation, cfg, out):
                return
            generation = cfg.generation()
            continue
        conversation.turns.append({"role": "user", "content": line})
        # Keys are held from the moment the line is taken (not only once tokens flow), so nothing typed while
        # the prompt is prepared is echoed into the answer either.
        with keys.during_reply() if keys is not None else contextlib.nullcontext(lambda: None) as poll:
            answer = reply(model, tokenizer, conversation, generation, stop, out, poll, decoder)
        if answer is not None:
            conversation.turns.append({"role": "assistant", "content": answer})


def reply(model, tokenizer, conversation: Conversation, generation, stop: list[str], out, poll, decoder) -> str | None:
    """Stream the answer to the conversation's last message; returns it (as far as it got before Ctrl-C),
    or None for a message that does not fit the context."""
    from lmsmith.model.decoding import generate_streams

    max_new = min(generation.max_new_tokens, model.config.block_size - 1)
    try:
        prompt, dropped = conversation.prompt(max_new)
    except UserError as exc:
        write(out, f"[{exc}]\n")
        return None
    if dropped:
        write(out, f"[the conversation outgrew the model's context of {model.config.block_size} tokens: "
                   f"dropped the oldest {dropped} message(s)]\n")
    room = model.config.block_size - len(prompt)
    config = replace(generation, max_new_tokens=max(1, min(max_new, room)), stop=stop)
    write(out, "model> ")
    answer = []

    def show(_i, piece, _done):
        answer.append(piece)
        write(out, piece)
        poll()  # raises ReplyCancelled on Ctrl-C

    try:
        generate_streams(model, tokenizer, [prompt], config, on_text=show, decoder=decoder)
    except ReplyCancelled:
        write(out, " [stopped]")
    write(out, "\n")
    return "".join(answer)


def command(line: str, conversation: Conversation, cfg: ChatConfig, out) -> bool:
    """Carry out one /command; False to quit."""
    name, _, rest = line.partition(" ")
    if name in ("/quit", "/exit"):
        return False
    if name == "/reset":
        conversation.turns.clear()
        write(out, "[conversation cleared]\n")
    elif name == "/system":
        conversation.system = rest.strip() or None
        write(out, f"[system message {'set' if conversation.system else 'removed'}]\n")
    elif name == "/temp":
        try:
            value = float(rest)
            if not 0 <= value < math.inf:  # NaN and infinity too
                raise ValueError
        except ValueError:
            write(out, f"[/temp needs a finite number, 0 or more (0 is greedy), got {rest.strip()!r}]\n")
            return True
        cfg.temperature = value
        write(out, f"[temperature {value:g}]\n")
    else:
        write(out, f"[unknown command {name}: {HELP}]\n")
    return True


def write(out, text: str) -> None:
    out.write(text)
    out.flush()


class TerminalInput:
    """The terminal's keyboard: lines edited with prompt_toolkit, and what is typed while an answer streams.

    During an answer the terminal is in raw mode (no echo, Ctrl-C a key rather than a signal), so typing
    cannot scribble over the answer; the keys are read between streamed pieces and kept: whole lines
    (ended with Enter) are sent after the answer, the unfinished rest fills the next prompt."""

    def __init__(self, prompt: str = "you> ", keyboard=None, output=None):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.input import create_input

        self.prompt = prompt
        self.input = keyboard or create_input()
        self.session = PromptSession(input=self.input, output=output)
        self.held_lines: list[str] = []
        self.held_text = ""

    def lines(self) -> Iterator[str]:
        """Lines typed at the prompt (the held ones first), until Ctrl-D; Ctrl-C clears the line."""
        while True:
            if self.held_lines:
                line = self.held_lines.pop(0)
                print(f"{self.prompt}{line}", flush=True)  # shown now, as if typed at this prompt
                yield line
                continue
            text, self.held_text = self.held_text, ""
            try:
                yield self.session.prompt(self.prompt, default=text)
            except KeyboardInterrupt:
                continue
            except EOFError:
                print()
                return

    @contextlib.contextmanager
    def during_reply(self) -> Iterator[Callable[[], None]]:
        """Raw mode for the length of an answer; yields `poll`, which reads what was typed (raising
        ReplyCancelled on Ctrl-C)."""
        with self.input.raw_mode():
            yield self._poll
            self._poll(cancel=False)  # keys typed after the last piece are kept too

    def _poll(self, cancel: bool = True) -> None:
        from prompt_toolkit.keys import Keys

        for press in self.input.read_keys():
            if press.key == Keys.ControlC:
                if cancel:
                    raise ReplyCancelled
            elif press.key in (Keys.ControlM, Keys.ControlJ):
                if self.held_text.strip():
                    self.held_lines.append(self.held_text)
                self.held_text = ""
            elif press.key in (Keys.Backspace, Keys.ControlH):
                self.held_text = self.held_text[:-1]
            elif press.key == Keys.BracketedPaste or (isinstance(press.key, str) and len(press.key) == 1):
                self.held_text += press.data
            # other keys (arrows, function keys) mean nothing while an answer streams


def describe(path, cfg: ChatConfig) -> str:
    """The start-up line: which model, which template, how it samples."""
    template = cfg.template or "its own (tokenizer_config.json)"
    sampling = [f"temperature {cfg.temperature:g}" + (" (greedy)" if cfg.temperature == 0 else "")]
    if cfg.top_p is not None:
        sampling.append(f"top_p {cfg.top_p:g}")
    if cfg.top_k is not None:
        sampling.append(f"top_k {cfg.top_k}")
    sampling.append(f"at most {cfg.max_new_tokens} tokens an answer")
    if cfg.seed is not None:
        sampling.append(f"seed {cfg.seed}")
    system = f"; system message: {cfg.system!r}" if cfg.system else ""
    return f"[{path.name} ({path}) · template {template} · {', '.join(sampling)}{system}]"


def run(config, inputs: dict, out=None, *, quiet: bool = False) -> None:
    """The chat stage: talk with the model in `inputs["model"]` until /quit or Ctrl-D."""
    from lmsmith.core.device import pick_device
    from lmsmith.model.decoding import lay_out_for_decoding
    from lmsmith.model.directory import load_model_dir, resolve_model_dir
    from lmsmith.text.chat_template import chat_format

    cfg: ChatConfig = config.chat
    path = resolve_model_dir(inputs["model"])
    model, tokenizer = load_model_dir(path, pick_device(cfg.device))
    lay_out_for_decoding(model)
    fmt = chat_format(tokenizer, path, cfg.template)
    print(describe(path, cfg), flush=True)
    if sys.stdin.isatty() and sys.stdout.isatty():
        keys = TerminalInput()
        chat_loop(model, tokenizer, fmt, cfg, keys.lines(), keys=keys)
    else:  # piped in: lines as they come, nothing to edit or hold
        chat_loop(model, tokenizer, fmt, cfg, sys.stdin)
