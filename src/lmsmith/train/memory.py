"""Will it fit? An estimate of training memory, made before any weight is allocated.

    weights       4 bytes per parameter (float32 master weights; autocast makes low-precision
                  copies per operation, which count as activations)
    gradients     4 bytes per parameter
    optimizer     AdamW 8 bytes per parameter (two moments), Muon 4 (one momentum buffer)
    activations   what the forward pass keeps for backward, per token of one micro-batch:
                  per block about 10 n_embd + 3 kv_dim + 4 ffn_hidden floats in fp32 with rope,
                  RMSNorm and swiglu (2 ffn_hidden for gelu and relu2), about 15% less under bf16
                  autocast (which keeps fp32 inputs of norms and residuals besides bf16 copies);
                  plus the logits and, for a moment in backward, their gradient. The terms were
                  read off the tensors autograd saves; tests/train/test_memory.py checks them on
                  other shapes.
                  A checkpointed block keeps only its input (4 n_embd bytes) and recomputes the
                  rest, one block at a time, in backward.

FSDP divides weights, gradients and optimizer state by the number of ranks; activations are per
rank. The estimate is compared with what the device has free: CUDA's free memory, the
recommended limit of an Apple GPU, or the available RAM of the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmsmith.core.errors import UserError
from lmsmith.core.free_memory import available_memory, available_ram  # noqa: F401  (re-exported)
from lmsmith.schema.model import ModelConfig

GiB = 1 << 30
OVERHEAD = {"cuda": 1.0 * GiB, "mps": 0.5 * GiB, "cpu": 0.3 * GiB}  # runtime, kernels, allocator slack


@dataclass
class MemoryEstimate:
    parameters: int
    weights: float  # bytes, this rank
    gradients: float
    optimizer: float
    activations: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def describe(self) -> str:
        parts = [("weights", self.weights), ("gradients", self.gradients), ("optimizer", self.optimizer),
                 ("activations", self.activations), ("runtime", self.overhead)]
        return f"{_gib(self.total)} ({', '.join(f'{name} {_gib(size)}' for name, size in parts)})"


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= 0.1 * GiB else f"{n / (1 << 20):.0f} MiB"


def activation_bytes_per_token(config: ModelConfig, low_precision: bool, checkpointed_blocks: int = 0) -> float:
    """Bytes autograd keeps per token of a micro-batch (see the module docstring for the terms)."""
    d, h, v = config.n_embd, config.hidden_size, config.vocab_size or 0
    kv = config.kv_heads * config.head_dim
    floats = 5 * d + 3 * kv + (4 if config.feed_forward == "swiglu" else 2) * h
    floats += 2 * d if config.norm == "rmsnorm" else 0  # RMSNorm keeps its input and its output
    floats += 3 * d if config.position == "rope" else 0  # rotated queries and keys, and their halves
    block = 4 * floats
    if low_precision:
        block *= 0.85  # bf16 copies, but fp32 inputs of norms and the residual stream are kept too
    if config.dropout > 0:
        block *= 1.25  # dropout keeps its masks
    rest = (12 * d + 5 * v) if low_precision else (13 * d + 4 * v)  # embeddings, final norm, logits
    plain = config.n_layer - checkpointed_blocks
    kept = plain * block + checkpointed_blocks * 4 * d
    if checkpointed_blocks:
        kept += block  # the block being recomputed
    return kept + rest


def estimate_memory(config: ModelConfig, parameters: int, muon_parameters: int, optimizer: str,
                    micro_batch: int, low_precision: bool, checkpointed_blocks: int,
                    device: torch.device, shards: int = 1) -> MemoryEstimate:
    """The peak memory of one rank; `shards` > 1 under FSDP."""
    adamw_parameters = parameters - (muon_parameters if optimizer == "muon" else 0)
    optimizer_bytes = 8 * adamw_parameters + (4 * muon_parameters if optimizer == "muon" else 0)
    tokens = micro_batch * config.block_size
    return MemoryEstimate(
        parameters=parameters,
        weights=4 * parameters / shards,
        gradients=4 * parameters / shards,
        optimizer=optimizer_bytes / shards,
        # what autograd keeps, plus the logits' gradient that exists for a moment in backward
        activations=tokens * (activation_bytes_per_token(config, low_precision, checkpointed_blocks)
                              + 8 * (config.vocab_size or 0)),
        overhead=OVERHEAD.get(device.type, 0.3 * GiB),
    )




def check_fits(estimate: MemoryEstimate, device: torch.device, available: float | None, per_machine: int = 1) -> None:
    """Refuse to start when the estimate exceeds what the device has free, naming what would help.

    On a CPU all ranks of a machine share its RAM, so `per_machine` ranks need that many times
    the estimate.
    """
    if available is None:
        return
    needed = estimate.total * (per_machine if device.type == "cpu" else 1)
    if needed <= available:
        return
    where = {"cuda": f"GPU {device}", "mps": "the Apple GPU", "cpu": "this machine's RAM"}.get(device.type, str(device))
    fixes = ["lower train.micro_batch (activations grow with it; batch_tokens can stay)",
             "set train.activation_checkpointing=full"]
    if device.type == "cuda":
        fixes.append("shard the model over more GPUs with torchrun and train.parallel=fsdp")
    fixes.append("or choose a smaller model")
    ranks = f" for each of {per_machine} ranks" if needed > estimate.total else ""
    raise UserError(f"training needs about {estimate.describe()}{ranks}, but {where} has {_gib(available)} free: "
                    f"{'; '.join(fixes)}")
