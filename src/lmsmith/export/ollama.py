"""Ollama: a directory holding model.gguf and a Modelfile (`ollama create NAME -f DIR/Modelfile`).

A Modelfile names the weights, the prompt template, the stop tokens and the sampling defaults.
Ollama's templates are Go templates, not Jinja, so the model's Jinja chat template is translated:
it is rendered with marker texts in place of message contents, which shows the fixed text it writes
before and after each role's message (and the default system prompt, if it adds one). The Go
template is built from those pieces, then checked: re-rendered here for several conversations, it
must give exactly what the Jinja template gives, or --ollama is refused with the reason. A model
without a chat template gets the plain template `{{ .Prompt }}`.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmsmith.core.errors import UserError

_MARK = {"system": "\ue000S\ue000", "user": "\ue000U\ue000", "assistant": "\ue000A\ue000"}


def _render(source: str, messages: list[dict], eos: str, generation: bool) -> str:
    # The one bounded sandbox chat and serve render with: a hostile template fails in a line, never hangs export.
    from lmsmith.text.chat_template import render

    return render(source, messages, eos_token=eos, bos_token="", add_generation_prompt=generation)


def template_pieces(source: str, eos: str) -> dict[str, str]:
    """The fixed text before and after each role's message, the generation prompt and the default system text."""
    pieces: dict[str, str] = {}
    for role, mark in _MARK.items():
        with_system = role != "system"
        messages = ([{"role": "system", "content": _MARK["system"]}] if with_system else []) + [
            {"role": role, "content": mark}]
        text = _render(source, messages, eos, generation=False)
        if with_system:
            text = text.split(_MARK["system"], 1)[-1]
            text = text[len(pieces["system_after"]):] if text.startswith(pieces["system_after"]) else text
        before, _, after = text.partition(mark)
        pieces[f"{role}_before"], pieces[f"{role}_after"] = before, after
    user_only = _render(source, [{"role": "user", "content": _MARK["user"]}], eos, generation=False)
    pieces["default_system"] = user_only.split(_MARK["user"], 1)[0].removesuffix(pieces["user_before"])
    with_prompt = _render(source, [{"role": "user", "content": _MARK["user"]}], eos, generation=True)
    pieces["generation"] = with_prompt.removeprefix(user_only)
    return pieces


def with_separator(pieces: dict[str, str], source: str, eos: str) -> dict[str, str] | None:
    """The pieces read as a template that puts a separator between messages and no default system
    prompt (lmsmith's own chatml and plain do): the text before a message that follows another is the
    separator, then the text before a first message. None when the pieces do not read that way."""
    first_user = _render(source, [{"role": "user", "content": _MARK["user"]}], eos, False).split(_MARK["user"])[0]
    after_system = pieces["user_before"]
    if not first_user or not after_system.endswith(first_user) or after_system == first_user:
        return None
    separator = after_system[:-len(first_user)]
    if not pieces["assistant_before"].startswith(separator):
        return None
    read = dict(pieces, separator=separator, default_system="", user_before=first_user)
    read["assistant_before"] = pieces["assistant_before"][len(separator):]
    return read


def _render_pieces(pieces: dict[str, str], messages: list[dict]) -> str:
    """What the Go template built from `pieces` writes for `messages`, computed here."""
    text = "" if messages and messages[0]["role"] == "system" else pieces["default_system"]
    for n, m in enumerate(messages):
        text += (pieces.get("separator", "") if n else "")
        text += pieces[f"{m['role']}_before"] + m["content"] + pieces[f"{m['role']}_after"]
    return text + pieces["generation"]


CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
]


