"""GGUF export: one file that llama.cpp (and Ollama, which runs llama.cpp) loads and runs.

    lmsmith export runs/support -o support.gguf                  f16 weights
    lmsmith export runs/support -o support-q8.gguf --quant q8_0
    lmsmith export runs/support -o ollama/support --ollama       model.gguf + Modelfile

A GGUF file is a list of metadata keys (the architecture's hyperparameters, the tokenizer, the
chat template) followed by named tensors, written here with the `gguf` package, llama.cpp's own
writer. llama.cpp computes a fixed set of architectures, so a model is exported as the one that
computes exactly what ours does:

    llama   RoPE, RMSNorm, SwiGLU, no biases, tied or untied head, grouped-query attention
    qwen2   the same with biases on the query, key and value projections (Qwen2, Qwen2.5)
    qwen3   the same with QK-norm and no biases; heads may be wider than n_embd / n_head (Qwen3)
    gpt2    learned positions, LayerNorm with biases, tanh-GELU, multi-head attention

Anything else (sinusoidal positions, QK-norm on a llama, relu2, exact-erf GELU, ...) is refused with
the settings that keep it out. Two layout differences are handled here:

    llama.cpp's llama rotates interleaved pairs (0,1), (2,3) ... while our RoPE pairs (i, i + d/2):
    the rows of the query and key weights are permuted so the same pairs meet.
    Our fused qkv and [gate; up] matrices are split into llama.cpp's separate tensors.

Vectors (norms, biases) stay float32; matrices take the requested type. A matrix whose rows do
not split into whole quantization blocks is written as f16 instead, and the summary says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lmsmith.core.atomic import atomic_path
from lmsmith.core.errors import UserError
from lmsmith.core.extras import require
from lmsmith.core.manifest import file_sha256
from lmsmith.core.output import check_utf8_name, check_writable, remove_leftovers
from lmsmith.schema.model import ModelConfig

MARKER = "lmsmith.made_by"  # metadata key of every GGUF lmsmith writes: such a file may be replaced
QUANTS: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"




def _gguf():
    return require("gguf", extra="export", purpose="exporting to GGUF")


# ---------------------------------------------------------------------------------------------
# Which llama.cpp architecture computes our model


# What each architecture needs of a ModelConfig. "qkv_bias" is the effective switch (qkv_bias, else bias);
# "head_size" is null when heads are n_embd / n_head wide.
_PLAIN = {"attention_scale": "inverse_sqrt", "attention_windows": None}
_ARCHITECTURES: dict[str, dict[str, object]] = {
    "llama": {"position": "rope", "norm": "rmsnorm", "feed_forward": "swiglu", "qk_norm": False, "bias": False,
              "qkv_bias": False, **_PLAIN},
    "qwen2": {"position": "rope", "norm": "rmsnorm", "feed_forward": "swiglu", "qk_norm": False, "bias": False,
              "qkv_bias": True, "head_size": None, **_PLAIN},
    "qwen3": {"position": "rope", "norm": "rmsnorm", "feed_forward": "swiglu", "qk_norm": True, "bias": False,
              "qkv_bias": False, **_PLAIN},
    "gpt2": {"position": "learned", "norm": "layernorm", "feed_forward": "gelu", "gelu_approximate": "tanh",
             "qk_norm": False, "head_size": None, **_PLAIN},
}


def gguf_architecture(config: ModelConfig) -> str:
    """The llama.cpp architecture that computes what `config` does (llama, qwen2, qwen3 or gpt2), or a
    UserError naming for each the settings that differ."""
    misfits: dict[str, list[str]] = {}
    for arch, wanted in _ARCHITECTURES.items():
        misfits[arch] = config.misfits(wanted)
    if config.kv_heads != config.n_head:
        misfits["gpt2"].append(
            f"n_kv_head=null (has {config.n_kv_head}; llama.cpp's gpt2 has no grouped-query attention)"
        )
    arch, needs = ModelConfig.first_fit(misfits)
    if arch is not None:
        return arch
    raise UserError(f"GGUF cannot express this model exactly: {needs} "
                    "(models made with model.preset=llama or model.preset=gpt2 always export)")


# ---------------------------------------------------------------------------------------------
# The tokenizer, as GGUF metadata


# llama.cpp names the way a byte-level BPE splits text before merging ("pre-tokenizer") by a fixed list
# of names; these are the ones whose splitting our tokenizer.json files can describe.
_GPT2_SPLIT = {"type": "ByteLevel", "use_regex": True}


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for how this byte-level tokenizer splits text, or a UserError."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True) and not parts[0].get("add_prefix_space", False):
        return "gpt-2"
    if (kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True)
            and not parts[1].get("add_prefix_space", False)):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        pattern = (parts[0].get("pattern") or {}).get("Regex", "")
        if pattern.startswith("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"):
            return "qwen2"
    raise UserError(
        f"GGUF cannot express this tokenizer's pre-tokenizer ({json.dumps(pre)[:200]}): llama.cpp splits text only "
        "in fixed ways; lmsmith exports GPT-2's byte-level split (lmsmith tokenizer train), SmolLM's and Qwen2's"
    )


def tokenizer_metadata(tokenizer, vocab_size: int) -> dict:
    """tokens, token types, merges and special ids of a byte-level BPE tokenizer, padded to `vocab_size`."""
    gguf = _gguf()
    data = json.loads(tokenizer.backend.to_str())
    model = data.get("model") or {}
    if tokenizer.kind != "bpe" or model.get("type") != "BPE" or not tokenizer._is_byte_level():
        raise UserError("GGUF export needs a byte-level BPE tokenizer (lmsmith tokenizer train --kind bpe, or a "
                        "GPT-2/SmolLM/Qwen tokenizer); a char-level tokenizer has no llama.cpp equivalent")
    pre = pre_tokenizer_name(data)
    added = {t.content: t for t in tokenizer.backend.get_added_tokens_decoder().values()}
    n = tokenizer.vocab_size
    tokens, types = [], []
    for token_id in range(vocab_size):
        token = tokenizer.backend.id_to_token(token_id) if token_id < n else None
        if token is None:  # the model's vocabulary is padded past the tokenizer's
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added[token].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"pre": pre, "tokens": tokens, "types": types, "merges": merges}


def model_chat_template(tokenizer, model_dir: Path) -> str | None:
    """The Jinja chat template of a model: the tokenizer's (model.chat_template), else tokenizer_config.json's."""
    return getattr(tokenizer, "chat_template", None) or chat_template(model_dir)


def chat_template(model_dir: Path) -> str | None:
    """The Jinja chat template a model directory carries in tokenizer_config.json, if any."""
    file = model_dir / "tokenizer_config.json"
    if not file.is_file():
        return None
    try:
        template = json.loads(file.read_text(encoding="utf-8")).get("chat_template")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise UserError(f"{file} is corrupted (not a JSON object): restore it") from None
    return template if isinstance(template, str) and template.strip() else None


# ---------------------------------------------------------------------------------------------
# The tensors


def rope_interleave(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a query/key weight reordered per head from (i, i + d/2) pairs to (2i, 2i+1) pairs."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def gguf_tensors(state: dict[str, torch.Tensor], config: ModelConfig, arch: str) -> dict[str, torch.Tensor]:
    """llama.cpp's tensor names and layouts (weights as (out, in), as nn.Linear stores them) from our state dict."""
    q_rows, kv_rows = config.n_head * config.head_dim, config.kv_heads * config.head_dim
    out = {"token_embd.weight": state["tok_emb.weight"]}
    rope_rows_interleaved = arch == "llama"  # qwen2 and qwen3 rotate halves in llama.cpp too (its "neox" RoPE)
    if arch == "gpt2":
        out["position_embd.weight"] = state["pos_emb.table.weight"]
    for i in range(config.n_layer):
        ours, blk = f"blocks.{i}.", f"blk.{i}."
        if arch != "gpt2":
            q, k, v = state[f"{ours}attn.qkv.weight"].split([q_rows, kv_rows, kv_rows], dim=0)
            if rope_rows_interleaved:
                q, k = rope_interleave(q, config.n_head), rope_interleave(k, config.kv_heads)
            gate, up = state[f"{ours}ffn.fc.weight"].chunk(2, dim=0)
            if f"{ours}attn.qkv.bias" in state:  # qwen2
                for part, bias in zip("qkv", state[f"{ours}attn.qkv.bias"].split([q_rows, kv_rows, kv_rows])):
                    out[f"{blk}attn_{part}.bias"] = bias
            if config.qk_norm:  # qwen3
                out[f"{blk}attn_q_norm.weight"] = state[f"{ours}attn.q_norm.weight"]
                out[f"{blk}attn_k_norm.weight"] = state[f"{ours}attn.k_norm.weight"]
            out.update({
                f"{blk}attn_norm.weight": state[f"{ours}attn_norm.weight"],
                f"{blk}attn_q.weight": q,
                f"{blk}attn_k.weight": k,
                f"{blk}attn_v.weight": v,
                f"{blk}attn_output.weight": state[f"{ours}attn.proj.weight"],
                f"{blk}ffn_norm.weight": state[f"{ours}ffn_norm.weight"],
                f"{blk}ffn_gate.weight": gate,
                f"{blk}ffn_up.weight": up,
                f"{blk}ffn_down.weight": state[f"{ours}ffn.proj.weight"],
            })
        else:
            names = {"attn_norm": "attn_norm", "attn_qkv": "attn.qkv", "attn_output": "attn.proj",
                     "ffn_norm": "ffn_norm", "ffn_up": "ffn.fc", "ffn_down": "ffn.proj"}
            for theirs, mine in names.items():
                weight = state[f"{ours}{mine}.weight"]
                out[f"{blk}{theirs}.weight"] = weight
                # llama.cpp's gpt2 always adds biases; a model without them is the same model with zero biases.
                bias = state.get(f"{ours}{mine}.bias")
                out[f"{blk}{theirs}.bias"] = bias if bias is not None else weight.new_zeros(weight.shape[0])
    out["output_norm.weight"] = state["norm.weight"]
    if arch == "gpt2":
        out["output_norm.bias"] = state.get("norm.bias", torch.zeros_like(state["norm.weight"]))
    if not config.tie_embeddings:
        out["output.weight"] = state["head.weight"]
    return out


