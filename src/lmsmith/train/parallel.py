"""Everything that changes how the model runs, but not what it computes, applied in one place.

The model (lmsmith.model.transformer) is plain PyTorch and knows nothing of what follows. `parallelize`
takes it and, in this order:

1. activation checkpointing: chosen blocks keep only their input during the forward pass and
   recompute the rest during the backward pass, trading about a third more compute for memory;
2. torch.compile of each block (the blocks are identical, so one compilation serves them all);
3. data parallelism across the ranks that torchrun started:
   - DDP: every rank holds the whole model and gradients are averaged after backward;
   - FSDP2 (`fully_shard`): every rank holds 1/world_size of each parameter, gradient and
     optimizer state; a block's full weights are gathered just before it runs and freed after.

The order matters: checkpointing must sit inside compile (so the compiled code contains the
recomputation) and both inside the data-parallel wrapper (so FSDP sees the finished blocks).

Parameter names and state-dict keys are the same whatever is applied, so an optimizer groups
parameters the same way and a checkpoint taken with one setting loads with another.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Literal, Protocol

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from lmsmith.core.errors import UserError
from lmsmith.train.distributed import DistInfo

CheckpointingKind = Literal["none", "full", "every_n"]
ParallelKind = Literal["ddp", "fsdp"]


class ParallelSettings(Protocol):
    """The fields of the training config that `parallelize` reads."""

    activation_checkpointing: str  # none | full | every_n
    checkpoint_every_n: int
    compile: bool
    parallel: str  # ddp | fsdp
    precision: str


# ---------------------------------------------------------------------------------------------
# Activation checkpointing


def _checkpointed_forward(self: nn.Module, *args, **kwargs):
    # The class's forward, run so that autograd keeps only its inputs and recomputes the rest.
    return checkpoint(type(self).forward, self, *args, use_reentrant=False, **kwargs)


def checkpoint_block(block: nn.Module) -> None:
    """Make `block` recompute its activations in backward instead of keeping them.

    The block's forward is replaced on this one instance rather than wrapping the block in a new
    module, so parameter names, the state dict and the model's printout do not change. (A bound
    method, not a closure: torch.compile traces through it, and copy.deepcopy rebinds it.)
    """
    block.forward = types.MethodType(_checkpointed_forward, block)


def blocks_to_checkpoint(n_blocks: int, kind: str, every_n: int) -> list[int]:
    """Which block indices to checkpoint: none, all, or every n-th (0, n, 2n, ...)."""
    if kind == "none":
        return []
    if kind == "full":
        return list(range(n_blocks))
    if kind == "every_n":
        if every_n < 1:
            raise UserError(f"train.checkpoint_every_n must be at least 1, got {every_n}")
        return list(range(0, n_blocks, every_n))
    raise UserError(f"train.activation_checkpointing: {kind!r} is not one of 'none', 'full', 'every_n'")


def apply_activation_checkpointing(model: nn.Module, kind: str, every_n: int = 1) -> list[int]:
    """Checkpoint the chosen blocks of `model.blocks`; returns their indices."""
    chosen = blocks_to_checkpoint(len(model.blocks), kind, every_n)
    for i in chosen:
        checkpoint_block(model.blocks[i])
    return chosen


# ---------------------------------------------------------------------------------------------
# Compile


def apply_compile(model: nn.Module) -> None:
    """Compile each block in place. Per block rather than whole model: the blocks share one
    compiled graph (compile time does not grow with depth) and FSDP can still gather and free
    weights block by block."""
    for block in model.blocks:
        block.compile()


# ---------------------------------------------------------------------------------------------
# Data parallelism


def fsdp_mixed_precision(settings: ParallelSettings, info: DistInfo):
    """bf16 weights in compute, fp32 gradient reduction and fp32 master weights, on CUDA.

    On CPU the weights stay fp32 and autocast (set up by the training loop) picks bf16 per op.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if info.device.type == "cuda" and settings.precision in ("bf16", "auto") and torch.cuda.is_bf16_supported():
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def apply_fsdp(model: nn.Module, settings: ParallelSettings, info: DistInfo) -> None:
    """Shard every block, then the rest (embeddings, final norm, head) as one root group."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    policy = fsdp_mixed_precision(settings, info)
    for i, block in enumerate(model.blocks):
        # The last block's weights are needed again first in backward: keeping them gathered
        # after forward saves one all-gather per step.
        last = i == len(model.blocks) - 1
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=not last)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def apply_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def parallelize(model: nn.Module, settings: ParallelSettings, info: DistInfo) -> nn.Module:
    """Apply checkpointing, compile and data parallelism to `model` (already on `info.device`).

    Returns the module to train: the model itself (changed in place) or, under DDP, a wrapper
    around it; `unwrap` gives back the model. Build the optimizer after this call: FSDP
    replaces the parameters with sharded ones.
    """
    if settings.parallel not in ("ddp", "fsdp"):
        raise UserError(f"train.parallel: {settings.parallel!r} is not one of 'ddp', 'fsdp'")
    apply_activation_checkpointing(model, settings.activation_checkpointing, settings.checkpoint_every_n)
    if settings.compile:
        apply_compile(model)
    if not info.is_distributed:
        return model
    if settings.parallel == "fsdp":
        apply_fsdp(model, settings, info)
        return model
    return apply_ddp(model, info)


# ---------------------------------------------------------------------------------------------
# What the training loop needs to know about the wrapping


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 and compile change the model in place)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Within this context, backward averages gradients across ranks only if `enabled`.

    Gradient accumulation turns it off for all micro-batches but the last, so ranks talk once
    per optimizer step instead of once per micro-batch.
    """
    if isinstance(model, DistributedDataParallel) and not enabled:
        with model.no_sync():
            yield
    elif is_sharded(model):
        model.set_requires_gradient_sync(enabled)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield
