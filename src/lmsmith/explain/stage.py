"""`lmsmith explain MODEL_OR_RUN "TEXT"`: index.html, its PNGs and explain.json in one directory.

    lmsmith explain runs/main "def add(a, b):\\n    return a + b"       -> runs/main/explain/
    lmsmith explain runs/main "The girl gave her dog a bone" --focus her
    lmsmith explain runs/main --heads                                 what each head does, measured

The whole explanation is computed before anything is written, so bad input leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from lmsmith.core.atomic import write_bytes, write_json, write_text
from lmsmith.core.errors import UserError
from lmsmith.explain.explanation import explain_heads, explain_text, jsonable
from lmsmith.schema.explain import ExplainConfig

STAGE = "explain"
INDEX, NUMBERS = "index.html", "explain.json"
DEFAULT_TEMPERATURE = 0.8  # GenerationConfig's, for a model without a recipe beside it
SAMPLES_FILE = "samples.json"  # what `lmsmith generate -o` writes (lmsmith.generate.samples.SAMPLES)
SAMPLE_TOKENS = 40  # the explained sample is cut to this many tokens: a heatmap stays readable


def default_out(model_dir: Path) -> Path:
    """RUN/explain for a run's model (RUN/model), else MODEL-explain beside the model directory."""
    if model_dir.name == "model":
        return model_dir.parent / "explain"
    return model_dir.with_name(model_dir.name + "-explain")


