"""Interop with Hugging Face: GPT-2, GPT-Neo, Llama, Mistral, Qwen2 and Qwen3 directories, both ways.

Our presets `gpt2` and `llama` compute exactly what `GPT2LMHeadModel` and `LlamaForCausalLM`
compute; the other families are one of those plus named settings of ModelConfig:

    GPT-Neo   GPT-2 with attention_scale="none", qkv_bias=false and attention_windows (its local layers)
    Qwen2     Llama with qkv_bias=true (biases on q, k, v only)
    Qwen3     Llama with qk_norm=true and head_size (heads wider than n_embd / n_head)

So converting is renaming tensors, with three twists:

    GPT-2's Conv1D layers store weights as (in, out); nn.Linear stores (out, in): transpose.
    Llama's q_proj, k_proj, v_proj are one fused `attn.qkv` here: stack their rows.
    Llama's gate_proj and up_proj are one fused `ffn.fc` here, as rows [gate; up].

RoPE needs no permutation: our rotary layout is the "rotate half" one Llama weights use.
A Hugging Face architecture that computes anything else (scaled RoPE, a sliding window shorter
than the context, biases on some projections but not others) is refused, never approximated.

transformers is used only to read and write its config classes and to build its model classes
for export; weights are read with safetensors directly (or `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from lmsmith.core.atomic import atomic_directory, write_json
from lmsmith.core.errors import UserError, cannot_read, check_readable
from lmsmith.core.extras import require
from lmsmith.core.json_file import read_json
from lmsmith.core.manifest import MANIFEST, file_sha256, make_manifest, read_manifest
from lmsmith.core.output import check_replaceable
from lmsmith.model.directory import describe_mismatch, load_model_dir, refuse_non_finite, save_model_dir
from lmsmith.model.sizes import check_model_fits
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.text import EOT
from lmsmith.text.tokenizer import TOKENIZER_FILE, SpecialTokens, Tokenizer, special_tokens_of

SUPPORTED = (
    "gpt2 (GPT-2, DistilGPT2 and other GPT2LMHeadModel checkpoints), "
    "llama (LlamaForCausalLM: Llama 1/2, TinyLlama, SmolLM, ... with unscaled RoPE), "
    "mistral (MistralForCausalLM whose sliding window does not cut into the context), "
    "gpt_neo (GPTNeoForCausalLM: GPT-Neo 125M/1.3B/2.7B, global and local attention layers), "
    "qwen2 (Qwen2ForCausalLM: Qwen2, Qwen2.5), qwen3 (Qwen3ForCausalLM, dense)"
)


def _transformers():
    return require("transformers", extra="hf", purpose="converting to or from Hugging Face")


# ---------------------------------------------------------------------------------------------
# Configs: theirs -> ours


def read_hf_config(hf_dir: Path):
    """The transformers config object of a local directory, refusing unsupported architectures."""
    file = hf_dir / "config.json"
    if not file.is_file():
        raise UserError(f"{hf_dir} has no config.json: it is not a Hugging Face model directory")
    raw = read_json(file, fix="restore it from a good copy")
    model_type = raw.get("model_type")
    classes = {"gpt2": "GPT2Config", "llama": "LlamaConfig", "mistral": "MistralConfig", "gpt_neo": "GPTNeoConfig",
               "qwen2": "Qwen2Config", "qwen3": "Qwen3Config"}
    if model_type not in classes:
        raise UserError(f"{hf_dir}: architecture {model_type!r} is not supported; lmsmith converts {SUPPORTED}")
    config_class = getattr(_transformers(), classes[model_type])
    try:
        return config_class.from_pretrained(str(hf_dir))
    except Exception as exc:  # transformers validates values with assorted exception types
        raise UserError(
            f"{file} is not a valid {model_type} config ({str(exc).splitlines()[0]}): fix or restore it"
        ) from None


def config_from_hf(hf_config) -> ModelConfig:
    """The ModelConfig that computes what `hf_config` describes, or a UserError saying why none does."""
    if hf_config.model_type == "gpt2":
        config = _gpt2_config_from_hf(hf_config)
    elif hf_config.model_type in ("llama", "mistral", "qwen2", "qwen3"):
        config = _llama_config_from_hf(hf_config)
    elif hf_config.model_type == "gpt_neo":
        config = _gpt_neo_config_from_hf(hf_config)
    else:
        raise UserError(f"architecture {hf_config.model_type!r} is not supported; lmsmith converts {SUPPORTED}")
    config.check("converted config")
    return config


_GELU_APPROXIMATION = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


def _gpt2_config_from_hf(c) -> ModelConfig:
    refuse = []
    if c.activation_function not in _GELU_APPROXIMATION:
        refuse.append(f"activation_function {c.activation_function!r} (supported: {', '.join(_GELU_APPROXIMATION)})")
    if getattr(c, "scale_attn_by_inverse_layer_idx", False):
        refuse.append("scale_attn_by_inverse_layer_idx=true")
    if not getattr(c, "scale_attn_weights", True):
        refuse.append("scale_attn_weights=false")
    if getattr(c, "add_cross_attention", False):
        refuse.append("add_cross_attention=true")
    _refuse_if("gpt2", refuse)
    return ModelConfig(
        vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer, n_head=c.n_head,
        n_embd=c.n_embd, ffn_hidden=c.n_inner or 4 * c.n_embd, position="learned", norm="layernorm",
        norm_eps=c.layer_norm_epsilon, feed_forward="gelu", gelu_approximate=_GELU_APPROXIMATION[c.activation_function],
        bias=True, tie_embeddings=bool(c.tie_word_embeddings), dropout=float(c.resid_pdrop),
        init_std=c.initializer_range,
    )


def _gpt_neo_config_from_hf(c) -> ModelConfig:
    """GPT-Neo: GPT-2's blocks, but attention scores are not divided by sqrt(head size), q/k/v have no
    biases, and the local layers see only the last `window_size` positions."""
    refuse = []
    if c.activation_function not in _GELU_APPROXIMATION:
        refuse.append(f"activation_function {c.activation_function!r} (supported: {', '.join(_GELU_APPROXIMATION)})")
    kinds = sorted(set(c.attention_layers) - {"global", "local"})
    if kinds:
        refuse.append(f"attention types {kinds} (only global and local)")
    if len(c.attention_layers) != c.num_layers:
        refuse.append(f"{len(c.attention_layers)} attention types for {c.num_layers} layers")
    _refuse_if("gpt_neo", refuse)
    block_size = c.max_position_embeddings
    # A window as long as the context is no window at all.
    windows = [c.window_size if kind == "local" and c.window_size < block_size else None for kind in c.attention_layers]
    return ModelConfig(
        vocab_size=c.vocab_size, block_size=block_size, n_layer=c.num_layers, n_head=c.num_heads,
        n_embd=c.hidden_size, ffn_hidden=c.intermediate_size or 4 * c.hidden_size, position="learned",
        norm="layernorm", norm_eps=c.layer_norm_epsilon, feed_forward="gelu",
        gelu_approximate=_GELU_APPROXIMATION[c.activation_function], bias=True, qkv_bias=False,
        attention_scale="none", attention_windows=windows if any(windows) else None,
        tie_embeddings=bool(c.tie_word_embeddings), dropout=float(c.resid_dropout), init_std=c.initializer_range,
    )


def _llama_config_from_hf(c) -> ModelConfig:
    """Llama and the families that are Llama plus one named difference: Mistral (a sliding window),
    Qwen2 (biases on q, k, v only), Qwen3 (RMSNorm of each query and key head, QK-norm)."""
    refuse = []
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    head_size = head_dim if head_dim * heads != c.hidden_size else None
    if c.hidden_act != "silu":
        refuse.append(f"hidden_act {c.hidden_act!r} (only 'silu' is SwiGLU)")
    attention_bias, mlp_bias = getattr(c, "attention_bias", False), getattr(c, "mlp_bias", False)
    qkv_bias = None
    if c.model_type == "qwen2":
        qkv_bias = True  # Qwen2's q, k and v projections always have biases, its other layers none
    elif attention_bias != mlp_bias:
        refuse.append(
            f"attention_bias={attention_bias} with mlp_bias={mlp_bias} (lmsmith has one bias switch for both)"
        )
    rope_type, theta, partial = _rope_settings(c)
    if rope_type not in (None, "default"):
        refuse.append(f"RoPE scaling {rope_type!r} (only unscaled RoPE is supported)")
    if partial != 1.0:
        refuse.append(f"partial_rotary_factor {partial} (only full RoPE is supported)")
    block_size = c.max_position_embeddings
    window = getattr(c, "sliding_window", None)
    layer_types = getattr(c, "layer_types", None)
    if c.model_type in ("qwen2", "qwen3") and not (getattr(c, "use_sliding_window", False)
                                                   or "sliding_attention" in (layer_types or ())):
        window = None  # Qwen keeps a sliding_window value that only use_sliding_window turns on
    if window:
        # Within a context no longer than the window, sliding-window attention is plain causal attention.
        block_size = min(block_size, window)
    _refuse_if(c.model_type, refuse)
    kv_heads = c.num_key_value_heads or heads
    return ModelConfig(
        vocab_size=c.vocab_size, block_size=block_size, n_layer=c.num_hidden_layers, n_head=heads,
        n_kv_head=kv_heads if kv_heads != heads else None, n_embd=c.hidden_size,
        ffn_hidden=c.intermediate_size, position="rope", rope_theta=float(theta), norm="rmsnorm",
        norm_eps=c.rms_norm_eps, feed_forward="swiglu", bias=bool(attention_bias) and qkv_bias is None,
        qkv_bias=qkv_bias, qk_norm=c.model_type == "qwen3", head_size=head_size,
        tie_embeddings=bool(c.tie_word_embeddings), dropout=float(getattr(c, "attention_dropout", 0.0) or 0.0),
        init_std=c.initializer_range,
    )


def _rope_settings(c) -> tuple[str | None, float, float]:
    """(rope type, theta, partial rotary factor) from a transformers 5 `rope_parameters` dict or the older fields."""
    params = getattr(c, "rope_parameters", None) or {}
    scaling = getattr(c, "rope_scaling", None) or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type")
    theta = params.get("rope_theta", getattr(c, "rope_theta", None) or 10000.0)
    partial = params.get("partial_rotary_factor", getattr(c, "partial_rotary_factor", None) or 1.0)
    return rope_type, theta, float(partial)


def _refuse_if(model_type: str, reasons: list[str]) -> None:
    if reasons:
        raise UserError(
            f"this {model_type} model uses settings that lmsmith's transformer does not compute "
            f"({'; '.join(reasons)}): it cannot be converted exactly"
        )


# ---------------------------------------------------------------------------------------------
# Configs: ours -> theirs


# What each Hugging Face family needs of a ModelConfig; "qkv_bias" is the effective switch (qkv_bias, else bias).
_FAMILIES: dict[str, dict[str, object]] = {
    "gpt2": {"position": "learned", "norm": "layernorm", "feed_forward": "gelu", "qk_norm": False,
             "attention_scale": "inverse_sqrt", "attention_windows": None, "head_size": None},
    "gpt_neo": {"position": "learned", "norm": "layernorm", "feed_forward": "gelu", "qk_norm": False,
                "attention_scale": "none", "bias": True, "qkv_bias": False, "head_size": None},
    "llama": {"position": "rope", "norm": "rmsnorm", "feed_forward": "swiglu", "qk_norm": False,
              "attention_scale": "inverse_sqrt", "attention_windows": None},
    "qwen2": {"position": "rope", "norm": "rmsnorm", "feed_forward": "swiglu", "qk_norm": False, "bias": False,
              "qkv_bias": True, "attention_scale": "inverse_sqrt", "attention_windows": None},
    "qwen3": {"position": "rope", "norm": "rmsnorm", "feed_forward": "swiglu", "qk_norm": True, "bias": False,
              "qkv_bias": False, "attention_scale": "inverse_sqrt", "attention_windows": None},
}


def family_misfits(config: ModelConfig) -> dict[str, list[str]]:
    """For each Hugging Face family, the settings of `config` it does not compute (empty: it fits)."""
    misfits = {}
    for family, wanted in _FAMILIES.items():
        misfits[family] = config.misfits(wanted)
    if config.kv_heads != config.n_head:
        for family in ("gpt2", "gpt_neo"):
            misfits[family].append(f"n_kv_head=null (has {config.n_kv_head}; {family} has no grouped-query attention)")
    if config.effective("qkv_bias") != config.bias and config.qkv_bias is not None:
        misfits["llama"].append(f"qkv_bias=null (has {json.dumps(config.qkv_bias)}; Llama has one bias switch)")
    windows = {w for w in config.attention_windows or () if w is not None}
    if len(windows) > 1:
        misfits["gpt_neo"].append(f"one window for every local layer (has {sorted(windows)})")
    return misfits


def hf_family(config: ModelConfig) -> str:
    """The Hugging Face family that computes what `config` does: gpt2, gpt_neo, llama, qwen2 or qwen3."""
    family, needs = ModelConfig.first_fit(family_misfits(config))
    if family is not None:
        return family
    raise UserError(f"this model fits no Hugging Face family: {needs} "
                    "(models made with model.preset=gpt2 or model.preset=llama always fit)")


_HF_CLASSES = {"gpt2": ("GPT2Config", "GPT2LMHeadModel"), "gpt_neo": ("GPTNeoConfig", "GPTNeoForCausalLM"),
               "llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM"),
               "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "qwen3": ("Qwen3Config", "Qwen3ForCausalLM")}


def hf_config_from_ours(config: ModelConfig, eot_id: int | None = None):
    """The transformers config (GPT2Config, GPTNeoConfig, LlamaConfig, Qwen2Config, Qwen3Config) that computes
    what `config` does."""
    transformers = _transformers()
    family = hf_family(config)
    special = {"bos_token_id": eot_id, "eos_token_id": eot_id}
    if family == "gpt_neo":
        windows = config.attention_windows or [None] * config.n_layer
        return transformers.GPTNeoConfig(
            vocab_size=config.vocab_size, max_position_embeddings=config.block_size, hidden_size=config.n_embd,
            num_layers=config.n_layer, num_heads=config.n_head, intermediate_size=config.hidden_size,
            attention_types=[[["global" if w is None else "local"], 1] for w in windows],
            window_size=next((w for w in windows if w is not None), 256),
            activation_function="gelu_new" if config.gelu_approximate == "tanh" else "gelu",
            resid_dropout=config.dropout, embed_dropout=config.dropout, attention_dropout=config.dropout,
            layer_norm_epsilon=config.norm_eps, initializer_range=config.init_std,
            tie_word_embeddings=config.tie_embeddings, architectures=["GPTNeoForCausalLM"], **special,
        )
    if family == "gpt2":
        return transformers.GPT2Config(
            vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
            n_layer=config.n_layer, n_head=config.n_head, n_inner=config.hidden_size,
            activation_function="gelu_new" if config.gelu_approximate == "tanh" else "gelu",
            resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
            layer_norm_epsilon=config.norm_eps, initializer_range=config.init_std,
            tie_word_embeddings=config.tie_embeddings, architectures=["GPT2LMHeadModel"], **special,
        )
    config_class, model_class = _HF_CLASSES[family]
    extra = {"attention_bias": config.bias, "mlp_bias": config.bias} if family == "llama" else {}
    if family == "qwen3":
        extra = {"attention_bias": False}
    llama = getattr(transformers, config_class)(
        vocab_size=config.vocab_size, hidden_size=config.n_embd, intermediate_size=config.hidden_size,
        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
        num_key_value_heads=config.kv_heads, head_dim=config.head_dim, hidden_act="silu",
        max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps,
        initializer_range=config.init_std, tie_word_embeddings=config.tie_embeddings,
        attention_dropout=config.dropout, architectures=[model_class], **extra, **special,
    )
    if hasattr(llama, "rope_parameters"):  # transformers >= 5
        llama.rope_parameters = {"rope_type": "default", "rope_theta": config.rope_theta}
    else:
        llama.rope_theta = config.rope_theta
    return llama


# ---------------------------------------------------------------------------------------------
# Weights: which of their tensors make which of ours


@dataclass(frozen=True)
class Link:
    """Our tensor `ours` is their tensors `theirs` stacked along rows (transposed first if `conv1d`)."""

    ours: str
    theirs: tuple[str, ...]
    conv1d: bool = False


# Their tensor names without the base-model prefix ("transformer." or "model."), which some
# checkpoints (the original gpt2 on the Hub) leave out.
_PREFIX = {"gpt2": "transformer.", "gpt_neo": "transformer.", "llama": "model.", "mistral": "model.",
           "qwen2": "model.", "qwen3": "model."}
# Buffers that old checkpoints saved alongside the weights: a causal mask, RoPE frequencies.
_IGNORED = re.compile(
    r"(^|\.)(attn\.bias|attn\.masked_bias|attention\.bias|attention\.masked_bias|rotary_emb\.inv_freq)$"
)


def _gpt2_links(config: ModelConfig) -> list[Link]:
    links = [Link("tok_emb.weight", ("wte.weight",)), Link("pos_emb.table.weight", ("wpe.weight",))]
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"h.{i}."
        for p in ("weight", "bias"):
            links += [
                Link(f"{ours}attn_norm.{p}", (f"{theirs}ln_1.{p}",)),
                Link(f"{ours}attn.qkv.{p}", (f"{theirs}attn.c_attn.{p}",), conv1d=p == "weight"),
                Link(f"{ours}attn.proj.{p}", (f"{theirs}attn.c_proj.{p}",), conv1d=p == "weight"),
                Link(f"{ours}ffn_norm.{p}", (f"{theirs}ln_2.{p}",)),
                Link(f"{ours}ffn.fc.{p}", (f"{theirs}mlp.c_fc.{p}",), conv1d=p == "weight"),
                Link(f"{ours}ffn.proj.{p}", (f"{theirs}mlp.c_proj.{p}",), conv1d=p == "weight"),
            ]
    links += [Link("norm.weight", ("ln_f.weight",)), Link("norm.bias", ("ln_f.bias",))]
    return links


def _gpt_neo_links(config: ModelConfig) -> list[Link]:
    links = [Link("tok_emb.weight", ("wte.weight",)), Link("pos_emb.table.weight", ("wpe.weight",))]
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"h.{i}."
        attn = f"{theirs}attn.attention."
        links.append(
            Link(f"{ours}attn.qkv.weight", (f"{attn}q_proj.weight", f"{attn}k_proj.weight", f"{attn}v_proj.weight"))
        )
        for p in ("weight", "bias"):
            links += [
                Link(f"{ours}attn_norm.{p}", (f"{theirs}ln_1.{p}",)),
                Link(f"{ours}attn.proj.{p}", (f"{attn}out_proj.{p}",)),
                Link(f"{ours}ffn_norm.{p}", (f"{theirs}ln_2.{p}",)),
                Link(f"{ours}ffn.fc.{p}", (f"{theirs}mlp.c_fc.{p}",)),
                Link(f"{ours}ffn.proj.{p}", (f"{theirs}mlp.c_proj.{p}",)),
            ]
    links += [Link("norm.weight", ("ln_f.weight",)), Link("norm.bias", ("ln_f.bias",))]
    return links


def _llama_links(config: ModelConfig) -> list[Link]:
    """Llama's names, which Mistral, Qwen2 and Qwen3 share (Qwen3 adds q_norm and k_norm)."""
    links = [Link("tok_emb.weight", ("embed_tokens.weight",))]
    params = ("weight", "bias") if config.bias else ("weight",)
    qkv_params = ("weight", "bias") if config.effective("qkv_bias") else ("weight",)
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"layers.{i}."
        attn, mlp = f"{theirs}self_attn.", f"{theirs}mlp."
        links += [Link(f"{ours}attn_norm.weight", (f"{theirs}input_layernorm.weight",)),
                  Link(f"{ours}ffn_norm.weight", (f"{theirs}post_attention_layernorm.weight",))]
        links += [Link(f"{ours}attn.qkv.{p}", (f"{attn}q_proj.{p}", f"{attn}k_proj.{p}", f"{attn}v_proj.{p}"))
                  for p in qkv_params]
        if config.qk_norm:
            links += [Link(f"{ours}attn.q_norm.weight", (f"{attn}q_norm.weight",)),
                      Link(f"{ours}attn.k_norm.weight", (f"{attn}k_norm.weight",))]
        for p in params:
            links += [
                Link(f"{ours}attn.proj.{p}", (f"{attn}o_proj.{p}",)),
                Link(f"{ours}ffn.fc.{p}", (f"{mlp}gate_proj.{p}", f"{mlp}up_proj.{p}")),
                Link(f"{ours}ffn.proj.{p}", (f"{mlp}down_proj.{p}",)),
            ]
    links.append(Link("norm.weight", ("norm.weight",)))
    return links