def quantize(tensor: torch.Tensor, quant: str):
    """(data, raw_dtype) to hand to GGUFWriter.add_tensor, and the type actually written."""
    gguf = _gguf()
    array = tensor.detach().float().cpu().numpy()
    if array.ndim == 1 or quant == "f32":
        return array.astype(np.float32), None, "f32"
    if quant == "f16":
        return array.astype(np.float16), None, "f16"
    qtype = getattr(gguf.GGMLQuantizationType, quant.upper())
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        return array.astype(np.float16), None, "f16"  # rows do not split into whole blocks
    return gguf.quants.quantize(array, qtype), qtype, quant


_FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0",
               "q4_0": "MOSTLY_Q4_0", "q4_1": "MOSTLY_Q4_1", "q5_0": "MOSTLY_Q5_0", "q5_1": "MOSTLY_Q5_1"}


# ---------------------------------------------------------------------------------------------
# Writing the file


def write_general(writer, general: dict) -> None:
    """The model's general.* metadata (license, author, ... from the file or card it was converted from).
    Its name and layout keys are written elsewhere; values GGUF has no type for are left out."""
    for key, value in general.items():
        key = {"language": "languages"}.get(key, key)  # a model card's key -> GGUF's
        if key in ("name", "architecture", "file_type", "quantization_version", "alignment"):
            continue
        if isinstance(value, str):
            writer.add_string(f"general.{key}", value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            writer.add_array(f"general.{key}", value)
        elif isinstance(value, bool):
            writer.add_bool(f"general.{key}", value)
        elif isinstance(value, int) and 0 <= value < 2**32:
            writer.add_uint32(f"general.{key}", value)
        elif isinstance(value, int):
            writer.add_int64(f"general.{key}", value)
        elif isinstance(value, float):
            writer.add_float32(f"general.{key}", value)


def write_special_tokens(writer, tokenizer) -> None:
    """BOS, EOS, PAD and UNK ids and whether a prompt starts with BOS or ends with EOS, as the model has them."""
    specials = tokenizer.specials
    bos = tokenizer.special_id("bos")
    # A tokenizer of our own has no BOS: GPT-2's convention names the end-of-text token, and add_bos stays false.
    writer.add_bos_token_id(tokenizer.eot_id if bos is None else bos)
    writer.add_eos_token_id(tokenizer.eot_id)
    if tokenizer.special_id("pad") is not None:
        writer.add_pad_token_id(tokenizer.special_id("pad"))
    if tokenizer.special_id("unk") is not None:
        writer.add_unk_token_id(tokenizer.special_id("unk"))
    writer.add_add_bos_token(specials.add_bos)
    writer.add_add_eos_token(specials.add_eos)


def write_gguf(path: Path, model, tokenizer, quant: str, *, name: str, template: str | None,
               source: dict | None = None, general: dict | None = None) -> dict:
    """Write `model` and `tokenizer` as one GGUF file at `path` (not atomically: see `export_gguf`).
    Returns what was written: the architecture and how many tensors of each type."""
    gguf = _gguf()
    config: ModelConfig = model.config
    arch = gguf_architecture(config)
    vocab = tokenizer_metadata(tokenizer, config.vocab_size)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    write_general(writer, general or {})
    writer.add_string(MARKER, "lmsmith export")
    writer.add_string("lmsmith.model_config", json.dumps(asdict(config)))
    if source:
        writer.add_string("lmsmith.source", json.dumps(source))
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.hidden_size)
    writer.add_head_count(config.n_head)
    writer.add_vocab_size(config.vocab_size)
    if arch != "gpt2":
        writer.add_head_count_kv(config.kv_heads)
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_layer_norm_rms_eps(config.norm_eps)
    else:
        writer.add_layer_norm_eps(config.norm_eps)
    writer.add_file_type(getattr(gguf.LlamaFileType, _FILE_TYPES[quant]))
    if quant.startswith("q"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    write_special_tokens(writer, tokenizer)
    if template is not None:
        writer.add_chat_template(template)

    written: dict[str, int] = {}
    state = {k: v for k, v in model.state_dict().items()}
    for tensor_name, tensor in gguf_tensors(state, config, arch).items():
        data, raw_dtype, kind = quantize(tensor, quant)
        if raw_dtype is None:
            writer.add_tensor(tensor_name, data)
        else:
            writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)  # the shape is read from the bytes
        written[kind] = written.get(kind, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": arch, "tensor_types": written, "pre_tokenizer": vocab["pre"]}


def model_general_metadata(model_dir: Path) -> dict:
    """What the model directory's manifest records of the model it was converted from (name, license, ...)."""
    from lmsmith.core.manifest import manifest_or_none

    general = ((manifest_or_none(model_dir) or {}).get("config") or {}).get("general")
    return general if isinstance(general, dict) else {}


def is_ours(path: Path) -> bool:
    """Whether `path` is a GGUF file lmsmith wrote (it carries the marker key), so it may be replaced."""
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception:  # not a GGUF at all, or a truncated one: gguf raises assorted errors
        return False
    return MARKER in reader.fields


def check_file_output(out: Path, reads: list[Path]) -> None:
    """Refuse a single-file output that is not ours to replace (one line: what and the fix)."""
    if out.is_symlink() and not out.exists():
        raise UserError(f"-o {out} is a link to nothing: remove the link or choose another -o")
    if out.is_dir():
        raise UserError(f"-o {out} is a directory: give a file name ending in .gguf (or add --ollama to write "
                        "model.gguf and a Modelfile into a directory)")
    if out.suffix != ".gguf":
        raise UserError(f"-o {out}: a GGUF file's name ends in .gguf: e.g. -o {out.with_suffix('.gguf').name}")
    check_utf8_name(out)
    check_writable(out)
    for source in reads:
        if source.resolve() == out.resolve() or source.resolve().is_relative_to(out.resolve()):
            raise UserError(f"-o {out} would replace the input {source}: choose another -o")
    if out.exists() and not is_ours(out):
        raise UserError(f"{out} already exists and is not a GGUF file lmsmith wrote: choose another -o, or move "
                        "it away; it is kept as it is")


def export_gguf(model_dir: str | Path, out: str | Path, quant: str = "f16", *, name: str | None = None) -> dict:
    """Write the model of `model_dir` to the GGUF file `out` atomically (temporary file, then rename)."""
    from lmsmith.model.directory import CONFIG, WEIGHTS, load_model_dir, read_model_config, resolve_model_dir

    model_dir, out = resolve_model_dir(model_dir), Path(out).expanduser()
    config = read_model_config(model_dir)
    gguf_architecture(config)  # refuse before loading any weights
    check_file_output(out, [model_dir])
    model, tokenizer = load_model_dir(model_dir)
    model.float()
    source = {"path": str(model_dir), "sha256": {n: file_sha256(model_dir / n) for n in (WEIGHTS, CONFIG)}}
    general = model_general_metadata(model_dir)
    remove_leftovers(out)  # the temporary file of an export that was killed
    with atomic_path(out) as tmp, torch.no_grad():
        written = write_gguf(tmp, model, tokenizer, quant, name=name or general.get("name") or model_dir.resolve().name,
                             template=model_chat_template(tokenizer, model_dir), source=source, general=general)
    return {**written, "quant": quant, "bytes": out.stat().st_size, "parameters": model.num_params(),
            "stop": [tokenizer.eot_token], "block_size": config.block_size}


# ---------------------------------------------------------------------------------------------
# The stage
