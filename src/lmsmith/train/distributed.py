"""Who am I among the training processes, and how do we talk to each other.

`torchrun` starts one process per device and tells each its place through environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Started without torchrun,
training is one process on one device and nothing here touches torch.distributed, so the
single-process path stays plain PyTorch.

Processes talk over NCCL when they drive CUDA GPUs and over gloo otherwise (CPU, and Apple
GPUs, which have no collective backend of their own).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lmsmith.core.device import pick_device
from lmsmith.core.errors import UserError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run. `is_main` (rank 0) is the one that logs and writes files."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: a single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name}={text!r} is not a whole number: "
                        "start the run with torchrun") from None


def _rank_device(requested: str, local_rank: int) -> torch.device:
    """The device this rank drives: on CUDA, GPU number `local_rank` of this machine."""
    device = pick_device(requested)
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise UserError(
            f"device {requested!r} names one GPU, but under torchrun each process takes the GPU of its "
            "LOCAL_RANK: use --device cuda (or auto)"
        )
    if local_rank >= torch.cuda.device_count():
        raise UserError(
            f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
            f"start torchrun with --nproc_per_node {torch.cuda.device_count()} or fewer"
        )
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group if torchrun started us; otherwise describe a single process.

    `device` is `auto` (cuda, then mps, then cpu) or a forced kind. Calling this again in a
    process that already joined returns the same description.
    """
    if not launched_by_torchrun():
        return DistInfo(device=pick_device(device))
    rank, world_size, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    target = _rank_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if target.type == "mps" and world_size > 1:
        raise UserError("training on several processes needs CUDA GPUs or CPUs; "
                        "Apple GPUs (mps) train in one process: run without torchrun, or pass --device cpu")
    backend = "nccl" if target.type == "cuda" else "gloo"
    if world_size > 1 and not dist.is_initialized():
        if not dist.is_available():
            raise UserError("this PyTorch build has no torch.distributed: "
                            "install a PyTorch with distributed support to train on several processes")
        # Binding the process group to the device lets NCCL connect eagerly and catches a wrong GPU early.
        dist.init_process_group(backend=backend, device_id=target if target.type == "cuda" else None)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=target,
                    backend=backend if world_size > 1 else None)


def destroy_distributed(wait_for_others: bool | None = None) -> None:
    """Leave the process group (if any); safe to call in a single process.

    After a clean finish every rank first waits for the others: a rank that tears down its
    connections while another is still finishing can abort at exit ("terminate called without
    an active exception"). After an error, waiting could hang on ranks that never arrive. By
    default (None) it waits unless an exception is on its way out, so `finally:` does the right thing.
    """
    if wait_for_others is None:
        wait_for_others = sys.exc_info()[0] is None
    if dist.is_available() and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[DistInfo]:
    """`init_distributed` on entry, `destroy_distributed` on the way out."""
    info = init_distributed(device)
    try:
        yield info
    finally:
        destroy_distributed()


def barrier(info: DistInfo) -> None:
    """Wait until every rank reaches this point (e.g. rank 0 has finished writing a file)."""
    if info.is_distributed:
        dist.barrier()


def _sum_over_ranks(value: float | torch.Tensor, info: DistInfo) -> float:
    # gloo reduces CPU tensors only; NCCL reduces tensors on the rank's GPU.
    where = info.device if info.backend == "nccl" else torch.device("cpu")
    tensor = torch.as_tensor(value).detach().to(where, torch.float64).reshape(1)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.item()


def mean_across_ranks(value: float | torch.Tensor, info: DistInfo) -> float:
    """The average of a scalar over all ranks, for logging a loss that every rank saw part of."""
    if not info.is_distributed:
        return float(value)
    return _sum_over_ranks(value, info) / info.world_size


def sum_across_ranks(value: float | torch.Tensor, info: DistInfo) -> float:
    """The total of a scalar over all ranks (tokens seen, skipped steps)."""
    if not info.is_distributed:
        return float(value)
    return _sum_over_ranks(value, info)


def from_rank_zero(value: int, info: DistInfo) -> int:
    """Rank 0's value on every rank: a plan (the steps of a time budget) that all ranks must follow."""
    if not info.is_distributed:
        return value
    where = info.device if info.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.int64, device=where)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if the flag is set on any rank, so all ranks take the same branch (skip a step, stop)."""
    return sum_across_ranks(1.0 if flag else 0.0, info) > 0
