"""Chat templates as data: the Jinja `chat_template` of `tokenizer_config.json`.

transformers (`apply_chat_template`), llama.cpp and Ollama all read a model's chat format from the
`chat_template` key of its `tokenizer_config.json` (newer transformers also write it to
`chat_template.jinja`). lmsmith does the same, so a model fine-tuned here chats the same way
everywhere, and a model converted from Hugging Face keeps the format it was trained with.

Our own templates (chatml, plain, raw, below) are written out as Jinja by `jinja_source`; the
text it renders is the text our training masks are computed from (tests check this for every
template). `ChatFormat` renders conversations for serving and chatting.

Our own templates: how a conversation becomes one text, and which parts of it the model learns.

A conversation is a list of messages with a role (system, user, assistant). A template writes
each message as  prefix + content + end  and puts a separator before the next message:

    chatml   <|im_start|>user\\nWhat is 2+2?<|im_end|>\\n<|im_start|>assistant\\n4<|im_end|>
    plain    ### Prompt:\\nWhat is 2+2?\\n\\n### Response:\\n4<|endoftext|>
    raw      What is 2+2?4<|endoftext|>          (the texts exactly as given: put your own cues in them)

Only the assistant's content and its end marker are trained: the model learns to answer, and
to stop (the end marker is what generation stops at), but not to write the user's questions.
`{eot}` in a template stands for the tokenizer's end-of-text token.

The tool section of our templates (in the Jinja they are written as, so serving renders it;
Hermes' format, which Qwen2.5 and SmolLM2 also use). With `tools` given, the system message (or
a system turn of its own, when the conversation has none) ends with the tool text:

    You can call functions. Each one is described by a JSON schema:
    {"name": "get_weather", "description": "...", "parameters": {...}}
    To call one, answer with <tool_call>{"name": NAME, "arguments": ARGUMENTS}</tool_call>

An assistant message's `tool_calls` follow its content, each written as
<tool_call>{"name": ..., "arguments": {...}}</tool_call>; a `role: "tool"` message (a function's
result) is written as a user turn holding <tool_response>CONTENT</tool_response>. Without tools,
tool calls and tool messages, the text is exactly what it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmsmith.core.errors import UserError

TOKENIZER_CONFIG = "tokenizer_config.json"
JINJA_FILE = "chat_template.jinja"  # where transformers >= 4.50 saves the template beside the config


# ---------------------------------------------------------------------------------------------
# Our own templates


ROLES = ("system", "user", "assistant")
SERVED_ROLES = (*ROLES, "tool")  # a function's result, given back to the model (the tool section)
TRAINED_ROLE = "assistant"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOLS_INTRO = "You can call functions. Each one is described by a JSON schema:\n"
TOOLS_HOW = 'To call one, answer with <tool_call>{"name": NAME, "arguments": ARGUMENTS}</tool_call>'
EOT_PLACEHOLDER = "{eot}"


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text; `trained` pieces carry the loss."""

    text: str
    trained: bool


@dataclass(frozen=True)
class Turn:
    prefix: str  # before the content
    end: str  # right after the content; trained for the assistant
    separator: str  # between this message and the next one


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    description: str
    turns: dict[str, Turn]
    special_tokens: tuple[str, ...] = ()  # must be single tokens; added to a tokenizer that lacks them

    def _fill(self, text: str, eot: str) -> str:
        return text.replace(EOT_PLACEHOLDER, eot)

    def render(self, messages: list[tuple[str, str]], eot: str) -> list[Segment]:
        """The segments of a whole conversation, for training."""
        segments: list[Segment] = []
        for i, (role, content) in enumerate(messages):
            turn = self.turns[role]
            trained = role == TRAINED_ROLE
            segments.append(Segment(self._fill(turn.prefix, eot), False))
            segments.append(Segment(content, trained))
            segments.append(Segment(self._fill(turn.end, eot), trained))
            if i + 1 < len(messages):
                segments.append(Segment(self._fill(turn.separator, eot), False))
        return [s for s in segments if s.text]

    def prompt(self, messages: list[tuple[str, str]] | str, eot: str) -> str:
        """The text to give `generate` so that the model writes the assistant's next answer."""
        if isinstance(messages, str):
            messages = [("user", messages)]
        text = "".join(s.text for s in self.render(messages, eot))
        if messages:
            text += self._fill(self.turns[messages[-1][0]].separator, eot)
        return text + self._fill(self.turns[TRAINED_ROLE].prefix, eot)

    def answer_end(self, eot: str) -> str:
        """What the model writes after an answer: pass it to `generate --stop`."""
        return self._fill(self.turns[TRAINED_ROLE].end, eot)