def exact_pieces(source: str, eos: str) -> dict[str, str]:
    """The pieces of a template, as fixed text around each message (with a separator between messages
    if that is how it reads), checked against the Jinja template on several conversations."""
    pieces = template_pieces(source, eos)
    for candidate in (pieces, with_separator(pieces, source, eos)):
        if candidate is not None and all(_render_pieces(candidate, messages) == _render(source, messages, eos, True)
                                         for messages in CONVERSATIONS):
            return candidate
    raise UserError("the model's chat template does not wrap each message in fixed text, so it has no exact "
                    "Ollama (Go) template: export without --ollama (llama.cpp reads the Jinja template from "
                    "the GGUF file)")


def go_template(source: str | None, eos: str) -> tuple[str, list[str]]:
    """(the Ollama TEMPLATE, the extra stop strings) for a Jinja chat template, or a UserError."""
    if source is None:
        return "{{ .Prompt }}", []
    pieces = exact_pieces(source, eos)
    if any("{{" in p or "}}" in p for p in pieces.values()):
        raise UserError("the model's chat template writes '{{' or '}}', which an Ollama template cannot hold literally")
    go = ""
    if pieces["default_system"]:
        go += (
            '{{ if not (and .Messages (eq (index .Messages 0).Role "system")) }}'
            + pieces["default_system"]
            + "{{ end }}"
        )
    separator = pieces.get("separator", "")
    between = "{{ range $i, $m := .Messages }}{{ if $i }}" + separator + "{{ end }}"
    go += between if separator else "{{ range .Messages }}"
    for n, role in enumerate(("system", "user", "assistant")):
        go += ("{{ if" if n == 0 else "{{ else if") + f' eq .Role "{role}" }}}}'
        go += pieces[f"{role}_before"] + "{{ .Content }}" + pieces[f"{role}_after"]
    go += "{{ end }}{{ end }}" + pieces["generation"]
    stop = pieces["assistant_after"].strip()
    return go, [stop] if stop else []


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def modelfile(template: str, stops: list[str], settings, block_size: int) -> str:
    """The Modelfile text: the weights beside it, the template, the stop strings and the sampling defaults."""
    if '"""' in template:
        raise UserError('the chat template holds """, which a Modelfile cannot quote: export without --ollama')
    lines = ["# Made by lmsmith export --ollama: ollama create NAME -f Modelfile", "FROM ./model.gguf",
             f'TEMPLATE """{template}"""']
    lines += [f"PARAMETER stop {_quoted(s)}" for s in dict.fromkeys(stops)]
    lines += [f"PARAMETER temperature {settings.temperature}", f"PARAMETER top_p {settings.top_p}",
              f"PARAMETER num_ctx {settings.num_ctx or block_size}"]
    return "\n".join(lines) + "\n"


def export_ollama(model_dir: str | Path, out: str | Path, settings) -> dict:
    """Write OUT/model.gguf, OUT/Modelfile and OUT/manifest.json, atomically as a whole directory."""
    from dataclasses import asdict

    from lmsmith.core.output import stage_directory, write_manifest
    from lmsmith.export.gguf import GGUF_FILE, MODELFILE, export_gguf, gguf_architecture, model_chat_template
    from lmsmith.model.directory import read_model_config, resolve_model_dir
    from lmsmith.text.tokenizer import load_tokenizer

    model_dir = resolve_model_dir(model_dir)
    config = read_model_config(model_dir)
    gguf_architecture(config)
    tokenizer = load_tokenizer(model_dir)
    template, stops = go_template(model_chat_template(tokenizer, model_dir), tokenizer.eot_token)
    with stage_directory(out, "export", reads=[model_dir]) as tmp:
        result = export_gguf(model_dir, tmp / GGUF_FILE, settings.quant, name=Path(out).name)
        stops = [*stops, *result["stop"]]
        (tmp / MODELFILE).write_text(modelfile(template, stops, settings, config.block_size), encoding="utf-8")
        write_manifest(tmp, "export", config={"export": asdict(settings)},
                       inputs={"model": {"path": str(model_dir)}},
                       counts={"bytes": result["bytes"], "parameters": result["parameters"]},
                       architecture=result["architecture"])
    return {**result, "stop": stops}
