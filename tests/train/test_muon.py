"""GroupedMuon is torch.optim.Muon, only batched: the same updates and the same state."""

from __future__ import annotations

import copy

import pytest
import torch

from lmsmith.train.muon import GroupedMuon

# Wide, tall and square matrices, several of one shape (as in the blocks of a model), one alone.
SHAPES = [(32, 16), (32, 16), (32, 16), (16, 48), (16, 48), (24, 24), (40, 8)]


def matrices(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g) * 0.1) for shape in SHAPES]


def run(optimizer_class, params, steps: int, **options) -> torch.optim.Optimizer:
    optimizer = optimizer_class(params, lr=0.02, weight_decay=0.01, momentum=0.95, **options)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("nesterov", [True, False])
def test_updates_equal_torch_muon(nesterov):
    ours, theirs = matrices(), matrices()
    run(GroupedMuon, ours, 4, nesterov=nesterov, ns_dtype=torch.bfloat16)  # torch's own choice, to compare
    run(torch.optim.Muon, theirs, 4, nesterov=nesterov)
    assert not torch.equal(ours[0], matrices()[0])  # it did train
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-7)


def test_state_moves_between_grouped_and_torch_muon():
    """A checkpoint written with either continues identically with the other."""
    params = matrices()
    ours = run(GroupedMuon, params, 2, ns_dtype=torch.bfloat16)
    theirs_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    theirs = torch.optim.Muon(theirs_params, lr=0.02, weight_decay=0.01, momentum=0.95)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    g = torch.Generator().manual_seed(7)
    for p, q in zip(params, theirs_params):
        p.grad = torch.randn(p.shape, generator=g)
        q.grad = p.grad.clone()
    ours.step()
    theirs.step()
    # The state carried over exactly (the update before it is compared in the test above). On a CPU with
    # native bf16 (AVX-512 BF16) a batched bf16 product and the same product alone may round a few
    # elements one bf16 step apart: allow one step (2**-8) of an update of size lr, nothing more.
    for p, q in zip(params, theirs_params):
        torch.testing.assert_close(p, q, rtol=0, atol=0.02 * 2**-8)
    for mine, reference in zip(ours.state_dict()["state"].values(), theirs.state_dict()["state"].values()):
        torch.testing.assert_close(mine["momentum_buffer"], reference["momentum_buffer"], rtol=0, atol=0)


def test_parameters_without_gradients_are_left_alone():
    params = matrices()
    before = params[1].detach().clone()
    optimizer = GroupedMuon(params, lr=0.02)
    for i, p in enumerate(params):
        p.grad = None if i == 1 else torch.ones_like(p)
    optimizer.step()
    assert torch.equal(params[1], before) and "momentum_buffer" not in optimizer.state[params[1]]


def test_without_native_bf16_the_iterations_run_in_fp32_and_stay_close_to_float64():
    """Emulated bf16 is tens of times slower than fp32 on an AVX2 CPU: fp32 there, and more exact."""
    from lmsmith.train.muon import newton_schulz
    from lmsmith.train.precision import bf16_is_native

    stack = torch.randn(3, 32, 16, generator=torch.Generator().manual_seed(0))
    coefficients = (3.4445, -4.7750, 2.0315)
    exact = newton_schulz(stack.double(), coefficients, 5, 1e-7, dtype=torch.float64)
    fp32 = newton_schulz(stack, coefficients, 5, 1e-7, dtype=torch.float32)
    bf16 = newton_schulz(stack, coefficients, 5, 1e-7, dtype=torch.bfloat16)
    assert (fp32.double() - exact).abs().max() < 1e-4 < (bf16.double() - exact).abs().max()
    optimizer = GroupedMuon(matrices(), lr=0.02)
    expected = torch.bfloat16 if bf16_is_native(torch.device("cpu")) else torch.float32
    assert optimizer._ns_dtype(torch.device("cpu")) == expected


@pytest.mark.parametrize("cap, native", [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_AMX", None)])
def test_a_onednn_cap_below_bf16_means_fp32(monkeypatch, cap, native):
    """A machine of the AVX2 class reproduced on a newer one (ONEDNN_MAX_CPU_ISA=AVX2) computes as that class does:
    auto precision and Muon's iterations in fp32. A cap that keeps bf16 changes nothing."""
    from lmsmith.train.precision import auto_precision, cpu_has_native_bf16

    uncapped = cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    expected = uncapped if native is None else native
    assert cpu_has_native_bf16() is expected
    assert auto_precision(torch.device("cpu")) == ("bf16" if expected else "fp32")
    assert GroupedMuon(matrices(), lr=0.02)._ns_dtype(torch.device("cpu")) == (
        torch.bfloat16 if expected else torch.float32)
