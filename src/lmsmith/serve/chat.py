"""`lmsmith chat`: a conversation with a model in the terminal, each answer streamed as it is written.

The whole conversation is rendered through the model's chat template before every answer, so
the model sees exactly what it was fine-tuned on. When the conversation outgrows the context,
the oldest turns are dropped (the system message is kept) and a note says so.

    /reset          forget the conversation (the system message stays)
    /system TEXT    set the system message (empty: none)
    /temp X         sampling temperature (0: greedy)
    /quit           leave (Ctrl-D too)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
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


def chat_loop(model, tokenizer, chat_format, cfg: ChatConfig, lines: Iterable[str], out=None) -> None:
    """Read messages and commands from `lines`, stream each answer to `out`."""
    from lmsmith.model.decoding import generate_streams

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
        max_new = min(generation.max_new_tokens, model.config.block_size - 1)
        try:
            prompt, dropped = conversation.prompt(max_new)
        except UserError as exc:
            write(out, f"[{exc}]\n")
            continue
        if dropped:
            write(out, f"[the conversation outgrew the model's context of {model.config.block_size} tokens: "
                       f"dropped the oldest {dropped} message(s)]\n")
        room = model.config.block_size - len(prompt)
        config = replace(generation, max_new_tokens=max(1, min(max_new, room)), stop=stop)
        write(out, "model> ")
        streams = generate_streams(model, tokenizer, [prompt], config,
                                   on_text=lambda _i, piece, _done: write(out, piece), decoder=decoder)
        write(out, "\n")
        conversation.turns.append({"role": "assistant", "content": streams[0].text})


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
            if not value >= 0:
                raise ValueError
        except ValueError:
            write(out, f"[/temp needs a number, 0 or more (0 is greedy), got {rest.strip()!r}]\n")
            return True
        cfg.temperature = value
        write(out, f"[temperature {value:g}]\n")
    else:
        write(out, f"[unknown command {name}: {HELP}]\n")
    return True


def write(out, text: str) -> None:
    out.write(text)
    out.flush()


def typed_lines(prompt: str = "you> "):
    """Lines typed at the terminal, until Ctrl-D or Ctrl-C."""
    while True:
        try:
            yield input(prompt)
        except (EOFError, KeyboardInterrupt):
            print()
            return


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
    lines = typed_lines() if sys.stdin.isatty() else sys.stdin
    chat_loop(model, tokenizer, fmt, cfg, lines)
