"""Mixed precision: which number format the matrix products run in, and what keeps it safe.

    bf16   autocast to bfloat16: the exponent range of fp32, so no loss scaling is needed. Used on
           CUDA GPUs that have it and on CPUs with native bf16 instructions (AVX-512 BF16, AMX,
           Arm BF16), where matrix products run about twice as fast as fp32.
    fp16   autocast to float16 with a gradient scaler: the loss is multiplied before backward so
           small gradients do not underflow, and a step whose gradients overflowed is skipped.
           For GPUs without bf16.
    fp32   everything in float32.

Weights, optimizer state and the loss itself stay float32 in every mode.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lmsmith.core.errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# oneDNN instruction-set caps (ONEDNN_MAX_CPU_ISA) below AVX512_CORE_BF16: under one, bf16 products are emulated
# even on a CPU that has the instructions (how a machine of the AVX2 class is reproduced on a newer one).
ISA_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 products in hardware (else torch emulates them, slowly)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ISA_CAPS_WITHOUT_BF16:
        return False
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set(cpuinfo.read_text(errors="replace").split())
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})  # "bf16": Arm's Features line
    return False


def bf16_is_native(device: torch.device) -> bool:
    """True when `device` computes bf16 products in hardware (fast), not by emulation (tens of times slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def auto_precision(device: torch.device) -> str:
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"  # mps: autocast support differs between macOS versions; fp32 always works


@dataclass
class Precision:
    name: str  # bf16 | fp16 | fp32
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def autocast(self):
        """The context in which forward passes run."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """`auto` picks the fastest safe format for `device`; a forced one the device lacks is refused."""
    name = auto_precision(device) if requested == "auto" else requested
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("train.precision=bf16 but this GPU has no bfloat16: use train.precision=fp16 (or auto)")
    # fp16 on a CPU works (and exercises the scaler) but is rarely faster than fp32; auto never picks it.
    return Precision(name, device)
