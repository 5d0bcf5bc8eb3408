"""Faults from outside (unreadable files, a full disk, bad bytes, absurd sizes, hostile or broken
files, no network) end in one UserError line that names the problem and the fix."""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmsmith.core.errors import UserError, is_disk_full
from lmsmith.model import sizes as model_size
from lmsmith.model.directory import load_model_dir, read_model_config, resolve_model_dir, save_model_dir
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.text import EOT, MAX_VOCAB, check_vocab_size
from lmsmith.schema.train import TrainConfig
from lmsmith.text.tokenizer import Tokenizer, check_text_encodable, load_tokenizer
from lmsmith.train import checkpoint as ckpt
from lmsmith.train.distributed import DistInfo
from lmsmith.train.optim import build_optimizers

NOT_UTF8 = b"caf\xff!".decode("utf-8", "surrogateescape")  # how Python hands over argv bytes that are not UTF-8


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=270, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(["faults end in one line " * 10], trainer)
    return Tokenizer(backend)


def tiny_config(vocab_size: int, **shape) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, **shape)


@pytest.fixture
def model_dir(tmp_path, tokenizer) -> Path:
    torch.manual_seed(0)
    return save_model_dir(tmp_path / "model", GPT(tiny_config(tokenizer.vocab_size)), tokenizer, made_by="test")


def deny_reading(monkeypatch, *files: Path) -> None:
    """open() of these files raises PermissionError, as for a file without read permission (root reads anything)."""
    denied = {str(Path(f)) for f in files}
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and str(Path(file)) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)  # what Path.read_text calls


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# -- 1. unreadable files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
def test_unreadable_model_directory_file(model_dir, monkeypatch, name):
    deny_reading(monkeypatch, model_dir / name)
    with pytest.raises(UserError) as caught:
        load_model_dir(model_dir)
    expected = f"cannot read {model_dir / name} (permission denied): fix its permissions (e.g. chmod u+r)"
    assert one_line(caught) == expected


def test_unreadable_tokenizer_and_config_directly(model_dir, monkeypatch):
    deny_reading(monkeypatch, model_dir / "tokenizer.json", model_dir / "config.json")
    with pytest.raises(UserError, match=r"cannot read .*tokenizer\.json \(permission denied\)"):
        load_tokenizer(model_dir)
    with pytest.raises(UserError, match=r"cannot read .*config\.json \(permission denied\)"):
        read_model_config(model_dir)


def test_folder_that_cannot_be_searched(model_dir, monkeypatch):
    real_is_file = Path.is_file

    def is_file(self):
        if self.parent == model_dir:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    with pytest.raises(UserError, match=r"cannot read .*config\.json \(permission denied\)"):
        resolve_model_dir(model_dir)
    with pytest.raises(UserError, match=r"cannot read .*tokenizer\.json \(permission denied\)"):
        load_tokenizer(model_dir)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permission bits")
def test_unreadable_weights_for_real(model_dir):
    (model_dir / "model.safetensors").chmod(0)
    try:
        with pytest.raises(UserError, match="permission denied"):
            load_model_dir(model_dir)
    finally:
        (model_dir / "model.safetensors").chmod(0o644)


def test_unreadable_start_model_for_finetuning(model_dir, monkeypatch):
    from lmsmith.finetune.start import load_start

    deny_reading(monkeypatch, model_dir / "config.json")
    with pytest.raises(UserError) as caught:
        load_start(model_dir)
    assert one_line(caught).startswith(f"cannot read {model_dir / 'config.json'} (permission denied)")


def test_unreadable_hf_weights(tmp_path, monkeypatch):
    from lmsmith.interop.convert import read_weight_file

    file = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(2)}, file)
    deny_reading(monkeypatch, file)
    with pytest.raises(UserError, match=r"cannot read .*pytorch_model\.bin \(permission denied\)"):
        read_weight_file(file)


# -- checkpoints: unreadable on resume, a full disk on save ------------------------------------------


def tiny_run(seed: int = 0):
    torch.manual_seed(seed)
    model = GPT(tiny_config(40))
    optimizers = build_optimizers(model, TrainConfig(optimizer="adamw"))
    x = torch.randint(0, 40, (2, 8))
    model(x, x).loss.backward()
    for optimizer in optimizers:
        optimizer.step()
    return model, optimizers, {"model": {"tie_embeddings": True}}


