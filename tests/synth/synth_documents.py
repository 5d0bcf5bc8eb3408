"""The documents the synth tests ask about: paragraphs of a policy manual, one topic each."""

from __future__ import annotations

TOPICS = ["invoice", "refund", "password", "printer", "badge", "parking", "laptop", "holiday", "expense", "meeting",
          "backup", "network", "contract", "shipping", "warranty", "training"]


def passage(topic: str) -> str:
    """A paragraph of a policy manual about one topic, long enough to be asked about."""
    return (f"The {topic} policy: every {topic} request goes to the {topic} desk on floor {len(topic)}. "
            f"A {topic} request is answered within {len(topic) + 1} days. Ask the {topic} desk about "
            f"exceptions to the {topic} rules, and always keep the {topic} receipt.")
