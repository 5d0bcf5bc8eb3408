"""Freed CPU memory stays in the process, so a training step does not ask the kernel for it again.

glibc's malloc serves an allocation above its mmap threshold (128 KiB at first, raised on its own
up to 32 MiB) with fresh pages from the kernel, and hands them back when the tensor is freed. A
training step on the CPU allocates and frees the same large buffers every step (the logits, the
activations, their gradients), so without this every step pays for mapping and zeroing them again:
on 2 cores a bf16 step of the quickstart's shape took 581 ms, 441 ms with this, and the whole
quickstart went from 13,900 to 19,100 tokens/s (`python benchmarks/quickstart.py`). Raising both
thresholds keeps freed blocks in the heap for the next step, as PyTorch's caching allocator does on
a GPU. The price is that the process holds on to its peak memory until it exits, which a training
or evaluation process does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30  # allocations up to 1 GiB come from the heap and go back to it
NEVER_TRIM = 2**31 - 1  # the largest int: free memory at the heap's top is never returned


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory; False where it cannot (not glibc, or it refused)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)  # musl has none
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