def test_unreadable_checkpoint_files(tmp_path, monkeypatch):
    model, optimizers, state = tiny_run()
    saved = ckpt.save_checkpoint(tmp_path / "run", 1, model, optimizers, None, state, DistInfo(), keep_last=2)
    deny_reading(monkeypatch, saved / ckpt.MODEL_FILE, saved / ckpt.STATE_FILE)
    with pytest.raises(UserError, match=r"cannot read .*model\.safetensors \(permission denied\)"):
        ckpt._load(saved / ckpt.MODEL_FILE)
    with pytest.raises(UserError, match=r"cannot read .*state\.json \(permission denied\)"):
        ckpt.read_checkpoint_state(saved)


def test_resuming_from_a_diverged_checkpoint_is_refused(tmp_path):
    model, optimizers, state = tiny_run()
    with torch.no_grad():
        next(model.blocks[0].parameters()).fill_(float("nan"))
    saved = ckpt.save_checkpoint(tmp_path / "run", 1, model, optimizers, None, state, DistInfo(), keep_last=2)
    fresh, fresh_optimizers, _ = tiny_run(seed=1)
    with pytest.raises(UserError, match=r"holds NaN or inf: the run had diverged .* resume from an earlier one"):
        ckpt.load_checkpoint(saved, fresh, fresh_optimizers, None, DistInfo(), tied=True)


# What safetensors raises when the disk fills under it (seen on a full tmpfs): its own type, not an OSError.
SAFETENSORS_DISK_FULL = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("failure", [SAFETENSORS_DISK_FULL, OSError(errno.ENOSPC, "No space left on device")],
                         ids=["SafetensorError", "OSError"])
def test_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch, failure):
    run = tmp_path / "run"
    model, optimizers, state = tiny_run()
    ckpt.save_checkpoint(run, 1, model, optimizers, None, state, DistInfo(), keep_last=5)
    real_save = ckpt.save_file

    def save_until_full(tensors, path, *args, **kwargs):
        if Path(path).name == ckpt.OPTIMIZER_FILE:
            Path(path).write_bytes(b"partial")
            raise failure
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", save_until_full)
    with pytest.raises(UserError) as caught:
        ckpt.save_checkpoint(run, 2, model, optimizers, None, state, DistInfo(), keep_last=5)
    message = one_line(caught)
    assert message.startswith(f"cannot save the checkpoint of step 2 in {run / 'checkpoints'}: "
                              "the disk is full while writing optimizer.safetensors; "
                              "the previous checkpoint step-000001 is intact. Free some space")
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]  # nothing half-written is left
    load_file(run / "checkpoints" / "step-000001" / ckpt.OPTIMIZER_FILE)


def test_safetensors_write_failure_is_its_own_error_type(tmp_path):
    """Why checkpoint saving catches SafetensorError: a failed write does not arrive as an OSError."""
    with pytest.raises(SafetensorError) as caught:
        save_file({"a": torch.zeros(4)}, tmp_path / "no-such-folder" / "x.safetensors")
    assert not isinstance(caught.value, OSError)
    assert is_disk_full(SAFETENSORS_DISK_FULL) and not is_disk_full(caught.value)


class _FillingFile(io.FileIO):
    """A file on a disk with room for `room` more bytes."""

    room = 10

    def write(self, data):
        if len(data) > type(self).room:
            raise OSError(errno.ENOSPC, "No space left on device")
        type(self).room -= len(data)
        return super().write(data)


def test_full_disk_while_writing_tokens_dir(tmp_path, monkeypatch):
    import numpy as np

    from lmsmith.text import tokens_dir

    monkeypatch.setattr(_FillingFile, "room", 10)
    monkeypatch.setattr(tokens_dir, "open", lambda path, mode: _FillingFile(path, mode), raising=False)
    writer = tokens_dir.SplitWriter(tmp_path / "out" / "train", np.dtype("<u2"), shard_tokens=1000, eot_id=0)
    writer.add_document([1, 2, 3])  # 6 bytes: they fit
    with pytest.raises(UserError) as caught:
        writer.add_document([4, 5, 6, 7])
    shard = tmp_path / "out" / "train" / "shard-00000.bin"
    assert one_line(caught) == (f"disk full while writing {shard}: free some space and run again "
                                "(an earlier output directory is kept until the new one is complete)")


