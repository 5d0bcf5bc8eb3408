"""How much memory is free on a device now: what training checks its estimate against, and what the
server sizes its KV cache by (here in core because both stages need it and neither may import the other)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def available_memory(device: torch.device) -> float | None:
    """Bytes free for training on `device`, or None when it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        if mps is not None and hasattr(mps, "recommended_max_memory"):
            return float(mps.recommended_max_memory() - mps.current_allocated_memory())
        return None
    return available_ram()


def available_ram() -> float | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():  # Linux: MemAvailable counts page cache that can be given back
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        try:
            return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
