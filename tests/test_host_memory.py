"""keep_freed_memory: the large buffers of one step are reused by the next, not faulted in again."""

import subprocess
import sys

import pytest

# A step's worth of large tensors (as a CPU training step makes: logits, activations, their
# gradients), made and freed again and again; prints the page faults of the steps after warm-up.
STEPS = """
import resource, sys, torch
from lmsmith.core.host_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():
    logits, hidden = torch.ones(32 << 20), torch.ones(16 << 20)
    return (logits[: 8 << 20] * 2).sum() + hidden.sum() + torch.ones(2 << 20).sum()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

PAGES_PER_STEP = ((32 + 16 + 8 + 2) << 22) // 4096  # 232 MiB of float32 in 4 KiB pages


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True).stdout
    kept, count = out.split()
    return kept, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is a Linux matter")
def test_a_steps_buffers_are_reused_instead_of_faulted_in_again():
    _, plain = faults("plain")
    kept, with_it = faults("keep")
    assert kept == "True"
    assert plain > 2 * PAGES_PER_STEP  # glibc hands the big buffers back, and each step faults them in anew
    assert with_it < plain / 4