def _links(model_type: str, config: ModelConfig) -> list[Link]:
    links = {"gpt2": _gpt2_links, "gpt_neo": _gpt_neo_links}.get(model_type, _llama_links)(config)
    prefix = _PREFIX[model_type]
    links = [Link(link.ours, tuple(prefix + name for name in link.theirs), link.conv1d) for link in links]
    if not config.tie_embeddings:
        links.append(Link("head.weight", ("lm_head.weight",)))
    return links


def state_from_hf(model_type: str, hf_state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict from theirs; every tensor of theirs must be used, and every one of ours found."""
    prefix = _PREFIX[model_type]
    # Accept names with or without the base-model prefix.
    hf_state = {(name if name.startswith(prefix) or name.startswith("lm_head.") else prefix + name): t
                for name, t in hf_state.items() if not _IGNORED.search(name)}
    if config.tie_embeddings:
        hf_state.pop("lm_head.weight", None)  # some checkpoints store the tied head a second time
    links = _links(model_type, config)
    missing = [name for link in links for name in link.theirs if name not in hf_state]
    used = {name for link in links for name in link.theirs}
    unexpected = sorted(set(hf_state) - used)
    if missing or unexpected:
        raise UserError(
            f"the {model_type} weights do not fit their config.json ({describe_mismatch(missing, unexpected)}): "
            "the checkpoint is incomplete or of another architecture"
        )
    state = {}
    for link in links:
        parts = [hf_state[name].t() if link.conv1d else hf_state[name] for name in link.theirs]
        state[link.ours] = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    if config.tie_embeddings:
        state["head.weight"] = state["tok_emb.weight"]
    return state


def state_to_hf(model_type: str, state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Their state dict (names as in XForCausalLM) from ours; a tied head appears under both names."""
    rows = {  # how a fused tensor of ours splits into theirs
        "qkv": [config.n_head * config.head_dim, config.kv_heads * config.head_dim, config.kv_heads * config.head_dim],
        "fc": [config.hidden_size, config.hidden_size],
    }
    hf_state = {}
    for link in _links(model_type, config):
        tensor = state.get(link.ours)
        if tensor is None and link.ours.endswith(".bias"):
            # GPT-2 always has biases; a model without them is the same model with zero biases.
            weight = state[link.ours.removesuffix(".bias") + ".weight"]
            tensor = weight.new_zeros(weight.shape[0])
        parts = tensor.split(rows[link.ours.split(".")[-2]], dim=0) if len(link.theirs) > 1 else (tensor,)
        for name, part in zip(link.theirs, parts):
            hf_state[name] = (part.t() if link.conv1d else part).contiguous()
    if config.tie_embeddings:
        hf_state["lm_head.weight"] = hf_state[
            _PREFIX[model_type] + ("wte.weight" if model_type in ("gpt2", "gpt_neo") else "embed_tokens.weight")
        ]
    return hf_state


# ---------------------------------------------------------------------------------------------
# In memory: a transformers model <-> ours


def hf_model_to_ours(hf_model) -> GPT:
    """Our model with the weights of a GPT2LMHeadModel / LlamaForCausalLM / MistralForCausalLM."""
    config = config_from_hf(hf_model.config)
    state = state_from_hf(hf_model.config.model_type, hf_model.state_dict(), config)
    first = next(hf_model.parameters())
    model = GPT(config)
    model.load_state_dict(state)
    return model.to(device=first.device, dtype=first.dtype).eval()


def ours_to_hf_model(model: GPT, eot_id: int | None = None):
    """The transformers model (GPT2LMHeadModel or LlamaForCausalLM) with our model's weights,
    on the same device and in the same dtype, in eval mode."""
    transformers = _transformers()
    hf_config = hf_config_from_ours(model.config, eot_id)
    hf_model = getattr(transformers, _HF_CLASSES[hf_config.model_type][1])(hf_config)
    hf_model.load_state_dict(state_to_hf(hf_config.model_type, model.state_dict(), model.config))
    first = next(model.parameters())
    return hf_model.to(device=first.device, dtype=first.dtype).eval()


# ---------------------------------------------------------------------------------------------
# Files: reading a Hugging Face directory


_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)


