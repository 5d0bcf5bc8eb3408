"""Where fine-tuning starts: a model of ours, a Hugging Face directory, or `hf:NAME` from the Hub.

    runs/main, models/base          an lmsmith run or model directory
    hf-dir/distilgpt2               a local Hugging Face GPT-2 or Llama family directory,
                                    converted on the way in (tokenizer carried along)
    hf:distilgpt2                   downloaded from the Hugging Face Hub first (needs network)
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lmsmith.core.errors import UserError, cannot_read
from lmsmith.core.extras import require
from lmsmith.model.transformer import GPT
from lmsmith.text.tokenizer import Tokenizer

HUB_PREFIX = "hf:"
# What a model needs from a Hub repository; everything else (other frameworks' weights, ONNX...) is skipped.
HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json",
             "pytorch_model*.bin", "pytorch_model.bin.index.json",
             "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
             "generation_config.json"]


@dataclass
class StartPoint:
    model: GPT
    tokenizer: Tokenizer
    source: str  # as the user named it
    kind: str  # lmsmith | hf-dir | hf-hub


def is_hf_dir(path: Path) -> bool:
    """A Hugging Face model directory: its config.json names a `model_type` (ours holds n_embd instead)."""
    config = path / "config.json"
    try:
        if not config.is_file():
            return False
        return "model_type" in json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return False
    except OSError as exc:  # unreadable: say so here, not "not a model directory" later
        raise cannot_read(exc.filename or config, exc) from None


def download_from_hub(name: str) -> Path:
    hub = require("huggingface_hub", extra="hf", purpose="hf:NAME")
    try:
        return Path(hub.snapshot_download(name, allow_patterns=HUB_FILES))
    except Exception as exc:  # network, unknown repository, gated model: all end the same way for the user
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"could not download {name} from the Hugging Face Hub ({first}): check the name and "
                        "the network, or download it yourself and give the local directory") from None


def _load_converted(hf_dir: Path) -> tuple[GPT, Tokenizer]:
    from lmsmith.interop.convert import import_hf_dir
    from lmsmith.model.directory import load_model_dir

    with tempfile.TemporaryDirectory(prefix="lmsmith-start-") as tmp:
        converted = import_hf_dir(hf_dir, Path(tmp) / "model")
        return load_model_dir(converted)


def load_start(source: str | Path) -> StartPoint:
    """Load the model and tokenizer to fine-tune from (on the CPU, in eval mode)."""
    from lmsmith.model.directory import load_model_dir

    text = str(source)
    if text.startswith(HUB_PREFIX):
        name = text[len(HUB_PREFIX):]
        if not name:
            raise UserError("hf: needs a repository name, e.g. hf:distilgpt2")
        model, tokenizer = _load_converted(download_from_hub(name))
        return StartPoint(model, tokenizer, text, "hf-hub")
    path = Path(source)
    try:
        exists = path.exists()
    except OSError as exc:  # inside a folder that cannot be searched
        raise cannot_read(exc.filename or path, exc) from None
    if not exists:
        raise UserError(f"start model {path} does not exist: give a run or model directory, a Hugging Face "
                        "model directory, or hf:NAME")
    if is_hf_dir(path):
        model, tokenizer = _load_converted(path)
        return StartPoint(model, tokenizer, text, "hf-dir")
    model, tokenizer = load_model_dir(path)
    return StartPoint(model, tokenizer, text, "lmsmith")


def start_general_metadata(source: str, kind: str) -> dict:
    """What is known of the start model itself (name, license, ...), carried into the fine-tuned model's manifest
    and from there into the GGUF files exported from it."""
    if kind == "hf-dir":
        from lmsmith.interop.convert import hf_general_metadata

        return hf_general_metadata(Path(source))
    if kind == "hf-hub":
        return {"name": source.removeprefix("hf:").split("/")[-1]}
    from lmsmith.core.manifest import manifest_or_none
    from lmsmith.model.directory import resolve_model_dir

    general = ((manifest_or_none(resolve_model_dir(source)) or {}).get("config") or {}).get("general")
    return dict(general) if isinstance(general, dict) else {}
