"""The KV cache's default size: a pool of blocks of at most half the free memory and max_batch x the context,
allocated as requests need it; the slot cache only when asked for (serve.kv_slots)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from serving import ServerProcess, http_request

from lmsmith.core.errors import UserError
from lmsmith.schema.model import ModelConfig
from lmsmith.serve.kv_sizing import KV_SHARE, GiB, bytes_per_token, plan_kv_cache

# SmolLM2-135M's shape: 30 layers, 3 key/value heads of 64, an 8k context
SMOL = ModelConfig(vocab_size=49152, block_size=8192, n_layer=30, n_head=9, n_kv_head=3, n_embd=576)


def test_smollm2_with_an_8k_context_gets_a_pool_of_half_the_free_memory_not_12_gb_of_slots():
    per_token = bytes_per_token(SMOL, torch.float32)
    assert per_token == 30 * 2 * 3 * 64 * 4
    plan = plan_kv_cache(SMOL, torch.float32, 32, None, None, free_bytes=16 * GiB)
    assert 32 * 8192 * per_token > 12e9  # the slot cache it used to take
    assert plan.pool_tokens is not None and plan.bytes <= KV_SHARE * 16 * GiB
    assert plan.pool_tokens > 8192  # still a whole context, and then some
    roomy = plan_kv_cache(SMOL, torch.float32, 32, None, None, free_bytes=64 * GiB)
    assert roomy.pool_tokens == 32 * 8192  # a pool still, capped at what 32 requests can hold
    unknown = plan_kv_cache(SMOL, torch.float32, 32, None, None, free_bytes=None)
    assert unknown.pool_tokens == 32 * 8192 and "give --kv-cache-gb" in unknown.why
    slots = plan_kv_cache(SMOL, torch.float32, 32, None, None, free_bytes=16 * GiB, slots=True)
    assert slots.pool_tokens is None and slots.bytes == 32 * 8192 * per_token


def test_kv_cache_gb_and_tokens_give_a_pool_of_that_size():
    per_token = bytes_per_token(SMOL, torch.float32)
    plan = plan_kv_cache(SMOL, torch.float32, 32, None, 1.0, free_bytes=None)
    assert plan.pool_tokens == GiB // per_token // 16 * 16 and plan.bytes <= GiB
    assert plan_kv_cache(SMOL, torch.float32, 32, 1000, None, free_bytes=None).pool_tokens == 1008  # whole blocks
    with pytest.raises(UserError, match="no block of 16 tokens"):
        plan_kv_cache(SMOL, torch.float32, 32, None, 1e-6, free_bytes=None)


def test_a_server_serves_from_a_pool_of_half_the_free_memory_allocated_as_needed(model_dir, tmp_path):
    """The tiny model's 32 x 128 tokens take 512 bytes each, 2 MiB; told only 2 MiB are free, its pool may grow to
    1 MiB (2,048 tokens), says so, and answers from it."""
    process = ServerProcess(model_dir, "--threads", "1", "serve.free_memory_gb=0.001953125",
                            log_file=tmp_path / "server.log")
    try:
        code, answer = http_request(process.url, "POST", "/completions",
                                    {"prompt": "hello", "max_tokens": 8, "temperature": 0})
        assert code == 200 and answer["usage"]["completion_tokens"] == 8
    finally:
        assert process.stop() == 0
    assert "KV cache: a pool of up to 2,048 tokens in blocks of 16, up to 1.0 MiB, allocated as requests need it " \
        "(50% of the 2.0 MiB free; 32 x 128 tokens would take 2.0 MiB)" in process.log()


def test_too_little_memory_for_one_block_is_one_line_and_exit_2(model_dir):
    result = subprocess.run([sys.executable, "-m", "lmsmith", "serve", str(model_dir), "--port", "0",
                             "serve.free_memory_gb=0.00001"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no block of 16 tokens" in lines[0], result.stderr


def test_slots_with_a_pool_size_is_one_line_and_exit_2(model_dir):
    result = subprocess.run([sys.executable, "-m", "lmsmith", "serve", str(model_dir), "--port", "0",
                             "serve.kv_slots=true", "--kv-cache-tokens", "512"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "kv_slots takes no kv_cache_tokens" in lines[0], result.stderr
