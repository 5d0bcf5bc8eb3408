"""Typed configuration for every stage: dataclasses, YAML files and dotted overrides.

A recipe is one YAML file whose top-level sections are the stages (`model:`, and later
`curate:`, `train:` ...). Each section is a dataclass; `parse_section` turns a plain dict into
one, refusing unknown keys (with the closest known key as a hint), wrong types and impossible
shapes before any work starts. Command-line overrides such as `model.n_layer=4` are applied to
the plain dict first, so they are checked exactly like the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from lmsmith.core.errors import UserError


class ConfigError(UserError):
    """A config value that cannot work; the message names the key and the fix."""


# ---------------------------------------------------------------------------------------------
# Turning plain dicts into checked dataclasses


def closest_hint(word: str, known: typing.Iterable[str], otherwise: str | None = None, cutoff: float = 0.5) -> str:
    """'did you mean X?' for the nearest known word; else `otherwise`, or the list of known words."""
    known = sorted(str(k) for k in known)
    match = difflib.get_close_matches(str(word), known, n=1, cutoff=cutoff)
    if match:
        return f"did you mean '{match[0]}'?"
    return otherwise or f"known: {', '.join(known)}"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1:  # `int | None`: the one type's own message says more than "expected int or None"
            return _coerce(value, others[0], key)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return parse_section(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        if not -(2**63) <= value < 2**64:  # no setting needs more, and torch and numpy overflow past it (seeds)
            raise ConfigError(f"{key}: {value} does not fit in 64 bits: give a smaller number")
        return value
    if tp is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)  # YAML 1.1 reads `lr: 3e-4` as text; the user means the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            number = math.inf
        # No setting means anything with NaN or infinity (a learning rate, a temperature, an epsilon): such a
        # value only turns the run into NaN later, far from its cause. One place refuses it for every key.
        if not math.isfinite(number):
            raise ConfigError(f"{key}: {value!r} is not a finite number: give an ordinary number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return value
    raise TypeError(f"config annotation {tp!r} of {key} is not supported")  # a bug, not user error


def parse_section(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from the plain dict `raw`; `where` is the dotted key, for messages."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {raw!r}")
    raw = dict(raw)
    if hasattr(cls, "expand_preset"):
        raw = cls.expand_preset(raw, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key '{dotted}': "
                              f"{closest_hint(key, fields, 'known keys: ' + ', '.join(sorted(fields)))}")
        values[key] = _coerce(value, hints[key], dotted)
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def section_to_dict(obj: Any) -> dict:
    """The plain-dict form of a config dataclass, for YAML and JSON."""
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------------------------------
# Files and overrides


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory: give the path of a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        from lmsmith.core.errors import cannot_read

        raise cannot_read(path, exc) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML ({first_line}): fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply: a recipe is a few levels of sections") from None
    _check_expanded_size(data, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections, not {type(data).__name__}")
    return data


MAX_CONFIG_VALUES = 100_000  # a real recipe has hundreds; prompts or file lists may run to thousands


def _check_expanded_size(data: Any, path: Path) -> None:
    """Refuse a YAML file whose aliases expand to more values than any recipe holds ("billion laughs": nine
    aliases of nine aliases ... are a few lines that become 10^9 values once copied, printed or hashed)."""
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(f"config file {path} expands to more than {MAX_CONFIG_VALUES:,} values (through its "
                              "aliases, or sheer size): write the recipe out without nested aliases")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides to a nested dict; values are parsed as YAML (4, 3e-4, true)."""
    raw = dict(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like section.key=value, e.g. model.n_layer=4")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        if isinstance(value, str) and _looks_like_number(value):
            value = float(value)  # YAML 1.1 reads "3e-4" as text; a user means the number
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return raw


def _looks_like_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in {"nan", "inf", "-inf", "infinity", "-infinity"}


# ---------------------------------------------------------------------------------------------
# The model







