"""Which device to run on: the fastest one present (cuda, then mps, then cpu), or the one asked for."""

from __future__ import annotations

import torch

from lmsmith.core.errors import UserError

DEVICE_KINDS = ("cpu", "cuda", "mps")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def pick_device(requested: str | None = "auto") -> torch.device:
    """`auto` (or None) picks cuda, then mps, then cpu; `cpu`, `cuda`, `cuda:1`, `mps` force one.

    A forced device that this machine does not have is a UserError, not a silent fallback: a
    user who asked for the GPU should learn that they are not getting it.
    """
    if requested is None or requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {requested!r}: use auto, {', '.join(DEVICE_KINDS)} or cuda:N") from None
    if device.type not in DEVICE_KINDS:
        raise UserError(f"unknown device {requested!r}: use auto, {', '.join(DEVICE_KINDS)} or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {requested!r} was asked for but this machine has no usable CUDA GPU: use --device auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device {requested!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    if device.type == "mps" and not mps_available():
        raise UserError(
            f"device {requested!r} was asked for but this machine has no usable Apple GPU (mps): "
            "use --device auto or cpu"
        )
    return device