def _same_for_all(prefix: str, end: str, separator: str) -> dict[str, Turn]:
    return {role: Turn(prefix.format(role=role), end, separator) for role in ROLES}


TEMPLATES: dict[str, ChatTemplate] = {
    "chatml": ChatTemplate(
        "chatml", "<|im_start|>role ... <|im_end|> (OpenAI ChatML, used by Qwen, SmolLM and others)",
        _same_for_all("<|im_start|>{role}\n", "<|im_end|>", "\n"),
        special_tokens=("<|im_start|>", "<|im_end|>"),
    ),
    "plain": ChatTemplate(
        "plain", "### Prompt: / ### Response: headings (Alpaca style); readable by any tokenizer",
        {
            "system": Turn("### System:\n", "", "\n\n"),
            "user": Turn("### Prompt:\n", "", "\n\n"),
            "assistant": Turn("### Response:\n", EOT_PLACEHOLDER, "\n\n"),
        },
    ),
    "raw": ChatTemplate(
        "raw", "the texts exactly as given, the answer followed by end-of-text",
        {
            "system": Turn("", "", ""),
            "user": Turn("", "", ""),
            "assistant": Turn("", EOT_PLACEHOLDER, ""),
        },
    ),
}


def get_template(name: str) -> ChatTemplate:
    if name not in TEMPLATES:
        known = "; ".join(f"{t.name}: {t.description}" for t in TEMPLATES.values())
        raise UserError(f"unknown chat template '{name}': use one of these. {known}")
    return TEMPLATES[name]


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
    the generation prompt is the last message's separator and the assistant's prefix. With tools,
    tool calls or tool messages, the tool section of the module's docstring.
    """
    system, user = template.turns["system"], template.turns["user"]
    lines = [f"{{#- lmsmith chat template '{template.name}': {template.description} -#}}",
             "{%- set tool_text = namespace(text='') -%}",
             "{%- if tools -%}",
             f"{{%- set tool_text.text = {json.dumps(TOOLS_INTRO)} -%}}",
             "{%- for tool in tools -%}{%- set tool_text.text = tool_text.text + "
             "((tool.function if tool.function is defined else tool) | tojson) + '\\n' -%}{%- endfor -%}",
             f"{{%- set tool_text.text = tool_text.text + {json.dumps(TOOLS_HOW)} -%}}",
             "{%- if not messages or messages[0]['role'] != 'system' -%}",
             f"{{{{- {_literal(system.prefix)} + tool_text.text + {_literal(system.end)} + "
             f"{_literal(system.separator)} -}}}}",
             "{%- endif -%}",
             "{%- endif -%}",
             "{%- for message in messages -%}"]
    contents = {
        "system": "message['content'] + ('\\n\\n' + tool_text.text if loop.first and tool_text.text else '')",
        "user": "message['content']",
        "assistant": "(message['content'] or '')",
    }
    for i, role in enumerate(ROLES):
        turn = template.turns[role]
        keyword = "if" if i == 0 else "elif"
        lines += [f"{{%- {keyword} message['role'] == '{role}' -%}}",
                  f"{{{{- {_literal(turn.prefix)} + {contents[role]} -}}}}"]
        if role == TRAINED_ROLE:
            lines.append("{%- for call in message['tool_calls'] or [] -%}{%- set f = call.function if "
                         "call.function is defined else call -%}"
                         f"{{{{- {json.dumps(TOOL_CALL_OPEN)} + ({{'name': f.name, 'arguments': f.arguments}} "
                         f"| tojson) + {json.dumps(TOOL_CALL_CLOSE)} -}}}}{{%- endfor -%}}")
        lines += [f"{{{{- {_literal(turn.end)} -}}}}",
                  f"{{%- if not loop.last -%}}{{{{- {_literal(turn.separator)} -}}}}{{%- endif -%}}"]
    lines += ["{%- elif message['role'] == 'tool' -%}",
              f"{{{{- {_literal(user.prefix)} + '<tool_response>' + message['content'] + '</tool_response>' + "
              f"{_literal(user.end)} -}}}}",
              f"{{%- if not loop.last -%}}{{{{- {_literal(user.separator)} -}}}}{{%- endif -%}}",
              "{%- else -%}",
              "{{- raise_exception('unknown role ' + message['role'] + ': use system, user, assistant or tool') -}}",
              "{%- endif -%}",
              "{%- endfor -%}",
              "{%- if add_generation_prompt -%}"]
    for i, role in enumerate(SERVED_ROLES):
        keyword = "if" if i == 0 else "elif"
        separator = _literal(template.turns[role if role != "tool" else "user"].separator)
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
           add_generation_prompt: bool = False, tools: list[dict] | None = None) -> str:
    """Render `messages` with a Jinja chat template, in a sandbox (a template is untrusted data).

    The environment matches transformers' apply_chat_template: blocks trimmed, `raise_exception`
    and the `tojson` filter available, special tokens passed by name.
    """
    from jinja2 import TemplateError as JinjaError

    env = _bounded_environment()
    try:
        pieces, size = [], 0
        for piece in env.from_string(source).generate(messages=messages, eos_token=eos_token, bos_token=bos_token,
                                                      add_generation_prompt=add_generation_prompt, tools=tools):
            size += len(piece)
            if size > MAX_RENDERED:
                raise TemplateError(f"the model's chat template writes more than {MAX_RENDERED:,} characters: "
                                    f"fix chat_template in {TOKENIZER_CONFIG}")
            pieces.append(piece)
        return "".join(pieces)
    except JinjaError as exc:
        raise TemplateError(f"the model's chat template failed ({exc}): "
                            f"fix chat_template in {TOKENIZER_CONFIG}") from None
    except (RecursionError, MemoryError, OverflowError) as exc:
        raise TemplateError(f"the model's chat template failed ({type(exc).__name__}): "
                            f"fix chat_template in {TOKENIZER_CONFIG}") from None


# A template is untrusted data, rendered by chat, serve and export: its work is bounded so that a hostile or
# broken one fails in a line instead of hanging or exhausting memory. Real templates stay far below these.
MAX_RENDERED = 10_000_000  # characters of output (a conversation of a long document is a few hundred thousand)
MAX_LOOP_STEPS = 1_000_000  # steps of every range() of one rendering together (nested loops multiply)
MAX_REPEATED = 10_000_000  # items of a string or list made by `*`, and digits of a number made by `**`


def _bounded_environment():
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range

    steps = 0

    def counted(numbers):
        nonlocal steps
        for i in numbers:
            steps += 1
            if steps > MAX_LOOP_STEPS:
                raise SecurityError(f"its loops take more than {MAX_LOOP_STEPS:,} steps")
            yield i

    class BoundedRange:
        """range() as templates use it (iterated, reversed, measured), counting every step it gives."""

        def __init__(self, *args):
            self.numbers = safe_range(*args)

        def __iter__(self):
            return counted(self.numbers)

        def __reversed__(self):
            return counted(reversed(self.numbers))

        def __len__(self):
            return len(self.numbers)

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEATED:
                        raise SecurityError(f"it repeats a text or list to more than {MAX_REPEATED:,} items")
            if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and (
                    right * max(abs(left), 2).bit_length() > MAX_REPEATED):
                raise SecurityError("it raises a number to a power too large to compute")
            return super().call_binop(context, operator, left, right)

    env = Bounded(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["range"] = BoundedRange
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    return env


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

    def prompt(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """The text to continue so that the model writes the assistant's next answer; `tools` (OpenAI's
        [{"type": "function", "function": {...}}]) go to the template as transformers passes them."""
        check_messages(messages)
        return render(self.source, messages, eos_token=self.eos_token, bos_token=self.bos_token,
                      add_generation_prompt=True, tools=tools)

    def conversation(self, messages: list[dict]) -> str:
        check_messages(messages)
        return render(self.source, messages, eos_token=self.eos_token, bos_token=self.bos_token)


def check_messages(messages) -> None:
    """Refuse what no template can render: not a list of {role, content} with a known role (an assistant's
    message may hold tool_calls instead of content)."""
    if not isinstance(messages, list) or not messages:
        raise TemplateError("messages must be a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TemplateError(f"messages[{i}] must be an object with a text 'content'")
        calls = message.get("role") == TRAINED_ROLE and isinstance(message.get("tool_calls"), list)
        if not isinstance(message.get("content"), str) and not (calls and message.get("content") is None):
            raise TemplateError(f"messages[{i}] must be an object with a text 'content'")
        if message.get("role") not in SERVED_ROLES:
            raise TemplateError(f"messages[{i}] has role {message.get('role')!r}: use one of {', '.join(SERVED_ROLES)}")


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
    specials = getattr(tokenizer, "specials", None)
    return ChatFormat(source, tokenizer.eot_token, bos_token=(specials.bos if specials else None) or "",
                      answer_end=find_answer_end(source, tokenizer))
