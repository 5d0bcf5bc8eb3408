"""Muon with its Newton-Schulz orthogonalisation batched over matrices of the same shape.

`torch.optim.Muon` orthogonalises one matrix at a time. A transformer's hidden matrices come in
a few shapes only (per block: attention in, attention out, feed-forward in, feed-forward out),
so stacking the matrices of one shape turns n_layer small products into one batched product.
On a CPU, where a small product costs mostly its call overhead, that makes the optimizer step
about twice as fast for small models (benchmarks/muon.py).

The arithmetic is torch's, op for op: momentum by lerp, the Nesterov look-ahead, five quintic
Newton-Schulz iterations in bf16 on the wide orientation of each matrix, the learning rate scaled
by sqrt(max(1, rows/cols)), decoupled weight decay. The updates equal torch.optim.Muon's, and
the state (one `momentum_buffer` per parameter) is the same, so checkpoints move between the two.

One difference, on purpose: on a device without native bf16 products (a CPU with AVX2 but no
AVX-512 BF16 or AMX), torch emulates bf16 about 80 times slower than fp32, which made each
optimizer step of the quickstart take seconds. There the iterations run in fp32 instead (more
precise, not less); `ns_dtype=torch.bfloat16` forces torch's choice.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor


def newton_schulz(stack: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """The orthogonalised form (about U V^T of the SVD) of each matrix in a (n, rows, cols) stack."""
    a, b, c = coefficients
    x = stack.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide orientation: its Gram matrix is the smaller one
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.mT
        polynomial = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, polynomial, x, beta=a)
    return x.mT if tall else x


def lr_scale(shape: torch.Size, adjust_lr_fn: str | None) -> float:
    """torch.optim.Muon's default ("original") scaling: taller matrices take larger steps."""
    if adjust_lr_fn not in (None, "original"):
        raise ValueError(f"GroupedMuon supports adjust_lr_fn=None or 'original', not {adjust_lr_fn!r}")
    rows, cols = shape[:2]
    return math.sqrt(max(1.0, rows / cols))


class GroupedMuon(torch.optim.Muon):
    """torch.optim.Muon, with one batched Newton-Schulz per shape instead of one per matrix.

    Sharded (DTensor) parameters take torch's own per-matrix path. `ns_dtype` is the format of the
    Newton-Schulz iterations: None picks bf16 where the device computes it natively, else fp32.
    """

    def __init__(self, params, *args, ns_dtype: torch.dtype | None = None, **kwargs):
        super().__init__(params, *args, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if any(type(p.data) is not torch.Tensor for p in params):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._grouped_step(group)
        return loss

    def _grouped_step(self, group: dict) -> None:
        params, grads, buffers = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.ndim != 2:
                raise ValueError("Muon updates 2-D matrices only")
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            buffers.append(state["momentum_buffer"])
        if not params:
            return
        momentum = group["momentum"]
        torch._foreach_lerp_(buffers, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers

        by_shape: dict[torch.Size, list[int]] = defaultdict(list)
        for i, p in enumerate(params):
            by_shape[p.shape].append(i)
        lr, weight_decay = float(group["lr"]), group["weight_decay"]
        for shape, members in by_shape.items():
            stack = torch.stack([updates[i] for i in members])
            orthogonal = newton_schulz(stack, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                       self._ns_dtype(stack.device))
            step_size = lr * lr_scale(shape, group["adjust_lr_fn"])
            for update, i in zip(orthogonal, members):
                params[i].mul_(1 - lr * weight_decay)
                params[i].add_(update, alpha=-step_size)

    def _ns_dtype(self, device: torch.device) -> torch.dtype:
        if self.ns_dtype is not None:
            return self.ns_dtype
        from lmsmith.train.precision import bf16_is_native

        return torch.bfloat16 if bf16_is_native(device) else torch.float32
