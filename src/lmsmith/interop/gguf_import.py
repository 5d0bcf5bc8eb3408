"""`lmsmith convert --from-gguf FILE`: a llama.cpp GGUF file becomes an ordinary model directory.

    lmsmith convert --from-gguf SmolLM2-135M-Instruct.Q4_1.gguf -o smol/

The weights are dequantized to float32 with the `gguf` package (every type it knows: f16, bf16,
q8_0, q4_0 ... and the k-quants), so the model is ready to fine-tune, serve or export again. The
architectures read are the ones lmsmith computes exactly, the same four `lmsmith export` writes:

    llama   (Llama, SmolLM/SmolLM2, TinyLlama, ...)    query/key rows put back from llama.cpp's interleaved RoPE
    qwen2   (Qwen2, Qwen2.5)                           biases on q, k, v
    qwen3   (Qwen3, dense)                             QK-norm
    gpt2    (GPT-2)

The tokenizer is rebuilt from the file's metadata (byte-level BPE tokens, merges, the way text is
split before merging, special tokens, end-of-text) with the chat template it carries. Anything this
does not compute exactly (scaled RoPE, a tokenizer other than byte-level BPE, a split llama.cpp
names but lmsmith cannot write) is refused with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmsmith.core.errors import UserError
from lmsmith.core.extras import require
from lmsmith.schema.model import ModelConfig

SUPPORTED = ("llama", "qwen2", "qwen3", "gpt2")
# The pre-tokenizer regexes of llama.cpp's named splits that a tokenizer.json can state exactly.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _gguf():
    return require("gguf", extra="export", purpose="reading a GGUF file")


class GGUFFile:
    """The metadata and tensors of one GGUF file, with one-line errors for a file that is not whole."""

    def __init__(self, path: str | Path):
        gguf = _gguf()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path} does not exist (or is not a file): give the path of a .gguf file")
        try:
            self.reader = gguf.GGUFReader(str(self.path))
        except (ValueError, OSError, IndexError, KeyError, TypeError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(f"{self.path} is not a readable GGUF file ({first}): it is truncated or corrupt; "
                            "download it again") from None
        self.arch = self.get("general.architecture")
        if not isinstance(self.arch, str):
            raise UserError(f"{self.path} has no general.architecture: it is not a model GGUF file")

    def get(self, key: str, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            return default
        return field.contents()

    def arch_key(self, name: str, default=None):
        return self.get(f"{self.arch}.{name}", default)

    def tensors(self) -> dict[str, np.ndarray]:
        """Every tensor, dequantized to float32, in numpy's (rows, columns) order."""
        gguf = _gguf()
        out = {}
        for tensor in self.reader.tensors:
            try:
                array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            except NotImplementedError:
                raise UserError(f"{self.path}: tensor {tensor.name} is stored as {tensor.tensor_type.name}, which the "
                                "gguf package cannot dequantize: use a file of another quantization") from None
            except (ValueError, IndexError) as exc:
                raise UserError(f"{self.path}: tensor {tensor.name} is truncated or corrupt ({exc}): download the "
                                "file again") from None
            shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
            out[tensor.name] = np.asarray(array, dtype=np.float32).reshape(shape)
        return out


# ---------------------------------------------------------------------------------------------
# The model


