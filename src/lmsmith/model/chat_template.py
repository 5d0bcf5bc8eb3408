"""Chat templates as data: the Jinja `chat_template` of `tokenizer_config.json`.

transformers (`apply_chat_template`), llama.cpp and Ollama all read a model's chat format from the
`chat_template` key of its `tokenizer_config.json` (newer transformers also write it to
`chat_template.jinja`). lmsmith does the same, so a model fine-tuned here chats the same way
everywhere, and a model converted from Hugging Face keeps the format it was trained with.

Our own templates (finetune/templates.py: chatml, plain, raw) are written out as Jinja by
`jinja_source`; the text it renders is the text our training masks are computed from (tests
check this for every template). `ChatFormat` renders conversations for serving and chatting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmsmith.core.errors import UserError
from lmsmith.finetune.templates import EOT_PLACEHOLDER, ROLES, TRAINED_ROLE, ChatTemplate, get_template

TOKENIZER_CONFIG = "tokenizer_config.json"
JINJA_FILE = "chat_template.jinja"  # where transformers >= 4.50 saves the template beside the config


# ---------------------------------------------------------------------------------------------
# Reading the template of a directory


def template_from_config(config: dict) -> str | None:
    """The template in a parsed tokenizer_config.json; a list of named templates gives its "default"."""
    value = config.get("chat_template")
    if isinstance(value, list):  # [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    return value if isinstance(value, str) and value.strip() else None


def read_chat_template(directory: str | Path) -> str | None:
    """The chat template a tokenizer, model or Hugging Face directory carries, or None."""
    directory = Path(directory)
    jinja = directory / JINJA_FILE
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config_file = directory / TOKENIZER_CONFIG
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # the tokenizer loader reports a broken config; here it just means no template
    return template_from_config(config) if isinstance(config, dict) else None


# ---------------------------------------------------------------------------------------------
# Our templates, written as Jinja


def _literal(text: str) -> str:
    """A Jinja expression for `text`, with `{eot}` standing for the tokenizer's eos_token."""
    parts = text.split(EOT_PLACEHOLDER)
    pieces = []
    for i, part in enumerate(parts):
        if part:
            pieces.append(json.dumps(part))  # a JSON string is also a valid Jinja string literal
        if i + 1 < len(parts):
            pieces.append("eos_token")
    return " + ".join(pieces) or '""'


def jinja_source(template: ChatTemplate) -> str:
    """The Jinja chat_template that renders what `template.render` / `template.prompt` do.

    Each message is prefix + content + end; a separator follows every message but the last;
    the generation prompt is the last message's separator and the assistant's prefix.
    """
    lines = [f"{{#- lmsmith chat template '{template.name}': {template.description} -#}}",
             "{%- for message in messages -%}"]
    for i, role in enumerate(ROLES):
        turn = template.turns[role]
        keyword = "if" if i == 0 else "elif"
        lines += [f"{{%- {keyword} message['role'] == '{role}' -%}}",
                  f"{{{{- {_literal(turn.prefix)} + message['content'] + {_literal(turn.end)} -}}}}",
                  f"{{%- if not loop.last -%}}{{{{- {_literal(turn.separator)} -}}}}{{%- endif -%}}"]
    lines += ["{%- else -%}",
              "{{- raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') -}}",
              "{%- endif -%}",
              "{%- endfor -%}",
              "{%- if add_generation_prompt -%}"]
    for i, role in enumerate(ROLES):
        keyword = "if" if i == 0 else "elif"
        separator = _literal(template.turns[role].separator)
        lines.append(f"{{%- {keyword} messages and messages[-1]['role'] == '{role}' -%}}{{{{- {separator} -}}}}")
    lines += ["{%- endif -%}",
              f"{{{{- {_literal(template.turns[TRAINED_ROLE].prefix)} -}}}}",
              "{%- endif -%}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Rendering


class TemplateError(UserError):
    """A conversation the template refuses (an unknown role, a missing field), or a broken template."""


def _raise(message: str):
    raise TemplateError(message)


def render(source: str, messages: list[dict], *, eos_token: str, bos_token: str = "",
           add_generation_prompt: bool = False) -> str:
    """Render `messages` with a Jinja chat template, in a sandbox (a template is untrusted data).

    The environment matches transformers' apply_chat_template: blocks trimmed, `raise_exception`
    and the `tojson` filter available, special tokens passed by name.
    """
    from jinja2 import TemplateError as JinjaError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    try:
        return env.from_string(source).render(messages=messages, eos_token=eos_token, bos_token=bos_token,
                                              add_generation_prompt=add_generation_prompt)
    except JinjaError as exc:
        raise TemplateError(f"the model's chat template failed ({exc}): "
                            f"fix chat_template in {TOKENIZER_CONFIG}") from None


# ---------------------------------------------------------------------------------------------
# A model's chat format


_PROBE = "\u2063lmsmith-answer\u2063"  # an answer no real conversation holds, to find what follows one


@dataclass(frozen=True)
class ChatFormat:
    """How a model's conversations become prompts, and which token ends its answers."""

    source: str  # the Jinja template
    eos_token: str
    bos_token: str = ""
    answer_end: str | None = None  # what the template writes after an answer: a stop string (and token)

    def prompt(self, messages: list[dict]) -> str:
        """The text to continue so that the model writes the assistant's next answer."""
        check_messages(messages)
        return render(self.source, messages, eos_token=self.eos_token, bos_token=self.bos_token,
                      add_generation_prompt=True)

    def conversation(self, messages: list[dict]) -> str:
        check_messages(messages)
        return render(self.source, messages, eos_token=self.eos_token, bos_token=self.bos_token)


def check_messages(messages) -> None:
    """Refuse what no template can render: not a list of {role, content} with a known role."""
    if not isinstance(messages, list) or not messages:
        raise TemplateError("messages must be a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise TemplateError(f"messages[{i}] must be an object with a text 'content'")
        if message.get("role") not in ROLES:
            raise TemplateError(f"messages[{i}] has role {message.get('role')!r}: use one of {', '.join(ROLES)}")


def find_answer_end(source: str, tokenizer) -> str | None:
    """What a template writes right after an assistant's answer (<|im_end|>, the end-of-text token,
    ...): generation stops there. A special token of the tokenizer is taken alone; otherwise the text
    up to the end of the rendering, without trailing whitespace. None if the answer ends the text."""
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    text = render(source, probe, eos_token=tokenizer.eot_token)
    after = text.split(_PROBE, 1)[1] if _PROBE in text else ""
    special = next((t for t in tokenizer.special_tokens if t and after.startswith(t)), None)
    return special or after.rstrip() or None


def chat_format(tokenizer, where: str | Path, template: str | None = None) -> ChatFormat:
    """The chat format of a model: its own chat_template, or one of ours named by `template`.

    A model with neither cannot chat: one clear error that names both fixes.
    """
    source = jinja_source(get_template(template)) if template else getattr(tokenizer, "chat_template", None)
    if source is None:
        raise UserError(f"{where} has no chat template (no chat_template in its {TOKENIZER_CONFIG}): fine-tune it "
                        "with `lmsmith finetune --template chatml`, or pick one here with --template chatml|plain|raw")
    return ChatFormat(source, tokenizer.eot_token, answer_end=find_answer_end(source, tokenizer))
