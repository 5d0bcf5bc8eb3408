"""`lmsmith eval`: a model's loss, perplexity and bits per byte on a whole split of a tokens directory,
or on any text files (`--text FILE...`), beside what gzip, bzip2 and xz reach on the same bytes.

The model (a model directory, or a run directory whose final model is in `model/`) and the
tokens must come from the same tokenizer: the tokens' manifest names the hash of the tokenizer
that made them, and a model whose tokenizer hashes differently is refused, because its ids
would mean other text. Bits per byte does not depend on the tokenizer, so it is the number to
compare models with different tokenizers on the same text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmsmith.core.atomic import write_json
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import MANIFEST, file_sha256, recorded_input
from lmsmith.core.progress import progress_bar
from lmsmith.evaluate.compressors import compressor_bits_per_byte
from lmsmith.model.scoring import EvalResult, evaluate_tokens, token_byte_lengths, token_byte_table, windows
from lmsmith.schema.evaluate import EvalConfig
from lmsmith.text.tokenizer import TextFiles
from lmsmith.text.tokens_dir import TokensDir, open_tokens_dir, read_split

STAGE = "eval"
TEXT_SPLIT = "text"  # the split's name when `--text` files were scored


@dataclass
class SplitEval:
    """What was scored, the scores, and the compressors' bits per byte on the same bytes."""

    model: str
    data: str
    split: str
    result: EvalResult
    compressors: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "split": self.split, **self.result.to_dict(),
                "compressors": self.compressors}


def tokens_dir_of(model_dir: Path) -> Path:
    """The tokens directory a trained model was made from, as its manifest records it."""
    try:
        manifest = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
        recorded = Path(manifest["inputs"]["tokens"]["path"])
        return recorded_input(model_dir, manifest, "tokens") or recorded  # one that is gone: named as recorded
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{model_dir} does not record the tokens it was trained on: name them with --data TOKENS_DIR"
        ) from None


def check_same_tokenizer(tokens: TokensDir, model_tokenizer, model_dir: Path) -> None:
    if model_tokenizer.sha256 != tokens.tokenizer_sha256:
        raise UserError(
            f"{tokens.path} was made by another tokenizer than the model in {model_dir} (the tokenizer hashes differ), "
            "so its ids mean other text to this model: "
            f"tokenize the text again with `lmsmith tokenize DATA -t {model_dir} -o DIR`"
        )


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    from lmsmith.train.precision import resolve_precision

    resolved = resolve_precision(precision, device)
    return None if resolved.name == "fp32" else resolved.dtype