def config_from_gguf(file: GGUFFile, vocab_size: int) -> ModelConfig:
    """The ModelConfig that computes what the file describes, or a UserError saying why none does."""
    if file.arch not in SUPPORTED:
        raise UserError(f"{file.path}: architecture {file.arch!r} is not supported; lmsmith reads GGUF files of "
                        f"{', '.join(SUPPORTED)}")
    names = {t.name for t in file.reader.tensors}
    for key in ("embedding_length", "attention.head_count", "context_length", "block_count", "feed_forward_length"):
        value = file.arch_key(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{file.path} lacks {file.arch}.{key} (or it is not a positive whole number): the file "
                            "is incomplete; download it again, or convert the model from its Hugging Face folder")
    n_embd, heads = int(file.arch_key("embedding_length")), int(file.arch_key("attention.head_count"))
    common = dict(vocab_size=vocab_size, block_size=int(file.arch_key("context_length")),
                  n_layer=int(file.arch_key("block_count")), n_head=heads, n_embd=n_embd,
                  ffn_hidden=int(file.arch_key("feed_forward_length")), tie_embeddings="output.weight" not in names,
                  dropout=0.0)
    if file.arch == "gpt2":
        return ModelConfig(**common, position="learned", norm="layernorm", feed_forward="gelu",
                           gelu_approximate="tanh", bias=True,
                           norm_eps=float(file.arch_key("attention.layer_norm_epsilon", 1e-5)))
    refuse = []
    scaling = file.arch_key("rope.scaling.type")
    if scaling not in (None, "none") and float(file.arch_key("rope.scaling.factor", 1.0) or 1.0) != 1.0:
        refuse.append(f"RoPE scaling {scaling!r}")
    head_dim = int(file.arch_key("attention.key_length", n_embd // heads))
    if int(file.arch_key("attention.value_length", head_dim)) != head_dim:
        refuse.append("value heads of another width than key heads")
    if int(file.arch_key("rope.dimension_count", head_dim)) != head_dim:
        refuse.append("RoPE on part of each head only")
    if any(n.endswith((".attn_output.bias", ".ffn_up.bias", ".ffn_down.bias")) for n in names):
        refuse.append("biases on the attention output or feed-forward layers")
    if file.arch_key("attention.sliding_window"):
        refuse.append("a sliding attention window")
    if refuse:
        raise UserError(f"{file.path}: this {file.arch} model uses settings lmsmith does not compute "
                        f"({'; '.join(refuse)}): it cannot be converted exactly")
    kv = int(file.arch_key("attention.head_count_kv", heads))
    return ModelConfig(
        **common, n_kv_head=kv if kv != heads else None, position="rope", norm="rmsnorm", feed_forward="swiglu",
        rope_theta=float(file.arch_key("rope.freq_base", 10000.0)), bias=False,
        norm_eps=float(file.arch_key("attention.layer_norm_rms_epsilon", 1e-5)),
        qkv_bias=True if "blk.0.attn_q.bias" in names else None, qk_norm="blk.0.attn_q_norm.weight" in names,
        head_size=head_dim if head_dim * heads != n_embd else None,
    )


def rope_halves(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a query/key weight from llama.cpp's interleaved (2i, 2i+1) pairs back to (i, i + d/2) pairs."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def state_from_gguf(tensors: dict[str, np.ndarray], config: ModelConfig, arch: str) -> dict[str, torch.Tensor]:
    """Our state dict from llama.cpp's tensors; every tensor must be used and every one of ours found."""
    t = {name: torch.from_numpy(array.copy()) for name, array in tensors.items()}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in t:
            raise UserError(f"the GGUF file lacks the tensor {name}: it is incomplete or of another architecture")
        used.add(name)
        return t[name]

    state = {"tok_emb.weight": take("token_embd.weight"), "norm.weight": take("output_norm.weight")}
    if arch == "gpt2":
        state["pos_emb.table.weight"] = take("position_embd.weight")
        state["norm.bias"] = take("output_norm.bias")
    for i in range(config.n_layer):
        ours, blk = f"blocks.{i}.", f"blk.{i}."
        if arch == "gpt2":
            for theirs, mine in (("attn_norm", "attn_norm"), ("attn_qkv", "attn.qkv"), ("attn_output", "attn.proj"),
                                 ("ffn_norm", "ffn_norm"), ("ffn_up", "ffn.fc"), ("ffn_down", "ffn.proj")):
                state[f"{ours}{mine}.weight"] = take(f"{blk}{theirs}.weight")
                state[f"{ours}{mine}.bias"] = take(f"{blk}{theirs}.bias")
            continue
        q, k = take(f"{blk}attn_q.weight"), take(f"{blk}attn_k.weight")
        if arch == "llama":
            q, k = rope_halves(q, config.n_head), rope_halves(k, config.kv_heads)
        state[f"{ours}attn.qkv.weight"] = torch.cat([q, k, take(f"{blk}attn_v.weight")])
        if config.qkv_bias:
            state[f"{ours}attn.qkv.bias"] = torch.cat([take(f"{blk}attn_{p}.bias") for p in "qkv"])
        if config.qk_norm:
            state[f"{ours}attn.q_norm.weight"] = take(f"{blk}attn_q_norm.weight")
            state[f"{ours}attn.k_norm.weight"] = take(f"{blk}attn_k_norm.weight")
        state[f"{ours}attn_norm.weight"] = take(f"{blk}attn_norm.weight")
        state[f"{ours}attn.proj.weight"] = take(f"{blk}attn_output.weight")
        state[f"{ours}ffn_norm.weight"] = take(f"{blk}ffn_norm.weight")
        state[f"{ours}ffn.fc.weight"] = torch.cat([take(f"{blk}ffn_gate.weight"), take(f"{blk}ffn_up.weight")])
        state[f"{ours}ffn.proj.weight"] = take(f"{blk}ffn_down.weight")
    state["head.weight"] = state["tok_emb.weight"] if config.tie_embeddings else take("output.weight")
    # Tensors llama.cpp keeps that carry nothing lmsmith computes (precomputed RoPE frequencies of unscaled RoPE).
    unused = sorted(set(t) - used - {"rope_freqs.weight"})
    if unused:
        raise UserError(f"the GGUF file holds tensors lmsmith does not compute ({', '.join(unused[:5])}): "
                        "it cannot be converted exactly")
    return state


# ---------------------------------------------------------------------------------------------
# The tokenizer


def pre_tokenizer_for(name: str | None):
    """The tokenizers pre-tokenizer that splits text as llama.cpp's named split does, or a UserError."""
    from tokenizers import Regex, pre_tokenizers

    if name in (None, "default", "gpt-2"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    splits = {"qwen2": _QWEN2_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT}
    if name in splits:
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(splits[name]), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise UserError(f"the GGUF tokenizer splits text the {name!r} way, which lmsmith does not reproduce; "
                    "it reads gpt-2, smollm, qwen2 and llama-bpe")


def tokenizer_from_gguf(file: GGUFFile):
    """Our Tokenizer from the file's byte-level BPE metadata, with its chat template."""
    from tokenizers import AddedToken, decoders, models
    from tokenizers import Tokenizer as Backend

    from lmsmith.text.tokenizer import Tokenizer

    kind = file.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UserError(f"{file.path}: its tokenizer is {kind!r}; lmsmith reads byte-level BPE ('gpt2') tokenizers "
                        "from GGUF files")
    tokens = list(file.get("tokenizer.ggml.tokens") or [])
    types = list(file.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in file.get("tokenizer.ggml.merges") or []]
    control, user_defined, unused = 3, 4, 5
    vocab = {token: i for i, token in enumerate(tokens) if types[i] != unused}
    backend = Backend(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
    backend.pre_tokenizer = pre_tokenizer_for(file.get("tokenizer.ggml.pre"))
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                for i in range(len(tokens)) if types[i] == control])
    backend.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                        for i in range(len(tokens)) if types[i] == user_defined])
    eos = file.get("tokenizer.ggml.eos_token_id")
    if not isinstance(eos, int) or not 0 <= eos < len(tokens):
        raise UserError(f"{file.path} names no end-of-text token (tokenizer.ggml.eos_token_id): it cannot end a text")
    specials = special_tokens_from_gguf(file, tokens)
    if specials.add_bos or specials.add_eos:  # so transformers, reading the directory, also puts them around a text
        backend.post_processor = _bos_eos_processor(backend, specials, tokens[eos])
    template = file.get("tokenizer.chat_template")
    return Tokenizer(backend, eot_token=tokens[eos], chat_template=template if isinstance(template, str) else None,
                     specials=specials), len(tokens)


def special_tokens_from_gguf(file: GGUFFile, tokens: list[str]):
    """BOS, PAD and UNK (by id) and the add-BOS/add-EOS flags of the file's tokenizer metadata."""
    from lmsmith.text.tokenizer import SpecialTokens

    def token(key: str) -> str | None:
        token_id = file.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[token_id] if isinstance(token_id, int) and 0 <= token_id < len(tokens) else None

    eos = token("eos")
    bos = token("bos")
    add_bos, add_eos = file.get("tokenizer.ggml.add_bos_token"), file.get("tokenizer.ggml.add_eos_token")
    if bos == eos and not add_bos:
        bos = None  # GPT-2's convention (BOS = end-of-text), as lmsmith writes it: no BOS of its own
    return SpecialTokens(bos=bos, pad=token("padding"), unk=token("unknown"), add_bos=bool(add_bos) and bos is not None,
                         add_eos=bool(add_eos))


def _bos_eos_processor(backend, specials, eos: str):
    from tokenizers import processors

    before = [specials.bos] if specials.add_bos else []
    after = [eos] if specials.add_eos else []
    single = " ".join([*before, "$A", *after])
    pair = " ".join([*before, "$A", *after, *before, "$B:1", *after])
    tokens = [(t, backend.token_to_id(t)) for t in dict.fromkeys(before + after)]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=tokens)