def recipe_temperature(model_dir: Path) -> float:
    """generate.temperature of the build recipe the model came from (WORKDIR/recipe.yaml above RUN/model)."""
    for folder in list(model_dir.resolve().parents)[:3]:
        recipe = folder / "recipe.yaml"
        if recipe.is_file():
            try:
                value = ((yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("generate") or {}).get(
                    "temperature")
            except (OSError, yaml.YAMLError, AttributeError):
                value = None
            if isinstance(value, (int, float)) and value >= 0:
                return float(value)
    return DEFAULT_TEMPERATURE


def load(model_path: str | Path, device: str):
    """(model, tokenizer, model_dir), refusing a model directory without its tokenizer."""
    from lmsmith.core.device import pick_device
    from lmsmith.model.directory import load_model_dir, resolve_model_dir
    from lmsmith.text.tokenizer import TOKENIZER_FILE

    model_dir = resolve_model_dir(model_path)
    if not (model_dir / TOKENIZER_FILE).is_file():
        raise UserError(f"{model_dir} has no {TOKENIZER_FILE}: explaining needs the tokenizer the model was trained "
                        f"with; copy its {TOKENIZER_FILE} (and tokenizer_config.json) into {model_dir}")
    model, tokenizer = load_model_dir(model_dir, device=pick_device(device))
    return model, tokenizer, model_dir


def held_out(data: str | None, tokenizer, block_size: int, n: int) -> np.ndarray | None:
    """Windows of --data's val split, refused when another tokenizer made them: its ids mean other text
    to this model, and one past its vocabulary would fail deep inside it."""
    if data is None:
        return None
    from lmsmith.explain.heads import windows_of
    from lmsmith.text.tokens_dir import open_tokens_dir, read_split

    tokens = open_tokens_dir(data)
    if tokens.tokenizer_sha256 != tokenizer.sha256:
        raise UserError(f"--data {data} was made by another tokenizer than the model's (the tokenizer hashes "
                        "differ), so its ids mean other text to this model: give tokens made with the model's "
                        "tokenizer, or leave out --data")
    return windows_of(read_split(tokens, "val"), min(block_size, 128), n, data)


def explain(model_path: str | Path, text: str | None, config: ExplainConfig,
            data: str | None = None) -> tuple[dict, Path]:
    """The explanation dict (numbers as arrays) and the model directory it came from."""
    config.check()
    if text is None and not config.heads:
        raise UserError("give a TEXT to explain (lmsmith explain RUN \"some text\"), or --heads to measure the heads")
    if text is None and config.focus is not None:
        raise UserError("--focus names a token of the text: give a TEXT too")
    model, tokenizer, model_dir = load(model_path, config.device)
    result: dict = {"model": {"n_layer": model.config.n_layer, "n_head": model.config.n_head,
                              "block_size": model.config.block_size, "vocab_size": model.config.vocab_size}}
    if text is not None:
        result = explain_text(model, tokenizer, text, config, model_dir, recipe_temperature(model_dir))
    if config.heads:
        windows = held_out(data, tokenizer, model.config.block_size, config.head_windows)
        result["heads"] = explain_heads(model, tokenizer, model_dir, config, windows)
    return result, model_dir


def write_explanation(result: dict, out: Path, model_dir: Path, reads: list) -> dict:
    """index.html, the PNGs and explain.json into `out` (replaced as a whole); returns the manifest."""
    from lmsmith.core.output import check_output, stage_directory, write_manifest
    from lmsmith.explain.page import render
    from lmsmith.explain.pictures import draw_all

    check_output(out, STAGE, reads=reads)
    numbers = jsonable(result)
    pngs = draw_all(numbers)
    page = render(numbers, pngs, str(model_dir))
    with stage_directory(out, STAGE, reads=reads) as tmp:
        for name, data in pngs.items():
            write_bytes(tmp / name, data)
        write_json(tmp / NUMBERS, numbers)
        write_text(tmp / INDEX, page)
        manifest = write_manifest(tmp, STAGE, inputs={"model": str(model_dir)},
                                  counts={"tokens": len(result.get("tokens", [])), "pictures": len(pngs)})
    return manifest


def run(config, inputs: dict, out: str | Path | None = None, *, quiet: bool = False) -> dict:
    """The explain stage."""
    from lmsmith.core.output import check_output
    from lmsmith.model.directory import resolve_model_dir

    explain_config: ExplainConfig = config.explain
    model_dir = resolve_model_dir(inputs["model"])
    out = Path(out) if out is not None else default_out(model_dir)
    reads = [inputs["model"]] + ([inputs["data"]] if inputs.get("data") else [])
    check_output(out, STAGE, reads=reads)  # before the minutes of computing, not after
    text = inputs.get("text")
    text = text.replace("\\n", "\n").replace("\\t", "\t") if text is not None else None
    if text is None and inputs.get("samples"):
        text = first_sample_text(inputs["samples"], model_dir)
        reads.append(inputs["samples"])
    result, model_dir = explain(inputs["model"], text, explain_config, inputs.get("data"))
    manifest = write_explanation(result, out, model_dir, reads)
    if not quiet:
        print_summary(result, out)
    return manifest


def first_sample_text(samples_dir: str | Path, model_dir: Path) -> str:
    """The first sample a generate output holds (its prompt and what the model wrote), cut to SAMPLE_TOKENS
    tokens so that a heatmap stays readable."""
    from lmsmith.text.tokenizer import load_tokenizer

    path = Path(samples_dir) / SAMPLES_FILE
    try:
        samples = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"--samples {samples_dir}: cannot read {SAMPLES_FILE} ({exc}): give the folder "
                        "`lmsmith generate -o` wrote") from None
    tokenizer = load_tokenizer(model_dir)
    for sample in samples if isinstance(samples, list) else []:
        text = str(sample.get("prompt", "")) + str(sample.get("text", ""))
        ids = tokenizer.encode(text, what="the sample")[:SAMPLE_TOKENS]
        if ids:
            return tokenizer.decode(ids)
    raise UserError(f"--samples {samples_dir}: no sample holds any text to explain: give a TEXT instead")


def print_summary(result: dict, out: Path) -> None:
    if "tokens" in result:
        print(f"explained {len(result['tokens'])} tokens" + (f" ({result['note']})" if result.get("note") else ""))
    if result.get("heads"):
        from lmsmith.explain.heads import head_table_text

        print(head_table_text(result["heads"]["table"]))
    print(f"open {out / INDEX} (pictures as PNGs and the numbers in {NUMBERS} beside it)")


def read_explanation(out: str | Path) -> dict:
    return json.loads((Path(out) / NUMBERS).read_text(encoding="utf-8"))