def test_full_disk_in_any_stage_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A write no stage guards itself (here the tokenizer's files): the CLI still says it in one line."""
    from lmsmith.cli import main
    from lmsmith.core import atomic

    text = tmp_path / "text.txt"
    text.write_text("hello world, a small text to train on. " * 50)

    def full(target, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(atomic, "write_bytes", full)
    code = main(["tokenizer", "train", str(text), "-o", str(tmp_path / "tok"), "--vocab-size", "300", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: the disk is full while writing ") and "free some space" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.txt"]  # no half-written tokenizer folder


# -- 3. text that is not UTF-8 -----------------------------------------------------------------------


def test_prompt_that_is_not_utf8(tokenizer):
    with pytest.raises(UserError) as caught:
        tokenizer.encode(NOT_UTF8)
    assert one_line(caught).startswith("the prompt is not valid UTF-8 text (byte 0xff at character 3): give it as")
    with pytest.raises(UserError, match=r"the text \(item 1 of the batch\) is not valid UTF-8 text"):
        tokenizer.encode_batch(["fine", NOT_UTF8])
    with pytest.raises(UserError, match=r"lone surrogate U\+D800 at character 1"):
        check_text_encodable("a\ud800", "the prompt")
    check_text_encodable("café ☕ 🍰", "the prompt")  # any real Unicode is fine
    with pytest.raises(TypeError):  # a wrong type stays a bug, with its traceback
        tokenizer.encode(None)


def test_tokenizer_show_and_generate_refuse_bytes_that_are_not_utf8(model_dir, tokenizer, capsys):
    from lmsmith.model.decoding import generate
    from lmsmith.text.tokenizer import show_pieces

    with pytest.raises(UserError, match=r"^the text is not valid UTF-8 text \(byte 0xff at character 3\)"):
        show_pieces(tokenizer, NOT_UTF8)  # `lmsmith tokenizer show DIR TEXT`
    assert capsys.readouterr().out == ""  # refused before anything is printed
    model, loaded = load_model_dir(model_dir)
    with pytest.raises(UserError, match=r"^the prompt is not valid UTF-8 text \(byte 0xff"):
        generate(model, loaded, NOT_UTF8)


# -- 4. absurd sizes ---------------------------------------------------------------------------------


def test_vocab_size_has_a_ceiling():
    check_vocab_size(MAX_VOCAB, [EOT])
    with pytest.raises(UserError) as caught:
        check_vocab_size(MAX_VOCAB + 1, [EOT])
    assert one_line(caught).startswith("vocab size 16,777,217 is more than lmsmith's limit of 16,777,216 (2**24)")


SHAPES = [dict(), dict(n_kv_head=1, tie_embeddings=False, qk_norm=True),
          dict(position="learned", norm="layernorm", feed_forward="gelu", bias=True),
          dict(position="sinusoidal", feed_forward="relu2", ffn_hidden=24)]


@pytest.mark.parametrize("shape", SHAPES)
def test_parameter_count_is_what_the_model_allocates(shape):
    model = GPT(tiny_config(50, **shape))
    allocated = model.num_params() + sum(b.numel() for b in model.buffers())
    assert sum(model_size.parameter_counts(model.config).values()) == allocated


def test_model_too_big_for_memory_is_refused_before_it_is_built(model_dir, monkeypatch):
    monkeypatch.setattr(model_size, "memory_bytes", lambda: 16 * 10**9)
    huge = ModelConfig(vocab_size=10**10, n_embd=4096)
    gb = sum(model_size.parameter_counts(huge).values()) * 4 / 1e9
    assert 163_840 < gb < 163_850  # the embedding: 4 bytes x 10**10 x 4096
    with pytest.raises(UserError) as caught:
        model_size.check_model_fits(huge)
    assert one_line(caught) == (f"model.vocab_size=10,000,000,000 with model.n_embd=4,096 needs about {gb:,.1f} GB "
                                "for its weights, more than this machine's 16.0 GB of memory: make the model smaller")
    model_size.check_model_fits(tiny_config(50))  # a small one passes

    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "n_layer": 10**6}))
    monkeypatch.setattr(GPT, "__init__", lambda *a: pytest.fail("GPT built before the size was checked"))
    with pytest.raises(UserError, match=r"config\.json: model\.n_layer=1,000,000 with model\.n_embd=16 needs about"):
        load_model_dir(model_dir)


