"""Conversations in JSON lines, one per record, rendered as dialogue text with roles.

Two shapes are read: {"messages": [{"role": "user", "content": "..."}, ...]} (the OpenAI chat
format) and ShareGPT's {"conversations": [{"from": "human", "value": "..."}, ...]}. Each turn
becomes "Role: text", turns apart by a blank line. A record with no turns or a role we do not
know is skipped with that reason: guessing who spoke would teach the model the wrong turns.
"""

from __future__ import annotations

from typing import Any

ROLE_NAMES = {
    "system": "System",
    "user": "User", "human": "User", "prompter": "User",
    "assistant": "Assistant", "gpt": "Assistant", "bot": "Assistant", "model": "Assistant", "chatgpt": "Assistant",
    "tool": "Tool", "function": "Tool", "observation": "Tool", "ipython": "Tool",
}
CONVERSATION_FIELDS = ("messages", "conversations")


class BadConversation(ValueError):
    """A conversation record that cannot be rendered; the message says why."""


def conversation_turns(record: dict[str, Any]) -> list[Any] | None:
    """The list of turns of a conversation record, or None when it is not one."""
    for name in CONVERSATION_FIELDS:
        if name in record:
            turns = record[name]
            if not isinstance(turns, list):
                raise BadConversation(f"field '{name}' is {type(turns).__name__}, not a list of messages")
            return turns
    return None


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def render_conversation(turns: list[Any]) -> str:
    """Dialogue text, "Role: text" per turn; raises BadConversation for no turns or an unknown role."""
    if not turns:
        raise BadConversation("the conversation has no messages")
    lines = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise BadConversation(f"message {number} is {type(turn).__name__}, not an object")
        role = turn.get("role", turn.get("from"))
        name = ROLE_NAMES.get(str(role).strip().lower()) if role is not None else None
        if name is None:
            raise BadConversation(
                f"message {number} has unknown role {role!r} (known: {', '.join(sorted(ROLE_NAMES))})"
            )
        text = _content_text(turn.get("content", turn.get("value"))).strip()
        if text:
            lines.append(f"{name}: {text}")
    if not lines:
        raise BadConversation("every message of the conversation is empty")
    return "\n\n".join(lines)
