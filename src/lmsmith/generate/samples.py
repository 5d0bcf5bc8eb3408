"""`lmsmith generate`: continue prompts with a model, streaming, and write samples.json."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

from lmsmith.core.atomic import write_json
from lmsmith.model.decoding import PromptTruncatedWarning, generate_streams, lay_out_for_decoding
from lmsmith.model.directory import resolve_model_dir
from lmsmith.schema.generate import GenerateConfig


def unescape_newlines(text: str) -> str:
    """Shells make newlines awkward to type, so a literal backslash-n means a newline."""
    return text.replace("\\n", "\n")


class OrderedPrinter:
    """Prints the outputs of a batch one after another, never interleaved: the first prompt
    streams live; the others are buffered until their turn, then stream live too. Nothing
    is printed before the first text arrives (by then the prompts have passed their checks)."""

    def __init__(self, prompts: list[str], out=None, separator: str = ""):
        self.prompts = prompts
        self.out = out or sys.stdout
        # A continuation follows its prompt directly; a chat answer is a reply, set apart from the question.
        self.separator = separator
        self.buffers = [[] for _ in prompts]
        self.finished = [False] * len(prompts)
        self.current = -1

    def __call__(self, i: int, piece: str, finished: bool) -> None:
        if self.current == -1:
            self._advance()
        if i == self.current:
            self._write(piece)
        else:
            self.buffers[i].append(piece)
        self.finished[i] = finished
        if finished and i == self.current:
            self._advance()

    def _advance(self) -> None:
        """Close the current output and start the next, catching up on its buffered text."""
        while True:
            if self.current >= 0:
                self._write("\n")
            self.current += 1
            if self.current == len(self.prompts):
                return
            if len(self.prompts) > 1:
                self._write(f"──── {self.current + 1}/{len(self.prompts)} ────\n")
            self._write(self.prompts[self.current] + self.separator + "".join(self.buffers[self.current]))
            if not self.finished[self.current]:
                return

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()




def chat_prompts(cfg: GenerateConfig, tokenizer, model_path) -> tuple[list[str], list[str]]:
    """With --chat: each prompt as a one-message conversation in the model's template, and the stop
    strings with the template's end of an answer added."""
    from lmsmith.text.chat_template import chat_format

    fmt = chat_format(tokenizer, model_path, cfg.template)
    prompts = [fmt.prompt([{"role": "user", "content": p}]) for p in cfg.prompts]
    return prompts, cfg.stop + ([fmt.answer_end] if fmt.answer_end and fmt.answer_end not in cfg.stop else [])


def constraint_matchers(cfg: GenerateConfig, tokenizer, vocab_size: int, rows: int) -> list | None:
    """With --json-schema FILE or --regex: one matcher per prompt holding its output to it (None without)."""
    from lmsmith.core.json_file import read_json
    from lmsmith.model.constraints import Constraint, Grammars

    if cfg.json_schema is None and cfg.regex is None:
        return None
    if cfg.json_schema is not None:
        schema = read_json(cfg.json_schema, "--json-schema takes a file holding one JSON schema object")
        constraint = Constraint.json_schema(schema)
    else:
        constraint = Constraint("regex", cfg.regex)
    grammars = Grammars(tokenizer, vocab_size)
    grammar = grammars.compile(constraint)
    return [grammars.matcher(grammar, {tokenizer.eot_id}) for _ in range(rows)]


def start_tokens(tokenizer, texts: list[str], chat: bool) -> list:
    """What each output continues. An empty prompt starts from the end-of-text token, as a new document in the
    training stream does. A model that needs BOS (a converted Llama) gets it before its prompt, as transformers'
    tokenizer puts it there; a chat prompt is the template's text alone, as apply_chat_template makes it."""
    bos = tokenizer.special_id("bos") if tokenizer.specials.add_bos and not chat else None
    if bos is None:
        return [p if p else [tokenizer.eot_id] for p in texts]
    return [[bos, *tokenizer.encode(p)] for p in texts]


STAGE = "generate"


SAMPLES = "samples.json"


COMPILING = "[--compile: the decode step compiles after the first token, tens of seconds the first time]"


def run(config, inputs: dict, out: str | Path | None = None, *, quiet: bool = False, no_stream: bool = False) -> list:
    """The generate stage: continue every prompt with the model in `inputs["model"]`, printing as it goes.

    With `out`, also writes `out/samples.json` and its manifest. Returns the samples.
    """
    from lmsmith.core.device import pick_device
    from lmsmith.core.output import check_output, input_record, stage_directory, write_manifest
    from lmsmith.model.directory import load_model_dir

    cfg: GenerateConfig = config.generate
    model_path = inputs["model"]
    if cfg.template is not None:  # a misspelt template is refused before the model is loaded, chat or not
        from lmsmith.text.chat_template import get_template

        get_template(cfg.template)
    if out is not None:
        check_output(out, STAGE, reads=[model_path])
    device = pick_device(cfg.device)
    model, tokenizer = load_model_dir(model_path, device)
    lay_out_for_decoding(model)
    decoder = None
    if cfg.compile:
        from lmsmith.model.compiled_decode import CompiledDecoder

        decoder = CompiledDecoder(model)
    generation = cfg.generation_config()
    texts = cfg.prompts
    if cfg.chat:
        texts, generation.stop = chat_prompts(cfg, tokenizer, resolve_model_dir(model_path))
    prompts = start_tokens(tokenizer, texts, cfg.chat)
    matchers = constraint_matchers(cfg, tokenizer, min(tokenizer.vocab_size, model.config.vocab_size), len(prompts))
    separator = "\n" if cfg.chat else ""
    printer = None if no_stream else OrderedPrinter(list(cfg.prompts), separator=separator)
    if decoder is not None and not quiet:
        print(COMPILING, file=sys.stderr)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always", PromptTruncatedWarning)
        warnings.showwarning = lambda message, *_: print(f"warning: {message}", file=sys.stderr)
        streams = generate_streams(model, tokenizer, prompts, generation, on_text=printer, decoder=decoder,
                                   matchers=matchers)
    elapsed = time.perf_counter() - started
    if no_stream:
        printer = OrderedPrinter(list(cfg.prompts), separator=separator)
        for i, stream in enumerate(streams):
            printer(i, stream.text, True)
    samples = [{"prompt": prompt, "text": stream.text} for prompt, stream in zip(cfg.prompts, streams)]
    if not quiet:
        tokens = sum(s.tokens for s in streams)
        compiling = f"; compiling the decode step took {decoder.compile_seconds:.1f} s of it" if decoder else ""
        print(f"[{tokens} new tokens in {elapsed:.2f} s on {device}: {tokens / elapsed:.1f} tokens/s{compiling}]",
              file=sys.stderr)
    if out is not None:
        with stage_directory(out, STAGE, reads=[model_path]) as tmp:
            write_json(tmp / SAMPLES, samples)
            write_manifest(tmp, STAGE, config=dataclasses.asdict(cfg), counts={"samples": len(samples)},
                           inputs={"model": input_record(resolve_model_dir(model_path))})
    return samples


def show_samples(out: Path) -> None:
    """The texts a finished generate step wrote, one panel each (at the end of a build)."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = Console(highlight=False)
    for sample in json.loads((Path(out) / SAMPLES).read_text(encoding="utf-8")):
        body = Text(sample["prompt"], style="bold")
        body.append(sample["text"])
        console.print(Panel(body, title=f"prompt {sample['prompt']!r}" if sample["prompt"] else "from scratch",
                            title_align="left", expand=False))
