"""What a stage is: a typed config, the inputs it reads, and one function that does the work.

    Stage(name="tokenizer", sections={"tokenizer": TokenizerConfig}, inputs=(Input("data", ...),),
          run=lmsmith.text.tokenizer.run, ...)

`run(config, inputs, out)` does the stage's work into the directory `out` and returns the
manifest it wrote. `config` holds one checked dataclass per section the stage reads
(`config.tokenizer.vocab_size`); `inputs` maps each input's name to what the user gave.
The command line (`lmsmith.cli`) and `lmsmith build` both call that same function; the list
of stages is `lmsmith.stages.STAGES`.

A stage that can be a step of `lmsmith build` also says where in the work directory it writes
(`writes`), what kind of thing its output is for later steps (`makes`: data, tokenizer, tokens,
model, samples, ...), and, for each input, which kind it reads (`Input.reads`). Build derives a
step's inputs, its key and its output from those declarations alone.

This module also turns what a user writes (a YAML file, `section.key=value` overrides and a
few flags) into that config, the same way for every verb.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import yaml

from lmsmith.core.config import ConfigError, apply_overrides, closest_hint, parse_section, read_yaml
from lmsmith.schema.sections import FILE_KEYS, SECTIONS, STEPS_KEY
from lmsmith.schema.sizing import pin_user_keys

OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*=")


def is_override(item: str) -> bool:
    """`section.key=value` is an override; anything else on the line is an input (write ./a=b for such a path)."""
    return bool(OVERRIDE.match(item))


@dataclass(frozen=True)
class Input:
    """One thing a stage reads: positional (at most one per stage), or given by a flag."""

    name: str
    help: str
    many: bool = False  # one or more values
    flag: str | None = None  # e.g. "-t/--tokenizer"; None: positional
    required: bool = True
    metavar: str | None = None
    key: str | None = None  # the config key it fills ("curate.inputs"), so a recipe can name it too
    reads: str | None = None  # in a build: the kind of output of an earlier step it takes ("model", "tokens", ...)
    otherwise: str | None = None  # in a build, when no earlier step makes that kind: this recipe key names it


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one config key; its type and default come from the dataclass."""

    flag: str  # "--vocab-size", or "-n/--max-new-tokens"
    key: str  # "tokenizer.vocab_size"
    help: str = ""
    convert: Callable[[str], Any] | None = None  # applied to the text before the type check
    many: bool = False  # a list key that takes several values after one flag (--text a.py b.py)
    also: tuple[str, ...] = ()  # values accepted beyond the key's own choices (the section's parser routes them)


@dataclass(frozen=True)
class Option:
    """A command-line option that is not a config key (how to show results, where to resume from):
    passed to `run` as a keyword argument."""

    flag: str
    help: str
    metavar: str | None = None
    dest: str | None = None  # default: the flag's name, e.g. --no-stream -> no_stream
    boolean: bool = False
    repeat: bool = False
    type: Callable[[str], Any] = str
    default: Any = None

    @property
    def name(self) -> str:
        return self.dest or self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Stage:
    name: str  # the verb, and the stage name its manifest records
    help: str
    sections: dict[str, type]  # recipe sections the stage reads, its own first
    run: Callable[[SimpleNamespace, dict, Path], dict]  # run(config, inputs, out) -> manifest
    inputs: tuple[Input, ...] = ()
    flags: tuple[Flag, ...] = ()
    output: Literal["required", "optional", "none"] = "required"
    output_help: str = "output directory"
    verb: tuple[str, ...] = ()  # the words on the command line, when not just the name
    in_build: bool = False  # a step of the classic journey: what a recipe without `steps:` runs
    writes_model: bool = False  # its output holds a trained model: --force to replace one
    options: tuple[Option, ...] = ()
    file_keys: tuple[str, ...] = ()  # top-level keys of a --config file besides sections (train: data, out)
    config_input: str | None = None  # the input that is itself the config (a recipe), instead of --config
    load_config: Callable[..., Any] | None = None  # (stage, file, overrides, flags) -> config; default stage_config
    # (raw sections) -> config, for a stage whose sections need more than each dataclass's defaults
    from_sections: Callable[[dict], Any] | None = None
    # As a step of `lmsmith build`:
    writes: str | None = None  # its folder in the work directory (a step named otherwise: that name, same place)
    makes: str | None = None  # the kind of thing it writes, that later steps' inputs read
    done: str = ""  # the sub-folder whose manifest marks the step finished, and that later steps read
    resumable: bool = False  # an interrupted step continues from its checkpoints when its key is unchanged
    torchrun: bool = False  # runs as N processes under torchrun with `lmsmith build --nproc-per-node N`
    check_step: Callable[[Any, int], None] | None = None  # (config, processes): refuse a step before any work
    show: Callable[[Path], None] | None = None  # prints what a finished step made, at the end of a build

    @property
    def words(self) -> tuple[str, ...]:
        return self.verb or (self.name,)

    @property
    def own_section(self) -> str | None:
        return next(iter(self.sections), None)


