"""Activation checkpointing computes the same gradients as a plain backward pass, with less memory."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lmsmith.core.config import parse_section
from lmsmith.core.errors import UserError
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.train.parallel import apply_activation_checkpointing, apply_compile, blocks_to_checkpoint

VOCAB, BLOCK, BATCH = 61, 48, 6

# The modern default (rope, rmsnorm, swiglu) and the GPT-2 family (learned positions, layernorm,
# gelu, biases), with dropout on so that the recomputation must replay the same random masks.
SIZE = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=5, n_head=4, n_embd=64, dropout=0.1)
SHAPES = {"modern": SIZE, "gpt2": {"preset": "gpt2", **SIZE}}
SETTINGS = [("full", 1), ("every_n", 2), ("every_n", 3)]


def build(shape: str, **changes) -> GPT:
    torch.manual_seed(0)
    return GPT(parse_section(ModelConfig, {**SHAPES[shape], **changes}, "model"))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (BATCH, BLOCK), generator=g), torch.randint(0, VOCAB, (BATCH, BLOCK), generator=g)


def gradients(model: GPT) -> tuple[float, dict[str, torch.Tensor]]:
    idx, targets = batch()
    torch.manual_seed(2)  # the same dropout masks in every run
    loss = model(idx, targets).loss
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def bytes_saved_for_backward(model: GPT) -> int:
    """Bytes of tensors that autograd keeps from forward for backward: the activations."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    idx, targets = batch()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(idx, targets).loss
    loss.backward()
    return total


def peak_cpu_bytes(model: GPT) -> int:
    """Peak of live CPU memory allocated during forward + backward, from the profiler's allocation records."""
    idx, targets = batch()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(idx, targets).loss.backward()
    changes = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage)
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("kind,every_n", SETTINGS)
def test_same_loss_and_gradients_as_without(shape, kind, every_n):
    plain = build(shape)
    checkpointed = copy.deepcopy(plain)
    chosen = apply_activation_checkpointing(checkpointed, kind, every_n)
    assert chosen  # something was actually checkpointed

    loss, expected = gradients(plain)
    loss_ckpt, got = gradients(checkpointed)

    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)


def test_compiled_checkpointed_blocks_match_eager():
    """Checkpointing must not hide the blocks from torch.compile (a silent fallback to eager)."""
    import torch._dynamo

    plain = build("modern", dropout=0.0)  # compiled code draws dropout masks from another generator
    compiled = copy.deepcopy(plain)
    apply_activation_checkpointing(compiled, "every_n", 2)
    apply_compile(compiled)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    loss, expected = gradients(plain)
    loss_compiled, got = gradients(compiled)

    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # a checkpointed and a plain block
    assert loss_compiled == pytest.approx(loss, rel=1e-5)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_names_and_state_dict_are_unchanged():
    plain = build("modern")
    checkpointed = copy.deepcopy(plain)
    apply_activation_checkpointing(checkpointed, "full")
    assert [n for n, _ in checkpointed.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(checkpointed.state_dict())  # checkpoints move freely between settings


def test_fewer_activations_kept_for_backward():
    sizes = {}
    for kind, every_n in [("none", 1), *SETTINGS]:
        model = build("modern")
        apply_activation_checkpointing(model, kind, every_n)
        sizes[(kind, every_n)] = bytes_saved_for_backward(model)
    # Checkpointing more blocks (5, then 3, then 2 of 5) keeps strictly fewer activations.
    assert sizes[("full", 1)] < sizes[("every_n", 2)] < sizes[("every_n", 3)] < sizes[("none", 1)]
    # With all 5 blocks checkpointed, what is left (embeddings, head, loss, block inputs) is under half.
    assert sizes[("full", 1)] < 0.5 * sizes[("none", 1)]


def test_lower_peak_memory():
    peaks = {}
    for kind in ("none", "full"):
        model = build("modern")
        apply_activation_checkpointing(model, kind)
        peak_cpu_bytes(model)  # first call warms up one-time allocations
        model.zero_grad(set_to_none=True)
        peaks[kind] = peak_cpu_bytes(model)
    assert peaks["full"] < 0.8 * peaks["none"], peaks


def test_every_n_picks_every_nth_block():
    assert blocks_to_checkpoint(6, "none", 1) == []
    assert blocks_to_checkpoint(6, "full", 1) == [0, 1, 2, 3, 4, 5]
    assert blocks_to_checkpoint(6, "every_n", 2) == [0, 2, 4]
    assert blocks_to_checkpoint(6, "every_n", 4) == [0, 4]
    assert blocks_to_checkpoint(6, "every_n", 1) == blocks_to_checkpoint(6, "full", 1)


@pytest.mark.parametrize("kind,every_n", [("some", 1), ("every_n", 0)])
def test_bad_settings_are_user_errors(kind, every_n):
    with pytest.raises(UserError, match="activation_checkpointing|checkpoint_every_n"):
        blocks_to_checkpoint(6, kind, every_n)