# -- 5. Hugging Face files: broken, hostile, escaping ----------------------------------------------


class _Planter:
    """Unpickling this would run code: it writes a file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "the pickle ran code"))


def test_pytorch_bin_that_is_not_a_torch_file(tmp_path):
    import pickle

    from lmsmith.interop.convert import read_weight_file

    random_bytes = tmp_path / "random" / "pytorch_model.bin"
    random_bytes.parent.mkdir()
    random_bytes.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError) as caught:
        read_weight_file(random_bytes)
    assert one_line(caught).startswith(f"{random_bytes} cannot be read safely: it is not a plain PyTorch weights file")

    hostile = tmp_path / "hostile" / "pytorch_model.bin"
    hostile.parent.mkdir()
    planted = tmp_path / "planted.txt"
    hostile.write_bytes(pickle.dumps({"w": _Planter(planted)}))
    with pytest.raises(UserError) as caught:
        read_weight_file(hostile)
    assert "holds Python objects besides tensors" in one_line(caught) and str(hostile) in str(caught.value)
    assert not planted.exists()

    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(UserError, match="empty.bin cannot be read safely"):
        read_weight_file(tmp_path / "empty.bin")


@pytest.mark.parametrize("index", ["model.safetensors.index.json", "pytorch_model.bin.index.json"])
@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../x.bin", "..\\x.bin"])
def test_shard_index_pointing_outside_the_directory_is_refused(tmp_path, index, shard):
    from lmsmith.interop.convert import weight_files

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (tmp_path / "outside.safetensors").write_bytes(b"")
    (hf_dir / index).write_text(json.dumps({"weight_map": {"a.weight": "model-1.safetensors", "b.weight": shard}}))
    (hf_dir / "model-1.safetensors").write_bytes(b"")
    with pytest.raises(UserError) as caught:
        weight_files(hf_dir)
    assert one_line(caught) == (f"{hf_dir / index} names the shard {shard!r}, which lies outside the model directory: "
                                "refusing it; use an index whose weight_map names files inside the directory")


@pytest.mark.parametrize("text", ["{not json", '{"weight_map": [1, 2]}', '["weight_map"]', '{"weight_map": {"a": 3}}',
                                  '{"weight_map": {"a": {"b": 1}}}'])
def test_corrupt_shard_index(tmp_path, text):
    from lmsmith.interop.convert import weight_files

    (tmp_path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(UserError, match=r"model\.safetensors\.index\.json is corrupted"):
        weight_files(tmp_path)


# -- 6. weights of a run that diverged --------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(model_dir, bad):
    file = model_dir / "model.safetensors"
    tensors = load_file(file)
    name = "blocks.0.ffn.fc.weight"
    tensors[name][3, 1] = bad
    save_file(tensors, file)
    with pytest.raises(UserError) as caught:
        load_model_dir(model_dir)
    assert one_line(caught) == (f"{file} holds non-finite weights (NaN or inf) in {name}: the run diverged; "
                                "use an earlier checkpoint")


# -- 7. a Hub dataset that cannot be reached --------------------------------------------------------


def no_network(*args, **kwargs):
    raise AssertionError("a test must not touch the network")


@pytest.mark.parametrize("offline", ["env", "unreachable"])
def test_unreachable_hf_dataset_fails_fast_in_one_line(monkeypatch, caplog, capsys, offline):
    from lmsmith.data.sources import hf

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    if offline == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        why = "HF_HUB_OFFLINE is set"
    else:
        monkeypatch.setattr(hf, "hub_reachable", lambda timeout=5.0: False)
        why = "huggingface.co cannot be reached"
    import datasets
    from huggingface_hub import constants

    level = logging.getLogger("huggingface_hub").level
    offline_flags = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(UserError) as caught:
        hf.HfSource("hf:nobody-here/no-such-set-3f9c", SimpleNamespace(text_field="text"))
    assert time.monotonic() - started < 10  # no retries with back-off (those take half a minute)
    assert one_line(caught) == (
        f"hf:nobody-here/no-such-set-3f9c: cannot open this dataset: it could not be reached ({why}) and is not in "
        "the local cache: check the name and the network, or download it first (`hf download --repo-type dataset "
        "nobody-here/no-such-set-3f9c --local-dir DIR`) and give hf:DIR"
    )
    assert "Retry" not in caplog.text and "Retry" not in capsys.readouterr().err
    assert logging.getLogger("huggingface_hub").level == level  # the libraries' settings are put back
    assert (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE) == offline_flags


# -- accepted where a refusal was due: one line naming the key, exit code 2, before any work ----------------------

BIG_SEED = str(2**64)
REFUSED = {
    "train.lr nan": (["train", "{tokens}", "-o", "{out}", "train.lr=.nan"], "train.lr: nan is not a finite number"),
    "train.weight_decay inf": (["train", "{tokens}", "-o", "{out}", "train.weight_decay=.inf"],
                               "train.weight_decay: inf is not a finite number"),
    "train.grad_clip -inf": (["train", "{tokens}", "-o", "{out}", "train.grad_clip=-.inf"],
                             "train.grad_clip: -inf is not a finite number"),
    "train.eps overflows": (["train", "{tokens}", "-o", "{out}", "train.eps=1e999"], "train.eps: inf is not a finite"),
    "train.muon_lr nan text": (["train", "{tokens}", "-o", "{out}", "train.muon_lr=nan"],
                               "train.muon_lr: nan is not a finite number"),
    "model.init_std nan": (["train", "{tokens}", "-o", "{out}", "model.init_std=.nan"], "model.init_std: nan is not"),
    "model.norm_eps inf": (["train", "{tokens}", "-o", "{out}", "model.norm_eps=.inf"], "model.norm_eps: inf is not"),
    "model.rope_theta nan": (["train", "{tokens}", "-o", "{out}", "model.rope_theta=.nan"],
                             "model.rope_theta: nan is not"),
    "generate --temperature nan": (["generate", "{model}", "--temperature", ".nan"],
                                   "generate.temperature (--temperature): nan is not a finite number"),
    "export.temperature inf": (["export", "{model}", "-o", "{out}.gguf", "export.temperature=.inf"],
                               "export.temperature: inf is not a finite number"),
    "generate --template nope": (["generate", "{model}", "--template", "nope"],
                                 "unknown chat template 'nope'"),
    "finetune exact_match=-1": (["finetune", "{model}", "--data", "{model}/config.json", "-o", "{out}",
                                 "exact_match=-1"], "finetune.exact_match must be 0 (off) or a number of prompts"),
    "generate --seed beyond 64 bits": (["generate", "{model}", "--seed", BIG_SEED],
                                       f"generate.seed (--seed): {BIG_SEED} does not fit in 64 bits"),
    "train.seed beyond 64 bits": (["train", "{tokens}", "-o", "{out}", f"train.seed={BIG_SEED}"],
                                  f"train.seed: {BIG_SEED} does not fit in 64 bits"),
    "init.seed beyond 64 bits": (["init", "--tokenizer", "{model}", "-o", "{out}", f"init.seed={BIG_SEED}"],
                                 f"init.seed (--seed): {BIG_SEED} does not fit in 64 bits"),
}


@pytest.mark.parametrize("argv, message", REFUSED.values(), ids=REFUSED.keys())
def test_values_no_setting_can_mean_are_refused_in_one_line(model_dir, tmp_path, capsys, argv, message):
    from lmsmith.cli import main

    out = tmp_path / "out"
    argv = [a.format(model=model_dir, out=out, tokens=tmp_path / "no-tokens") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not out.exists() and not Path(f"{out}.gguf").exists()


def test_a_config_file_with_yaml_nan_is_refused(tmp_path, capsys):
    from lmsmith.cli import main

    config = tmp_path / "recipe.yaml"
    config.write_text("train:\n  lr: .nan\n")
    assert main(["train", str(tmp_path), "-o", str(tmp_path / "run"), "--config", str(config)]) == 2
    assert "train.lr: nan is not a finite number" in capsys.readouterr().err


LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
HOSTILE_YAML = {
    "billion laughs": (LAUGHS, "expands to more than 100,000 values"),
    "deep nesting": ("x: " + "[" * 100_000 + "]" * 100_000 + "\n", "config file"),
}


@pytest.mark.parametrize("text, message", HOSTILE_YAML.values(), ids=HOSTILE_YAML.keys())
def test_a_hostile_yaml_config_is_one_line_and_quick(tmp_path, capsys, text, message):
    from lmsmith.cli import main

    config = tmp_path / "recipe.yaml"
    config.write_text(text)
    started = time.perf_counter()
    assert main(["train", str(tmp_path), "-o", str(tmp_path / "run"), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and time.perf_counter() - started < 30


HOSTILE_TEMPLATES = {
    "nested loops of 10^10 steps": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                                    "its loops take more than 1,000,000 steps"),
    "a text times 10^13": ("{{ 'x' * 10000000000000 }}", "repeats a text or list"),
    "a list times 10^13": ("{% for m in messages * 10000000000000 %}{% endfor %}", "repeats a text or list"),
    "a power of 10^10 digits": ("{{ 10 ** 10000000000 }}", "a power too large"),
    "output of 10^10 characters": ("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
                                   "writes more than 10,000,000 characters"),
    "endless recursion": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
}


@pytest.mark.parametrize("source, message", HOSTILE_TEMPLATES.values(), ids=HOSTILE_TEMPLATES.keys())
def test_a_hostile_chat_template_fails_in_one_line_and_quickly(source, message):
    from lmsmith.text.chat_template import TemplateError, render

    started = time.perf_counter()
    with pytest.raises(TemplateError) as caught:
        render(source, [{"role": "user", "content": "hi"}], eos_token="<|endoftext|>")
    assert message in one_line(caught) and time.perf_counter() - started < 20


def test_real_templates_still_use_range_as_they_do():
    from lmsmith.text.chat_template import render

    source = "{% for i in range(messages|length) %}{{ i }}:{{ messages[i].content }};{% endfor %}" \
             "{{ range(3)|length }}{% for i in range(3)|reverse %}{{ i }}{% endfor %}"
    assert render(source, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                  eos_token="") == "0:a;1:b;3210"


def test_export_for_ollama_of_a_hostile_template_fails_in_one_line():
    from lmsmith.export.ollama import template_pieces
    from lmsmith.text.chat_template import TemplateError

    with pytest.raises(TemplateError) as caught:
        template_pieces(HOSTILE_TEMPLATES["nested loops of 10^10 steps"][0], "<|endoftext|>")
    assert "its loops take more than" in one_line(caught)


def test_a_gguf_file_without_its_sizes_is_one_line(tmp_path):
    gguf = pytest.importorskip("gguf")
    from lmsmith.interop.gguf_import import import_gguf

    file = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(file), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "<|endoftext|>"])
    writer.add_token_merges([])
    writer.add_eos_token_id(2)
    writer.add_block_count(1)  # embedding_length and the rest left out
    writer.add_tensor("token_embd.weight", torch.zeros(3, 8).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError) as caught:
        import_gguf(file, tmp_path / "out")
    assert "lacks llama.embedding_length" in one_line(caught) and not (tmp_path / "out").exists()


GARBAGE_LINES = ["[1, 2]", "5", '"text"', "null", '{"step": "x", "loss": 1.0}', "{not json", "\udcff\udcfe"]


def test_garbage_lines_in_metrics_are_skipped_by_the_report_and_on_resume(tmp_path, capsys):
    from lmsmith.report.page import read_metrics
    from lmsmith.train.metrics import truncate_after

    ours = [{"step": 1, "loss": 2.0}, {"step": 2, "val_loss": 1.5}, {"step": 3, "loss": 1.0}]
    text = "\n".join([json.dumps(ours[0]), *GARBAGE_LINES, json.dumps(ours[1]), json.dumps(ours[2])]) + "\n"
    (tmp_path / "metrics.jsonl").write_bytes(text.encode("utf-8", "surrogateescape"))
    train, val = read_metrics(tmp_path)
    assert (train, val) == ([ours[0], ours[2]], [ours[1]])
    assert f"skipped {len(GARBAGE_LINES)} lines of" in capsys.readouterr().err
    truncate_after(tmp_path / "metrics.jsonl", 2)
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == ours[:2]
