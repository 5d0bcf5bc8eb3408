"""The command line: one verb per stage, all read the same way.

    lmsmith VERB [INPUTS] [-o OUT] [--config FILE] [section.key=value ...] [--flag VALUE ...]

Every verb comes from the registry (`lmsmith.stages.STAGES`), plus the two that run stages,
`build` and `sweep`: its inputs, its flags (each one config key, with the dataclass's type and
default), its options, and the function it calls.
`key=value` items may stand anywhere on the line. Every `UserError` becomes one line on stderr
and exit code 2; nothing else is caught, so a bug keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmsmith import __version__
from lmsmith.build import BUILD
from lmsmith.core.config import ConfigError, closest_hint
from lmsmith.core.errors import UserError, cannot_write, is_disk_full, is_unwritable
from lmsmith.core.output import check_utf8_name
from lmsmith.core.writer_lock import writer_lock
from lmsmith.schema.stage import Stage, field_default, field_type, flag_value, is_override, stage_config
from lmsmith.stages import STAGES
from lmsmith.sweep.study import SWEEP

# Every verb, in the order `lmsmith --help` lists them.
VERBS: tuple[Stage, ...] = (BUILD, *STAGES, SWEEP)


class ArgumentError(UserError):
    """A command line that does not parse."""


class VerbParser(argparse.ArgumentParser):
    """argparse, but a bad command line is a UserError (one line, exit 2) like every other mistake."""

    def error(self, message: str) -> typing.NoReturn:
        raise ArgumentError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _default_text(stage: Stage, key: str) -> str:
    section, _, rest = key.partition(".")
    value = field_default(stage.sections[section], rest)
    return "" if value is None or value == [] else f" (default: {value})"


def add_flag(parser: argparse.ArgumentParser, stage: Stage, flag) -> None:
    section, _, rest = flag.key.partition(".")
    tp = field_type(stage.sections[section], rest)
    kwargs: dict = {"dest": f"flag:{flag.key}", "default": None, "help": flag.help + _default_text(stage, flag.key)}
    if tp is bool:
        kwargs.update(action="store_const", const=True)
    elif typing.get_origin(tp) is list and flag.many:
        kwargs.update(action="extend", nargs="+", metavar="FILE")
    elif typing.get_origin(tp) is list:
        kwargs.update(action="append", metavar="VALUE")
    elif typing.get_origin(tp) is typing.Literal:
        kwargs.update(choices=list(typing.get_args(tp)) + list(flag.also))
    else:
        kwargs.update(metavar=flag.flag.lstrip("-").split("-")[0].upper())
    parser.add_argument(*flag.flag.split("/"), **kwargs)


def add_option(parser: argparse.ArgumentParser, option) -> None:
    kwargs: dict = {"dest": f"option:{option.name}", "help": option.help}
    if option.boolean:
        kwargs.update(action="store_true")
    elif option.repeat:
        kwargs.update(action="append", default=[], metavar=option.metavar)
    else:
        kwargs.update(type=option.type, default=option.default, metavar=option.metavar or "VALUE")
    parser.add_argument(option.flag, **kwargs)


def verb_parser(stage: Stage) -> VerbParser:
    """The parser of one verb, made from its registry entry."""
    prog = f"lmsmith {' '.join(stage.words)}"
    parser = VerbParser(prog=prog, description=stage.help)
    positional = [i for i in stage.inputs if i.flag is None]
    metavars = " ".join(i.metavar or i.name.upper() for i in positional)
    parser.add_argument("items", nargs="*", metavar="INPUT|KEY=VALUE",
                        help=(f"{metavars}: " + "; ".join(i.help for i in positional) + ". " if positional else "")
                        + "KEY=VALUE items set config keys, anywhere on the line (e.g. "
                        + (f"{stage.own_section}.KEY=VALUE)" if stage.own_section
                           else "train.steps=500)" if stage.config_input else "none here)"))
    for spec in stage.inputs:
        if spec.flag is not None:
            parser.add_argument(*spec.flag.split("/"), dest=f"input:{spec.name}", metavar=spec.metavar or "DIR",
                                required=spec.required, help=spec.help, **({"nargs": "+"} if spec.many else {}))
    if stage.output != "none":
        parser.add_argument("-o", "--out", required=stage.output == "required", help=stage.output_help)
    if stage.config_input is None and stage.sections:
        parser.add_argument("--config", metavar="FILE",
                            help=f"YAML with {', '.join(f'{s}:' for s in stage.sections)} (or a whole recipe)")
    for flag in stage.flags:
        add_flag(parser, stage, flag)
    for option in stage.options:
        add_option(parser, option)
    if stage.writes_model:
        parser.add_argument("--force", action="store_true", help="replace an output that already holds a trained model")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    return parser


def assign_inputs(stage: Stage, items: list[str], flagged: dict) -> dict:
    """Positional inputs in the order the stage names them (the last may take many); flag inputs as given."""
    inputs = {name: value for name, value in flagged.items() if value is not None}
    positional = [i for i in stage.inputs if i.flag is None]
    words = " ".join(stage.words)
    for n, spec in enumerate(positional):
        last = n == len(positional) - 1
        if spec.many and last:
            taken, items = items, []
        else:
            taken, items = items[:1], items[1:]
        if taken:
            inputs[spec.name] = taken if spec.many else taken[0]
        elif spec.required and spec.key is None:
            raise ArgumentError(f"lmsmith {words}: {spec.metavar or spec.name.upper()} is missing: {spec.help}")
    if items:
        raise ArgumentError(f"lmsmith {words}: unexpected argument {items[0]!r}: "
                            "a config setting is written section.key=value (see `--help`)")
    return inputs


def refuse_config_as_input(stage: Stage, items: list[str]) -> None:
    if stage.config_input is not None:
        return
    for item in items:
        if item.endswith((".yaml", ".yml")):
            raise ArgumentError(f"{item}: a config file goes after --config: "
                                f"lmsmith {' '.join(stage.words)} --config {item} ...")


def name_flags(stage: Stage, message: str) -> str:
    """A config message names keys (eval.batch_size); add the flag that sets each one."""
    for flag in stage.flags:
        message = re.sub(rf"\b{re.escape(flag.key)}\b(?! \(-)", f"{flag.key} ({flag.flag.split('/')[-1]})", message)
    return message


@dataclass
class Command:
    """A parsed command line: the stage, and what its `run` is called with."""

    stage: Stage
    config: Any
    inputs: dict
    out: str | None
    options: dict

    def run(self):
        if self.out is None:
            return self.stage.run(self.config, self.inputs, self.out, **self.options)
        check_utf8_name(Path(self.out))
        if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks: rank 0 holds the lock for them all
            return self.stage.run(self.config, self.inputs, self.out, **self.options)
        with writer_lock(self.out):  # every verb, for its whole run: a second command into one -o is refused
            return self.stage.run(self.config, self.inputs, self.out, **self.options)


@dataclass
class Line:
    """A command line read against its verb: what was given, before any config is built."""

    stage: Stage
    inputs: dict
    overrides: list[str]
    flags: dict  # config key -> value, from flags and from inputs that are config keys
    config_file: str | None
    out: str | None
    options: dict


def read_line(argv: list[str]) -> Line:
    """Split a command line (`lmsmith` left out) into inputs, overrides, flag settings and options."""
    stage, rest = find_stage(argv)
    if stage is None:
        raise unknown_verb(argv)
    args = vars(verb_parser(stage).parse_intermixed_args(rest))
    overrides = [i for i in args["items"] if is_override(i)]
    plain = [i for i in args["items"] if not is_override(i)]
    refuse_config_as_input(stage, plain)
    flagged = {k.split(":", 1)[1]: v for k, v in args.items() if k.startswith("input:")}
    inputs = assign_inputs(stage, plain, flagged)
    flags = {f.key: flag_value(stage, f, args[f"flag:{f.key}"]) for f in stage.flags
             if args.get(f"flag:{f.key}") is not None}
    for spec in stage.inputs:  # an input that is also a config key (curate's sources are curate.inputs)
        if spec.key is not None and spec.name in inputs:
            flags[spec.key] = list(inputs[spec.name]) if spec.many else inputs[spec.name]
    options = {k.split(":", 1)[1]: v for k, v in args.items() if k.startswith("option:")}
    if stage.writes_model:
        options["force"] = args["force"]
    options["quiet"] = args["quiet"]
    config_file = inputs.get(stage.config_input) if stage.config_input else args.get("config")
    return Line(stage, inputs, overrides, flags, config_file, args.get("out"), options)


def load_line_config(line: Line, config_file: str | None) -> Any:
    """The checked config of a line's stage, from `config_file` plus the line's overrides and flags."""
    stage = line.stage
    try:
        if stage.load_config is not None:
            return stage.load_config(stage, config_file, line.overrides, line.flags)
        return stage_config(stage, config_file, line.overrides, line.flags)
    except UserError as exc:
        raise ConfigError(name_flags(stage, str(exc))) from None


def parse_command(argv: list[str]) -> Command:
    """Read a whole command line into a Command, checking every setting; runs nothing."""
    line = read_line(argv)
    return Command(line.stage, load_line_config(line, line.config_file), line.inputs, line.out, line.options)


def unknown_verb(argv: list[str]) -> UserError:
    known = sorted({" ".join(s.words) for s in VERBS})
    given = " ".join(argv[:2]) if argv[:1] == ["tokenizer"] else (argv[0] if argv else "")
    return ArgumentError(f"unknown verb '{given}': "
                         f"{closest_hint(given, known, 'the verbs are ' + ', '.join(sorted(known)))}")


def find_stage(argv: list[str]) -> tuple[Stage | None, list[str]]:
    """The verb at the start of argv (one word, or two for `tokenizer train|show`) and the rest."""
    for stage in sorted(VERBS, key=lambda s: -len(s.words)):
        n = len(stage.words)
        if tuple(argv[:n]) == stage.words:
            return stage, argv[n:]
    return None, argv


def top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {' '.join(s.words):<18} {s.help}" for s in VERBS)
    parser = VerbParser(prog="lmsmith", description="Build your own language model end to end.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=f"verbs:\n{lines}\n\nEvery verb: lmsmith VERB [INPUTS] [-o OUT] [--config FILE] "
                               "[section.key=value ...]; `lmsmith VERB --help` lists its flags.")
    parser.add_argument("--version", action="version", version=f"lmsmith {__version__}")
    parser.add_argument("verb", nargs="?", metavar="VERB")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if find_stage(argv)[0] is None:
            parsed, _ = top_parser().parse_known_args(argv)  # --help and --version
            if parsed.verb is None:
                top_parser().print_help()
                return 2
        parse_command(argv).run()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if is_unwritable(exc):  # any stage, any file: a read-only folder or file met while writing
            print(f"error: {cannot_write(exc)}", file=sys.stderr)
            return 2
        if not is_disk_full(exc):
            raise  # a bug in lmsmith: keep the traceback
        # Any stage, any file: every write is atomic, so what was there before is still whole.
        where = f" while writing {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error: the disk is full{where}: free some space and run the command again "
              "(earlier outputs are intact; unfinished files are removed on the next run)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
