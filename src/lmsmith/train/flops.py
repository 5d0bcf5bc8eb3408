"""Model FLOPs utilisation (MFU): the share of the device's matrix-product peak that training uses.

MFU = model FLOPs per token (forward + backward, from GPT.flops_per_token) x tokens per second
/ peak FLOP/s. The peak is measured at the start of the run by timing large matrix products in
the training precision on the device itself: a vendor's datasheet figure is not what a shared
CPU or a power-capped GPU delivers. `train.peak_flops` overrides the measurement.
Recomputation by activation checkpointing is not counted as useful work, as is usual.
"""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it measures that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.3) -> float:
    """FLOP/s of square matrix products of a size that saturates `device`, best of a few timings.

    The inputs are filled with a constant, not drawn at random: measuring must not move the
    random number generator that dropout and everything after it depends on.
    """
    n = 8192 if device.type == "cuda" else 2048 if device.type == "mps" else 1024
    a = torch.full((n, n), 0.5, device=device, dtype=dtype)
    b = torch.full((n, n), 0.25, device=device, dtype=dtype)
    a @ b  # the first product pays for kernel selection and warm-up
    synchronize(device)
    best, spent = 0.0, 0.0
    while spent < seconds:
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        synchronize(device)
        elapsed = time.perf_counter() - start
        spent += elapsed
        best = max(best, 3 * 2 * n**3 / elapsed)
    return best


def mfu(flops_per_token: float, tokens_per_second: float, peak_flops: float) -> float:
    return flops_per_token * tokens_per_second / peak_flops if peak_flops > 0 else 0.0