def field_type(cls: type, dotted: str) -> Any:
    """The annotation of `a.b` inside dataclass `cls`; None when there is no such field."""
    tp: Any = cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
    return tp


def field_default(cls: type, dotted: str) -> Any:
    obj = cls()
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _text_valued(tp: Any) -> bool:
    if tp is str:
        return True
    args = typing.get_args(tp)
    return typing.get_origin(tp) is list and args == (str,)


def flag_value(stage: Stage, flag: Flag, given: Any) -> Any:
    """A flag's value as the config expects it: text stays text, numbers and booleans are parsed."""
    section, _, key = flag.key.partition(".")
    tp = field_type(stage.sections[section], key)
    values = given if isinstance(given, list) else [given]
    converted = []
    for text in values:
        if not isinstance(text, str):
            converted.append(text)
            continue
        if flag.convert is not None:
            text = flag.convert(text)
        if _text_valued(tp):
            converted.append(text)
        else:
            try:
                converted.append(yaml.safe_load(text) if text != "" else "")
            except yaml.YAMLError:
                converted.append(text)
    return converted if isinstance(given, list) else converted[0]


def known_sections() -> dict[str, type]:
    return SECTIONS


def config_file_sections(stage: Stage, path: str | Path) -> dict:
    """The sections of a YAML file that this stage reads; a file of bare keys is the stage's own section.

    Sections of other stages are left to them (a build recipe serves every verb); a section no
    stage reads is refused, with the closest name.
    """
    if Path(path).is_dir():
        raise ConfigError(f"--config {path} is a directory: give a YAML file")
    raw = read_yaml(path)
    known = {**known_sections(), **dict.fromkeys(FILE_KEYS), STEPS_KEY: None}
    if raw and not any(key in known for key in raw):
        return {stage.own_section: raw}
    kept = {}
    for key, value in raw.items():
        if key in stage.sections or key in stage.file_keys:
            kept[key] = value
        elif key not in known:
            raise ConfigError(f"unknown section '{key}' in {path}: "
                              f"{closest_hint(key, known, 'the sections are ' + ', '.join(sorted(known)))}")
    return kept


def route_override(stage: Stage, item: str) -> str:
    """`tokenizer.vocab_size=8` as it is; a bare `vocab_size=8` (or `split.x=1`) into the stage's own section."""
    key = item.partition("=")[0]
    head = key.split(".")[0]
    if head in stage.sections or head in stage.file_keys:
        return item
    if stage.own_section is None:
        raise ConfigError(f"{key}: `lmsmith {' '.join(stage.words)}` has no settings to override")
    own = stage.sections[stage.own_section]
    if field_type(own, key.split(".")[0]) is not None:
        return f"{stage.own_section}.{item}"
    known = known_sections()
    if head in known:
        readable = ", ".join(stage.sections)
        raise ConfigError(f"{key}: `lmsmith {' '.join(stage.words)}` does not read the {head}: section "
                          f"(it reads {readable})")
    names = [f.name for f in dataclasses.fields(own)] + list(known)
    raise ConfigError(f"unknown key '{key}': {closest_hint(head, names, 'known keys: ' + ', '.join(sorted(names)))}")


def stage_config(stage: Stage, config_file: str | Path | None = None, overrides: list[str] = (),
                 flags: dict[str, Any] | None = None) -> SimpleNamespace:
    """The checked config of a stage: the file's sections, then overrides, then flags."""
    raw = config_file_sections(stage, config_file) if config_file is not None else {}
    routed = [route_override(stage, o) for o in overrides]
    raw = pin_user_keys(apply_overrides(raw, routed), routed)
    for key, value in (flags or {}).items():
        section, _, rest = key.partition(".")
        if not isinstance(raw.get(section), dict):
            raw[section] = {}
        node = raw[section] = dict(raw[section])
        for part in rest.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[rest.split(".")[-1]] = value
    return config_from_sections(stage, raw)


def config_from_sections(stage: Stage, raw: dict) -> Any:
    """The checked config of a stage from the plain dict of its sections (and file keys)."""
    for key in stage.file_keys:
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ConfigError(f"{key}: expected a directory path, got {raw[key]!r}")
    if stage.from_sections is not None:
        return stage.from_sections(raw)
    config = SimpleNamespace(**{name: parse_section(cls, raw.get(name), name) for name, cls in stage.sections.items()})
    for key in stage.file_keys:
        setattr(config, key, raw.get(key))
    return config
