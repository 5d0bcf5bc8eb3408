"""A synth output directory as fine-tuning data: the items file whose kind the fine-tuning mode reads.

`lmsmith synth` writes OUT/KIND.jsonl in the format one mode reads (see lmsmith.synth.kinds), so
a build step `synth` before `finetune` needs no path: the directory is enough, and its manifest
says which kind it holds. A kind the mode cannot read, or a run that never finished, is refused.
"""

from __future__ import annotations

from pathlib import Path

from lmsmith.core.errors import UserError
from lmsmith.core.manifest import manifest_or_none

SYNTH_STAGE = "synth"
KINDS_BY_MODE = {"instruct": ("qa", "conversation"), "dpo": ("pairs",), "rl": ("exam",)}


def is_synth_output(data: str | Path) -> bool:
    manifest = manifest_or_none(data) if Path(data).is_dir() else None
    return manifest is not None and manifest.get("stage") == SYNTH_STAGE


def synth_items_file(data: str | Path, mode: str) -> str:
    """The JSONL file inside a synth output directory that `mode` reads."""
    manifest = manifest_or_none(data) or {}
    kind = (manifest.get("config") or {}).get("kind")
    if not (manifest.get("counts") or {}).get("finished"):
        raise UserError(f"{data} is a synth run that did not finish: run the same synth command again to "
                        "complete it, then fine-tune")
    wanted = KINDS_BY_MODE.get(mode, ())
    if kind not in wanted:
        fits = [m for m, kinds in KINDS_BY_MODE.items() if kind in kinds]
        fix = f"use --mode {fits[0]}" if fits else "fine-tune on another synth kind"
        raise UserError(f"{data} holds synth kind {kind!r}, which --mode {mode} cannot read "
                        f"({mode} reads {' or '.join(wanted) or 'text, not synth items'}): {fix}, or synth "
                        f"--kind {(wanted or ('qa',))[0]}")
    return str(Path(data) / f"{kind}.jsonl")