# The general.* keys that describe how the file itself is laid out, not the model: never carried.
_LAYOUT_KEYS = {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"}


def general_metadata(file: GGUFFile) -> dict:
    """The file's general.* metadata about the model (name, license, author, ...), as plain values."""
    out = {}
    for key in file.reader.fields:
        if key.startswith("general.") and key not in _LAYOUT_KEYS:
            value = file.get(key)
            if isinstance(value, (str, int, float, bool)) or (
                    isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)):
                out[key.removeprefix("general.")] = value
    return out


# ---------------------------------------------------------------------------------------------
# The directory


def import_gguf(path: str | Path, out: str | Path, force: bool = False, quiet: bool = False) -> Path:
    """`lmsmith convert --from-gguf`: a GGUF file -> our model directory at `out`."""
    from lmsmith.core.manifest import file_sha256
    from lmsmith.core.output import check_replaceable
    from lmsmith.model.directory import refuse_non_finite, save_model_dir
    from lmsmith.model.sizes import check_model_fits
    from lmsmith.model.transformer import GPT

    file = GGUFFile(path)
    check_replaceable(Path(out), "model", source=file.path, force=force)
    if file.arch not in SUPPORTED:
        raise UserError(f"{file.path}: architecture {file.arch!r} is not supported; lmsmith reads GGUF files of "
                        f"{', '.join(SUPPORTED)}")
    tokenizer, n_tokens = tokenizer_from_gguf(file)
    config = config_from_gguf(file, vocab_size=n_tokens)
    config.check(f"{file.path}")
    check_model_fits(config, source=file.path)
    state = state_from_gguf(file.tensors(), config, file.arch)
    refuse_non_finite(state, file.path)
    model = GPT(config)
    for name, tensor in model.state_dict().items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UserError(f"{file.path}: tensor for {name} has shape {list(state[name].shape)} but the metadata "
                            f"needs {list(tensor.shape)}: the file is corrupt or of another architecture")
    model.load_state_dict(state)
    quant = file.get("general.file_type")
    inputs = {"gguf": {"path": str(file.path), "architecture": file.arch, "file_type": quant,
                       "sha256": file_sha256(file.path)}}
    save_model_dir(out, model, tokenizer, made_by=f"convert --from-gguf ({file.arch})", inputs=inputs,
                   extra={"general": general_metadata(file)})
    if not quiet:
        print(f"converted {file.path} ({file.arch}) -> {out}: {model.num_params():,} parameters, "
              f"vocab {config.vocab_size}, context {config.block_size}")
    return Path(out)
