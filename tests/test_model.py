"""The transformer: every kind of position, norm and feed-forward against a float64 reference
written out by hand, parameter and FLOP counts against published numbers, and config errors."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmsmith.cli import main
from lmsmith.core.config import parse_section
from lmsmith.model.directory import load_model_dir
from lmsmith.model.transformer import GPT, IGNORE_INDEX, KVCache
from lmsmith.schema.model import MODEL_PRESETS, ModelConfig
from lmsmith.text.tokenizer import Tokenizer

VOCAB = 97


def make_model(seed: int = 0, **shape) -> GPT:
    shape = {"vocab_size": VOCAB, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32, **shape}
    torch.manual_seed(seed)
    model = GPT(ModelConfig(**shape)).eval()
    with torch.no_grad():  # move norms and biases off ones and zeros, so every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def tokens(shape=(2, 24), seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# An independent forward pass: float64, one head at a time, every formula spelt out


def reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    c = model.config
    w = {k: v.detach().double() for k, v in model.state_dict().items()}
    T, hd, H, KV = idx.shape[1], c.head_dim, c.n_head, c.kv_heads
    pos = torch.arange(T, dtype=torch.float64)

    def linear(x, name):
        y = x @ w[f"{name}.weight"].T
        return y + w[f"{name}.bias"] if f"{name}.bias" in w else y

    def rms(x, weight):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + c.norm_eps) * weight

    def norm(x, name):
        if c.norm == "rmsnorm":
            return rms(x, w[f"{name}.weight"])
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + c.norm_eps) * w[f"{name}.weight"]
        return y + w[f"{name}.bias"] if f"{name}.bias" in w else y

    def rotate(x):  # pairs (i, i + hd/2) turn by pos * theta^(-2i/hd)
        half = hd // 2
        angle = pos[:, None] * c.rope_theta ** (-2 * torch.arange(half, dtype=torch.float64) / hd)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()], -1)

    x = w["tok_emb.weight"][idx]
    if c.position == "learned":
        x = x + w["pos_emb.table.weight"][:T]
    elif c.position == "sinusoidal":
        angle = pos[:, None] / 10000 ** (torch.arange(0, c.n_embd, 2, dtype=torch.float64) / c.n_embd)
        table = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(T, c.n_embd)  # sin, cos interleaved
        x = x + table
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for layer in range(c.n_layer):
        b = f"blocks.{layer}."
        q, k, v = linear(norm(x, b + "attn_norm"), b + "attn.qkv").split([H * hd, KV * hd, KV * hd], -1)
        heads = []
        for h in range(H):
            g = h // (H // KV)  # consecutive query heads share a key/value head
            qh, kh, vh = q[..., h * hd:(h + 1) * hd], k[..., g * hd:(g + 1) * hd], v[..., g * hd:(g + 1) * hd]
            if c.qk_norm:
                qh, kh = rms(qh, w[b + "attn.q_norm.weight"]), rms(kh, w[b + "attn.k_norm.weight"])
            if c.position == "rope":
                qh, kh = rotate(qh), rotate(kh)
            scores = (qh @ kh.transpose(-1, -2) / math.sqrt(hd)).masked_fill(future, float("-inf"))
            heads.append(scores.softmax(-1) @ vh)
        x = x + linear(torch.cat(heads, -1), b + "attn.proj")
        f = linear(norm(x, b + "ffn_norm"), b + "ffn.fc")
        if c.feed_forward == "swiglu":
            gate, up = f.split(c.hidden_size, -1)
            f = gate * torch.sigmoid(gate) * up
        elif c.feed_forward == "relu2":
            f = f.clamp(min=0) ** 2
        elif c.gelu_approximate == "tanh":
            f = 0.5 * f * (1 + torch.tanh(math.sqrt(2 / math.pi) * (f + 0.044715 * f**3)))
        else:
            f = 0.5 * f * (1 + torch.erf(f / math.sqrt(2)))
        x = x + linear(f, b + "ffn.proj")
    return norm(x, "norm") @ w["head.weight"].T


KINDS = {
    "rope-rmsnorm-swiglu": dict(),
    "learned-layernorm-gelu-bias": dict(position="learned", norm="layernorm", feed_forward="gelu", bias=True),
    "learned-layernorm-nobias-exact-gelu": dict(position="learned", norm="layernorm", feed_forward="gelu",
                                                gelu_approximate="none"),
    "sinusoidal-relu2-untied": dict(position="sinusoidal", feed_forward="relu2", tie_embeddings=False),
    "rope-GQA-qknorm-bias": dict(n_head=8, n_kv_head=2, qk_norm=True, bias=True, rope_theta=500.0),
    "rope-MQA-layernorm-ffn_hidden": dict(n_kv_head=1, norm="layernorm", ffn_hidden=40, norm_eps=1e-6),
}


@pytest.mark.parametrize("shape", KINDS.values(), ids=KINDS.keys())
def test_forward_matches_float64_reference(shape):
    model = make_model(**shape)
    idx = tokens()
    with torch.no_grad():
        logits = model(idx).logits
    assert logits.shape == (2, 24, VOCAB)
    torch.testing.assert_close(logits.double(), reference_logits(model, idx), atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", KINDS.values(), ids=KINDS.keys())
def test_every_kind_trains(shape):
    model = make_model(**shape, dropout=0.1).train()
    idx = tokens((4, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(idx[:, :-1], targets=idx[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_last_only_and_loss_shapes():
    model = make_model()
    idx = tokens()
    out = model(idx, last_only=True)
    assert out.logits.shape == (2, 1, VOCAB) and out.loss is None
    torch.testing.assert_close(out.logits[:, 0], model(idx).logits[:, -1])
    loss = model(idx, targets=idx).loss
    assert loss.dim() == 0 and loss.item() > 0
    with pytest.raises(ValueError, match="exceeds block_size 32"):
        model(tokens((1, 33)))


def test_loss_ignores_targets_of_minus_100():
    model = make_model()
    idx, targets = tokens(), tokens(seed=1)
    targets[0, :10] = IGNORE_INDEX
    targets[1, 5] = IGNORE_INDEX
    assert IGNORE_INDEX == -100
    out = model(idx, targets=targets)
    keep = targets != -100
    log_probs = out.logits.double().log_softmax(-1)
    expected = -log_probs[keep].gather(-1, targets[keep][:, None]).mean()
    torch.testing.assert_close(out.loss.double(), expected, atol=1e-5, rtol=0)
    # What an ignored position predicts cannot change the loss.
    other = targets.clone()
    other[0, :10] = IGNORE_INDEX
    assert model(idx, targets=other).loss == out.loss


def test_attention_is_causal():
    model = make_model(position="learned", norm="layernorm", feed_forward="gelu")
    idx = tokens((1, 20))
    changed = idx.clone()
    changed[0, 12] = (changed[0, 12] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(idx).logits, model(changed).logits
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_grouped_query_attention_equals_attention_with_repeated_key_value_heads():
    gqa = make_model(n_head=8, n_kv_head=2, n_embd=64)
    mha = make_model(n_head=8, n_embd=64)
    hd = gqa.config.head_dim
    assert gqa.blocks[0].attn.qkv.weight.shape == ((8 + 2 * 2) * hd, 64)
    state = gqa.state_dict()
    for layer in range(2):
        name = f"blocks.{layer}.attn.qkv.weight"
        q, k, v = state[name].split([8 * hd, 2 * hd, 2 * hd])
        repeat = lambda t: t.view(2, 1, hd, 64).expand(2, 4, hd, 64).reshape(8 * hd, 64)  # noqa: E731
        state[name] = torch.cat([q, repeat(k), repeat(v)])
    mha.load_state_dict(state)
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx).logits, mha(idx).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", ["rope", "learned", "sinusoidal"])
def test_kv_cache_prefill_then_steps_equals_full_forward(position):
    model = make_model(position=position, n_head=4, n_kv_head=2)
    idx = tokens((2, 20))
    cache = KVCache(model.config, batch_size=2, max_len=20, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        full = model(idx).logits
        steps = [model(idx[:, :12], cache=cache).logits]
        steps += [model(idx[:, t:t + 1], cache=cache).logits for t in range(12, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_dropout_only_in_training_mode():
    model = make_model(dropout=0.5)
    idx = tokens()
    with torch.no_grad():
        assert torch.equal(model(idx).logits, model(idx).logits)
        model.train()
        assert not torch.equal(model(idx).logits, model(idx).logits)


def test_residual_projections_start_smaller():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=VOCAB, n_layer=8, n_embd=256, n_head=4, feed_forward="gelu"))
    std = model.config.init_std
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(std, rel=0.05)
    assert model.blocks[0].ffn.proj.weight.std().item() == pytest.approx(std / math.sqrt(16), rel=0.05)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(std / math.sqrt(16), rel=0.05)


# ---------------------------------------------------------------------------------------------
# Counting


def count_by_hand(c: ModelConfig) -> int:
    C, hd, H, KV, V = c.n_embd, c.head_dim, c.n_head, c.kv_heads, c.vocab_size
    bias = int(c.bias)
    norm = C * (2 if c.norm == "layernorm" and c.bias else 1)
    attn = C * (H + 2 * KV) * hd + bias * (H + 2 * KV) * hd + H * hd * C + bias * C + (2 * hd if c.qk_norm else 0)
    fc_out = c.hidden_size * (2 if c.feed_forward == "swiglu" else 1)
    ffn = C * fc_out + bias * fc_out + c.hidden_size * C + bias * C
    total = V * C + c.n_layer * (2 * norm + attn + ffn) + norm
    total += c.block_size * C if c.position == "learned" else 0
    total += 0 if c.tie_embeddings else V * C
    return total


@pytest.mark.parametrize("shape", KINDS.values(), ids=KINDS.keys())
def test_parameter_count_matches_a_count_by_hand(shape):
    model = make_model(**shape)
    assert model.num_params() == count_by_hand(model.config)
    assert model.num_params() == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def preset_model(name: str, vocab_size: int) -> GPT:
    config = parse_section(ModelConfig, {"preset": name, "vocab_size": vocab_size}, "model")
    with torch.device("meta"):  # sizes only, no memory
        return GPT(config)


def test_presets_have_the_published_sizes():
    # GPT2LMHeadModel "gpt2" has 124,439,808 parameters; TinyLlama-1.1B (the llama preset's shape) 1,100,048,384.
    assert preset_model("gpt2", 50257).num_params() == 124_439_808
    assert preset_model("llama", 32000).num_params() == 1_100_048_384


def test_flops_per_token_is_the_usual_6n_plus_attention():
    gpt2 = preset_model("gpt2", 50257)
    c = gpt2.config
    # The PaLM / nanoGPT estimate: 6 * N (N without position embeddings; a tied head counts once) + 12 * L * H * Q * T.
    n = gpt2.num_params() - c.block_size * c.n_embd
    assert gpt2.flops_per_token() == 6 * n + 12 * c.n_layer * c.n_head * c.head_dim * c.block_size
    assert gpt2.flops_per_token(training=False) * 3 == gpt2.flops_per_token()
    assert gpt2.flops_per_token(seq_len=256) < gpt2.flops_per_token(seq_len=1024)

    llama = preset_model("llama", 32000)
    c = llama.config
    n = llama.num_params() - c.vocab_size * c.n_embd  # the untied head is a matmul, the lookup is not
    assert llama.flops_per_token(seq_len=512) == 6 * n + 12 * c.n_layer * c.n_head * c.head_dim * 512


def test_preset_values_are_valid_configs():
    for name in MODEL_PRESETS:
        parse_section(ModelConfig, {"preset": name, "vocab_size": 100}, "model")


# ---------------------------------------------------------------------------------------------
# `lmsmith init`: good configs make a model directory, bad ones one line and exit code 2


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=270, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(["hello model, hello tokens " * 10], trainer)
    path = tmp_path_factory.mktemp("tok")
    Tokenizer(backend).save(path)
    return path


def test_init_makes_a_loadable_model_sized_for_the_tokenizer(tmp_path, tokenizer_dir, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  n_layer: 2\n  n_head: 2\n  n_embd: 32\n  block_size: 64\n")
    assert main([
        "init", "--config", str(config), "model.n_kv_head=1",
        "--tokenizer", str(tokenizer_dir), "-o", str(tmp_path / "m"),
    ]) == 0
    model, tokenizer = load_model_dir(tmp_path / "m")
    assert model.config.vocab_size == tokenizer.vocab_size
    assert (model.config.n_layer, model.config.n_kv_head, model.config.block_size) == (2, 1, 64)
    assert f"{model.num_params():,} parameters" in capsys.readouterr().out
    assert main(["init", "model.n_layer=1", "model.n_embd=16", "model.n_head=2",
                 "--tokenizer", str(tokenizer_dir), "-o", str(tmp_path / "m2")]) == 0
    assert load_model_dir(tmp_path / "m2")[0].config.n_layer == 1


@pytest.mark.parametrize("overrides, message", [
    (["model.n_embd=30", "model.n_head=4"], "model.n_embd (30) is not divisible by model.n_head (4)"),
    (["model.n_head=6", "model.n_embd=48", "model.n_kv_head=4"],
     "model.n_head (6) is not divisible by model.n_kv_head (4)"),
    (["model.n_layers=2"], "unknown key 'model.n_layers': did you mean 'n_layer'?"),
    (["model.n_layer=two"], "model.n_layer: expected a whole number"),
    (["model.n_embd=36", "model.n_head=4"], "rope needs an even head size"),
    (["model.feed_forward=geglu"], "model.feed_forward: 'geglu' is not one of"),
    (["model.vocab_size=100"], "model.vocab_size (100) is smaller than the tokenizer's"),
    (["trainn.lr=1"], "did you mean 'train'"),
])
def test_init_refuses_bad_configs_with_one_line(tmp_path, tokenizer_dir, capsys, overrides, message):
    out = tmp_path / "m"
    assert main(["init", *overrides, "--tokenizer", str(tokenizer_dir), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
