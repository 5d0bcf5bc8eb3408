"""The `curate:` section: sources, each step's settings (with an `enabled` switch), split, output.

    curate:
      sources: {include: ["*.py"], text_field: text}
      quality: {prose: {min_words: 30}}
      dedup: {threshold: 0.85}
      split: {val_fraction: 0.01, test_fraction: 0.01, seed: 0}

Every step's settings live beside the step (`FormatConfig` in format.py, ...); this module
only gathers them into one tree that `parse_section` checks before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmsmith.config import ConfigError, apply_overrides, parse_section, read_yaml
from lmsmith.data.bias import BiasConfig
from lmsmith.data.dedup import DedupConfig
from lmsmith.data.format import FormatConfig
from lmsmith.data.pii import PiiConfig
from lmsmith.data.quality import QualityConfig
from lmsmith.data.safety import SafetyConfig
from lmsmith.data.sources import SourceConfig
from lmsmith.data.sources.html import HtmlConfig
from lmsmith.data.split import SplitConfig
from lmsmith.data.write import OutputConfig


@dataclass
class CurateConfig:
    inputs: list[str] = field(default_factory=list)  # files, folders, hf:NAME[:CONFIG][:SPLIT], stdlib
    sources: SourceConfig = field(default_factory=SourceConfig)
    html: HtmlConfig = field(default_factory=HtmlConfig)
    format: FormatConfig = field(default_factory=FormatConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)  # the bias report (--bias-report): measures, changes nothing
    workers: int | None = None  # processes for the per-document steps; None: one per CPU core
    engine: Literal["local", "ray"] = "local"  # who runs the steps: this machine's processes, or a Ray cluster
    address: str | None = None  # --engine ray: the cluster (None or "auto": the running one; "local": start one here)
    keep_dropped: bool = False  # also write what was removed, with the reason, to OUT/dropped/
    batch_docs: int = 512  # documents per batch handed to a worker ...
    batch_mb: float = 16.0  # ... or fewer, once a batch holds this much text

    def check(self, where: str = "curate") -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"{where}.workers must be at least 1 (or null for one per core), got {self.workers}")
        if self.batch_docs < 1 or self.batch_mb <= 0:
            raise ConfigError(f"{where}: batch_docs must be at least 1 and batch_mb positive")


def load_curate_config(
    path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None
) -> CurateConfig:
    """The curate config from a YAML file (its `curate:` section, or bare keys) plus dotted overrides.

    Overrides may name the section or not: `split.val_fraction=0.05` and
    `curate.split.val_fraction=0.05` are the same. A recipe's other sections are left to their stages.
    """
    raw = dict(base or {})
    if path is not None:
        data = read_yaml(path)
        section = (data["curate"] or {}) if "curate" in data else data
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: the curate section must be a mapping of keys to values")
        raw.update(section)
    overrides = [item[len("curate."):] if item.startswith("curate.") else item for item in overrides]
    raw = apply_overrides(raw, overrides)
    return parse_section(CurateConfig, raw, "curate")