def evaluate(model: str | Path, data: str | Path | None = None, config: EvalConfig | None = None,
                   quiet: bool = False) -> SplitEval:
    """Score every token of one split of `data` (default: the tokens the model was trained on)."""
    from lmsmith.core.device import pick_device
    from lmsmith.core.host_memory import keep_freed_memory
    from lmsmith.model.directory import load_model_dir, resolve_model_dir

    config = config or EvalConfig()
    config.check("eval")
    model_dir = resolve_model_dir(model)
    if config.text and data is not None:
        raise UserError("eval got both --data and --text: score a tokens directory's split or text files, not both")
    text_files = TextFiles(config.text) if config.text else None  # a missing file is refused before the model loads
    device = pick_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()  # each batch reuses the last one's logits buffer
    net, model_tokenizer = load_model_dir(model_dir, device)
    if text_files is not None:
        ids, described, split = text_ids(text_files, model_tokenizer), str(text_files), TEXT_SPLIT
    else:
        tokens = open_tokens_dir(data if data is not None else tokens_dir_of(model_dir))
        check_same_tokenizer(tokens, model_tokenizer, model_dir)
        if tokens.split_tokens(config.split) < 2:
            raise UserError(f"the {config.split} split of {tokens.path} holds {tokens.split_tokens(config.split)} "
                            "tokens, nothing to score: evaluate another split (--split val), or hold out more text "
                            "when curating")
        ids, described, split = read_split(tokens, config.split), str(tokens.path), config.split
    byte_lengths = token_byte_lengths(model_tokenizer)
    context = config.context or net.config.block_size
    stride = config.stride or max(1, context // 2)
    with _WindowProgress(len(windows(len(ids), context, stride)), config.batch_size, quiet) as progress:
        result = evaluate_tokens(net, ids, byte_lengths, context=context, stride=stride,
                                 batch_size=config.batch_size, device=device,
                                 autocast_dtype=autocast_dtype(config.precision, device), progress=progress)
    compressors = compressor_bits_per_byte(text_bytes(ids, model_tokenizer))
    return SplitEval(str(model_dir), described, split, result, compressors)


def text_ids(files: TextFiles, tokenizer) -> np.ndarray:
    """The files' text as one stream of ids, each file a document, joined by end-of-text as tokenize joins them."""
    ids: list[int] = []
    for file in (f for f in files.files if f.bytes):  # an empty file (a package's __init__.py) adds nothing
        if ids:
            ids.append(tokenizer.eot_id)
        ids += tokenizer.encode("".join(TextFiles([file.path])), what=str(file.path))
    if len(ids) < 2:
        raise UserError(f"{files} hold fewer than 2 tokens, nothing to score: give longer text files")
    return np.asarray(ids, dtype=np.int64)


def text_bytes(ids: np.ndarray, tokenizer) -> bytes:
    """The UTF-8 bytes the ids stand for, special tokens left out: what the compressors are given."""
    pieces = token_byte_table(tokenizer)
    return b"".join(pieces[i] for i in ids.tolist())


class _WindowProgress:
    """A bar over the windows scored."""

    def __init__(self, total_windows: int, batch_size: int, quiet: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        self.bar = progress_bar(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TextColumn("windows"),
                                TimeRemainingColumn(), quiet=quiet)
        self.task = self.bar.add_task("eval", total=total_windows)

    def __enter__(self):
        self.bar.start()
        return self

    def __call__(self, n_windows: int) -> None:
        self.bar.advance(self.task, n_windows)

    def __exit__(self, *exc) -> None:
        self.bar.stop()


def eval_title(scored: SplitEval) -> str:
    if scored.split == TEXT_SPLIT:
        return f"{scored.model} on {scored.data}"
    return f"{scored.model} on the {scored.split} split of {scored.data}"


def eval_table(scored: SplitEval):
    """A rich table of the scores, with what was scored in its title."""
    from rich.table import Table

    r = scored.result
    table = Table(title=eval_title(scored), title_justify="left")
    for column in ("loss (nats/token)", "perplexity", "bits per byte", "tokens", "bytes", "context / stride"):
        table.add_column(column, justify="right")
    table.add_row(f"{r.loss:.4f}", f"{r.perplexity:.2f}", f"{r.bits_per_byte:.4f}", f"{r.tokens:,}", f"{r.bytes:,}",
                  f"{r.context} / {r.stride}")
    return table


def yardstick_line(scored: SplitEval) -> str | None:
    """The model's bits per byte among the compressors' on the same bytes, best first."""
    if not scored.compressors:
        return None
    entries = {**scored.compressors, "this model": scored.result.bits_per_byte}
    ranked = ", ".join(f"{name} {bpb:.3f}" for name, bpb in sorted(entries.items(), key=lambda kv: kv[1]))
    return f"bits per byte on the same {scored.result.bytes:,} bytes: {ranked}"


def print_scores(scored: SplitEval) -> None:
    """The table, then the compressors' line (a line of its own: a table caption would wrap at the table's width)."""
    from rich.console import Console

    console = Console(highlight=False)
    console.print(eval_table(scored))
    if line := yardstick_line(scored):
        console.print(line, soft_wrap=True)


RESULT = "result.json"


def run(config, inputs: dict, out: str | Path | None = None, *, quiet: bool = False, as_json: bool = False) -> dict:
    """The eval stage: score `inputs["model"]` on a split of `inputs["data"]` (default: its own tokens).

    With `out`, writes `out/result.json` and its manifest; prints the table (or one JSON line).
    Returns the scores.
    """
    from lmsmith.core.output import input_record, stage_directory, write_manifest

    cfg: EvalConfig = config.eval
    model, data = inputs["model"], inputs.get("data")
    reads = [model] + ([data] if data else []) + list(cfg.text or [])
    if out is not None:  # refuse a bad -o before minutes of scoring
        from lmsmith.core.output import check_output

        check_output(out, STAGE, reads=reads)
    scored = evaluate(model, data, cfg, quiet=quiet or as_json)
    if out is not None:
        scored_input = ({"text": [text_record(path) for path in cfg.text]} if cfg.text
                        else {"tokens": input_record(scored.data)})
        with stage_directory(out, STAGE, reads=reads) as tmp:
            write_json(tmp / RESULT, scored.to_dict())
            write_manifest(tmp, STAGE, config=dataclasses.asdict(cfg), counts=scored.result.to_dict(),
                           inputs={"model": input_record(scored.model), **scored_input})
    if as_json:
        print(json.dumps(scored.to_dict()))
    else:  # the scores are the result: shown with --quiet too (which only hides the progress bar)
        print_scores(scored)
    return scored.to_dict()


def text_record(path: str) -> dict:
    """How the manifest names a text file or folder it scored: its path and a hash of what it held."""
    files = TextFiles([path]).files
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.path).encode("utf-8", "surrogateescape") + b"\0" + file_sha256(file.path).encode())
    return {"path": str(path), "files": len(files), "sha256": digest.hexdigest()}


def show_result(out: Path) -> None:
    """The scores a finished eval step wrote, as `lmsmith eval` prints them (at the end of a build)."""
    scored = json.loads((Path(out) / RESULT).read_text(encoding="utf-8"))
    fields = {k: scored[k] for k in EvalResult.__dataclass_fields__}
    print_scores(SplitEval(scored["model"], scored["data"], scored["split"], EvalResult(**fields),
                           scored.get("compressors") or {}))
