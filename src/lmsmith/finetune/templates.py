"""Chat templates: how a conversation becomes one text, and which parts of it the model learns.

A conversation is a list of messages with a role (system, user, assistant). A template writes
each message as  prefix + content + end  and puts a separator before the next message:

    chatml   <|im_start|>user\\nWhat is 2+2?<|im_end|>\\n<|im_start|>assistant\\n4<|im_end|>
    plain    ### Prompt:\\nWhat is 2+2?\\n\\n### Response:\\n4<|endoftext|>
    raw      What is 2+2?4<|endoftext|>          (the texts exactly as given: put your own cues in them)

Only the assistant's content and its end marker are trained: the model learns to answer, and
to stop (the end marker is what generation stops at), but not to write the user's questions.
`{eot}` in a template stands for the tokenizer's end-of-text token.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmsmith.core.errors import UserError

ROLES = ("system", "user", "assistant")
TRAINED_ROLE = "assistant"
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