def weight_files(hf_dir: Path) -> list[Path]:
    """The checkpoint files of a directory, safetensors preferred, shards listed by their index."""
    for name in _WEIGHT_FILES:
        file = hf_dir / name
        if not file.is_file():
            continue
        if not name.endswith(".index.json"):
            return [file]
        try:
            shards = sorted(set(json.loads(file.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise UserError(f"{file} is corrupted (not a shard index): restore it from a good copy") from None
        except OSError as exc:
            raise cannot_read(file, exc) from None
        for shard in shards:
            check_shard_name(file, shard)
        missing = [s for s in shards if not (hf_dir / s).is_file()]
        if missing:
            raise UserError(f"{hf_dir} lacks the shard(s) {', '.join(missing)} listed in {name}: download them too")
        return [hf_dir / s for s in shards]
    raise UserError(f"{hf_dir} has no weights (looked for {', '.join(_WEIGHT_FILES)})")


def check_shard_name(index: Path, shard) -> None:
    """A shard named by an index must be a relative path inside the model directory."""
    if not isinstance(shard, str) or not shard:
        raise UserError(f"{index} is corrupted (shard name {shard!r} is not a file name): restore it from a good copy")
    parts = shard.replace("\\", "/").split("/")
    if shard.startswith(("/", "\\")) or Path(shard).is_absolute() or ".." in parts or ":" in parts[0]:
        raise UserError(f"{index} names the shard {shard!r}, which lies outside the model directory: "
                        "refusing it; use an index whose weight_map names files inside the directory")


def read_weight_file(file: Path) -> dict[str, torch.Tensor]:
    check_readable(file)  # safetensors reports an unreadable file as a missing one
    if file.suffix == ".safetensors":
        try:
            return load_file(str(file))
        except SafetensorError as exc:
            raise UserError(f"{file} is truncated or corrupted ({exc}): download it again") from None
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says enough
            warnings.simplefilter("ignore")
            state = torch.load(file, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except OSError as exc:
        raise cannot_read(file, exc) from None
    except Exception as exc:  # a corrupt or foreign file fails anywhere in the unpickler, with any exception type
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if "Weights only load failed" in first:
            first = "it holds Python objects besides tensors, and lmsmith never unpickles those"
        raise UserError(f"{file} cannot be read safely: it is not a plain PyTorch weights file ({first[:200]}); "
                        "use a model.safetensors copy of the weights") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise UserError(f"{file} does not hold a plain dict of tensors: use a model.safetensors copy of the weights")
    return state


def read_hf_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    state = {}
    for file in files:
        state.update(read_weight_file(file))
    return state


def read_hf_tokenizer(hf_dir: Path, hf_config) -> Tokenizer:
    """tokenizer.json, or GPT-2's vocab.json + merges.txt, with the end-of-text token the model was trained with."""
    from tokenizers import Tokenizer as Backend

    if (hf_dir / TOKENIZER_FILE).is_file():
        try:
            backend = Backend.from_file(str(hf_dir / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises bare Exceptions for malformed files
            raise UserError(
                f"{hf_dir / TOKENIZER_FILE} is not a valid tokenizer ({str(exc).splitlines()[0]}): restore it"
            ) from None
    elif (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        backend = byte_level_bpe(hf_dir / "vocab.json", hf_dir / "merges.txt")
    else:
        raise UserError(
            f"{hf_dir} has no tokenizer.json (nor GPT-2's vocab.json + merges.txt): save a fast tokenizer into it with "
            "transformers.AutoTokenizer.from_pretrained(dir).save_pretrained(dir)"
        )
    eot = end_of_text_token(hf_dir, hf_config, backend)
    backend.add_special_tokens([eot])  # keeps its id; makes sure "<|endoftext|>" in text is one token
    from lmsmith.text.chat_template import read_chat_template

    return Tokenizer(backend, eot_token=eot, chat_template=read_chat_template(hf_dir),  # the model's own chat format
                     specials=hf_special_tokens(hf_dir, hf_config, backend, eot))


def hf_special_tokens(hf_dir: Path, hf_config, backend, eot: str) -> SpecialTokens:
    """BOS, PAD and UNK and the add-BOS/add-EOS flags, as tokenizer_config.json (then special_tokens_map.json,
    then config.json's ids) state them."""
    named = {**_read_json(hf_dir / "special_tokens_map.json"), **_read_json(hf_dir / "tokenizer_config.json")}
    for role in ("bos", "pad", "unk"):
        token_id = getattr(hf_config, f"{role}_token_id", None)
        if named.get(f"{role}_token") is None and isinstance(token_id, int) and backend.id_to_token(token_id):
            named[f"{role}_token"] = backend.id_to_token(token_id)
    return special_tokens_of(named, backend, eot)


def byte_level_bpe(vocab: Path, merges: Path):
    """GPT-2's tokenizer rebuilt from its two files: byte-level pre-tokenizer, BPE, byte-level decoder."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    try:
        backend = Backend(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as exc:
        raise UserError(
            f"{vocab} / {merges} do not form a BPE tokenizer ({str(exc).splitlines()[0]}): restore them"
        ) from None
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def end_of_text_token(hf_dir: Path, hf_config, backend) -> str:
    """The token that ends a document: tokenizer config first, then the generation and model configs."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        token = _read_json(hf_dir / name).get("eos_token")
        if isinstance(token, dict):  # an AddedToken
            token = token.get("content")
        if isinstance(token, str) and backend.token_to_id(token) is not None:
            return token
    for source in (_read_json(hf_dir / "generation_config.json").get("eos_token_id"), hf_config.eos_token_id):
        ids = source if isinstance(source, list) else [source]
        for token_id in ids:
            if isinstance(token_id, int) and backend.id_to_token(token_id) is not None:
                return backend.id_to_token(token_id)
    if backend.token_to_id(EOT) is not None:
        return EOT
    raise UserError(
        f"{hf_dir}: cannot tell which token ends a text "
        "(no eos_token in tokenizer_config.json or config.json): add one"
    )


def hf_general_metadata(hf_dir: Path) -> dict:
    """The model's name (its folder) and what its model card's front matter says of it (license, base model, ...),
    carried into the GGUF files exported from it."""
    general = {"name": hf_dir.resolve().name}
    card = hf_dir / "README.md"
    try:
        text = card.read_text(encoding="utf-8") if card.is_file() else ""
    except (OSError, UnicodeDecodeError):
        text = ""  # a model card is documentation: an unreadable one loses nothing the model computes
    if text.startswith("---"):
        import yaml

        try:
            front = yaml.safe_load(text.split("---", 2)[1])
        except (yaml.YAMLError, IndexError):
            front = None
        if isinstance(front, dict):
            for key in ("license", "license_name", "license_link", "language", "tags", "base_model"):
                value = front.get(key)
                if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    general[key] = value
    return general


def _read_json(file: Path) -> dict:
    return read_json(file, fix="restore or delete it") if file.is_file() else {}


# ---------------------------------------------------------------------------------------------
# The two directions, directory to directory


def import_hf_dir(hf_dir: str | Path, out: str | Path, force: bool = False, quiet: bool = False) -> Path:
    """`lmsmith convert --from-hf`: a local Hugging Face GPT-2/Llama directory -> our model directory."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise UserError(f"{hf_dir} is not a directory: give a local Hugging Face model directory")
    check_replaceable(Path(out), "model", source=hf_dir, force=force)
    hf_config = read_hf_config(hf_dir)
    config = config_from_hf(hf_config)
    tokenizer = read_hf_tokenizer(hf_dir, hf_config)
    if tokenizer.vocab_size > config.vocab_size:
        raise UserError(
            f"{hf_dir}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}: "
            "they do not belong together"
        )
    check_model_fits(config, source=hf_dir / "config.json")
    files = weight_files(hf_dir)
    state = state_from_hf(hf_config.model_type, read_hf_weights(files), config)
    model = GPT(config)
    for name, tensor in model.state_dict().items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UserError(
                f"{hf_dir}: tensor for {name} has shape {list(state[name].shape)} but config.json needs "
                f"{list(tensor.shape)}: the weights do not belong to this config"
            )
    refuse_non_finite(state, hf_dir)
    model.load_state_dict(state)
    inputs = {"hf_dir": {"path": str(hf_dir), "model_type": hf_config.model_type,
                         "sha256": {f.name: file_sha256(f) for f in [hf_dir / "config.json", *files]}}}
    save_model_dir(out, model, tokenizer, made_by=f"convert --from-hf ({hf_config.model_type})", inputs=inputs,
                   extra={"general": hf_general_metadata(hf_dir)})
    if not quiet:
        print(f"converted {hf_dir} ({hf_config.model_type}) -> {out}: {model.num_params():,} parameters, "
              f"vocab {config.vocab_size}, context {config.block_size}")
    return Path(out)


def export_hf_dir(model_dir: str | Path, out: str | Path, force: bool = False, quiet: bool = False) -> Path:
    """`lmsmith convert --to-hf`: our model directory -> a directory transformers loads with
    AutoModelForCausalLM and AutoTokenizer."""
    check_replaceable(Path(out), "hf-export", source=Path(model_dir), force=force)
    model, tokenizer = load_model_dir(model_dir)
    hf_family(model.config)  # refuse before any work
    hf_model = ours_to_hf_model(model, eot_id=tokenizer.eot_id)
    bos = tokenizer.special_id("bos")
    for config in (hf_model.config, hf_model.generation_config):  # the model's own BOS and PAD, where it has them
        config.bos_token_id = tokenizer.eot_id if bos is None else bos
        config.eos_token_id = tokenizer.eot_id
        if tokenizer.special_id("pad") is not None:
            config.pad_token_id = tokenizer.special_id("pad")
    with atomic_directory(out) as tmp:
        hf_model.save_pretrained(str(tmp))
        tokenizer.save(tmp)
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        source = Path(model_dir)
        manifest = make_manifest(
            "hf-export", config={"model_type": hf_model.config.model_type},
            inputs={"model_dir": {"path": str(source), "sha256": _model_dir_hashes(source)}},
            counts={"parameters": model.num_params()}, files=files,
        )
        write_json(tmp / MANIFEST, manifest)
    if not quiet:
        print(f"exported {model_dir} -> {out} as {type(hf_model).__name__}: "
              "loads with transformers.AutoModelForCausalLM")
    return Path(out)


def _model_dir_hashes(model_dir: Path) -> dict[str, str]:
    from lmsmith.model.directory import CONFIG, WEIGHTS, resolve_model_dir

    path = resolve_model_dir(model_dir)
    return {name: file_sha256(path / name) for name in (WEIGHTS, CONFIG)}


def run(config, inputs: dict, out: str | Path, *, quiet: bool = False, force: bool = False) -> dict:
    """The convert stage: `--from-hf HF_DIR` or `--from-gguf FILE` into our model directory, or
    `--to-hf MODEL_DIR` into a Hugging Face one, at `out`; returns the manifest written."""
    from_hf, to_hf, from_gguf = inputs.get("from_hf"), inputs.get("to_hf"), inputs.get("from_gguf")
    if sum(x is not None for x in (from_hf, to_hf, from_gguf)) != 1:
        raise UserError("give exactly one of --from-hf HF_DIR, --from-gguf FILE and --to-hf MODEL_DIR")
    if from_gguf is not None:
        from lmsmith.interop.gguf_import import import_gguf

        written = import_gguf(from_gguf, out, force=force, quiet=quiet)
    elif from_hf is not None:
        written = import_hf_dir(from_hf, out, force=force, quiet=quiet)
    else:
        written = export_hf_dir(to_hf, out, force=force, quiet=quiet)
    return read_manifest(written)  # each direction has printed its one line of what it made
